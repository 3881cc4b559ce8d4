#include "service_stage.hpp"

#include <rte_mbuf.h>

#include "reliable_stage.hpp"

namespace nerve::node {

namespace {
bool is_request(MsgType t) noexcept { return t == MsgType::kCommand || t == MsgType::kResourceRequest; }
}  // namespace

ServiceStage::ServiceStage(const config::Cluster& c, Routing& r, TxStage& tx, TimerStage& timers, Clock& clock)
    : r_(r), tx_(tx), clock_(clock), track_(kTrackSlots), deadline_(&ServiceStage::on_deadline, this) {
  for (const config::Service& s : c.services) {
    auto sv = std::make_unique<Svc>(s);
    sv->timeout_ns = std::uint64_t{s.timeout_ms} * 1'000'000u;
    svcs_.push_back(std::move(sv));
  }
  timers.add(deadline_);
}

int ServiceStage::index(std::uint16_t id) const noexcept {
  for (std::size_t i = 0; i < svcs_.size(); ++i)
    if (svcs_[i]->cfg.id == id) return static_cast<int>(i);
  return -1;
}

void ServiceStage::refresh_live() noexcept {
  seen_fib_ = r_.fib;
  seen_up_ = r_.up;
  for (auto& sp : svcs_) {
    Svc& s = *sp;
    std::uint64_t live = 0;
    for (unsigned i = 0; i < s.bal.size(); ++i) {
      const std::uint32_t di = r_.index(s.bal.instance(static_cast<int>(i)));
      if (di == route::kNoIndex || di == r_.self_idx || !r_.fib) continue;
      if (r_.fib->hops(di, 0).pick(0, r_.up) >= 0 || r_.fib->hops(di, 1).pick(0, r_.up) >= 0)
        live |= std::uint64_t{1} << i;
    }
    s.gone |= s.live & ~live;  // cleared by check(), once their requests have failed
    s.live = live;
    s.live_shared.store(live, std::memory_order_relaxed);
  }
}

SendStatus ServiceStage::send(rte_mbuf* m, unsigned svc, MsgType type, std::uint8_t prio, const SendOptions& o,
                              NodeId* instance) noexcept {
  if (svc >= svcs_.size()) return SendStatus::kBadArgument;
  if (r_.fib != seen_fib_ || r_.up != seen_up_) [[unlikely]]
    refresh_live();
  Svc& s = *svcs_[svc];
  const bool req = is_request(type);
  Track& t = track_[tx_.next_msg_id() & (kTrackSlots - 1)];
  if (req && (t.live || s.tail - s.head == kRing)) return SendStatus::kBackpressure;
  const int i = s.bal.pick(o.key, s.live);
  if (i < 0) return SendStatus::kNoRoute;
  const NodeId dst = s.bal.instance(i);
  const std::uint32_t id = tx_.next_msg_id();
  SendOptions one = o;
  one.paths = 1;  // a service send goes over one path
  if (o.reliable && reliable_ == nullptr) return SendStatus::kBadArgument;
  const SendStatus st = o.reliable ? reliable_->send(m, dst, type, prio, one) : tx_.send(m, dst, type, prio, one);
  if (st != SendStatus::kOk) return st;
  Counters& c = s.counters[static_cast<unsigned>(i)];
  c.sent.add();
  if (req) {
    t = Track{id, static_cast<std::uint16_t>(svc), static_cast<std::uint8_t>(i), true,
              clock_.now_ns() + s.timeout_ns};
    s.ring[s.tail++ % kRing] = id;
    ++open_;
    s.bal.opened(i);
    c.requests.add();
    deadline_.arm_before(t.deadline_ns);
  }
  if (instance) *instance = dst;
  return SendStatus::kOk;
}

void ServiceStage::answered(const wire::Header& h) noexcept {
  Track& t = track_[h.corr_id & (kTrackSlots - 1)];
  if (!t.live || t.msg_id != h.corr_id) return;
  Svc& s = *svcs_[t.svc];
  if (s.bal.instance(t.inst) != h.src_node) return;  // not from the instance asked
  t.live = false;
  --open_;
  s.bal.closed(t.inst);
  s.counters[t.inst].answered.add();
}

void ServiceStage::fail(Track& t, bool timed_out) noexcept {
  Svc& s = *svcs_[t.svc];
  t.live = false;
  --open_;
  s.bal.closed(t.inst);
  Counters& c = s.counters[t.inst];
  (timed_out ? c.timed_out : c.failed_down).add();
  if (handler_) handler_(ServiceFailure{s.cfg.id, s.bal.instance(t.inst), t.msg_id, timed_out});
  if (sink_) sink_(sink_ctx_, t.msg_id);
}

void ServiceStage::check() noexcept {
  // send() may have seen the change first: it refreshes the masks but fails nothing (a failure
  // reaches the control stage, which may be the caller), so the instances gone wait for here.
  if (r_.fib != seen_fib_ || r_.up != seen_up_) refresh_live();
  for (auto& sp : svcs_) {
    Svc& s = *sp;
    if (s.gone == 0) continue;
    const std::uint64_t gone = s.gone;
    s.gone = 0;
    if (open_ == 0) continue;
    for (std::uint32_t j = s.head; j != s.tail; ++j) {
      const std::uint32_t id = s.ring[j % kRing];
      Track& t = track_[id & (kTrackSlots - 1)];
      if (t.live && t.msg_id == id && ((gone >> t.inst) & 1u)) fail(t, false);
    }
  }
}

void ServiceStage::on_deadline(void* self_ptr, std::uint64_t now) {
  auto& self = *static_cast<ServiceStage*>(self_ptr);
  std::uint64_t next = Timer::kNever;
  for (std::size_t k = 0; k < self.svcs_.size(); ++k) {
    Svc& s = *self.svcs_[k];
    while (s.head != s.tail) {
      const std::uint32_t id = s.ring[s.head % kRing];
      Track& t = self.track_[id & (kTrackSlots - 1)];
      if (!t.live || t.msg_id != id || t.svc != k) {
        ++s.head;  // answered or failed already
        continue;
      }
      if (t.deadline_ns > now) {
        next = std::min(next, t.deadline_ns);
        break;
      }
      self.fail(t, true);
      ++s.head;
    }
  }
  if (next != Timer::kNever) self.deadline_.arm(next);
}

std::vector<ServiceInfo> ServiceStage::info() const {
  std::vector<ServiceInfo> out;
  for (const auto& sp : svcs_) {
    const Svc& s = *sp;
    ServiceInfo si{s.cfg.id, s.cfg.name, std::string(config::to_string(s.cfg.policy)), s.cfg.timeout_ms, {}};
    const std::uint64_t live = s.live_shared.load(std::memory_order_relaxed);
    for (std::size_t i = 0; i < s.cfg.instances.size(); ++i) {
      const Counters& c = s.counters[i];
      ServiceInfo::Instance in{s.cfg.instances[i], ((live >> i) & 1u) != 0, c.sent.get(), c.requests.get(),
                               c.answered.get(), c.timed_out.get(), c.failed_down.get(), 0};
      const std::uint64_t closed = in.answered + in.timed_out + in.failed_down;
      in.outstanding = in.requests > closed ? in.requests - closed : 0;
      si.instances.push_back(in);
    }
    out.push_back(std::move(si));
  }
  return out;
}

}  // namespace nerve::node
