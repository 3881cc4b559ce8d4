// Payload digests: FNV-1a 64-bit per payload, summed (order-independent). nerve-ctl reports
// the sum over what a node sent, nerved --digest the sum over what it received, per type and
// priority, so tests and the demo prove every payload arrived byte-exact.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace nerve::app {

inline std::uint64_t fnv1a64(std::span<const std::byte> data) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (std::byte b : data) {
    h ^= std::to_integer<std::uint64_t>(b);
    h *= 0x100000001b3ull;
  }
  return h;
}

}  // namespace nerve::app
