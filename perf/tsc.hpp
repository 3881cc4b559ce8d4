// TSC timestamps calibrated to nanoseconds, without the EAL (the kernel-UDP peer has none).
// Every process on a host reads the same invariant TSC, so one-way latency between two
// processes is a difference of their TSC readings.
#pragma once

#include <x86intrin.h>

#include <chrono>
#include <cstdint>

namespace nerve::perf {

inline std::uint64_t rdtsc() noexcept { return __rdtsc(); }

class Tsc {
 public:
  // Measures the TSC rate against CLOCK_MONOTONIC over `window`.
  static Tsc calibrate(std::chrono::milliseconds window = std::chrono::milliseconds(100)) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::uint64_t c0 = rdtsc();
    while (std::chrono::steady_clock::now() - t0 < window) {
    }
    const std::uint64_t c1 = rdtsc();
    const auto ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
    return Tsc(static_cast<double>(c1 - c0) / ns);
  }
  explicit Tsc(double cycles_per_ns) : cycles_per_ns_(cycles_per_ns) {}

  double cycles_per_ns() const noexcept { return cycles_per_ns_; }
  std::uint64_t to_ns(std::uint64_t cycles) const noexcept {
    return static_cast<std::uint64_t>(static_cast<double>(cycles) / cycles_per_ns_);
  }
  std::uint64_t from_ns(std::uint64_t ns) const noexcept {
    return static_cast<std::uint64_t>(static_cast<double>(ns) * cycles_per_ns_);
  }

 private:
  double cycles_per_ns_;
};

}  // namespace nerve::perf
