// The floor: the same port driven by a bare DPDK loop, with no nerve layer. Frames of the same
// length as nerve's (a fixed 90-byte header, built once per size, then the probe), sent in
// batches of up to 32 with rte_eth_tx_burst on queue 0; received with rte_eth_rx_burst on
// queue 0, the probe read at the same offset; reflected in place with the MACs swapped (as
// DPDK's macswap forwarding does). Nothing is validated, classified, timestamped or counted:
// whatever nerve costs on top of this is nerve's.
#include <rte_mbuf.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "nerve/clock.hpp"
#include "nerve/wire.hpp"
#include "port.hpp"
#include "transport.hpp"

namespace nerve::perf {
namespace {

constexpr std::uint16_t kBurst = 32;
constexpr unsigned kTxTries = 100000;  // flush attempts before a reflection is dropped

class RawTransport final : public Transport {
 public:
  RawTransport(drivers::Port& port, rte_mempool* pool, const wire::Endpoints& ep, std::size_t max_payload, std::string name)
      : port_(port), pool_(pool), ep_(ep), max_payload_(max_payload), name_(std::move(name)) {}
  ~RawTransport() override {
    rte_pktmbuf_free_bulk(pending_.data(), n_pending_);
  }

  std::string name() const override { return name_; }
  std::size_t frame_bytes(std::size_t payload) const override { return wire::frame_len(payload); }
  std::size_t max_payload() const override { return max_payload_; }

  bool send(const Probe& p, std::size_t size, bool more) override {
    if (n_pending_ == kBurst) {
      flush();
      if (n_pending_ == kBurst) return false;
    }
    rte_mbuf* m = rte_pktmbuf_alloc(pool_);
    if (!m) {
      flush();
      return false;
    }
    auto* d = reinterpret_cast<std::byte*>(rte_pktmbuf_append(m, static_cast<std::uint16_t>(wire::kOverhead + size)));
    std::memcpy(d, header_for(size), wire::kOverhead);
    std::memcpy(d + wire::kOverhead, &p, std::min(size, kProbeLen));
    if (size > kProbeLen) std::memset(d + wire::kOverhead + kProbeLen, 0x5a, size - kProbeLen);
    pending_[n_pending_++] = m;
    if (!more || n_pending_ == kBurst) flush();
    return true;
  }

  unsigned poll(const RxFn& rx, bool reflect) override {
    flush();
    rte_mbuf* bufs[kBurst];
    const std::uint16_t n = port_.rx_burst(0, bufs, kBurst);
    if (n == 0) return 0;
    const std::uint64_t now = Clock::tsc().now_ns();  // once per burst, as the node reads it
    rte_mbuf* back[kBurst];
    std::uint16_t nb = 0;
    for (std::uint16_t i = 0; i < n; ++i) {
      rte_mbuf* m = bufs[i];
      if (m->data_len < wire::kOverhead + kProbeLen) {
        rte_pktmbuf_free(m);
        continue;
      }
      auto* d = rte_pktmbuf_mtod(m, std::byte*);
      Probe p;
      std::memcpy(&p, d + wire::kOverhead, kProbeLen);
      const std::size_t size = m->data_len - wire::kOverhead;
      if (reflect && (p.kind == kPing || p.kind == kWarmup)) {
        std::array<std::byte, 6> mac;
        std::memcpy(mac.data(), d, 6);
        std::memcpy(d, d + 6, 6);
        std::memcpy(d + 6, mac.data(), 6);
        back[nb++] = m;
      } else {
        rte_pktmbuf_free(m);
      }
      rx(p, size, now);
    }
    std::uint16_t sent = 0;
    for (unsigned tries = 0; sent < nb && tries < kTxTries; ++tries) sent += port_.tx_burst(0, back + sent, nb - sent);
    if (sent < nb) rte_pktmbuf_free_bulk(back + sent, nb - sent);
    return n;
  }

  void flush() override {
    if (n_pending_ == 0) return;
    const std::uint16_t sent = port_.tx_burst(0, pending_.data(), n_pending_);
    std::move(pending_.begin() + sent, pending_.begin() + n_pending_, pending_.begin());
    n_pending_ = static_cast<std::uint16_t>(n_pending_ - sent);
  }

  void idle(unsigned) override {}

 private:
  // Ethernet/IPv4/UDP and 48 bytes where nerve's header goes, for payloads of `size` bytes:
  // built once per size, as a bare program would for its one flow.
  const std::byte* header_for(std::size_t size) {
    if (size != header_size_) {
      wire::Header h;
      h.payload_len = static_cast<std::uint16_t>(size);
      h.src_node = 1;
      h.dst = 2;
      wire::encode_headers(std::span<std::byte, wire::kOverhead>(header_.data(), wire::kOverhead), ep_, h);
      header_size_ = size;
    }
    return header_.data();
  }

  drivers::Port& port_;
  rte_mempool* pool_;
  wire::Endpoints ep_;
  std::size_t max_payload_;
  std::string name_;
  std::array<std::byte, wire::kOverhead> header_{};
  std::size_t header_size_ = ~std::size_t{0};
  std::array<rte_mbuf*, kBurst> pending_{};
  std::uint16_t n_pending_ = 0;
};

}  // namespace

std::unique_ptr<Transport> make_raw_transport(drivers::Port& port, rte_mempool* pool, const wire::Endpoints& ep,
                                              std::size_t max_payload, std::string name) {
  return std::make_unique<RawTransport>(port, pool, ep, max_payload, std::move(name));
}

}  // namespace nerve::perf
