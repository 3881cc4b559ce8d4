#include "nerve/clock.hpp"

#include <cpuid.h>
#include <time.h>

namespace nerve {
namespace {

std::uint64_t realtime_ns() noexcept {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

// A (counter, wall time) pair read as close together as this machine allows: the best of a few
// tries, the wall time taken halfway between two counter readings.
// Returns the width of the best bracket, in cycles.
std::uint64_t read_pair(std::uint64_t& cycles, std::uint64_t& ns) noexcept {
  std::uint64_t best = ~0ull;
  for (int i = 0; i < 3; ++i) {
    const std::uint64_t c0 = __rdtsc();
    const std::uint64_t t = realtime_ns();
    const std::uint64_t c1 = __rdtsc();
    if (c1 - c0 < best) {
      best = c1 - c0;
      cycles = c0 + (c1 - c0) / 2;
      ns = t;
    }
  }
  return best;
}

// CPUID leaf 0x80000007, EDX bit 8: the TSC runs at a constant rate in every P-, C- and T-state.
bool tsc_invariant() noexcept {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_max(0x80000000, nullptr) < 0x80000007) return false;
  __cpuid(0x80000007, a, b, c, d);
  return (d & (1u << 8)) != 0;
}

}  // namespace

Clock::Clock(bool manual, std::uint64_t start_ns) : manual_(manual) {
  manual_ns_.store(start_ns, std::memory_order_relaxed);
  // Calibrate over 20 ms; sync() refines the rate from then on.
  std::uint64_t c0 = 0, t0 = 0, c1 = 0, t1 = 0;
  read_pair(c0, t0);
  do read_pair(c1, t1);
  while (t1 - t0 < 20'000'000 || c1 <= c0);
  first_cycles_ = c0;
  first_ns_ = t0;
  mult_.store(static_cast<std::uint64_t>((static_cast<u128>(t1 - t0) << kShift) / (c1 - c0)),
              std::memory_order_relaxed);
  base_cycles_.store(c1, std::memory_order_relaxed);
  base_ns_.store(t1, std::memory_order_relaxed);
  sync_every_cycles_.store(to_cycles(kSyncIntervalNs), std::memory_order_relaxed);
  invariant_ = manual || tsc_invariant();
}

Clock& Clock::tsc() {
  static Clock c(false, 0);
  return c;
}

std::unique_ptr<Clock> Clock::manual(std::uint64_t start_ns) {
  return std::unique_ptr<Clock>(new Clock(true, start_ns));
}

void Clock::set(std::uint64_t ns) noexcept {
  if (manual_) manual_ns_.store(ns, std::memory_order_relaxed);
}

void Clock::advance(std::uint64_t ns) noexcept {
  if (manual_) manual_ns_.fetch_add(ns, std::memory_order_relaxed);
}

std::uint64_t Clock::slow_now(std::uint64_t) const noexcept { return realtime_ns(); }

void Clock::sync() const noexcept {
  if (manual_) return;
  std::uint64_t s = seq_.load(std::memory_order_relaxed);
  // One writer at a time; a thread that finds the lock taken leaves the work to its holder.
  // Taking the lock is an acquire and every field is stored with release (plain stores on x86):
  // a reader that sees a new field value also sees the odd sequence and retries.
  if ((s & 1) != 0 || !seq_.compare_exchange_strong(s, s + 1, std::memory_order_acquire)) return;
  std::uint64_t c = 0, t = 0;
  // A pair read across a preemption is worse than the anchor we have: keep that one, and try
  // again at the next sync (the drift over one more interval is far smaller).
  if (read_pair(c, t) > to_cycles(10'000)) {
    // Extrapolated to now on the old anchor: no step, and not due again for an interval.
    const std::uint64_t bc = base_cycles_.load(std::memory_order_relaxed);
    if (c > bc) {
      base_ns_.store(base_ns_.load(std::memory_order_relaxed) + to_ns(c - bc), std::memory_order_release);
      base_cycles_.store(c, std::memory_order_release);
    }
    seq_.store(s + 2, std::memory_order_release);
    return;
  }
  // The rate over the clock's whole life: after a second its error is below 0.1 ppm. A step of
  // the realtime clock (settimeofday, an NTP step) starts the measurement over.
  if (t > first_ns_ + 1'000'000'000 && c > first_cycles_) {
    const auto m = static_cast<std::uint64_t>((static_cast<u128>(t - first_ns_) << kShift) /
                                              (c - first_cycles_));
    const std::uint64_t old = mult_.load(std::memory_order_relaxed);
    if (m > old - old / 1000 && m < old + old / 1000) {
      mult_.store(m, std::memory_order_release);
    } else {
      first_cycles_ = c;
      first_ns_ = t;
    }
  } else if (t < first_ns_) {
    first_cycles_ = c;
    first_ns_ = t;
  }
  base_cycles_.store(c, std::memory_order_release);
  base_ns_.store(t, std::memory_order_release);
  seq_.store(s + 2, std::memory_order_release);
}

}  // namespace nerve
