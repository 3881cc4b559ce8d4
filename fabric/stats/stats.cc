#include "nerve/stats.hpp"

#include <algorithm>
#include <memory>

namespace nerve::stats {

std::uint64_t Snapshot::refused_total() const noexcept {
  std::uint64_t n = rx_multi_segment;
  for (auto v : refused) n += v;
  return n;
}
std::uint64_t Snapshot::delivered_total() const noexcept {
  std::uint64_t n = 0;
  for (const auto& t : delivered)
    for (auto v : t) n += v;
  return n;
}
std::uint64_t Snapshot::sent_total() const noexcept {
  std::uint64_t n = 0;
  for (const auto& t : sent)
    for (auto v : t) n += v;
  return n;
}

namespace {

// The histogram's part of a lane summary (the counters are the caller's).
void summarize(const Histogram& h, std::uint64_t budget_ns, LaneSummary& out) noexcept {
  out.budget_ns = budget_ns;
  out.count = h.count();
  out.min = h.min();
  out.mean = h.mean();
  out.p50 = h.percentile(50);
  out.p90 = h.percentile(90);
  out.p99 = h.percentile(99);
  out.p999 = h.percentile(99.9);
  out.max = h.max();
}

}  // namespace

Snapshot snapshot(const std::vector<const LcoreStats*>& lcores,
                  const std::array<std::uint64_t, wire::kPriorities>& budgets_ns) {
  Snapshot s;
  auto merged = std::make_unique<std::array<Histogram, wire::kPriorities>>();
  auto transit = std::make_unique<std::array<Histogram, wire::kPriorities>>();
  auto recovery = std::make_unique<std::array<Histogram, wire::kPriorities>>();
  for (const LcoreStats* l : lcores) {
    s.rx_frames += l->rx_frames.get();
    s.rx_bytes += l->rx_bytes.get();
    s.tx_frames += l->tx_frames.get();
    s.tx_bytes += l->tx_bytes.get();
    for (std::size_t r = 0; r < wire::kRefusalCount; ++r) s.refused[r] += l->refused[r].get();
    s.rx_multi_segment += l->rx_multi_segment.get();
    s.tx_backpressure += l->tx_backpressure.get();
    s.tx_no_route += l->tx_no_route.get();
    s.alloc_failed += l->alloc_failed.get();
    s.rx_deferred += l->rx_deferred.get();
    s.rx_lane_full += l->rx_lane_full.get();
    for (std::size_t t = 0; t <= wire::kMsgTypes; ++t)
      for (std::size_t p = 0; p < wire::kPriorities; ++p) {
        s.delivered[t][p] += l->delivered[t][p].get();
        s.sent[t][p] += l->sent[t][p].get();
      }
    for (std::size_t p = 0; p < wire::kPriorities; ++p) {
      s.lanes[p].deadline_miss += l->deadline_miss[p].get();
      s.lanes[p].shed += l->shed[p].get();
      s.lanes[p].backpressure += l->backpressure[p].get();
      (*merged)[p].merge(l->latency_ns[p]);
      s.forwarded[p] += l->forwarded[p].get();
      s.forward_dropped[p] += l->forward_dropped[p].get();
      (*transit)[p].merge(l->transit_ns[p]);
      (*recovery)[p].merge(l->rel_recovery_ns[p]);
    }
    for (std::size_t j = 0; j < kMaxPorts; ++j) s.forwarded_port[j] += l->forwarded_port[j].get();
    s.fabric_rx += l->fabric_rx.get();
    for (std::size_t p = 0; p < wire::kPriorities; ++p) {
      const LcoreStats::Reliable& a = l->rel[p];
      Snapshot::Reliable& b = s.rel[p];
      b.sent += a.sent.get();
      b.acked += a.acked.get();
      b.failed += a.failed.get();
      b.retransmits += a.retransmits.get();
      b.fast_retransmits += a.fast_retransmits.get();
      b.window_full += a.window_full.get();
      b.in_order += a.in_order.get();
      b.reordered += a.reordered.get();
      b.duplicates += a.duplicates.get();
      b.skipped += a.skipped.get();
      b.beyond_window += a.beyond_window.get();
      b.stale += a.stale.get();
      b.acks_tx += a.acks_tx.get();
      b.acks_rx += a.acks_rx.get();
      b.acks_dropped += a.acks_dropped.get();
      b.no_session += a.no_session.get();
      b.split += a.split.get();
      b.joined += a.joined.get();
      b.join_aborted += a.join_aborted.get();
      b.join_waits += a.join_waits.get();
      b.senders += a.senders.get();
      b.credit += a.credit.get();
      b.held += a.held.get();
      b.over_credit += a.over_credit.get();
    }
    s.fabric_tx += l->fabric_tx.get();
    for (std::size_t p = 0; p < wire::kPriorities; ++p) {
      s.paths_two[p] += l->paths_two[p].get();
      s.paths_one[p] += l->paths_one[p].get();
    }
    auto add_channel = [&s](const LcoreStats::PathChannel& c, std::uint64_t key, bool other) {
      const std::uint64_t won1 = c.won[0].get(), won2 = c.won[1].get(), discarded = c.discarded.get();
      if (won1 + won2 + discarded == 0) return;
      const auto src = static_cast<std::uint16_t>((key - 1) >> 16), channel = static_cast<std::uint16_t>(key - 1);
      auto it = std::find_if(s.paths.begin(), s.paths.end(), [&](const Snapshot::PathChannel& e) {
        return e.other == other && (other || (e.src == src && e.channel == channel));
      });
      if (it == s.paths.end()) {
        s.paths.push_back(Snapshot::PathChannel{other ? std::uint16_t{0} : src, other ? std::uint16_t{0} : channel, other});
        it = s.paths.end() - 1;
      }
      it->won1 += won1;
      it->won2 += won2;
      it->discarded += discarded;
    };
    for (const LcoreStats::PathChannel& c : l->paths) {
      const std::uint64_t key = c.key.get();
      if (key == 0) break;  // entries are taken in order
      add_channel(c, key, false);
    }
    add_channel(l->paths_other, 1, true);
  }
  for (std::size_t p = 0; p < wire::kPriorities; ++p) {
    summarize((*merged)[p], budgets_ns[p], s.lanes[p]);
    summarize((*transit)[p], budgets_ns[p], s.transit[p]);
    summarize((*recovery)[p], budgets_ns[p], s.rel_recovery[p]);
  }
  return s;
}

}  // namespace nerve::stats
