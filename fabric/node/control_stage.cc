#include "control_stage.hpp"

#include <rte_mbuf.h>

#include <algorithm>
#include <cstring>

#include "reliable_stage.hpp"

namespace nerve::node {

ControlStage::ControlStage(const config::Cluster& c, ProxyTable& table, TxStage& tx, ServiceStage& services,
                           TimerStage& timers)
    : cluster_(c), table_(table), tx_(tx), services_(services), deadline_timer_(&ControlStage::on_deadline, this),
      await_(kAwaitSlots) {
  timers.add(deadline_timer_);
  services_.set_sink([](void* ctx, std::uint32_t id) { static_cast<ControlStage*>(ctx)->service_failed(id); }, this);
}

ControlStage::~ControlStage() { cancel_all(); }

void ControlStage::admit(std::uint32_t idx, std::uint64_t now) noexcept {
  ProxySlot& s = table_.slot(idx);
  s.status = SendStatus::kOk;
  s.sent = s.replies = s.reply_len = s.next = s.awaiting = s.failed = 0;
  s.spread.fill(0);
  using Target = ProxySend::Target;
  s.target_index = s.req.target == Target::kGroup     ? cluster_.group_index(s.req.dst)
                   : s.req.target == Target::kService ? services_.index(s.req.dst)
                                                      : -1;
  s.rtt_ns = 0;
  s.start_ns = now;
  s.deadline_ns = now + static_cast<std::uint64_t>(s.req.timeout.count()) * 1'000'000u;
  s.pending = nullptr;
  s.pending_large = nullptr;
  if (s.req.rate_mps > 0 && s.req.count > 1) {
    // Message 1 is due a whole interval after message 0.
    s.deadline_ns += static_cast<std::uint64_t>(1e9 / s.req.rate_mps);
  }
  active_[n_active_++] = idx;
  deadline_timer_.arm_before(s.deadline_ns);
}

unsigned ControlStage::run(std::uint64_t now) noexcept {
  std::uint32_t fresh[16];
  const unsigned n = table_.take(fresh, 16);
  for (unsigned k = 0; k < n; ++k) admit(fresh[k], now);
  if (n_active_ == 0) return 0;
  // One budget for all: each request in turn, starting one further along every poll.
  unsigned budget = kBudget, sent = 0;
  const unsigned count = n_active_, start = rr_++ % count;
  for (unsigned j = 0; j < count && budget > 0; ++j) {
    const std::uint32_t idx = active_[(start + j) % count];
    const unsigned moved = send_some(idx, budget, now);
    budget -= moved;
    sent += moved;
  }
  compact();
  return sent;
}

unsigned ControlStage::send_some(std::uint32_t idx, unsigned budget, std::uint64_t now) noexcept {
  ProxySlot& s = table_.slot(idx);
  if (s.done) return 0;
  const ProxySend& r = s.req;
  if (r.reliable && reliable_ == nullptr) {
    finish(idx, SendStatus::kBadArgument);
    return 0;
  }
  const std::uint64_t timeout_ns = static_cast<std::uint64_t>(r.timeout.count()) * 1'000'000u;
  unsigned allowed = budget;
  if (r.rate_mps > 0) {
    // Paced: only the messages the schedule has made due by now.
    const double due = static_cast<double>(now - s.start_ns) * r.rate_mps / 1e9 + 1;
    const auto due_n = static_cast<std::uint64_t>(std::min(due, static_cast<double>(r.count)));
    allowed = static_cast<unsigned>(std::min<std::uint64_t>(budget, due_n > s.next ? due_n - s.next : 0));
  }
  const bool large = r.size > tx_.max_payload();
  if (large && (r.target != ProxySend::Target::kNode || !large_ || r.size > large_->size())) {
    finish(idx, SendStatus::kTooLarge);  // large messages go to one node, up to max_message
    return 0;
  }
  unsigned sent = 0;
  while (allowed > 0 && s.next < r.count) {
    const std::uint32_t id = tx_.next_msg_id();
    Await& a = await_[id & (kAwaitSlots - 1)];
    if (r.await_reply && await_live(a)) break;  // that many replies outstanding: wait for some
    NodeId asked = r.dst;
    const SendStatus st = large ? send_large(s) : send_frame(s, allowed, asked);
    if (st == SendStatus::kBackpressure) break;  // kept, sent as it is next time
    if (st != SendStatus::kOk) {
      finish(idx, st);
      return sent;
    }
    ++s.sent;
    ++s.next;
    ++sent;
    --allowed;
    s.deadline_ns = std::max(s.deadline_ns, now + timeout_ns);
    if (r.await_reply) {
      a = Await{id, s.generation, static_cast<std::uint16_t>(idx), asked, true, now};
      ++awaiting_;
      ++s.awaiting;
    }
  }
  if (r.rate_mps > 0 && s.next < r.count) {
    // The timeout runs from when the next message is due, not from the last one sent: a slow
    // schedule is not a stalled send.
    const auto next_due_ns = s.start_ns + static_cast<std::uint64_t>(static_cast<double>(s.next) * 1e9 / r.rate_mps);
    s.deadline_ns = std::max(s.deadline_ns, next_due_ns + timeout_ns);
  }
  if (s.next == r.count && s.awaiting == 0) finish(idx, SendStatus::kOk);
  return sent;
}

SendStatus ControlStage::send_frame(ProxySlot& s, unsigned allowed, NodeId& asked) noexcept {
  const ProxySend& r = s.req;
  const std::size_t room = tx_.max_payload();
  rte_mbuf* m = s.pending;
  if (!m) {
    m = tx_.alloc(room);
    if (!m) return SendStatus::kBackpressure;  // pool empty (counted): retried next poll, until the deadline
    std::size_t len = r.fill ? r.fill(s.next, std::span<std::byte>(rte_pktmbuf_mtod(m, std::byte*), room)) : 0;
    len = std::min(len, room);
    rte_pktmbuf_trim(m, static_cast<std::uint16_t>(room - len));
  }
  SendOptions o;
  o.channel = r.channel;
  o.never_shed = true;  // a counted send loses nothing: it waits for room, P3/P4 included
  o.more = allowed > 1 && s.next + 1 < r.count;  // a poll's batch leaves together, P0 too
  o.paths = r.paths;
  SendStatus st = SendStatus::kOk;
  switch (r.target) {
    case ProxySend::Target::kNode:
      st = r.reliable ? reliable_->send(m, r.dst, r.type, r.priority, o) : tx_.send(m, r.dst, r.type, r.priority, o);
      break;
    case ProxySend::Target::kBroadcast:
      st = r.reliable ? reliable_->send_group(m, -1, r.type, r.priority, o)
                      : tx_.send_tree(m, -1, wire::kBroadcast, r.type, r.priority, o);
      break;
    case ProxySend::Target::kGroup:
      st = s.target_index < 0 ? SendStatus::kBadArgument
           : r.reliable       ? reliable_->send_group(m, s.target_index, r.type, r.priority, o)
                              : tx_.send_tree(m, s.target_index, r.dst, r.type, r.priority, o);
      break;
    case ProxySend::Target::kService:
      o.key = r.key ? *r.key : s.next;
      o.reliable = r.reliable;  // to the instance picked, through the reliable stage
      st = s.target_index < 0 ? SendStatus::kBadArgument
                              : services_.send(m, static_cast<unsigned>(s.target_index), r.type, r.priority, o, &asked);
      if (st == SendStatus::kOk) {
        const int pos = services_.instance_pos(static_cast<unsigned>(s.target_index), asked);
        if (pos >= 0) ++s.spread[static_cast<unsigned>(pos)];
      }
      break;
  }
  s.pending = st == SendStatus::kBackpressure ? m : nullptr;  // pushed back: kept, sent as it is next time
  if (st != SendStatus::kOk && st != SendStatus::kBackpressure) rte_pktmbuf_free(m);
  return st;
}

SendStatus ControlStage::send_large(ProxySlot& s) noexcept {
  const ProxySend& r = s.req;
  MessageBuffer* b = s.pending_large;
  std::size_t len = s.pending_len;
  if (!b) {
    b = large_->take();
    if (!b) return SendStatus::kBackpressure;  // every send buffer in use: tried again next poll
    len = r.fill ? std::min(r.fill(s.next, std::span<std::byte>(b->data, r.size)), r.size) : 0;
  }
  SendOptions o;
  o.channel = r.channel;
  o.never_shed = true;
  const SendStatus st = reliable_->send_large(b, len, r.dst, r.type, r.priority, o);
  if (st == SendStatus::kOk) {
    s.pending_large = nullptr;
  } else if (st == SendStatus::kBackpressure) {
    s.pending_large = b;  // kept, sent as it is next time
    s.pending_len = static_cast<std::uint32_t>(len);
  } else {
    s.pending_large = nullptr;
    give_back(b);
  }
  return st;
}

bool ControlStage::await_live(const Await& a) const noexcept {
  return a.live && table_.slot(a.slot).generation == a.generation && !table_.slot(a.slot).done;
}

ControlStage::Match ControlStage::match_response(const wire::Header& h, std::span<const std::byte> payload,
                                                 std::uint64_t now) noexcept {
  Await& a = await_[h.corr_id & (kAwaitSlots - 1)];
  if (a.msg_id != h.corr_id || !await_live(a)) return Match::kNotOurs;
  if (a.dst != h.src_node) return Match::kMismatch;
  ProxySlot& s = table_.slot(a.slot);
  a.live = false;
  --awaiting_;
  --s.awaiting;
  if (s.replies++ == 0) {
    s.reply_len = static_cast<std::uint32_t>(std::min(payload.size(), s.reply.size()));
    std::memcpy(s.reply.data(), payload.data(), s.reply_len);
    s.rtt_ns = now - a.sent_ns;
  }
  if (s.awaiting == 0 && s.next == s.req.count) {
    finish(a.slot, SendStatus::kOk);
    compact();
  }
  return Match::kAnswered;
}

void ControlStage::service_failed(std::uint32_t msg_id) noexcept {
  Await& a = await_[msg_id & (kAwaitSlots - 1)];
  if (a.msg_id != msg_id || !await_live(a)) return;
  ProxySlot& s = table_.slot(a.slot);
  a.live = false;
  --awaiting_;
  --s.awaiting;
  ++s.failed;
  if (s.awaiting == 0 && s.next == s.req.count) {
    finish(a.slot, SendStatus::kOk);
    compact();
  }
}

void ControlStage::finish(std::uint32_t idx, SendStatus status) noexcept {
  ProxySlot& s = table_.slot(idx);
  if (s.done) return;
  if (status == SendStatus::kOk && s.failed != 0) status = SendStatus::kFailed;
  if (s.status == SendStatus::kOk) s.status = status;
  if (s.pending) {
    rte_pktmbuf_free(s.pending);
    s.pending = nullptr;
  }
  if (s.pending_large) {
    give_back(s.pending_large);
    s.pending_large = nullptr;
  }
  awaiting_ -= s.awaiting;  // their entries go stale with the generation
  s.awaiting = 0;
  ++s.generation;
  s.done = true;
  // The caller may reuse the slot as soon as it sees kDone; compact() drops it from active_
  // before this stage takes anything new.
  s.state.store(SlotState::kDone, std::memory_order_release);
}

void ControlStage::compact() noexcept {
  unsigned k = 0;
  for (unsigned j = 0; j < n_active_; ++j) {
    const std::uint32_t idx = active_[j];
    if (table_.slot(idx).done) {
      table_.slot(idx).done = false;
      continue;
    }
    active_[k++] = idx;
  }
  n_active_ = k;
}

void ControlStage::on_deadline(void* self_ptr, std::uint64_t now) {
  auto& self = *static_cast<ControlStage*>(self_ptr);
  std::uint64_t next = Timer::kNever;
  for (unsigned j = 0; j < self.n_active_; ++j) {
    ProxySlot& s = self.table_.slot(self.active_[j]);
    if (now > s.deadline_ns)
      self.finish(self.active_[j], s.pending || s.pending_large ? SendStatus::kBackpressure : SendStatus::kTimeout);
    else
      next = std::min(next, s.deadline_ns);
  }
  self.compact();
  if (next != Timer::kNever) self.deadline_timer_.arm(next + 1);
}

void ControlStage::cancel_all() noexcept {
  std::uint32_t fresh[16];
  while (const unsigned n = table_.take(fresh, 16))
    for (unsigned k = 0; k < n; ++k) admit(fresh[k], 0);
  for (unsigned j = 0; j < n_active_; ++j) finish(active_[j], SendStatus::kShutdown);
  compact();
}

}  // namespace nerve::node
