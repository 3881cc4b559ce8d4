// The link stage: heartbeats and the routing protocol's traffic on the datapath.
//
// Every 1/heartbeat_hz, on every link: a heartbeat (P0, wire type `fabric`) carrying the echo of
// the peer's last heartbeat on that link (its timestamp and how long it was held) and this
// node's link-state database digest. A heartbeat received marks its link up, gives a round-trip
// sample (now - echoed timestamp - hold; smoothed), and the peer's digest. A link that has not
// heard a heartbeat for heartbeat_miss periods and a half (the half: arrival jitter) is down
// at that moment (fabric frames on a port with one link count as hearing its peer: traffic()),
// not at the next heartbeat (the timer is armed for the earliest such deadline
// too): its bit leaves the up mask at once, so routes move to their alternates before any
// advertisement has gone out. With heartbeat_hz = 0 there are no heartbeats and every link
// stays up.
//
// Where reading a port's link state costs no system call (memif: its peer's control socket
// closing takes it down, as a dead peer's does; ring), a link whose port went down after it
// had been up is down at the next tick, without waiting for the deadline, and a heartbeat does
// not bring it up again until the port is up.
//
// Link-state advertisements received are posted to the routing agent's inbox as they are
// (decoding allocates; the agent does it); advertisements the agent wants flooded come back
// through the outbox and leave here, on P1, on the link the agent names.
//
// Owner thread only; LinkShared (links.hpp) publishes what the agent reads.
#pragma once

#include <rte_mbuf.h>

#include <atomic>
#include <cstdint>
#include <vector>

#include "nerve/stats.hpp"
#include "port.hpp"
#include "routing.hpp"
#include "timer_stage.hpp"
#include "tx_stage.hpp"

namespace nerve::node {

class LinkStage {
 public:
  // Writes routing.up (the links that may carry frames, bit = slot).
  // `carrier[s]`: the port of link slot s where its link state is read at each tick, or
  // nullptr (shorter than the links: the rest nullptr).
  LinkStage(const config::Cluster& c, Routing& routing, TxStage& tx, stats::LcoreStats& st, TimerStage& timers,
            std::uint64_t now_ns, std::vector<const drivers::Port*> carrier = {});

  // A `fabric` frame for this node that arrived on `port` in a burst read at `now_ns`: handled
  // and freed. Refused (bad_fabric) when it does not parse or its sender is not a neighbour
  // on that port.
  void receive(std::size_t port, const wire::Decoded& d, rte_mbuf* m, std::uint64_t now_ns) noexcept;
  // Frames of the fabric (past the codec's checks) arrived on `port` in a burst read at
  // `now_ns`: where the port has one link, its peer is alive, heartbeat or not (a heartbeat
  // may wait behind a backlog of its data in a shared queue).
  void traffic(std::size_t port, std::uint64_t now_ns) noexcept {
    if (port < port_rx_ns_.size()) port_rx_ns_[port] = now_ns;
  }
  // Sends what the agent posted, up to kOutboxPerRun letters. Returns the letters sent.
  unsigned run() noexcept;

  static constexpr unsigned kOutboxPerRun = 32;

 private:
  static void on_timer(void* ctx, std::uint64_t now_ns) noexcept;
  void tick(std::uint64_t now_ns) noexcept;
  void heartbeat(std::size_t slot, std::uint64_t now_ns) noexcept;
  void refuse(rte_mbuf* m) noexcept;

  bool carrier_down(std::size_t slot) noexcept;

  struct State {
    std::uint64_t last_heard_ns = 0;
    std::uint64_t echo_ts_ns = 0;   // the peer's last heartbeat's timestamp
    std::uint64_t echo_rx_ns = 0;   // when it arrived here
    std::uint32_t rtt_ns = 0;       // smoothed
    bool carrier_seen = false;      // its port's link has been up (carrier_ only)
    bool granted = false;           // given a period after a stall of this node since last heard
  };

  LinkTable& links_;
  TxStage& tx_;
  Mailbox& inbox_;
  Mailbox& outbox_;
  stats::LcoreStats& st_;
  const std::atomic<std::uint64_t>& digest_;
  std::vector<State> state_;
  std::vector<const drivers::Port*> carrier_;  // by slot
  std::vector<std::uint64_t> port_rx_ns_;       // by port: fabric frames last arrived
  std::vector<bool> sole_;                      // by slot: the only link of its port
  std::uint64_t& up_;
  std::uint64_t period_ns_ = 0;     // 0: no heartbeats
  std::uint64_t dead_after_ns_ = 0;
  std::uint64_t due_ns_ = 0;        // the next heartbeat
  bool started_ = false;            // the first tick has run
  const TimerStage& timers_;
  Timer timer_;
};

}  // namespace nerve::node
