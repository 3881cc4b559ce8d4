#include "link_stage.hpp"

#include <algorithm>

#include "../route/protocol.hpp"

namespace nerve::node {

LinkStage::LinkStage(const config::Cluster& c, Routing& routing, TxStage& tx, stats::LcoreStats& st, TimerStage& timers,
                     std::uint64_t now_ns, std::vector<const drivers::Port*> carrier)
    : links_(routing.links), tx_(tx), inbox_(routing.inbox), outbox_(routing.outbox), st_(st),
      digest_(routing.agent.digest()), state_(routing.links.size()), carrier_(std::move(carrier)), up_(routing.up),
      timers_(timers), timer_(&LinkStage::on_timer, this) {
  carrier_.resize(links_.size(), nullptr);
  std::size_t ports = 0;
  for (std::size_t s = 0; s < links_.size(); ++s) ports = std::max<std::size_t>(ports, links_[s].port + 1);
  port_rx_ns_.assign(ports, 0);
  std::vector<unsigned> per_port(ports, 0);
  for (std::size_t s = 0; s < links_.size(); ++s) ++per_port[links_[s].port];
  for (std::size_t s = 0; s < links_.size(); ++s) sole_.push_back(per_port[links_[s].port] == 1);
  for (std::size_t s = 0; s < links_.size(); ++s) {
    up_ |= std::uint64_t{1} << s;
    state_[s].last_heard_ns = now_ns;  // and again at the first tick: see tick()
  }
  if (c.heartbeat_hz != 0) {
    period_ns_ = 1'000'000'000ull / c.heartbeat_hz;
    dead_after_ns_ = period_ns_ * c.heartbeat_miss + period_ns_ / 2;
    timers.add(timer_);
    due_ns_ = now_ns;
    timer_.arm(now_ns);
  }
}

void LinkStage::on_timer(void* ctx, std::uint64_t now_ns) noexcept { static_cast<LinkStage*>(ctx)->tick(now_ns); }

void LinkStage::tick(std::uint64_t now_ns) noexcept {
  // A link gets its full deadline from the node's first tick: the node's own start-up (ports,
  // the first polls) is not the neighbours' silence.
  if (!started_) {
    for (State& ls : state_) ls.last_heard_ns = now_ns;
    started_ = true;
  }
  const bool beat = now_ns >= due_ns_;
  // A node that was not running before this tick for more than a quarter period (preempted,
  // stopped: the time since the timer stage's previous run) gives each silent neighbour a
  // deadline at least one period from now: heartbeats that came meanwhile wait in its rings,
  // read by its next polls, or the neighbour was stopped with it (the same host) and sends as
  // soon as it runs. Once per silence, until the neighbour is heard again: a node that is late
  // at every run still declares a dead neighbour down, at most a period later, and one that
  // died during a long stop is down a period after it, not a whole stop later.
  const bool stalled = timers_.gap_ns() > period_ns_ / 4;
  const std::uint64_t floor = now_ns + period_ns_ - dead_after_ns_;  // dead_after > period
  if (beat) due_ns_ = now_ns + period_ns_;
  std::uint64_t next = due_ns_;
  for (std::size_t s = 0; s < links_.size(); ++s) {
    State& ls = state_[s];
    const std::uint64_t bit = std::uint64_t{1} << s;
    if (sole_[s] && port_rx_ns_[links_[s].port] > ls.last_heard_ns) {  // its traffic came
      ls.last_heard_ns = port_rx_ns_[links_[s].port];
      ls.granted = false;
    }
    if (stalled && !ls.granted && ls.last_heard_ns < floor) {
      ls.last_heard_ns = floor;
      ls.granted = true;
    }
    if (up_ & bit) {
      const std::uint64_t dead_at = ls.last_heard_ns + dead_after_ns_;
      if (now_ns > dead_at || carrier_down(s)) {
        up_ &= ~bit;
        LinkShared& sh = links_.shared(s);
        sh.up.store(false, std::memory_order_relaxed);
        sh.downs.store(sh.downs.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      } else {
        next = std::min(next, dead_at + 1);
      }
    }
    if (beat) heartbeat(s, now_ns);
  }
  timer_.arm(next);
}

bool LinkStage::carrier_down(std::size_t slot) noexcept {
  const drivers::Port* p = carrier_[slot];
  if (!p) return false;
  State& ls = state_[slot];
  if (p->link_up()) {
    ls.carrier_seen = true;
    return false;
  }
  return ls.carrier_seen;  // down after it was up (not a port still coming up)
}

void LinkStage::heartbeat(std::size_t slot, std::uint64_t now_ns) noexcept {
  rte_mbuf* m = tx_.alloc(route::kHeartbeatLen);
  if (!m) return;  // the pool is dry: counted by alloc
  const State& ls = state_[slot];
  route::Heartbeat hb;
  hb.echo_ts_ns = ls.echo_ts_ns;
  hb.echo_hold_ns = ls.echo_ts_ns != 0 && now_ns > ls.echo_rx_ns ? now_ns - ls.echo_rx_ns : 0;
  hb.digest = digest_.load(std::memory_order_relaxed);
  route::encode(std::span<std::byte>(rte_pktmbuf_mtod(m, std::byte*), route::kHeartbeatLen), hb);
  if (tx_.send_link(m, slot, 0) != SendStatus::kOk) {
    rte_pktmbuf_free(m);
    return;
  }
  LinkShared& sh = links_.shared(slot);
  sh.heartbeats_tx.store(sh.heartbeats_tx.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

void LinkStage::refuse(rte_mbuf* m) noexcept {
  st_.refused[static_cast<std::size_t>(wire::Refusal::kBadFabric)].add();
  rte_pktmbuf_free(m);
}

void LinkStage::receive(std::size_t port, const wire::Decoded& d, rte_mbuf* m, std::uint64_t now_ns) noexcept {
  const int slot = links_.find(port, d.hdr.src_node);
  if (slot < 0) return refuse(m);
  const auto s = static_cast<std::size_t>(slot);
  switch (route::peek_kind(d.payload)) {
    case route::MsgKind::kHeartbeat: {
      route::Heartbeat hb;
      if (route::decode(d.payload, hb) != route::ProtoError::kNone) return refuse(m);
      State& ls = state_[s];
      LinkShared& sh = links_.shared(s);
      ls.last_heard_ns = now_ns;
      ls.granted = false;
      ls.echo_ts_ns = d.hdr.timestamp_ns;
      ls.echo_rx_ns = now_ns;
      if (hb.echo_ts_ns != 0 && now_ns > hb.echo_ts_ns + hb.echo_hold_ns) {
        const std::uint64_t rtt = now_ns - hb.echo_ts_ns - hb.echo_hold_ns;
        if (rtt < 1'000'000'000ull) {
          ls.rtt_ns = ls.rtt_ns == 0 ? static_cast<std::uint32_t>(rtt)
                                     : static_cast<std::uint32_t>((std::uint64_t{ls.rtt_ns} * 7 + rtt) / 8);
          sh.rtt_ns.store(ls.rtt_ns, std::memory_order_relaxed);
        }
      }
      sh.peer_digest.store(hb.digest, std::memory_order_relaxed);
      sh.heartbeats_rx.store(sh.heartbeats_rx.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      const std::uint64_t bit = std::uint64_t{1} << s;
      if (!(up_ & bit) && !carrier_down(s)) {
        up_ |= bit;
        sh.up.store(true, std::memory_order_relaxed);
      }
      break;
    }
    case route::MsgKind::kLinkState:
      // Decoded (and checked) by the agent; a full inbox drops it (counted): the periodic
      // refresh and the digest comparison repair the loss.
      inbox_.post(static_cast<std::uint16_t>(s), d.payload);
      break;
    default: return refuse(m);
  }
  st_.fabric_rx.add();
  rte_pktmbuf_free(m);
}

unsigned LinkStage::run() noexcept {
  unsigned sent = 0;
  while (sent < kOutboxPerRun) {
    Mailbox::Letter* l = outbox_.take();
    if (!l) break;
    if (l->slot < links_.size()) {
      if (rte_mbuf* m = tx_.alloc(l->len)) {
        std::memcpy(rte_pktmbuf_mtod(m, std::byte*), l->bytes, l->len);
        if (tx_.send_link(m, l->slot, 1) != SendStatus::kOk) rte_pktmbuf_free(m);
      }
    }
    outbox_.done(l);
    ++sent;
  }
  return sent;
}

}  // namespace nerve::node
