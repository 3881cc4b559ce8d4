// One DPDK port and its queues: the narrow burst interface the fabric sees of a NIC.
//
// Thread ownership: construction and destruction on the control thread; rx_burst/tx_burst on
// queue q only from the lcore that owns q.
#pragma once

#include <rte_ethdev.h>
#include <rte_mbuf.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "fault.hpp"
#include "nerve/config.hpp"

namespace nerve::drivers {

struct PortStats {
  rte_eth_stats eth;
  // IPv4 fragments that reached the port's interface. The af_packet PMD joins its sockets to a
  // fanout group with PACKET_FANOUT_FLAG_DEFRAG, so the kernel reassembles or drops fragments
  // before the node sees them; a socket of our own counts them on the way in. 0 elsewhere:
  // other ports hand fragments to the node, whose codec refuses them (ip_fragment).
  std::uint64_t ip_fragments = 0;
};

// Runs `fn` on the EAL interrupt thread and waits for it (up to `timeout`, then runs it here).
// PMD callbacks (memif's link events, a peer's disconnect) run on that thread: work done there
// cannot race them. Control thread only.
void run_on_interrupt_thread(const std::function<void()>& fn,
                             std::chrono::milliseconds timeout = std::chrono::milliseconds(10000));

class Port {
 public:
  // Creates (virtual kinds) or finds (pci) the device, configures `queues` RX and TX queues
  // with descriptors from cfg, RX buffers from `pool`, and starts it. `name` is unique in the
  // process (it names the virtual device). `mac` is applied where the device lets us choose
  // on every kind that lets us set it (ring, memif, tap, null, af_packet, and NICs that allow
  // it); a port that cannot carry the node's address is an error, since peers address frames
  // to it. For ring ports, `ring_lead` picks which end of the pair transmits into which ring.
  // IPv4 checksum offload is enabled where the device offers it (ip_checksum_offload()).
  // Throws std::runtime_error naming the port and the problem.
  Port(const config::Port& cfg, const std::string& name, rte_mempool* pool, std::uint16_t queues,
       const wire::Mac& mac, bool ring_lead, std::uint16_t mtu = 1500);
  ~Port();
  Port(const Port&) = delete;
  Port& operator=(const Port&) = delete;

  std::uint16_t id() const noexcept { return id_; }
  const std::string& name() const noexcept { return name_; }
  config::PortKind kind() const noexcept { return kind_; }
  int socket() const noexcept { return socket_; }
  const wire::Mac& mac() const noexcept { return mac_; }
  std::uint16_t queues() const noexcept { return queues_; }
  bool ip_checksum_offload() const noexcept { return csum_offload_; }
  bool sends_chains() const noexcept { return chains_; }  // TX of chained mbufs (MULTI_SEGS)

  // Hardware lane steering: one rte_flow rule per priority sends IPv4 frames with that
  // priority's DSCP to RX queue `priority`. False (and no rule left) when the device refuses
  // any of them. Needs wire::kPriorities RX queues.
  bool steer_lanes_by_dscp() noexcept;

  // The device's counters. For af_packet, imissed also counts the frames the kernel dropped
  // because the socket's RX ring was full (PACKET_STATISTICS), which DPDK 22.11 leaves out.
  PortStats stats() const noexcept;

  bool link_up() const noexcept;
  // Polls link state until up or `timeout` passes.
  bool wait_link(std::chrono::milliseconds timeout) const noexcept;

  // A memif client dials its server only when started, and once: a server whose device was not
  // started yet (it refuses the client: "ID not found"), or that stopped or died, leaves the
  // client's link down for good. redial() has the device stopped and started again, which
  // dials again: on the EAL interrupt thread (where the PMD's own callbacks run, so none runs
  // on a device half restarted) with the datapath paused (no burst meets it), as a PMD callback
  // would be. It returns at once (any thread): false when this is not a memif client, its
  // server's socket is missing (nothing to dial), or a redial is pending already.
  bool memif_client() const noexcept { return memif_client_; }
  bool redial() noexcept;
  std::uint64_t redials() const noexcept { return redials_.load(std::memory_order_relaxed); }

  // Through the fault injector when the port's config asks for faults (cfg.fault).
  std::uint16_t rx_burst(std::uint16_t q, rte_mbuf** pkts, std::uint16_t n) noexcept {
    if (fault_) [[unlikely]]
      return fault_->rx(q, pkts, n, [&](rte_mbuf** p, std::uint16_t k) { return rte_eth_rx_burst(id_, q, p, k); });
    return rte_eth_rx_burst(id_, q, pkts, n);
  }
  // Faults injected so far; nullptr when the port injects none.
  const FaultInjector* faults() const noexcept { return fault_.get(); }
  std::uint16_t tx_burst(std::uint16_t q, rte_mbuf** pkts, std::uint16_t n) noexcept {
    return rte_eth_tx_burst(id_, q, pkts, n);
  }

 private:
  void open(const config::Port& cfg, rte_mempool* pool, const wire::Mac& mac, bool ring_lead, std::uint16_t mtu);
  void close() noexcept;
  void stop_and_remove() noexcept;

  std::string name_;
  std::string vdev_;  // the virtual device's name, empty for pci
  std::string ring_pair_;  // ring kind: the pair whose rings we hold a reference to
  std::string memif_socket_;  // removed on close when we were the server
  std::string memif_dial_;    // a client's server socket
  config::PortKind kind_;
  std::uint16_t id_ = RTE_MAX_ETHPORTS;
  std::uint16_t queues_ = 1;
  int socket_ = 0;
  wire::Mac mac_{};
  bool started_ = false;
  bool memif_client_ = false;
  std::atomic<std::uint64_t> redials_{0};
  std::atomic<bool> redial_pending_{false};
  static void redial_now(void* port);  // the interrupt thread's part of redial()
  bool flows_ = false;
  bool csum_offload_ = false;
  bool chains_ = false;
  std::unique_ptr<FaultInjector> fault_;
  std::vector<int> packet_fds_;  // af_packet: the PMD's sockets, read for kernel drops
  int frag_fd_ = -1;             // af_packet: our socket that counts IPv4 fragments
  mutable std::mutex drops_mu_;  // PACKET_STATISTICS resets on read: accumulate under a lock
  mutable std::uint64_t kernel_drops_ = 0;
  mutable std::uint64_t fragments_ = 0;
};

// A pool of packet mbufs on one NUMA socket. Freed on destruction.
class Mempool {
 public:
  // Each mbuf holds one whole frame of `mtu` (plus headroom): frames are never chained.
  Mempool(const std::string& name, std::uint32_t mbufs, int socket, std::uint16_t mtu = 1500);
  ~Mempool();
  Mempool(const Mempool&) = delete;
  Mempool& operator=(const Mempool&) = delete;
  rte_mempool* get() const noexcept { return pool_; }
  unsigned available() const noexcept;

 private:
  rte_mempool* pool_ = nullptr;
};

}  // namespace nerve::drivers
