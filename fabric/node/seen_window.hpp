// The message ids a node has seen from one source: a sliding window of the newest ones.
//
// A sender numbers its messages from a random point, one up per message (ids wrap around
// 2^32). IdWindow keeps a bit per id for the source's newest N ids; what it does with an id
// older than that is its user's rule:
// - SeenWindow (broadcast and multicast copies, the forward stage): refused, as seen, unless
//   its timestamp is newer than the newest id's (the source restarted from a new point);
// - PathsStage::Window (copies sent over two paths): delivered, as never seen.
//
// Owner thread only. No allocation.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>

namespace nerve::node {

template <std::uint32_t N>
class IdWindow {
  static_assert(N % 64 == 0 && (N & (N - 1)) == 0, "a power of two, whole words");

 public:
  enum class Mark : std::uint8_t {
    kNewest,  // not seen; now the newest id (the window slid to it)
    kNew,     // not seen, within the window
    kSeen,    // seen before
    kOld,     // older than the window: not marked
  };
  // Where `id` stands; marks it seen unless it is older than the window.
  Mark mark(std::uint32_t id) noexcept {
    if (!any_) {
      start(id);
      return Mark::kNewest;
    }
    const auto d = static_cast<std::int32_t>(id - top_);
    if (d > 0) {
      clear_after(static_cast<std::uint32_t>(d));
      top_ = id;
      test_set(id);
      return Mark::kNewest;
    }
    if (static_cast<std::uint32_t>(-static_cast<std::int64_t>(d)) >= N) return Mark::kOld;
    return test_set(id) ? Mark::kSeen : Mark::kNew;
  }
  // Forgets everything: `id` is the newest, and seen.
  void start(std::uint32_t id) noexcept {
    bits_.fill(0);
    any_ = true;
    top_ = id;
    test_set(id);
  }

 private:
  bool test_set(std::uint32_t id) noexcept {
    std::uint64_t& w = bits_[(id % N) / 64];
    const std::uint64_t b = std::uint64_t{1} << (id % 64);
    const bool was = (w & b) != 0;
    w |= b;
    return was;
  }
  // Clears the bits of ids top_+1 .. top_+n (whole words at a time).
  void clear_after(std::uint32_t n) noexcept {
    if (n >= N) {
      bits_.fill(0);
      return;
    }
    std::uint32_t x = top_ + 1;
    for (std::uint32_t left = n; left != 0;) {
      const std::uint32_t bit = x % 64, take = std::min(left, 64 - bit);
      const std::uint64_t mask = take == 64 ? ~0ull : ((std::uint64_t{1} << take) - 1) << bit;
      bits_[(x % N) / 64] &= ~mask;
      x += take;
      left -= take;
    }
  }

  std::array<std::uint64_t, N / 64> bits_{};
  std::uint32_t top_ = 0;
  bool any_ = false;
};

// Broadcast and multicast: the last 1,024 ids of a source; what is older is refused.
class SeenWindow {
 public:
  static constexpr std::uint32_t kSize = 1024;
  // Whether `id` was seen (or is older than the window); marks it seen. A source that
  // restarted (ids from a new random point) is recognised by a newer timestamp.
  bool seen(std::uint32_t id, std::uint64_t ts_ns) noexcept {
    switch (ids_.mark(id)) {
      case Ids::Mark::kNewest: top_ts_ = ts_ns; return false;
      case Ids::Mark::kNew: return false;
      case Ids::Mark::kSeen: return true;
      case Ids::Mark::kOld: break;
    }
    if (ts_ns <= top_ts_) return true;  // older than the window
    ids_.start(id);                     // a newer message far behind: the source restarted
    top_ts_ = ts_ns;
    return false;
  }

 private:
  using Ids = IdWindow<kSize>;
  Ids ids_;
  std::uint64_t top_ts_ = 0;
};

}  // namespace nerve::node
