// Unaligned loads and stores in an explicit byte order. memcpy compiles to one mov.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace nerve::wire::bytes {

template <typename T>
constexpr T bswap(T v) noexcept {
  if constexpr (sizeof(T) == 1) return v;
  else if constexpr (sizeof(T) == 2) return static_cast<T>(__builtin_bswap16(v));
  else if constexpr (sizeof(T) == 4) return static_cast<T>(__builtin_bswap32(v));
  else return static_cast<T>(__builtin_bswap64(v));
}

template <typename T>
inline T load_le(const std::byte* p) noexcept {
  T v;
  std::memcpy(&v, p, sizeof v);
  if constexpr (std::endian::native == std::endian::big) v = bswap(v);
  return v;
}
template <typename T>
inline void store_le(std::byte* p, T v) noexcept {
  if constexpr (std::endian::native == std::endian::big) v = bswap(v);
  std::memcpy(p, &v, sizeof v);
}
template <typename T>
inline T load_be(const std::byte* p) noexcept {
  T v;
  std::memcpy(&v, p, sizeof v);
  if constexpr (std::endian::native == std::endian::little) v = bswap(v);
  return v;
}
template <typename T>
inline void store_be(std::byte* p, T v) noexcept {
  if constexpr (std::endian::native == std::endian::little) v = bswap(v);
  std::memcpy(p, &v, sizeof v);
}

}  // namespace nerve::wire::bytes
