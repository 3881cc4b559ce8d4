// nerve::Clock — the one clock the node, the harness and the tests read.
//
// The TSC clock reads the CPU's time-stamp counter and converts it to wall time (CLOCK_REALTIME
// nanoseconds): one rdtsc and a multiply, no syscall. Every process on a host converts the same
// invariant TSC against the same realtime clock, so a timestamp written by one process and read
// by another gives one-way latency; across hosts the realtime clocks must be synchronised (PTP).
// The conversion is re-anchored to CLOCK_REALTIME (vDSO, no syscall with the tsc clocksource)
// at most every kSyncInterval, by whichever thread reads the clock first after it is due; the
// rate is refined from the whole lifetime of the clock, so it converges to the realtime rate.
//
// A manual clock moves only when told to (set/advance): tests step timers with it.
//
// Threading: now_ns() and cycles() from any thread; set/advance from any thread (manual only).
#pragma once

#include <x86intrin.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>

namespace nerve {

__extension__ typedef unsigned __int128 u128;  // 64x64 -> 128-bit products (GCC, Clang)

class Clock {
 public:
  // Longest time between re-anchorings of the TSC clock.
  static constexpr std::uint64_t kSyncIntervalNs = 100'000'000;

  // The process's TSC clock, calibrated at first use (~20 ms). Falls back to reading
  // CLOCK_REALTIME at every call where the TSC is not invariant.
  static Clock& tsc();
  // A clock that reads `start_ns` until set() or advance() move it.
  static std::unique_ptr<Clock> manual(std::uint64_t start_ns = 1'000'000'000'000'000'000ull);

  Clock(const Clock&) = delete;
  Clock& operator=(const Clock&) = delete;

  // Wall time in nanoseconds since the epoch.
  std::uint64_t now_ns() const noexcept {
    if (manual_) [[unlikely]]
      return manual_ns_.load(std::memory_order_relaxed);
    return from_cycles(cycles());
  }
  // The raw counter, for intervals measured on one thread (convert with to_ns).
  static std::uint64_t cycles() noexcept { return __rdtsc(); }
  // Wall time of a counter reading taken by this process.
  std::uint64_t from_cycles(std::uint64_t c) const noexcept {
    if (!invariant_) [[unlikely]]
      return slow_now(c);
    while (true) {
      // Sequence lock, read side. The fields are loaded with acquire (plain loads on x86) so the
      // second look at the sequence cannot move above them; no fence, which ThreadSanitizer
      // cannot follow.
      const std::uint64_t s1 = seq_.load(std::memory_order_acquire);
      const std::uint64_t bc = base_cycles_.load(std::memory_order_acquire);
      const std::uint64_t bn = base_ns_.load(std::memory_order_acquire);
      const std::uint64_t m = mult_.load(std::memory_order_acquire);
      const std::uint64_t every = sync_every_cycles_.load(std::memory_order_acquire);
      if ((s1 & 1) != 0 || seq_.load(std::memory_order_relaxed) != s1) [[unlikely]]
        continue;
      if (c - bc > every && c > bc) [[unlikely]] {
        sync();
        continue;
      }
      // A reading from just before the anchor (another thread re-anchored meanwhile).
      if (c < bc) return bn - static_cast<std::uint64_t>((static_cast<u128>(bc - c) * m) >> kShift);
      return bn + static_cast<std::uint64_t>((static_cast<u128>(c - bc) * m) >> kShift);
    }
  }
  // An interval in counter cycles, in nanoseconds.
  std::uint64_t to_ns(std::uint64_t cycles) const noexcept {
    return static_cast<std::uint64_t>((static_cast<u128>(cycles) * mult_.load(std::memory_order_relaxed)) >> kShift);
  }
  std::uint64_t to_cycles(std::uint64_t ns) const noexcept {
    return static_cast<std::uint64_t>(static_cast<double>(ns) * cycles_per_ns());
  }
  double cycles_per_ns() const noexcept {
    return static_cast<double>(std::uint64_t{1} << kShift) / static_cast<double>(mult_.load(std::memory_order_relaxed));
  }

  bool is_manual() const noexcept { return manual_; }
  // Manual clocks only (no effect on the TSC clock).
  void set(std::uint64_t ns) noexcept;
  void advance(std::uint64_t ns) noexcept;
  void advance(std::chrono::nanoseconds d) noexcept { advance(static_cast<std::uint64_t>(d.count())); }

  // Re-anchors now (the TSC clock does this itself every kSyncIntervalNs).
  void sync() const noexcept;

 private:
  static constexpr unsigned kShift = 32;  // mult_ is nanoseconds per cycle << kShift
  explicit Clock(bool manual, std::uint64_t start_ns);
  std::uint64_t slow_now(std::uint64_t c) const noexcept;

  const bool manual_;
  bool invariant_ = true;
  std::atomic<std::uint64_t> manual_ns_{0};
  // The anchor: counter and wall time at the last sync, under a sequence lock (writers take it
  // with a CAS to an odd value; readers retry while it is odd or changed under them).
  mutable std::atomic<std::uint64_t> seq_{0};
  mutable std::atomic<std::uint64_t> base_cycles_{0};
  mutable std::atomic<std::uint64_t> base_ns_{0};
  mutable std::atomic<std::uint64_t> mult_{1};
  mutable std::atomic<std::uint64_t> sync_every_cycles_{0};
  // The first anchor: the rate is measured from it, over the clock's whole life. Written by
  // the holder of the sequence lock only.
  mutable std::uint64_t first_cycles_ = 0, first_ns_ = 0;
};

}  // namespace nerve
