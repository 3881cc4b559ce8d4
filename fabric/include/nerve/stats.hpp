// Datapath counters. Each datapath lcore owns one LcoreStats (cache-line aligned, single
// writer); any thread reads them. Counter::add is a relaxed load + store: a plain `add` to
// memory on x86, no lock prefix, because only the owner writes.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "nerve/histogram.hpp"
#include "nerve/wire.hpp"

namespace nerve::stats {

class Counter {
 public:
  void add(std::uint64_t n = 1) noexcept { v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  void set(std::uint64_t v) noexcept { v_.store(v, std::memory_order_relaxed); }
  std::uint64_t get() const noexcept { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> v_{0};
};

// SPEC.md "Message Priority": the delivery budget of each lane.
inline constexpr std::array<std::uint64_t, wire::kPriorities> kDefaultBudgetNs = {
    100'000, 500'000, 1'000'000, 2'000'000, 5'000'000};

inline constexpr std::size_t kMaxPorts = 64;  // per node (config: at most 64 ports)
inline constexpr std::size_t kPathChannels = 32;  // (source, channel) pairs counted apart, sent over two paths

struct alignas(64) LcoreStats {
  Counter rx_frames, rx_bytes, tx_frames, tx_bytes;
  std::array<Counter, wire::kRefusalCount> refused;  // by wire::Refusal; [0] unused
  Counter rx_multi_segment;                           // chained mbufs: refused, never seen from our senders
  std::array<std::array<Counter, wire::kPriorities>, wire::kMsgTypes + 1> delivered;  // [type][prio]
  std::array<std::array<Counter, wire::kPriorities>, wire::kMsgTypes + 1> sent;
  Counter tx_backpressure;  // send() refused: TX buffer full, frame returned to the caller
  Counter tx_no_route;
  Counter alloc_failed;
  Counter rx_deferred;      // RX bursts shortened because a lane's receive queue was full
  Counter rx_lane_full;     // messages dropped: their lane's recv() queue full (a frame on another lane's RX queue)
  // The datapath's time (TSC cycles) in polls that found work and in polls that found none
  // (with the idle policy's pause or sleep after them), and the polls of each kind. Time the
  // application spends between polls is in neither.
  Counter tsc_busy, tsc_idle, polls_busy, polls_idle;
  std::array<Counter, wire::kPriorities> deadline_miss;
  std::array<Counter, wire::kPriorities> last_deadline_miss_ns;  // the newest miss's delivery time (Clock)
  // Bandwidth by lane: frame bytes handed to a lane for sending (own and forwarded), and bytes
  // of valid frames received on it.
  std::array<Counter, wire::kPriorities> lane_tx_bytes, lane_rx_bytes;
  std::array<Counter, wire::kPriorities> shed;          // P3/P4 frames dropped, oldest first, from a full lane
  std::array<Counter, wire::kPriorities> backpressure;  // send() refused on a full P0-P2 lane
  std::array<Histogram, wire::kPriorities> latency_ns;  // one-way, sender timestamp to delivery
  // Routing.
  std::array<Counter, kMaxPorts> port_tx_frames;        // frames handed to each port (link load)
  std::array<Counter, wire::kPriorities> forwarded;     // transit frames sent on, by lane
  std::array<Counter, kMaxPorts> forwarded_port;        // ... by the port they left on
  std::array<Counter, wire::kPriorities> forward_dropped;  // transit frames dropped: a full P0-P2 lane
  std::array<Histogram, wire::kPriorities> transit_ns;  // forwarded frames: sender timestamp to this hop
  Counter fabric_rx, fabric_tx;                         // heartbeats and advertisements
  // Reliable delivery (fabric/node/reliable_stage.hpp), by lane.
  struct Reliable {
    Counter sent;            // reliable messages sent (first transmissions)
    Counter acked;           // ... acknowledged by their receiver
    Counter failed;          // ... given up (reported: Node::on_delivery_failure)
    Counter retransmits;     // frames sent again after their timeout
    Counter fast_retransmits;  // frames sent again on a gap the receiver reported
    Counter window_full;     // sends refused: kWindow frames unacknowledged (back-pressure)
    Counter in_order;        // received and delivered in order
    Counter reordered;       // received ahead of a gap, held until it filled
    Counter duplicates;      // received again (a retransmission or a duplicated frame): dropped
    Counter skipped;         // gaps the sender gave up on (its frames reported failed there)
    Counter beyond_window;   // received too far ahead: dropped, sent again later
    Counter stale;           // frames and acks of an older session: dropped
    Counter acks_tx, acks_rx;
    Counter acks_dropped;    // acks not sent (lane full, no route): the next one covers them
    Counter no_session;      // sends refused, and frames dropped: every session (reliable_peers) in use
    // Large messages (docs/architecture.md, "Large messages").
    Counter split;           // sent as fragments (each fragment also counts in sent, acked, ...)
    Counter joined;          // reassembled and delivered
    Counter join_aborted;    // reassemblies abandoned: given up by their sender, or parts that disagree
    Counter join_waits;      // first fragments that waited for a free reassembly buffer
    // Credit (receiver; gauges, as last counted): sessions sending to this node on the lane,
    // and the frames each may have unacknowledged (the lane's budget shared among them).
    Counter senders;
    Counter credit;
    Counter held;         // gauge: frames held in the lane's receive windows (at most the budget)
    Counter over_credit;  // frames dropped beyond the budget (sent again by their senders)
  };
  std::array<Reliable, wire::kPriorities> rel;
  // Frames that had to be sent again: their first send to their acknowledgement.
  std::array<Histogram, wire::kPriorities> rel_recovery_ns;
  // Two paths (docs/architecture.md, "Two paths"). Sender, by lane: messages sent as two
  // copies, and messages asked to go over two paths that went over one (no second path up).
  std::array<Counter, wire::kPriorities> paths_two, paths_one;
  // Receiver, per (source, channel): which path's copy arrived first, and the copies after it.
  // The first kPathChannels pairs seen have their own entry; the others share `paths_other`.
  struct PathChannel {
    Counter key;                 // 0: unused; else 1 + (source << 16 | channel), set once
    std::array<Counter, 2> won;  // messages whose first copy came over path 1 (index 0) or path 2
    Counter discarded;           // copies after the first, dropped (a reliable one by its session)
  };
  std::array<PathChannel, kPathChannels> paths;
  PathChannel paths_other;
};

struct LaneSummary {
  std::uint64_t count = 0, deadline_miss = 0, budget_ns = 0, shed = 0, backpressure = 0;
  std::uint64_t min = 0, p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0;
  double mean = 0;
};

// A point-in-time sum over a node's lcores, for status and tests.
struct Snapshot {
  std::uint64_t rx_frames = 0, rx_bytes = 0, tx_frames = 0, tx_bytes = 0;
  std::array<std::uint64_t, wire::kRefusalCount> refused{};
  std::uint64_t rx_multi_segment = 0, tx_backpressure = 0, tx_no_route = 0, alloc_failed = 0, rx_deferred = 0,
                rx_lane_full = 0;
  std::array<std::array<std::uint64_t, wire::kPriorities>, wire::kMsgTypes + 1> delivered{};
  std::array<std::array<std::uint64_t, wire::kPriorities>, wire::kMsgTypes + 1> sent{};
  std::array<LaneSummary, wire::kPriorities> lanes{};
  std::array<std::uint64_t, wire::kPriorities> forwarded{}, forward_dropped{};
  std::array<std::uint64_t, kMaxPorts> forwarded_port{};
  std::array<LaneSummary, wire::kPriorities> transit{};  // forwarded frames: latency to this hop
  std::uint64_t fabric_rx = 0, fabric_tx = 0;
  struct Reliable {
    std::uint64_t sent = 0, acked = 0, failed = 0, retransmits = 0, fast_retransmits = 0, window_full = 0,
                  in_order = 0, reordered = 0, duplicates = 0, skipped = 0, beyond_window = 0, stale = 0,
                  acks_tx = 0, acks_rx = 0, acks_dropped = 0, no_session = 0, split = 0, joined = 0,
                  join_aborted = 0, join_waits = 0, senders = 0, credit = 0,
                  held = 0, over_credit = 0;
  };
  std::array<Reliable, wire::kPriorities> rel{};
  std::array<LaneSummary, wire::kPriorities> rel_recovery{};  // reliable frames sent again: first send to ack
  std::array<std::uint64_t, wire::kPriorities> paths_two{}, paths_one{};
  struct PathChannel {
    std::uint16_t src = 0, channel = 0;
    bool other = false;  // every (source, channel) beyond the first kPathChannels
    std::uint64_t won1 = 0, won2 = 0, discarded = 0;
  };
  std::vector<PathChannel> paths;  // the pairs with copies received, in the order first seen

  std::uint64_t refused_total() const noexcept;
  std::uint64_t delivered_total() const noexcept;
  std::uint64_t sent_total() const noexcept;
};

Snapshot snapshot(const std::vector<const LcoreStats*>& lcores,
                  const std::array<std::uint64_t, wire::kPriorities>& budgets_ns);

}  // namespace nerve::stats
