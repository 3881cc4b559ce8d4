#include "queries.hpp"

namespace nerve::app {

QueryDesk::Handed QueryDesk::hand_over(Node& node, RxMessage& m) noexcept {
  if (!serving()) {
    no_server_.add();
    return Handed::kNoServer;
  }
  const auto payload = m.payload();
  for (std::size_t i = 0; i < kSlots; ++i) {
    Slot& s = slots_[i];
    if (s.state.load(std::memory_order_acquire) != kFree) continue;
    s.id = static_cast<std::uint32_t>(++generation_ * kSlots + i);
    s.from = m.source();
    s.asked_ns = now_ns();
    set_text(s, std::string_view(reinterpret_cast<const char*>(payload.data()), payload.size()));
    s.req = std::move(m);
    (void)node.take_frame(s.req);  // the header stays readable; the frame goes back to the pool
    s.state.store(kAsked, std::memory_order_release);
    expire_at_ = std::min(expire_at_, s.asked_ns + kTimeoutNs + 1);
    ++outstanding_;
    handed_.add();
    return Handed::kOk;
  }
  busy_.add();
  return Handed::kBusy;
}

bool QueryDesk::attach() noexcept {
  bool expected = false;
  return serving_.compare_exchange_strong(expected, true, std::memory_order_acq_rel);
}

void QueryDesk::detach() noexcept {
  // What the app held, and what was handed to it meanwhile, is answered now; only then may
  // another app attach (and take slots), so no slot is answered twice.
  for (Slot& s : slots_) {
    std::uint8_t st = kAsked;
    if (s.state.load(std::memory_order_acquire) == kTaken ||
        s.state.compare_exchange_strong(st, kTaken, std::memory_order_acq_rel)) {
      set_text(s, "error the node's telemetry sidecar went away before answering");
      s.state.store(kAnswered, std::memory_order_release);
    }
  }
  ready_.fetch_add(1, std::memory_order_release);
  serving_.store(false, std::memory_order_release);  // what the datapath hands over after this times out
}

bool QueryDesk::answer(std::uint32_t id, std::string_view text) noexcept {
  Slot& s = slots_[id % kSlots];
  if (s.state.load(std::memory_order_acquire) != kTaken || s.id != id) return false;
  set_text(s, text.empty() ? std::string_view("error empty answer") : text);
  s.state.store(kAnswered, std::memory_order_release);
  ready_.fetch_add(1, std::memory_order_release);
  return true;
}

void QueryDesk::expire_taken() noexcept {
  const std::uint64_t now = now_ns();
  bool any = false;
  for (Slot& s : slots_) {
    if (s.state.load(std::memory_order_acquire) != kTaken || now - s.asked_ns <= kTimeoutNs) continue;
    set_text(s, "error no answer: the node's telemetry sidecar did not answer in time");
    s.state.store(kAnswered, std::memory_order_release);
    timed_out_.fetch_add(1, std::memory_order_relaxed);
    any = true;
  }
  if (any) ready_.fetch_add(1, std::memory_order_release);
}

}  // namespace nerve::app
