// The timer stage: a handful of timers, each owned by the stage that arms it, checked once per
// poll against the node's clock (one read per poll, an injectable Clock: tests step it).
//
// A timer is armed for an absolute time and fires once, on the datapath thread, at the first
// poll at or after it; its callback may re-arm it (periodic work). Users today: the clock's
// re-anchoring and the control stage's deadline sweep. Reliability (retransmission) and the
// heartbeats of the routing protocol register theirs here.
//
// Owner thread only. No allocation after start-up: timers are registered by pointer.
#pragma once

#include <array>
#include <cstdint>
#include <limits>

namespace nerve::node {

class Timer {
 public:
  using Fn = void (*)(void* ctx, std::uint64_t now_ns);
  static constexpr std::uint64_t kNever = std::numeric_limits<std::uint64_t>::max();

  Timer(Fn fn, void* ctx) noexcept : fn_(fn), ctx_(ctx) {}
  void arm(std::uint64_t at_ns) noexcept { due_ns_ = at_ns; }
  // Arms for `at_ns` unless already armed for earlier.
  void arm_before(std::uint64_t at_ns) noexcept {
    if (at_ns < due_ns_) due_ns_ = at_ns;
  }
  void disarm() noexcept { due_ns_ = kNever; }
  bool armed() const noexcept { return due_ns_ != kNever; }
  std::uint64_t due_ns() const noexcept { return due_ns_; }

 private:
  friend class TimerStage;
  Fn fn_;
  void* ctx_;
  std::uint64_t due_ns_ = kNever;
};

class TimerStage {
 public:
  static constexpr unsigned kMaxTimers = 16;

  // Registers `t` (which must outlive the stage). False when kMaxTimers are registered.
  bool add(Timer& t) noexcept {
    if (n_ == kMaxTimers) return false;
    timers_[n_++] = &t;
    return true;
  }
  // Fires every timer due at `now_ns`, earliest first, each at most once per run (disarmed
  // before its callback runs, so a callback that re-arms for `now_ns` fires at the next run).
  // Returns the number fired.
  unsigned run(std::uint64_t now_ns) noexcept {
    gap_ns_ = prev_ns_ != 0 && now_ns > prev_ns_ ? now_ns - prev_ns_ : 0;
    prev_ns_ = now_ns;
    if (now_ns < next_due()) return 0;
    unsigned fired = 0;
    std::uint32_t done = 0;  // bit i: timer i fired in this run
    while (true) {
      int due = -1;
      for (unsigned i = 0; i < n_; ++i)
        if (!((done >> i) & 1u) && timers_[i]->due_ns_ <= now_ns &&
            (due < 0 || timers_[i]->due_ns_ < timers_[static_cast<unsigned>(due)]->due_ns_))
          due = static_cast<int>(i);
      if (due < 0) break;
      Timer* t = timers_[static_cast<unsigned>(due)];
      done |= 1u << due;
      t->due_ns_ = Timer::kNever;
      t->fn_(t->ctx_, now_ns);
      ++fired;
    }
    return fired;
  }
  // How long before this run the previous one was (0 at the first): a callback learns from it
  // that the node itself was not running (preempted, stopped).
  std::uint64_t gap_ns() const noexcept { return gap_ns_; }
  std::uint64_t next_due() const noexcept {
    std::uint64_t t = Timer::kNever;
    for (unsigned i = 0; i < n_; ++i) t = timers_[i]->due_ns_ < t ? timers_[i]->due_ns_ : t;
    return t;
  }

 private:
  std::array<Timer*, kMaxTimers> timers_{};
  unsigned n_ = 0;
  std::uint64_t prev_ns_ = 0, gap_ns_ = 0;
};

}  // namespace nerve::node
