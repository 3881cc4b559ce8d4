// The message ids a node has seen from one source: a sliding window of the last 1,024.
//
// Broadcast and multicast copies (the forward stage) are told apart from their first copy by
// (source, message id): a sender numbers its messages from a random point, one up per message,
// so the window holds the newest ids of a source and refuses what it has seen, or what is older
// than the window.
//
// Owner thread only. No allocation.
#pragma once

#include <array>
#include <cstdint>

namespace nerve::node {

class SeenWindow {
 public:
  static constexpr std::uint32_t kSize = 1024;
  // Whether `id` was seen (or is older than the window); marks it seen. A source that
  // restarted (ids from a new random point) is recognised by a newer timestamp.
  bool seen(std::uint32_t id, std::uint64_t ts_ns) noexcept;

 private:
  bool test_set(std::uint32_t id) noexcept {
    std::uint64_t& w = bits_[(id % kSize) / 64];
    const std::uint64_t b = std::uint64_t{1} << (id % 64);
    const bool was = (w & b) != 0;
    w |= b;
    return was;
  }
  std::array<std::uint64_t, kSize / 64> bits_{};
  std::uint32_t top_ = 0;
  std::uint64_t top_ts_ = 0;
  bool any_ = false;
};

}  // namespace nerve::node
