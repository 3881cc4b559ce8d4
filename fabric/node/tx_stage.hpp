// The TX stage: route, encode, lanes, scheduler, burst.
//
// send() picks the link to the destination from the forwarding table (route::Fib: the lane's
// metric, the first candidate link that is up, equal-cost paths spread by flow), writes the
// frame's headers from the destination's template (copy, then patch the link's MACs, lengths,
// ids, timestamp, IPv4 checksum; or leave the checksum to the port where it offloads it) and
// queues it on its lane of the link's port. send_tree() sends a broadcast or multicast to this
// node's children in its own tree: one copy per child, each its own header in front of the one
// payload (shared by reference count; copied only for ports that cannot send chained mbufs).
// forward() queues a transit frame whose headers the forward stage rewrote in place.
// A send asking for two paths (SendOptions::paths) goes over the table's pair of disjoint
// paths when both are up: the frame on the first, a copy (its own header in front of the
// shared payload) with the second-path flag on the second.
// drain() hands queued frames to the ports:
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
#include "datapath_guard.hpp"
#include "idle.hpp"
#include "nerve/clock.hpp"
#include "nerve/node.hpp"
#include "nerve/stats.hpp"
#include "ports.hpp"
#include "routing.hpp"

namespace nerve::node {

class TxStage {
 public:
  TxStage(NodePorts& ports, Routing& routing, const config::Node& cfg, rte_mempool* pool, std::size_t max_payload,
          Clock& clock, stats::LcoreStats& st, IdlePolicy& idle, drivers::DatapathGuard::Section& guard, P0Watch& p0);
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
  // otherwise the caller still does. `corr_id` is the request a response answers. `via`, when
  // given, receives the neighbour the frame leaves for.
  SendStatus send(rte_mbuf* m, NodeId dst, MsgType type, std::uint8_t prio, const SendOptions& o,
                  std::uint32_t corr_id = 0, NodeId* via = nullptr) noexcept {
    return send_frame(m, dst, type, prio, o, corr_id, via, nullptr);
  }
  // Reliable delivery's fields of a frame (reliable_stage.hpp).
  struct Sequenced {
    std::uint32_t session = 0, seq = 0, ack = 0;
    // A fragment of a large message: the message's id (shared by its fragments; 0: a new id),
    // its index and count (1: not a fragment).
    std::uint32_t msg_id = 0;
    std::uint16_t frag_index = 0, frag_count = 1;
    // A full lane does not refuse the frame: its headers are written and it is kept unsent
    // (kOk), for the reliable stage's retransmission timer to send (a copy of a reliable
    // broadcast: the other copies are already sent).
    bool hold = false;
  };
  // send() of a reliable frame: its header carries the kReliable flag, `sq` and a UDP checksum.
  // On kOk the caller (the reliable stage) keeps a reference to `m` for retransmission; a port
  // that hands the mbuf itself to its peer (ring) is given a copy, so the receiver never
  // touches the kept one.
  SendStatus send_reliable(rte_mbuf* m, NodeId dst, MsgType type, std::uint8_t prio, const SendOptions& o,
                           std::uint32_t corr_id, const Sequenced& sq) noexcept {
    return send_frame(m, dst, type, prio, o, corr_id, nullptr, &sq);
  }
  // Sends kept reliable frame `m` (headers at its data) again, to dense index `di`, over the
  // link its route picks now, with its ack field set to `ack`. The caller keeps its reference.
  // A copy is sent while anything else still holds the mbuf (an earlier transmission a device
  // has not reclaimed yet, a ring port). kBackpressure when the lane is full or no copy could
  // be made.
  SendStatus resend(rte_mbuf* m, std::uint32_t di, std::uint8_t prio, std::uint32_t ack) noexcept;
  // An acknowledgement (payload at m's data) of `session` up to `ack` to `dst`, on lane `prio`,
  // granting `credit` frames after `ack` (carried in the sequence field).
  SendStatus send_ack(rte_mbuf* m, NodeId dst, std::uint8_t prio, std::uint32_t session, std::uint32_t ack,
                      std::uint32_t credit) noexcept {
    const Sequenced sq{session, credit, ack};
    return send_frame(m, dst, MsgType::kAck, prio, SendOptions{.never_shed = true}, 0, nullptr, &sq);
  }
  // A `fabric` message to the peer of link `slot`, on that link (heartbeats, advertisements).
  // Never shed; a full lane refuses it (kBackpressure).
  SendStatus send_link(rte_mbuf* m, std::size_t slot, std::uint8_t prio) noexcept;
  // A frame to `dst` with m's payload (as alloc() made it) behind a header mbuf of its own, by
  // reference (copy_of() for the port dst's route takes now), for send_reliable(). nullptr when
  // there is no route or the pool is dry.
  rte_mbuf* share(rte_mbuf* m, NodeId dst, std::uint8_t prio, std::uint16_t channel) noexcept;
  // A broadcast (group < 0: every node) or multicast (group = the group's index in the cluster
  // file, `group_id` its id) from this node, down its own tree. kOk with no copy at all when
  // no other node is to receive it.
  SendStatus send_tree(rte_mbuf* m, int group, std::uint16_t group_id, MsgType type, std::uint8_t prio,
                       const SendOptions& o) noexcept;
  // Copies of a received broadcast/multicast frame `m` (headers at its data) to this node's
  // children in `src`'s tree (multicast: those whose subtree has a member of group bit `group`),
  // each with its own rewritten headers. `m` stays the caller's. Returns the copies sent.
  unsigned fan_out(rte_mbuf* m, std::uint32_t src, int group, std::uint8_t prio) noexcept;
  // Transit frame `m` (headers already rewritten for `slot`) out of the link's port on lane
  // `prio`. P0 is queued at once (and so leaves at once); P1-P4 gather per port until
  // forward_flush() (the end of the burst being dispatched, at the latest the next drain()),
  // which hands a port's gathered frames over as one burst when they are of one lane and
  // nothing is queued ahead of them (a short burst while P0 flows, the rest queued behind it),
  // and queues them frame by frame otherwise. A full P0-P2
  // lane drops a frame (counted: forward_dropped); P3/P4 shed the oldest.
  void forward(rte_mbuf* m, std::size_t slot, std::uint8_t prio) noexcept { forward(&m, 1, slot, prio); }
  // forward() of frames ms[0, n), all for `slot` on lane `prio`, in order.
  void forward(rte_mbuf* const* ms, std::uint16_t n, std::size_t slot, std::uint8_t prio) noexcept;
  unsigned forward_flush() noexcept;  // returns the frames handed to ports at once

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
  // Takes the next id for a message sent as fragments (Sequenced::msg_id, where 0 means none).
  std::uint32_t take_msg_id() noexcept {
    if (next_msg_id_ == 0) ++next_msg_id_;
    return next_msg_id_++;
  }
  std::size_t max_payload() const noexcept { return max_payload_; }
  unsigned stashed() const noexcept { return stash_n_; }  // allocated, not handed out yet

 private:
  struct PortTx {
    explicit PortTx(const lane::LaneConfig& c) : lanes(c) {}
    lane::TxLanes<rte_mbuf> lanes;
    bool paired = false;
    bool csum_offload = false;
    bool chains = false;  // the port sends chained mbufs (RTE_ETH_TX_OFFLOAD_MULTI_SEGS)
    bool shares = false;  // the port hands the mbuf itself to its peer (ring): no references kept
    // Transit frames gathered for this port (forward()), and their lanes.
    std::array<rte_mbuf*, kBurst> fwd{};
    std::array<std::uint8_t, kBurst> fwd_prio{};
    std::uint16_t fwd_n = 0;
  };
  void forward_one(rte_mbuf* m, std::size_t port, std::uint8_t prio) noexcept;
  unsigned forward_port(std::size_t port) noexcept;

  SendStatus send_frame(rte_mbuf* m, NodeId dst, MsgType type, std::uint8_t prio, const SendOptions& o,
                        std::uint32_t corr_id, NodeId* via, const Sequenced* sq) noexcept;
  // A kept reliable frame on its way out of `port`: a reference, or a copy for a port that
  // shares mbufs with its peer. False when no copy could be made (the frame waits for its
  // retransmission).
  bool enqueue_kept(rte_mbuf* m, std::size_t port, std::uint8_t prio, bool more) noexcept;
  // Writes the headers of `copy` (copy_of(m), to go over link `slot`): `h` (m's) with the
  // second-path flag; a UDP checksum taken from m's (written) and updated.
  void second_headers(rte_mbuf* copy, const rte_mbuf* m, std::uint32_t di, std::size_t slot, wire::Header h) noexcept;
  // A copy of `m` from the TX pool with its offload fields; null (counted) when the pool is empty.
  rte_mbuf* tx_copy(const rte_mbuf* m) noexcept;
  bool refill() noexcept;
  // The first link slot that is up to the neighbour with dense index `peer_idx`; -1: none.
  int up_slot_to(std::uint32_t peer_idx) const noexcept {
    for (std::size_t s = 0; s < r_.links.size(); ++s)
      if (r_.links[s].peer_idx == peer_idx && ((r_.up >> s) & 1u)) return static_cast<int>(s);
    return -1;
  }
  // Lane room for one more frame of `prio` on `port` (flushing a burst first if needed);
  // counts the back-pressure when there is none.
  bool room(std::size_t port, std::uint8_t prio, bool never_shed) noexcept;
  // Queues `m` (headers written) on lane `prio` of `port`; a lone P0 frame goes straight out.
  void enqueue(rte_mbuf* m, std::size_t port, std::uint8_t prio, bool more) noexcept;
  // The headers of a frame to dense index `di` over link `l`, into the mbuf's headroom.
  void write_headers(rte_mbuf* m, std::uint32_t di, const Link& l, const wire::Header& h) noexcept;
  // A copy of frame `m`'s payload (from `payload_off` on) behind a new header mbuf (chained;
  // or copied whole for a port that cannot send chains). nullptr when the pool is dry.
  rte_mbuf* copy_of(rte_mbuf* m, std::uint16_t payload_off, std::size_t port) noexcept;
  std::uint32_t flow_of(std::uint16_t src, std::uint16_t dst, std::uint16_t channel) const noexcept {
    return (std::uint32_t{src} * 0x9e3779b1u) ^ (std::uint32_t{dst} * 0x85ebca6bu) ^ (std::uint32_t{channel} * 0xc2b2ae35u);
  }
  unsigned flush_lane(std::size_t p, unsigned lane, unsigned max_bursts) noexcept;
  unsigned flush_sched(std::size_t p, unsigned max_bursts) noexcept;
  // Hands up to n frames to port p's queue q; returns how many it took (their bytes in
  // *sent_bytes when given).
  unsigned tx(std::size_t p, std::uint16_t q, rte_mbuf** burst, std::uint16_t n,
              std::uint64_t* sent_bytes = nullptr) noexcept;

  NodePorts& ports_;
  Routing& r_;
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
  std::uint64_t fwd_dirty_ = 0;  // bit p: port p has transit frames gathered (forward())
};

}  // namespace nerve::node
