// The TX stage: encode, lanes, scheduler, burst.
//
// send() writes a frame's headers from its route's template (copy, then patch lengths, ids,
// timestamp, IPv4 checksum; or leave the checksum to the port where it offloads it) and queues
// it on its lane of the route's port. drain() hands queued frames to the ports:
//   - P0 first and whole, on every port;
//   - then at most one burst of each lower lane (paired queues: lane i on TX queue i; one
//     shared queue: one burst in the scheduler's order, strict priority with minimum shares),
// so a P0 frame never waits behind more than one lower-lane burst, whatever the backlog.
// A P0 send without `more` leaves at once (P0 only); a lower lane leaves once it holds a burst.
// A port that takes less than offered keeps the rest at the head of their lanes.
//
// Overflow (lane/tx_lanes.hpp): P0-P2 push back; P3/P4 shed their oldest frame unless the
// sender asked never_shed (counted bulk sends, responses), which pushes back instead.
//
// Owner thread only. Counters are added once per burst.
#pragma once

#include <rte_mbuf.h>
#include <rte_prefetch.h>

#include <array>
#include <cstdint>
#include <deque>

#include "../lane/tx_lanes.hpp"
#include "../route/route_table.hpp"
#include "datapath_guard.hpp"
#include "idle.hpp"
#include "nerve/clock.hpp"
#include "nerve/node.hpp"
#include "nerve/stats.hpp"
#include "ports.hpp"

namespace nerve::node {

class TxStage {
 public:
  TxStage(NodePorts& ports, const route::RouteTable& routes, const config::Node& cfg, rte_mempool* pool,
          std::size_t max_payload, Clock& clock, stats::LcoreStats& st, IdlePolicy& idle,
          drivers::DatapathGuard::Section& guard, P0Watch& p0);
  ~TxStage();
  TxStage(const TxStage&) = delete;
  TxStage& operator=(const TxStage&) = delete;

  // An mbuf with `payload_len` bytes of payload appended; nullptr when the pool is empty
  // (counted) or the payload does not fit one frame. Taken from a stash the stage refills a
  // burst at a time (rte_pktmbuf_alloc_bulk).
  rte_mbuf* alloc(std::size_t payload_len) noexcept {
    if (payload_len > max_payload_) [[unlikely]]
      return nullptr;
    if (stash_n_ == 0 && !refill()) [[unlikely]]
      return nullptr;
    rte_mbuf* m = stash_[--stash_n_];
    if (stash_n_ != 0) rte_prefetch0(stash_[stash_n_ - 1]);  // the next one's header, ahead of use
    // Headroom (RTE_PKTMBUF_HEADROOM, 128 B) takes the 90 bytes of headers at send().
    m->data_len = static_cast<std::uint16_t>(payload_len);
    m->pkt_len = static_cast<std::uint32_t>(payload_len);
    return m;
  }

  // Sends `m` (payload at its data, as alloc() made it) to `dst`. On kOk the stage owns `m`;
  // otherwise the caller still does. `corr_id` is the request a response answers.
  SendStatus send(rte_mbuf* m, NodeId dst, MsgType type, std::uint8_t prio, const SendOptions& o,
                  std::uint32_t corr_id = 0) noexcept;

  unsigned drain() noexcept;      // one poll's worth (above); returns frames handed over
  unsigned flush_all() noexcept;  // everything the ports take now
  void free_all() noexcept;       // drops what is queued (shutdown)

  std::uint32_t waiting() const noexcept;
  std::uint32_t queued(std::size_t port, unsigned lane) const noexcept { return ports_tx_[port].lanes.size(lane); }
  bool ip_checksum_offload(std::size_t port) const noexcept { return ports_tx_[port].csum_offload; }
  // While a burst is delivered, sends from its handlers carry the burst's receive time rather
  // than read the clock again (a read costs ~17 ns on a VM; the burst is µs old at most).
  void lend_now(std::uint64_t now_ns) noexcept { lent_ns_ = now_ns; }
  void end_lend() noexcept { lent_ns_ = 0; }

  // The id the next message sent will carry.
  std::uint32_t next_msg_id() const noexcept { return next_msg_id_; }
  std::size_t max_payload() const noexcept { return max_payload_; }
  unsigned stashed() const noexcept { return stash_n_; }  // allocated, not handed out yet

 private:
  struct PortTx {
    explicit PortTx(const lane::LaneConfig& c) : lanes(c) {}
    lane::TxLanes<rte_mbuf> lanes;
    bool paired = false;
    bool csum_offload = false;
  };

  bool refill() noexcept;
  unsigned flush_lane(std::size_t p, unsigned lane, unsigned max_bursts) noexcept;
  unsigned flush_sched(std::size_t p, unsigned max_bursts) noexcept;
  unsigned tx(std::size_t p, std::uint16_t q, rte_mbuf** burst, std::uint16_t n) noexcept;

  NodePorts& ports_;
  const route::RouteTable& routes_;
  std::deque<PortTx> ports_tx_;  // deque: TxLanes is not movable
  rte_mempool* pool_;
  std::size_t max_payload_;
  Clock& clock_;
  stats::LcoreStats& st_;
  IdlePolicy& idle_;
  drivers::DatapathGuard::Section& guard_;
  P0Watch& p0_;
  NodeId self_;
  std::uint32_t next_msg_id_;
  std::array<rte_mbuf*, kBurst> stash_{};  // allocated, reset, not yet handed out
  unsigned stash_n_ = 0;
  // A batch of sends (SendOptions::more) reads the clock once: its frames leave together.
  bool in_batch_ = false;
  std::uint64_t batch_ns_ = 0;
  std::uint64_t lent_ns_ = 0;  // see lend_now()
  std::uint64_t dirty_ = 0;    // bit p: port p may have frames queued (drain visits only these)
};

}  // namespace nerve::node
