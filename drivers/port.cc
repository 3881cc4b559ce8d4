#include "port.hpp"

#include "datapath_guard.hpp"
#include "intr_registry.hpp"

#include <fmt/format.h>
#include <linux/filter.h>
#include <rte_alarm.h>
#include <rte_bus_vdev.h>
#include <rte_errno.h>
#include <rte_eth_ring.h>
#include <rte_flow.h>
#include <rte_ring.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace nerve::drivers {
namespace {

// Ring pairs are process-wide objects shared by the two ports of a pair; the last port to
// close frees them. Control plane only.
std::mutex g_rings_mu;
std::map<std::string, int> g_ring_refs;

rte_ring* ring_acquire(const std::string& name, unsigned size, int socket) {
  std::lock_guard lock(g_rings_mu);
  rte_ring* r = rte_ring_lookup(name.c_str());
  if (!r) r = rte_ring_create(name.c_str(), size, socket, RING_F_SP_ENQ | RING_F_SC_DEQ);
  if (!r) throw std::runtime_error(fmt::format("ring {}: {}", name, rte_strerror(rte_errno)));
  ++g_ring_refs[name];
  return r;
}

void ring_release(const std::string& name) {
  std::lock_guard lock(g_rings_mu);
  if (--g_ring_refs[name] > 0) return;
  g_ring_refs.erase(name);
  rte_ring_free(rte_ring_lookup(name.c_str()));
}

std::string mac_arg(const wire::Mac& m) { return config::format_mac(m); }

// Bytes of frame buffer for one frame of `mtu`: Ethernet header, the frame, and room for the
// 64 bytes af_packet puts in front of it. 2 KiB at the standard MTU; whole pages above it, so an
// af_packet ring block holds a whole number of frames (its PMD assumes frames are contiguous).
unsigned frame_room(std::uint16_t mtu) {
  const unsigned need = RTE_ETHER_HDR_LEN + mtu + 64;
  return need <= 2048 ? 2048 : (need + 4095) / 4096 * 4096;
}

[[noreturn]] void fail(const std::string& port, const std::string& what, int err) {
  throw std::runtime_error(fmt::format("port {}: {}: {}", port, what, rte_strerror(err < 0 ? -err : err)));
}

// The AF_PACKET sockets of this process bound to `iface`: the af_packet PMD's, one per queue.
// DPDK keeps them private; their PACKET_STATISTICS are the only record of frames the kernel
// dropped because the ring was full.
std::vector<int> packet_sockets_on(const std::string& iface) {
  std::vector<int> fds;
  const unsigned ifindex = if_nametoindex(iface.c_str());
  if (ifindex == 0) return fds;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    char* end = nullptr;
    const long fd = std::strtol(e.path().filename().c_str(), &end, 10);
    if (*end != '\0') continue;
    int domain = 0;
    socklen_t len = sizeof domain;
    if (getsockopt(static_cast<int>(fd), SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0 || domain != AF_PACKET) continue;
    sockaddr_ll sll{};
    len = sizeof sll;
    if (getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&sll), &len) != 0) continue;
    if (sll.sll_ifindex == static_cast<int>(ifindex)) fds.push_back(static_cast<int>(fd));
  }
  return fds;
}

// A packet socket on `ifindex` that takes only IPv4 fragments (MF set or a fragment offset)
// and keeps none of them: its PACKET_STATISTICS count them. -1 if it cannot be opened.
int fragment_counter(unsigned ifindex) {
  // Protocol 0: the socket takes nothing until bind(), by which time the filter is on (one made
  // with a protocol would count whatever arrived, on any interface, before the filter).
  const int fd = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 12),               // EtherType
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x0800, 0, 3),
      BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 14 + 6),           // IPv4 flags and fragment offset
      BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 0x3fff, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, 1),                         // a fragment: counted
      BPF_STMT(BPF_RET | BPF_K, 0),                         // anything else: not taken
  };
  sock_fprog prog{static_cast<unsigned short>(std::size(code)), code};
  sockaddr_ll sll{};
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(0x0800);
  sll.sll_ifindex = static_cast<int>(ifindex);
  const int small = 1;  // the kernel's minimum: fragments are counted, not kept
  if (::setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) != 0 ||
      ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small) != 0 ||
      ::bind(fd, reinterpret_cast<sockaddr*>(&sll), sizeof sll) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

void run_on_interrupt_thread(const std::function<void()>& fn, std::chrono::milliseconds timeout) {
  struct Call {
    const std::function<void()>* fn;
    std::atomic<bool> published{false};  // the hand-over in C++ terms (the EAL's is a timerfd)
    std::atomic<bool> done{false};
  } call{&fn};
  auto trampoline = [](void* arg) {
    auto* c = static_cast<Call*>(arg);
    while (!c->published.load(std::memory_order_acquire)) {
    }
    (*c->fn)();
    c->done.store(true, std::memory_order_release);
  };
  call.published.store(true, std::memory_order_release);
  if (rte_eal_alarm_set(1, trampoline, &call) != 0) {
    fn();  // no interrupt thread to run it on
    return;
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!call.done.load(std::memory_order_acquire)) {
    if (std::chrono::steady_clock::now() > deadline && rte_eal_alarm_cancel(trampoline, &call) > 0) {
      fn();  // the interrupt thread is stuck: never ran it, never will
      return;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

Port::Port(const config::Port& cfg, const std::string& name, rte_mempool* pool, std::uint16_t queues,
           const wire::Mac& mac, bool ring_lead, std::uint16_t mtu)
    : name_(name), kind_(cfg.kind), queues_(queues) {
  try {
    open(cfg, pool, mac, ring_lead, mtu);
  } catch (...) {
    close();  // whatever was made so far goes
    throw;
  }
}

void Port::open(const config::Port& cfg, rte_mempool* pool, const wire::Mac& mac, bool ring_lead, std::uint16_t mtu) {
  const std::uint16_t queues = queues_;
  if (cfg.fault.any()) fault_ = std::make_unique<FaultInjector>(cfg.fault, queues);
  const std::string& name = name_;
  const int pool_socket = pool->socket_id;
  std::string args;
  switch (cfg.kind) {
    case config::PortKind::kRing: {
      // Two SP/SC rings per queue: a->b and b->a. The lead end transmits into a->b.
      std::vector<rte_ring*> rx(queues), tx(queues);
      for (std::uint16_t q = 0; q < queues; ++q) {
        const std::string ab = fmt::format("nv{}{}ab", cfg.pair, q), ba = fmt::format("nv{}{}ba", cfg.pair, q);
        rte_ring* r_ab = ring_acquire(ab, 4096, pool_socket);
        rte_ring* r_ba = ring_acquire(ba, 4096, pool_socket);
        rx[q] = ring_lead ? r_ba : r_ab;
        tx[q] = ring_lead ? r_ab : r_ba;
      }
      ring_pair_ = cfg.pair;
      vdev_ = "net_ring_" + name;  // rte_eth_from_rings adds the prefix itself
      const int id = rte_eth_from_rings(name.c_str(), rx.data(), queues, tx.data(), queues,
                                        static_cast<unsigned>(pool_socket));
      if (id < 0) fail(name, "rte_eth_from_rings", rte_errno);
      id_ = static_cast<std::uint16_t>(id);
      break;
    }
    case config::PortKind::kMemif:
      vdev_ = "net_memif_" + name;
      // One memif buffer per frame: jumbo frames get 16 KiB buffers instead of chains of 2 KiB.
      args = fmt::format("role={},socket={},socket-abstract=no,id=0,mac={},bsize={}", cfg.role, cfg.socket,
                         mac_arg(mac), mtu <= 1500 ? 2048 : 16384);
      if (cfg.role == "server") {
        memif_socket_ = cfg.socket;
        ::unlink(cfg.socket.c_str());  // a stale socket of a process that died
      } else {
        memif_client_ = true;
        memif_dial_ = cfg.socket;
      }
      break;
    case config::PortKind::kAfPacket:
      vdev_ = "net_af_packet_" + name;
      // The kernel's packet ring is the RX queue: size it like one (rx_desc frames of 2 KiB).
      // The kernel's packet ring is the RX queue: size it like one (rx_desc frames, each big
      // enough for a whole frame of the MTU).
      {
        const unsigned framesz = frame_room(mtu);
        const unsigned blocksz = std::max(framesz, 4096u);
        const unsigned framecnt = mtu <= 1500 ? cfg.rx_desc : std::min<unsigned>(cfg.rx_desc, 1024);
        args = fmt::format("iface={},qpairs={},qdisc_bypass=1,blocksz={},framesz={},framecnt={}", cfg.iface, queues,
                           blocksz, framesz, framecnt / (blocksz / framesz) * (blocksz / framesz));
      }
      break;
    case config::PortKind::kAfXdp:
      vdev_ = "net_af_xdp_" + name;
      args = fmt::format("iface={},start_queue=0,queue_count={}", cfg.iface, queues);
      break;
    case config::PortKind::kTap:
      vdev_ = "net_tap_" + name;
      args = fmt::format("iface={},mac={}", cfg.iface, mac_arg(mac));
      break;
    case config::PortKind::kNull:
      vdev_ = "net_null_" + name;
      args = "no-rx=1";
      break;
    case config::PortKind::kPci: {
      std::uint16_t id = 0;
      if (rte_eth_dev_get_port_by_name(cfg.address.c_str(), &id) != 0)
        throw std::runtime_error(fmt::format("port {}: PCI device {} not found (bound to a DPDK driver and allowed?)",
                                             name, cfg.address));
      id_ = id;
      break;
    }
  }
  if ((cfg.kind == config::PortKind::kAfPacket || cfg.kind == config::PortKind::kAfXdp) &&
      if_nametoindex(cfg.iface.c_str()) == 0)
    throw std::runtime_error(fmt::format("port {}: interface '{}' does not exist in this network namespace",
                                         name, cfg.iface));
  if (cfg.kind != config::PortKind::kRing && cfg.kind != config::PortKind::kPci) {
    if (const int rc = rte_vdev_init(vdev_.c_str(), args.c_str()); rc != 0) {
      vdev_.clear();
      fail(name, fmt::format("creating {} ({})", to_string(cfg.kind), args), rc);
    }
    std::uint16_t id = 0;
    if (rte_eth_dev_get_port_by_name(vdev_.c_str(), &id) != 0) fail(name, "port lookup", ENODEV);
    id_ = id;
    if (cfg.kind == config::PortKind::kAfPacket) {
      packet_fds_ = packet_sockets_on(cfg.iface);
      frag_fd_ = fragment_counter(if_nametoindex(cfg.iface.c_str()));
    }
  }

  const int dev_socket = rte_eth_dev_socket_id(id_);
  socket_ = dev_socket >= 0 ? dev_socket : pool_socket;

  rte_eth_dev_info info{};
  if (const int rc = rte_eth_dev_info_get(id_, &info); rc != 0) fail(name, "device info", rc);
  if (queues > info.max_rx_queues || queues > info.max_tx_queues)
    throw std::runtime_error(fmt::format("port {}: {} queues requested, device has {} RX / {} TX", name, queues,
                                         info.max_rx_queues, info.max_tx_queues));
  rte_eth_conf conf{};
  // The device fills in IPv4 header checksums where it can (TX offload), saving the sum.
  if ((info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_IPV4_CKSUM) != 0) {
    conf.txmode.offloads |= RTE_ETH_TX_OFFLOAD_IPV4_CKSUM;
    csum_offload_ = true;
  }
  // Chained mbufs (a header mbuf in front of a shared payload: multicast fan-out) where the
  // device sends them; elsewhere the fan-out copies the payload.
  if ((info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_MULTI_SEGS) != 0) {
    conf.txmode.offloads |= RTE_ETH_TX_OFFLOAD_MULTI_SEGS;
    chains_ = true;
  }
  if (const int rc = rte_eth_dev_configure(id_, queues, queues, &conf); rc != 0) fail(name, "configure", rc);
  const bool kernel_port = cfg.kind == config::PortKind::kAfPacket || cfg.kind == config::PortKind::kAfXdp ||
                           cfg.kind == config::PortKind::kTap;
  if (mtu != 1500 && !kernel_port) {
    // Jumbo frames: PMDs without an MTU setting (ring, null, memif) carry any frame that fits
    // the mbuf; NICs must accept it. For kernel-backed ports the interface's own MTU rules
    // (ip link set dev IFACE mtu N).
    const int rc = rte_eth_dev_set_mtu(id_, mtu);
    if (rc != 0 && rc != -ENOTSUP) fail(name, fmt::format("MTU {}", mtu), rc);
  }
  std::uint16_t rxd = cfg.rx_desc, txd = cfg.tx_desc;
  if (const int rc = rte_eth_dev_adjust_nb_rx_tx_desc(id_, &rxd, &txd); rc != 0) fail(name, "descriptor counts", rc);
  for (std::uint16_t q = 0; q < queues; ++q) {
    if (const int rc = rte_eth_rx_queue_setup(id_, q, rxd, static_cast<unsigned>(socket_), nullptr, pool); rc != 0)
      fail(name, fmt::format("RX queue {}", q), rc);
    if (const int rc = rte_eth_tx_queue_setup(id_, q, txd, static_cast<unsigned>(socket_), nullptr); rc != 0)
      fail(name, fmt::format("TX queue {}", q), rc);
  }
  {
    // The node's address on every port, where the device lets us set it; checked below.
    rte_ether_addr a;
    std::copy(mac.begin(), mac.end(), a.addr_bytes);
    rte_eth_dev_default_mac_addr_set(id_, &a);
  }
  // A memif client cannot start before its server has created the socket: retry for a while,
  // so the two ends of a link may be started in any order.
  const bool memif_client = cfg.kind == config::PortKind::kMemif && cfg.role == "client";
  const auto start_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(memif_client ? 10 : 0);
  while (true) {
    if (memif_client && !std::filesystem::exists(cfg.socket) &&
        std::chrono::steady_clock::now() < start_deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      continue;
    }
    const int rc = rte_eth_dev_start(id_);
    if (rc == 0) break;
    if (std::chrono::steady_clock::now() >= start_deadline) fail(name, "start", rc);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  started_ = true;
  rte_ether_addr a{};
  rte_eth_macaddr_get(id_, &a);
  std::copy(std::begin(a.addr_bytes), std::end(a.addr_bytes), mac_.begin());
  // A ring is two queues in memory: no wire, no address of its own. It carries the node's.
  if (cfg.kind == config::PortKind::kRing || cfg.kind == config::PortKind::kNull) mac_ = mac;
  if (mac_ != mac) {
    const std::string have = config::format_mac(mac_), want = config::format_mac(mac);
    throw std::runtime_error(fmt::format(
        "port {}: the device keeps MAC {}, but peers send to the node's mac {} (set the node's mac to {}, "
        "or give the interface the node's address)", name, have, want, have));
  }
}

PortStats Port::stats() const noexcept {
  PortStats s{};
  rte_eth_stats_get(id_, &s.eth);
  if (!packet_fds_.empty() || frag_fd_ >= 0) {
    const std::lock_guard lock(drops_mu_);
    for (const int fd : packet_fds_) {
      tpacket_stats st{};
      socklen_t len = sizeof st;
      if (getsockopt(fd, SOL_PACKET, PACKET_STATISTICS, &st, &len) == 0) kernel_drops_ += st.tp_drops;
    }
    if (frag_fd_ >= 0) {
      tpacket_stats st{};
      socklen_t len = sizeof st;
      // tp_packets: every frame that passed the filter, kept or dropped for want of room.
      if (getsockopt(frag_fd_, SOL_PACKET, PACKET_STATISTICS, &st, &len) == 0) fragments_ += st.tp_packets;
    }
    s.eth.imissed += kernel_drops_;
    s.ip_fragments = fragments_;
  }
  return s;
}

bool Port::steer_lanes_by_dscp() noexcept {
  if (queues_ < wire::kPriorities) return false;
  for (unsigned l = 0; l < wire::kPriorities; ++l) {
    rte_flow_attr attr{};
    attr.ingress = 1;
    rte_flow_item_ipv4 spec{}, mask{};
    spec.hdr.type_of_service = static_cast<std::uint8_t>(wire::kDscp[l] << 2);
    mask.hdr.type_of_service = 0xfc;  // DSCP; ECN ignored
    rte_flow_item pattern[3]{};
    pattern[0].type = RTE_FLOW_ITEM_TYPE_ETH;
    pattern[1].type = RTE_FLOW_ITEM_TYPE_IPV4;
    pattern[1].spec = &spec;
    pattern[1].mask = &mask;
    pattern[2].type = RTE_FLOW_ITEM_TYPE_END;
    rte_flow_action_queue queue{static_cast<std::uint16_t>(l)};
    rte_flow_action actions[2]{};
    actions[0].type = RTE_FLOW_ACTION_TYPE_QUEUE;
    actions[0].conf = &queue;
    actions[1].type = RTE_FLOW_ACTION_TYPE_END;
    rte_flow_error err{};
    if (rte_flow_validate(id_, &attr, pattern, actions, &err) != 0 ||
        rte_flow_create(id_, &attr, pattern, actions, &err) == nullptr) {
      rte_flow_flush(id_, &err);
      return false;
    }
  }
  flows_ = true;
  return true;
}

Port::~Port() { close(); }

void Port::close() noexcept {
  // A redial still to run is dropped; one running is waited for (rte_eal_alarm_cancel).
  if (memif_client_) rte_eal_alarm_cancel(&Port::redial_now, this);
  fault_.reset();  // frames it holds go back to their pool
  if (frag_fd_ >= 0) ::close(frag_fd_);
  frag_fd_ = -1;
  if (id_ != RTE_MAX_ETHPORTS) stop_and_remove();
  id_ = RTE_MAX_ETHPORTS;
  if (!ring_pair_.empty()) {
    for (std::uint16_t q = 0; q < queues_; ++q) {
      ring_release(fmt::format("nv{}{}ab", ring_pair_, q));
      ring_release(fmt::format("nv{}{}ba", ring_pair_, q));
    }
    ring_pair_.clear();
  }
  if (!memif_socket_.empty()) ::unlink(memif_socket_.c_str());
  memif_socket_.clear();
}

void Port::stop_and_remove() noexcept {
  // Stop, close and remove the device on the interrupt thread, where the PMD's own callbacks
  // run (memif: the peer's connect and disconnect): a peer that goes away meanwhile cannot have
  // its disconnect handled on a device half torn down, or after the EAL has unmapped it.
  run_on_interrupt_thread([this] {
    if (flows_) {
      rte_flow_error err{};
      rte_flow_flush(id_, &err);
    }
    if (started_) rte_eth_dev_stop(id_);
    rte_eth_dev_close(id_);
    if (!vdev_.empty()) rte_vdev_uninit(vdev_.c_str());
    // The listener DPDK 22.11's memif leaves registered (intr_registry.hpp).
    if (!memif_socket_.empty()) release_unix_listener(memif_socket_);
  });
}

bool Port::link_up() const noexcept {
  rte_eth_link link{};
  if (rte_eth_link_get_nowait(id_, &link) != 0) return false;
  return link.link_status == RTE_ETH_LINK_UP;
}

bool Port::redial() noexcept {
  if (!memif_client_ || redial_pending_.load(std::memory_order_acquire)) return false;
  std::error_code ec;
  if (!std::filesystem::exists(memif_dial_, ec)) return false;  // no server: nothing to dial
  redial_pending_.store(true, std::memory_order_relaxed);
  if (rte_eal_alarm_set(1, &Port::redial_now, this) != 0) {
    redial_pending_.store(false, std::memory_order_relaxed);
    return false;
  }
  return true;
}

void Port::redial_now(void* port) {
  auto* p = static_cast<Port*>(port);
  DatapathGuard::pause_all();
  if (p->id_ != RTE_MAX_ETHPORTS) {
    p->redials_.fetch_add(1, std::memory_order_relaxed);
    if (p->started_) rte_eth_dev_stop(p->id_);
    p->started_ = rte_eth_dev_start(p->id_) == 0;
  }
  DatapathGuard::resume_all();
  p->redial_pending_.store(false, std::memory_order_release);
}

bool Port::wait_link(std::chrono::milliseconds timeout) const noexcept {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!link_up()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

Mempool::Mempool(const std::string& name, std::uint32_t mbufs, int socket, std::uint16_t mtu) {
  const unsigned room = RTE_PKTMBUF_HEADROOM + frame_room(mtu);  // 2176 at 1500, the DPDK default
  pool_ = rte_pktmbuf_pool_create(name.c_str(), mbufs, 256, 0, static_cast<std::uint16_t>(room), socket);
  if (!pool_)
    throw std::runtime_error(fmt::format("mempool {} ({} mbufs on socket {}): {}", name, mbufs, socket,
                                         rte_strerror(rte_errno)));
}

Mempool::~Mempool() { rte_mempool_free(pool_); }

unsigned Mempool::available() const noexcept { return rte_mempool_avail_count(pool_); }

}  // namespace nerve::drivers
