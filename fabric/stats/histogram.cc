#include "nerve/histogram.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace nerve::stats {

void Histogram::reset() noexcept {
  for (auto& c : counts_) c.store(0, std::memory_order_relaxed);
  total_.store(0, std::memory_order_relaxed);
  sum_.store(0, std::memory_order_relaxed);
  min_.store(std::numeric_limits<std::uint64_t>::max(), std::memory_order_relaxed);
  max_.store(0, std::memory_order_relaxed);
}

void Histogram::merge(const Histogram& other) noexcept {
  if (other.count() == 0) return;
  for (std::size_t i = 0; i < kBuckets; ++i) {
    const std::uint64_t n = other.counts_[i].load(std::memory_order_relaxed);
    if (n != 0) bump(counts_[i], n);
  }
  bump(total_, other.total_.load(std::memory_order_relaxed));
  bump(sum_, other.sum_.load(std::memory_order_relaxed));
  min_.store(std::min(min_.load(std::memory_order_relaxed), other.min_.load(std::memory_order_relaxed)),
             std::memory_order_relaxed);
  max_.store(std::max(max_.load(std::memory_order_relaxed), other.max_.load(std::memory_order_relaxed)),
             std::memory_order_relaxed);
}

double Histogram::mean() const noexcept {
  const std::uint64_t n = count();
  return n == 0 ? 0.0 : static_cast<double>(sum_.load(std::memory_order_relaxed)) / static_cast<double>(n);
}

std::uint64_t Histogram::percentile(double pct) const noexcept {
  const std::uint64_t n = count();
  if (n == 0) return 0;
  pct = std::clamp(pct, 0.0, 100.0);
  // Rank of the value wanted, 1-based: ceil(pct/100 * n), at least 1.
  auto rank = static_cast<std::uint64_t>(std::ceil(pct / 100.0 * static_cast<double>(n)));
  rank = std::clamp<std::uint64_t>(rank, 1, n);
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < kBuckets; ++i) {
    seen += counts_[i].load(std::memory_order_relaxed);
    if (seen >= rank) return std::clamp(upper_of(i), min(), max());
  }
  return max();
}

}  // namespace nerve::stats
