#include "rewrite.hpp"

#include <cstring>

#include "bytes.hpp"
#include "layout.hpp"

namespace nerve::wire {

using bytes::load_be;
using bytes::store_be;

bool rewrite_for_hop(std::byte* frame, const Mac& src, const Mac& dst, std::uint32_t new_dst_ip) noexcept {
  std::byte* n = frame + layout::kHdrOff;
  const auto ttl = static_cast<std::uint8_t>(n[layout::hdr::kTtl]);
  if (ttl <= 1) return false;
  // The UDP checksum (reliable frames and acks carry one) covers the nerve TTL and, through
  // the pseudo-header, the IPv4 destination: updated like the IPv4 one. 0 (none) stays 0.
  std::byte* udp_csum = frame + layout::kUdpOff + 6;
  std::uint16_t uc = load_be<std::uint16_t>(udp_csum);
  const bool has_uc = uc != 0;
  static_assert((layout::kHdrOff + layout::hdr::kTtl - layout::kUdpOff) % 2 == 0, "TTL is a word's high byte");
  const std::uint16_t tw = load_be<std::uint16_t>(n + layout::hdr::kTtl);
  const auto tw_new = static_cast<std::uint16_t>(tw - 0x100);
  if (has_uc) uc = checksum_update(uc, tw, tw_new);
  n[layout::hdr::kTtl] = std::byte{static_cast<std::uint8_t>(ttl - 1)};
  std::memcpy(frame, dst.data(), 6);
  std::memcpy(frame + 6, src.data(), 6);

  std::byte* ip = frame + layout::kIpOff;
  std::uint16_t hc = load_be<std::uint16_t>(ip + 10);
  // TTL is the high byte of the word at offset 8 (TTL, protocol).
  const std::uint16_t w8 = load_be<std::uint16_t>(ip + 8);
  const auto ip_ttl = static_cast<std::uint8_t>(w8 >> 8);
  const std::uint16_t w8_new = static_cast<std::uint16_t>(((ip_ttl > 1 ? ip_ttl - 1 : 1) << 8) | (w8 & 0xff));
  hc = checksum_update(hc, w8, w8_new);
  store_be<std::uint16_t>(ip + 8, w8_new);
  if (new_dst_ip != 0) {
    const std::uint32_t was = load_be<std::uint32_t>(ip + 16);
    hc = checksum_update(hc, static_cast<std::uint16_t>(was >> 16), static_cast<std::uint16_t>(new_dst_ip >> 16));
    hc = checksum_update(hc, static_cast<std::uint16_t>(was & 0xffff), static_cast<std::uint16_t>(new_dst_ip & 0xffff));
    if (has_uc) {
      uc = checksum_update(uc, static_cast<std::uint16_t>(was >> 16), static_cast<std::uint16_t>(new_dst_ip >> 16));
      uc = checksum_update(uc, static_cast<std::uint16_t>(was & 0xffff), static_cast<std::uint16_t>(new_dst_ip & 0xffff));
    }
    store_be<std::uint32_t>(ip + 16, new_dst_ip);
  }
  store_be<std::uint16_t>(ip + 10, hc);
  if (has_uc) store_be<std::uint16_t>(udp_csum, uc == 0 ? 0xffff : uc);
  return true;
}

}  // namespace nerve::wire
