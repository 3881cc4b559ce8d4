// The kernel baseline: UDP over loopback, written as a good socket program would be: a
// non-blocking socket polled in a busy loop on a pinned thread (no sleeping in recv, which
// costs tens of microseconds per wake-up here), batched receive with recvmmsg, no allocation
// per message.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "transport.hpp"
#include "nerve/clock.hpp"

namespace nerve::perf {
namespace {

constexpr std::size_t kMaxDatagram = 9000;
constexpr unsigned kBatch = 32;

class UdpTransport final : public Transport {
 public:
  UdpTransport(std::uint16_t local_port, std::uint16_t peer_port, bool block) : block_(block) {
    fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    const int buf = 8 << 20;
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(local_port);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
      throw std::runtime_error("bind 127.0.0.1:" + std::to_string(local_port) + ": " + std::strerror(errno));
    peer_ = a;
    peer_.sin_port = htons(peer_port);
    has_peer_ = peer_port != 0;
    tx_.resize(kMaxDatagram, std::byte{0x5a});
    for (unsigned i = 0; i < kBatch; ++i) {
      bufs_[i].resize(kMaxDatagram);
      iov_[i] = {bufs_[i].data(), kMaxDatagram};
      msgs_[i].msg_hdr.msg_iov = &iov_[i];
      msgs_[i].msg_hdr.msg_iovlen = 1;
      msgs_[i].msg_hdr.msg_name = &from_[i];
      msgs_[i].msg_hdr.msg_namelen = sizeof from_[i];
    }
  }
  ~UdpTransport() override { ::close(fd_); }

  std::string name() const override { return "kernel-udp"; }
  // The same frame a NIC would carry: Ethernet + IPv4 + UDP + payload.
  std::size_t frame_bytes(std::size_t payload) const override { return 14 + 20 + 8 + payload; }
  std::size_t max_payload() const override { return kMaxDatagram; }

  bool send(const Probe& p, std::size_t size, bool /*more: one datagram per call*/) override {
    std::memcpy(tx_.data(), &p, std::min(size, kProbeLen));
    return send_raw(tx_.data(), size, peer_);
  }

  unsigned poll(const RxFn& rx, bool reflect) override {
    for (unsigned i = 0; i < kBatch; ++i) msgs_[i].msg_hdr.msg_namelen = sizeof from_[i];
    const int n = ::recvmmsg(fd_, msgs_.data(), kBatch, MSG_DONTWAIT, nullptr);
    if (n <= 0) return 0;
    const std::uint64_t now = Clock::tsc().now_ns();  // once per batch
    for (int i = 0; i < n; ++i) {
      const std::size_t len = msgs_[static_cast<std::size_t>(i)].msg_len;
      if (len < kProbeLen) continue;
      Probe p;
      std::memcpy(&p, bufs_[static_cast<std::size_t>(i)].data(), kProbeLen);
      if (reflect && (p.kind == kPing || p.kind == kWarmup)) {
        if (!has_peer_) {
          peer_ = from_[static_cast<std::size_t>(i)];
          has_peer_ = true;
        }
        while (!send_raw(bufs_[static_cast<std::size_t>(i)].data(), len, from_[static_cast<std::size_t>(i)])) {
        }
      }
      rx(p, len, now);
    }
    return static_cast<unsigned>(n);
  }

  void flush() override {}

  void idle(unsigned work) override {
    if (!block_ || work != 0) return;
    pollfd p{fd_, POLLIN, 0};
    ::poll(&p, 1, 100);  // the kernel wakes us when a datagram lands
  }

 private:
  bool send_raw(const void* data, std::size_t len, const sockaddr_in& to) {
    const ssize_t n = ::sendto(fd_, data, len, 0, reinterpret_cast<const sockaddr*>(&to), sizeof to);
    return n == static_cast<ssize_t>(len);  // EAGAIN: the socket buffer is full, push back
  }

  bool block_ = false;
  int fd_ = -1;
  sockaddr_in peer_{};
  bool has_peer_ = false;
  std::vector<std::byte> tx_;
  std::array<std::vector<std::byte>, kBatch> bufs_;
  std::array<iovec, kBatch> iov_{};
  std::array<mmsghdr, kBatch> msgs_{};
  std::array<sockaddr_in, kBatch> from_{};
};

}  // namespace

std::unique_ptr<Transport> make_udp_transport(std::uint16_t local_port, std::uint16_t peer_port, bool block) {
  return std::make_unique<UdpTransport>(local_port, peer_port, block);
}

}  // namespace nerve::perf
