#include "seen_window.hpp"

namespace nerve::node {

bool SeenWindow::seen(std::uint32_t id, std::uint64_t ts_ns) noexcept {
  if (!any_) {
    any_ = true;
    top_ = id;
    top_ts_ = ts_ns;
    test_set(id);
    return false;
  }
  const auto d = static_cast<std::int32_t>(id - top_);
  if (d > 0) {
    // Slide: ids top_+1 .. id - 1 were not seen yet.
    if (static_cast<std::uint32_t>(d) >= kSize) {
      bits_.fill(0);
    } else {
      for (std::uint32_t k = 1; k <= static_cast<std::uint32_t>(d); ++k) {
        const std::uint32_t x = top_ + k;
        bits_[(x % kSize) / 64] &= ~(std::uint64_t{1} << (x % 64));
      }
    }
    top_ = id;
    top_ts_ = ts_ns;
    test_set(id);
    return false;
  }
  if (static_cast<std::uint32_t>(-static_cast<std::int64_t>(d)) >= kSize) {
    if (ts_ns <= top_ts_) return true;  // older than the window
    // A newer message with an id far behind: the source restarted. Start over.
    bits_.fill(0);
    top_ = id;
    top_ts_ = ts_ns;
    test_set(id);
    return false;
  }
  return test_set(id);
}

}  // namespace nerve::node
