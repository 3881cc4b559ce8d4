// Log-linear latency histogram in the manner of HdrHistogram: 128 linear sub-buckets per power
// of two, so any recorded value is reported within 1/128 (< 0.8%) of itself, from 1 ns to
// 2^40 ns (~18 minutes). Fixed memory (~35 KiB), no allocation while recording, mergeable.
//
// Single writer: record() belongs to one thread (an lcore). Any thread may read concurrently:
// the cells are relaxed atomics, which on x86 compile to plain loads and stores.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace nerve::stats {

class Histogram {
 public:
  static constexpr unsigned kSubBits = 7;
  static constexpr std::uint64_t kSub = 1u << kSubBits;
  static constexpr unsigned kMaxExp = 40;  // values >= 2^40 are clamped into the last bucket
  static constexpr std::size_t kBuckets = (kMaxExp - kSubBits + 1) * kSub;
  static constexpr std::uint64_t kMaxValue = (std::uint64_t{1} << kMaxExp) - 1;

  Histogram() noexcept { reset(); }
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  // Owner thread only.
  void record(std::uint64_t v) noexcept {
    if (v > kMaxValue) [[unlikely]] v = kMaxValue;
    bump(counts_[index_of(v)], 1);
    bump(total_, 1);
    bump(sum_, v);
    if (v < min_.load(std::memory_order_relaxed)) min_.store(v, std::memory_order_relaxed);
    if (v > max_.load(std::memory_order_relaxed)) max_.store(v, std::memory_order_relaxed);
  }

  // Records n occurrences of v (rebuilding a histogram from its buckets). Owner thread only.
  void record_n(std::uint64_t v, std::uint64_t n) noexcept {
    if (n == 0) return;
    if (v > kMaxValue) v = kMaxValue;
    bump(counts_[index_of(v)], n);
    bump(total_, n);
    bump(sum_, v * n);
    if (v < min_.load(std::memory_order_relaxed)) min_.store(v, std::memory_order_relaxed);
    if (v > max_.load(std::memory_order_relaxed)) max_.store(v, std::memory_order_relaxed);
  }
  // Values recorded above `v` (to within one bucket).
  std::uint64_t count_above(std::uint64_t v) const noexcept {
    std::uint64_t n = 0;
    for (std::size_t i = index_of(std::min(v, kMaxValue)) + 1; i < kBuckets; ++i) n += bucket_count(i);
    return n;
  }
  std::uint64_t sum() const noexcept { return sum_.load(std::memory_order_relaxed); }

  // Adds other's counts into this one (owner of this only; other may be live).
  void merge(const Histogram& other) noexcept;
  void reset() noexcept;

  std::uint64_t count() const noexcept { return total_.load(std::memory_order_relaxed); }
  std::uint64_t min() const noexcept { return count() ? min_.load(std::memory_order_relaxed) : 0; }
  std::uint64_t max() const noexcept { return max_.load(std::memory_order_relaxed); }
  double mean() const noexcept;
  // Smallest bucket upper bound at or below which `pct` percent of the values lie, clamped to
  // [min, max]. 0 when empty.
  std::uint64_t percentile(double pct) const noexcept;

  static constexpr std::size_t index_of(std::uint64_t v) noexcept {
    if (v < kSub) return static_cast<std::size_t>(v);
    const unsigned e = 63u - static_cast<unsigned>(__builtin_clzll(v));  // floor(log2 v) >= kSubBits
    const unsigned shift = e - kSubBits;
    return static_cast<std::size_t>((e - kSubBits + 1) * kSub + ((v >> shift) - kSub));
  }
  // Largest value that maps to bucket i.
  static constexpr std::uint64_t upper_of(std::size_t i) noexcept {
    if (i < kSub) return i;
    const std::uint64_t octave = i / kSub - 1;  // shift
    const std::uint64_t sub = i % kSub + kSub;
    return ((sub + 1) << octave) - 1;
  }
  std::uint64_t bucket_count(std::size_t i) const noexcept {
    return counts_[i].load(std::memory_order_relaxed);
  }

 private:
  static void bump(std::atomic<std::uint64_t>& c, std::uint64_t by) noexcept {
    c.store(c.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
  }

  std::array<std::atomic<std::uint64_t>, kBuckets> counts_;
  std::atomic<std::uint64_t> total_;
  std::atomic<std::uint64_t> sum_;
  std::atomic<std::uint64_t> min_;
  std::atomic<std::uint64_t> max_;
};

}  // namespace nerve::stats
