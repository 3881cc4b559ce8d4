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
          drivers::DatapathGuard::Section& guard);
  ~TxStage();
  TxStage(const TxStage&) = delete;
  TxStage& operator=(const TxStage&) = delete;

  // An mbuf with `payload_len` bytes of payload appended; nullptr when the pool is empty
  // (counted) or the payload does not fit one frame.
  rte_mbuf* alloc(std::size_t payload_len) noexcept;

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
  // The id the next message sent will carry.
  std::uint32_t next_msg_id() const noexcept { return next_msg_id_; }
  std::size_t max_payload() const noexcept { return max_payload_; }

 private:
  struct PortTx {
    explicit PortTx(const lane::LaneConfig& c) : lanes(c) {}
    lane::TxLanes<rte_mbuf> lanes;
    bool paired = false;
    bool csum_offload = false;
  };

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
  NodeId self_;
  std::uint32_t next_msg_id_;
};

}  // namespace nerve::node
