#include "deliver_stage.hpp"

#include "access.hpp"

namespace nerve::node {

void free_frames(rte_mbuf** m, std::uint16_t n) noexcept {
  // Single-segment frames (validate refuses chains): back to their pool in one put per run of
  // frames from the same pool, without rte_pktmbuf_free_bulk's generic segment walk.
  rte_mbuf* put[kBurst];
  std::uint16_t k = 0;
  rte_mempool* pool = nullptr;
  for (std::uint16_t i = 0; i < n; ++i) {
    rte_mbuf* f = rte_pktmbuf_prefree_seg(m[i]);
    if (!f) continue;  // still referenced elsewhere
    if (f->pool != pool || k == kBurst) {
      if (k) rte_mempool_put_bulk(pool, reinterpret_cast<void**>(put), k);
      pool = f->pool;
      k = 0;
    }
    put[k++] = f;
  }
  if (k) rte_mempool_put_bulk(pool, reinterpret_cast<void**>(put), k);
}

DeliverStage::DeliverStage(const config::Cluster& cluster, const config::Node& cfg, std::uint32_t queue_depth,
                           stats::LcoreStats& st, IdlePolicy& idle, ControlStage& control, ServiceStage& services)
    : window_ns_(std::uint64_t{cluster.timestamp_window_ms} * 1'000'000u), st_(st), idle_(idle), control_(control),
      services_(services),
      mask_(queue_depth - 1) {
  for (unsigned l = 0; l < wire::kPriorities; ++l) budget_ns_[l] = std::uint64_t{cfg.lane_budget_us[l]} * 1000u;
  for (Lane& q : lanes_) q.queue.resize(queue_depth);
}

DeliverStage::Admit DeliverStage::admit(const wire::Header& h, std::uint64_t ts_check, std::span<const std::byte> payload,
                                        std::uint64_t now, std::uint64_t& lat, bool room) noexcept {
  const std::uint8_t prio = h.priority;
  const std::uint64_t ts = h.timestamp_ns;
  if (ts == 0 || ts_check == 0 || (ts_check < now ? now - ts_check : ts_check - now) > window_ns_) [[unlikely]] {
    st_.refused[static_cast<std::size_t>(wire::Refusal::kBadTimestamp)].add();
    return Admit::kRefused;
  }
  ControlStage::Match match = ControlStage::Match::kNotOurs;
  if (h.type == MsgType::kResponse && control_.awaiting()) {
    match = control_.match_response(h, payload, now);
    if (match == ControlStage::Match::kMismatch) [[unlikely]] {
      st_.refused[static_cast<std::size_t>(wire::Refusal::kResponseMismatch)].add();
      return Admit::kRefused;
    }
  }
  // No room in its lane's recv() queue (a port whose lanes share one queue, read past a lane
  // whose consumer stalls): dropped before anything counts it delivered, and a service response
  // does not close its request, which then times out and is reported.
  if (!room && match != ControlStage::Match::kAnswered) [[unlikely]] {
    st_.rx_lane_full.add();
    return Admit::kRefused;
  }
  if (h.type == MsgType::kResponse && services_.open()) services_.answered(h);
  // A timestamp slightly ahead of our clock (hosts' clocks differ by less than the window)
  // counts as no delay at all.
  lat = now > ts ? now - ts : 0;
  st_.latency_ns[prio].record(lat);
  if (lat > budget_ns_[prio]) [[unlikely]] {
    st_.deadline_miss[prio].add();
    st_.last_deadline_miss_ns[prio].set(now);  // when it happened: telemetry measures from here
  }
  st_.delivered[static_cast<std::size_t>(h.type)][prio].add();
  idle_.note(prio, now);
  return match == ControlStage::Match::kAnswered ? Admit::kAnswered : Admit::kDeliver;
}

void DeliverStage::deliver_large(const wire::Header& h, std::uint64_t last_ts, MessageBuffer* b, std::size_t len,
                                 std::uint64_t now) noexcept {
  std::uint64_t lat = 0;
  if (admit(h, last_ts, std::span<const std::byte>(b->data, len), now, lat, space(h.priority) > 0) !=
      Admit::kDeliver) {
    give_back(b);
    return;
  }
  RxMessage msg = NodeAccess::message(b, h, len, lat, now);
  if (handler_)
    handler_(msg);  // freed (its buffer given back) here unless the handler kept it
  else
    enqueue(h.priority, std::move(msg));  // (if refused, msg gives its buffer back)
}

void DeliverStage::run(RxItem* items, std::uint16_t n, std::uint64_t now) noexcept {
  rte_mbuf* done[kBurst];  // freed together at the end
  std::uint16_t nd = 0;
  for (std::uint16_t i = 0; i < n; ++i) {
    rte_mbuf* m = items[i].m;
    const wire::Decoded& d = items[i].d;
    std::uint64_t lat = 0;
    const Admit a = admit(d.hdr, d.hdr.timestamp_ns, d.payload, now, lat, space(d.hdr.priority) > 0);
    if (a != Admit::kDeliver) [[unlikely]] {
      done[nd++] = m;
      continue;
    }
    RxMessage msg = NodeAccess::message(m, d.hdr, d.payload, lat, now);
    if (handler_) {
      handler_(msg);
      // Still the message's unless the handler kept it or took its frame: freed with the rest.
      if (rte_mbuf* left = NodeAccess::release(msg)) done[nd++] = left;
    } else if (!enqueue(d.hdr.priority, std::move(msg))) [[unlikely]] {
      if (rte_mbuf* left = NodeAccess::release(msg)) done[nd++] = left;
    }
  }
  if (nd != 0) free_frames(done, nd);
}

}  // namespace nerve::node
