// The reliable stage: sequencing, acknowledgement, retransmission and in-order delivery, per
// (peer, lane) session, end to end (transit nodes forward reliable frames and acks like any
// other; docs/architecture.md, "Reliable delivery").
//
// Sender, per destination and lane: the next sequence number and a window of kWindow frames
// sent and not yet acknowledged, each kept by reference (zero copy: the mbuf that was sent is
// the one sent again, unless a device still holds it: then a copy). A frame is sent again
//   - at once when the receiver reports a gap before frames it has (its ack's selective bits),
//   - when unacknowledged for the lane's retransmission timeout (the oldest such frame of a
//     session, one per timeout: an ack late behind a queue is not many losses): the measured
//     round trip (smoothed, plus four deviations; sampled only from acks that waited on the
//     link alone) clamped to [kMinRtoNs, the lane's budget / 2] (or to twice the smoothed
//     round trip where that is longer, up to kMaxWaitNs: a queue ahead of the acks), doubling
//     with each timeout of the session in a row up to an eighth of the give-up time or
//     kMaxWaitNs;
//   - at once when an ack (or a response) covers frames that were all sent again: the frames
//     sent before those retransmissions, past their timeout and not held by the receiver, were
//     lost with them (a run swallowed whole; a stalled receiver's late frames would be in the
//     ack), and the receiver is taking frames again;
// and given up when unacknowledged for the cluster's reliable_give_up_ms (the peer is down, or
// unreachable): reported once (Node::on_delivery_failure) and counted, never silent. Every data
// frame's ack field carries the oldest sequence number the sender still holds, so a receiver
// skips what the sender gave up on.
//
// Credit: a session never has more frames unacknowledged than its receiver last granted (each
// ack carries the grant, at most kWindow); a send beyond it is refused (kBackpressure). A
// receiver splits each lane's share of its mbufs (credit_budget()) among the sessions sending
// to it on that lane (heard within kActiveNs, or holding frames; each at least kMinCredit). A
// session starts, and starts again after kActiveNs without an ack, at kInitialCredit. The
// receiver holds no more than the budget on a lane however its senders behave (one granted
// more before others came, a node that ignores grants): a frame beyond it is dropped (counted
// over_credit) and sent again like a lost one, unless it is the one its session waits for.
//
// Receiver, per source and lane: the next sequence number to deliver and a window of frames
// received ahead of it. In order: delivered; ahead: held until the gap fills; behind or held
// already: a duplicate, dropped. After each burst an ack (cumulative, plus 64 selective bits
// after it) goes to every source heard from; one that reports a gap is the negative
// acknowledgement that triggers the sender's retransmission.
//
// Sessions: each start of a node draws a random session number for its senders; a receiver
// that sees a new one starts afresh from the frame's ack field, and drops late frames of the
// session before (stale). Acks name the session they acknowledge.
//
// Large messages (docs/architecture.md, "Large messages"): a message in a send buffer is cut
// into fragments of one frame's payload, each a reliable frame of the session carrying the
// message's id, its index and the count. The fragments are cut as the window opens (each poll,
// feed()), so a 1 MiB message never holds more mbufs than the window; the buffer goes back once
// the last one is sent. Until then the session takes no other reliable send (kBackpressure):
// its order is kept. A lost fragment is sent again alone, like any frame. The receiver
// delivers a session's frames in order, so a message's fragments arrive one after the other:
// they are copied into a reassembly buffer (taken at fragment 0; while none is free, fragment 0
// waits in the window like a frame without room to be delivered, and the sender's window
// stops) and the message is delivered when its last fragment arrives. A reassembly is abandoned
// (counted: join_aborted) when its sender gives it up or restarts, when its fragments do not
// follow each other, and when it has not moved for reliable_give_up_ms and its buffer is
// wanted. A failed large message is reported once.
//
// Owner thread only. Session state (about 200 kB a peer) is allocated when the node starts, for
// the cluster's reliable_peers peers (fewer in a smaller cluster), and given to a peer the first
// time it is sent to or heard from reliably; with every one given, sends to another peer are
// refused (kNoSession) and its frames dropped, counted. Nothing allocates on the datapath.
#pragma once

#include <rte_mbuf.h>

#include <array>
#include <bitset>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "deliver_stage.hpp"
#include "message_buffers.hpp"
#include "nerve/node.hpp"
#include "routing.hpp"
#include "rx_item.hpp"
#include "timer_stage.hpp"
#include "tx_stage.hpp"

namespace nerve::node {

class ReliableStage {
 public:
  static constexpr std::uint32_t kWindow = kReliableWindow;  // frames in flight per (peer, lane)
  static constexpr std::uint64_t kMinRtoNs = 20'000;   // no retransmission sooner than this
  static constexpr unsigned kMaxBackoff = 10;          // a retry waits at most 2^10 timeouts
  static constexpr std::uint64_t kMaxWaitNs = 50'000'000;  // ... and at most 50 ms
  static constexpr std::uint32_t kInitialCredit = kReliableInitialCredit;  // a session's credit before its receiver's first grant
  static constexpr std::uint32_t kMinCredit = 8;       // the least a receiver grants a session
  static constexpr std::uint64_t kActiveNs = 10'000'000;  // a session heard from this recently counts as sending
  static constexpr std::uint64_t kRecountNs = 1'000'000;  // how often a receiver counts its senders again

  // The frames a node's reliable sessions may hold of its mbufs, per lane: a quarter of its pool
  // shared by the lanes (at least kMinCredit).
  static std::uint32_t credit_budget(std::uint32_t mbufs) noexcept {
    return std::max<std::uint32_t>(kMinCredit, mbufs / (4 * wire::kPriorities));
  }

  ReliableStage(const config::Cluster& c, const config::Node& cfg, Routing& r, TxStage& tx, DeliverStage& deliver,
                MessageBuffers& joins, stats::LcoreStats& st);
  ~ReliableStage();
  ReliableStage(const ReliableStage&) = delete;
  ReliableStage& operator=(const ReliableStage&) = delete;

  Timer& timer() noexcept { return timer_; }
  void on_failure(std::function<void(const DeliveryFailure&)> h) { on_failure_ = std::move(h); }

  // A reliable send (Node::send with SendOptions::reliable). On kOk the stage owns `m`.
  SendStatus send(rte_mbuf* m, NodeId dst, MsgType type, std::uint8_t prio, const SendOptions& o,
                  std::uint32_t corr_id = 0) noexcept;
  // A reliable broadcast (group < 0) or multicast (group = the group's index in the cluster
  // file): one reliable frame to each recipient, in its session, m's payload shared by
  // reference behind a header of its own. The recipients: every other node (a group: every
  // member) the routing table reaches now. All or nothing: kBackpressure (nothing sent) unless
  // every recipient's session has credit (and no large message being cut) and the pool has a
  // header for each; kNoSession (nothing taken) when session state would run out. A copy whose
  // lane is full is kept and sent by its retransmission timer. kOk with no copy when nobody is
  // to receive it. On kOk the stage owns `m`.
  SendStatus send_group(rte_mbuf* m, int group, MsgType type, std::uint8_t prio, const SendOptions& o) noexcept;
  // A large message: `len` bytes in send buffer `b`. On kOk the stage owns `b` (and gives it
  // back once every fragment is sent); otherwise the caller still does.
  SendStatus send_large(MessageBuffer* b, std::size_t len, NodeId dst, MsgType type, std::uint8_t prio,
                        const SendOptions& o, std::uint32_t corr_id = 0) noexcept;
  // Whether large messages wait to be cut into fragments; feed() sends what the windows take.
  bool feeding() const noexcept { return !feeding_.empty(); }
  unsigned feed(std::uint64_t now_ns) noexcept;

  // Whether a burst holds anything for this stage (a reliable frame or an ack).
  static bool wanted(const RxItem* items, std::uint16_t n) noexcept {
    std::uint8_t any = 0;
    for (std::uint16_t i = 0; i < n; ++i)
      any |= static_cast<std::uint8_t>((items[i].d.hdr.flags & wire::flag::kReliable) |
                                       (items[i].d.hdr.type == MsgType::kAck));
    return any != 0;
  }
  // The frames for this node of one burst: reliable frames put in order (a large message's
  // fragments into its reassembly buffer) and everything deliverable handed to the deliver
  // stage, in order per session; then the burst's acks are taken. The acks the burst owes go
  // at the start of the next poll (send_acks()).
  void run(RxItem* items, std::uint16_t n, std::uint64_t now_ns) noexcept;
  // Held frames the deliver stage had no room for last time (recv() without a handler).
  void pump(std::uint64_t now_ns) noexcept;
  // The acks the bursts since the last call owe, sent at the start of the next poll(): what
  // a handler sends in answer goes first, and a response that answers the last frame of its
  // session carries the ack itself (the request's sender takes it as one), so none is sent.
  bool acks_due() const noexcept { return !ack_due_.empty(); }
  void send_acks() noexcept;

 private:
  struct TxEntry {
    rte_mbuf* m = nullptr;       // kept reference; nullptr: acknowledged or given up
    std::uint64_t first_ns = 0;  // first transmission
    std::uint64_t sent_ns = 0;   // latest transmission
    std::uint32_t msg_id = 0;
    std::uint16_t channel = 0;
    std::uint8_t retries = 0;
    bool sacked = false;         // the receiver holds it (selective ack)
    bool fragment = false;       // part of a large message (its fragments share msg_id)
  };
  // A large message being cut into fragments.
  struct Outgoing {
    MessageBuffer* buf = nullptr;  // nullptr: none
    std::uint32_t len = 0;
    std::uint16_t count = 0, next = 0;  // fragments, and the next one to send
    MsgType type = MsgType::kCommand;
    std::uint16_t channel = 0;
    std::uint32_t msg_id = 0, corr_id = 0;
    std::uint64_t since_ns = 0;  // taken, or its last fragment sent
  };
  struct TxSession {
    std::uint32_t session = 0;
    std::uint32_t base = 1, next = 1;  // [base, next): sent, not yet acknowledged or given up
    std::uint32_t credit = kInitialCredit;  // frames the receiver takes unacknowledged (its last grant)
    std::uint64_t credit_ns = 0;            // when that grant came
    // Timeouts in a row without an acknowledgement: each doubles the wait before the next timer
    // retransmission (of the whole session: a stalled receiver is not sent its window again).
    std::uint8_t backoff = 0;
    std::uint64_t resent_ns = 0;  // the last timer retransmission
    std::uint32_t failed_msg_id = 0;  // the last large message reported failed (it has many frames)
    bool in_feeding = false;          // in feeding_
    Outgoing out;
    std::array<TxEntry, kWindow> win{};
  };
  struct RxSession {
    std::uint32_t session = 0;   // 0: none heard yet
    std::uint32_t prev_session = 0;  // the one before: its late frames are stale
    std::uint32_t expected = 1;  // the next sequence number to deliver
    std::array<RxItem, kWindow> held{};
    std::bitset<kWindow> has;
    std::uint32_t last_msg_id = 0;  // of the frame delivered last: a response to it implies the ack
    std::uint64_t heard_ns = 0;     // its last frame's arrival (it counts as a sender kActiveNs after)
    bool counted = false;           // among the lane's senders (senders_)
    bool ack_due = false;
    bool blocked = false;        // in blocked_: in-order frames wait for room to deliver
    // A large message being reassembled (its fragments come in order).
    MessageBuffer* join = nullptr;
    std::uint32_t join_len = 0;
    std::uint16_t join_next = 0, join_count = 0;
    std::uint64_t join_ns = 0;   // its last fragment's arrival
    wire::Header join_hdr{};     // its first fragment's
    std::uint32_t orphan_msg_id = 0;  // the last message whose later fragments came without its start
    bool join_wait = false;      // its first fragment waits for a reassembly buffer
    bool in_joining = false;     // in joining_
  };
  struct Peer {
    std::array<TxSession, wire::kPriorities> tx;
    std::array<RxSession, wire::kPriorities> rx;
    std::uint64_t srtt_ns = 0, rttvar_ns = 0;  // 0: no sample yet
    bool active = false;  // in active_ (frames in flight)
  };

  Peer* peer(std::uint32_t di) noexcept;  // nullptr: no session state left
  std::uint64_t rto_ns(const Peer& p, std::uint8_t prio) const noexcept;
  // Whether session `t` may send another frame now: its credit, unless it heard nothing for
  // kActiveNs and holds nothing in flight (then kInitialCredit: the receiver may have others now).
  bool has_credit(TxSession& t) noexcept;
  // The receiver's grant on lane `prio`: its budget shared by the sessions sending on it.
  void count_senders(std::uint64_t now_ns) noexcept;
  void set_grant(std::uint8_t prio) noexcept;
  void unhold(std::uint8_t prio, std::uint32_t n) noexcept {
    held_[prio] -= n;
    st_.rel[prio].held.set(held_[prio]);
  }
  void on_ack(const RxItem& it, std::uint64_t now_ns) noexcept;
  void on_data(RxItem& it, std::uint64_t now_ns) noexcept;
  // Delivers session `s`'s frames in order from `expected` while the deliver stage has room.
  void release(std::uint32_t di, RxSession& s, std::uint8_t prio, std::uint64_t now_ns) noexcept;
  // Delivers in-order frame `it` of session `s`, or adds it to the message `s` reassembles.
  void deliver(std::uint32_t di, RxSession& s, RxItem& it, std::uint64_t now_ns) noexcept;
  void deliver(RxItem& it, std::uint64_t now_ns) noexcept;
  // Whether in-order frame `it` of `s` can be taken now: a first fragment needs a reassembly
  // buffer (one whose reassembly stalled for the give-up time is taken back).
  bool can_take(RxSession& s, const RxItem& it, std::uint64_t now_ns) noexcept;
  void abort_join(RxSession& s, std::uint8_t prio) noexcept;
  // A first fragment whose message cannot fit a reassembly buffer: every fragment but the last
  // carries as much as the first, the last at least a byte.
  bool oversize(const RxItem& first) const noexcept {
    return (std::uint64_t{first.d.hdr.frag_count} - 1) * first.d.payload.size() + 1 > joins_.size();
  }
  // Cuts fragments of session (di, prio)'s large message while its window has room.
  unsigned feed_session(std::uint32_t di, std::uint8_t prio, std::uint64_t now_ns) noexcept;
  // Records frame `m` (just sent as `seq`) in session t's window.
  void sent(Peer& p, std::uint32_t di, TxSession& t, rte_mbuf* m, std::uint32_t msg_id, std::uint16_t channel,
            std::uint8_t prio, bool fragment = false) noexcept;
  void drop_outgoing(TxSession& t) noexcept;
  void flush_out(std::uint64_t now_ns) noexcept;
  // Everything before `ack` in t arrived (cumulative): released, round trips sampled.
  // Frees what `ack` acknowledges; `measure`: its frames sent once give round-trip samples.
  // Returns when the newest of them sent again went, if every one of them was sent again (0:
  // one or more went once, or none was sent again).
  std::uint64_t acknowledge(Peer& p, std::uint8_t prio, std::uint32_t ack, std::uint64_t now_ns, bool measure = true) noexcept;
  void sample_rtt(Peer& p, std::uint64_t sample) noexcept;
  // Sends `e` again; false when it could not leave now (full lane, no route, no copy).
  bool retransmit(std::uint32_t di, std::uint8_t prio, TxEntry& e, std::uint64_t now_ns, bool fast) noexcept;
  // After an ack up to `ack` that covered only frames sent again, the last at `resent`: the
  // frames sent before, past their timeout and not held, go again now (a run lost whole).
  void resend_swallowed(std::uint32_t di, std::uint8_t prio, std::uint32_t ack, std::uint64_t resent,
                        std::uint64_t now_ns) noexcept;
  void give_up(std::uint32_t di, std::uint8_t prio, std::uint32_t seq, TxEntry& e) noexcept;
  void report(const DeliveryFailure& f) noexcept;  // counted (failed) and handed to on_failure
  // Moves base over entries no longer held.
  static void advance(TxSession& t) noexcept;
  static void fire(void* self, std::uint64_t now_ns) noexcept;
  void scan(std::uint64_t now_ns) noexcept;

  Routing& r_;
  TxStage& tx_;
  DeliverStage& deliver_;
  stats::LcoreStats& st_;
  std::uint64_t give_up_ns_;
  std::array<std::uint64_t, wire::kPriorities> budget_ns_{};
  std::uint32_t first_session_;
  std::vector<std::unique_ptr<Peer>> peers_;  // by dense node index, from spare_
  std::vector<std::unique_ptr<Peer>> spare_;  // allocated at start, not yet given to a peer
  std::vector<std::uint32_t> given_;          // peers given session state
  std::vector<std::uint32_t> active_;         // peers with frames in flight
  std::vector<std::pair<std::uint32_t, std::uint8_t>> ack_due_;  // (peer, lane) owed an ack
  std::vector<std::pair<std::uint32_t, std::uint8_t>> blocked_;  // sessions with frames the deliver stage had no room for
  std::vector<std::pair<std::uint32_t, std::uint8_t>> feeding_;  // sessions with a large message to cut
  std::vector<std::pair<std::uint32_t, std::uint8_t>> joining_;  // sessions reassembling one
  std::vector<std::pair<std::uint32_t, rte_mbuf*>> group_to_;  // send_group(): recipient, its frame
  bool in_group_send_ = false;
  MessageBuffers& joins_;
  std::size_t frag_size_;  // payload bytes of one fragment (one frame's)
  std::array<RxItem, kBurst> out_{};          // deliverable frames, handed over a burst at a time
  std::uint16_t out_n_ = 0;
  std::array<std::uint16_t, wire::kPriorities> out_lane_{};  // ... of each lane
  // Credit (receiver): each lane's budget, the sessions counted sending on it, and the grant.
  std::uint32_t credit_budget_;
  std::array<std::uint32_t, wire::kPriorities> senders_{};
  std::array<std::uint32_t, wire::kPriorities> grant_{};
  std::array<std::uint32_t, wire::kPriorities> held_{};  // frames held in the lane's receive windows
  std::uint64_t counted_ns_ = 0;  // the last count
  std::uint64_t recent_ns_ = 0;   // the newest time the stage was given (a burst's, a poll's)
  Timer timer_;
  std::function<void(const DeliveryFailure&)> on_failure_;
};

}  // namespace nerve::node
