// The open-loop send schedule. Message i is due at start + i * interval, whatever happened to
// message i-1: a sender that falls behind sends late messages at once, stamped with the time
// they were *due*, so latency is measured from the schedule and a stall shows up in every
// message it delayed (no coordinated omission). A rate of 0 means closed loop / as fast as
// possible: every message is due immediately.
#pragma once

#include <cstdint>

namespace nerve::perf {

class Schedule {
 public:
  Schedule() = default;
  // rate_mps messages per second, timed in TSC cycles.
  Schedule(double rate_mps, double cycles_per_ns, std::uint64_t start_tsc) noexcept
      : start_(start_tsc), interval_(rate_mps > 0 ? 1e9 * cycles_per_ns / rate_mps : 0.0) {}

  bool open_loop() const noexcept { return interval_ > 0; }
  // TSC at which message i is due.
  std::uint64_t due(std::uint64_t i) const noexcept {
    return start_ + static_cast<std::uint64_t>(static_cast<double>(i) * interval_);
  }
  // How many of messages [next, limit) are due at `now`.
  std::uint64_t due_count(std::uint64_t next, std::uint64_t limit, std::uint64_t now) const noexcept {
    if (!open_loop()) return limit - next;
    if (now < start_) return 0;
    const auto elapsed = static_cast<double>(now - start_);
    auto n = static_cast<std::uint64_t>(elapsed / interval_) + 1;  // messages 0..n-1 are due
    if (n > limit) n = limit;
    return n > next ? n - next : 0;
  }

 private:
  std::uint64_t start_ = 0;
  double interval_ = 0;
};

}  // namespace nerve::perf
