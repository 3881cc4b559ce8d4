// Forwarding rewrites a frame's headers in place for its next hop, without touching the payload:
//   - Ethernet: destination = the next hop's MAC, source = the leaving port's MAC;
//   - IPv4: TTL - 1, and for a broadcast or multicast copy the destination address becomes the
//     next hop's (each copy is addressed to the neighbour that receives it); the header checksum
//     is updated incrementally (RFC 1624, eqn. 3), not recomputed;
//   - UDP: a non-zero checksum (reliable frames and acks) is updated incrementally for the new
//     nerve TTL and IPv4 destination, so it still covers the datagram end to end; 0 stays 0;
//   - nerve header: TTL - 1.
// No DPDK: unit-tested against encode_headers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "bytes.hpp"
#include "layout.hpp"
#include "nerve/wire.hpp"

namespace nerve::wire {

// RFC 1624 eqn. 3: the checksum `hc` after one 16-bit word of the summed data changes from
// `was` to `now` (all in host order).
constexpr std::uint16_t checksum_update(std::uint16_t hc, std::uint16_t was, std::uint16_t now) noexcept {
  std::uint32_t s = static_cast<std::uint16_t>(~hc) + static_cast<std::uint32_t>(static_cast<std::uint16_t>(~was)) + now;
  s = (s & 0xffff) + (s >> 16);
  s = (s & 0xffff) + (s >> 16);
  return static_cast<std::uint16_t>(~s);
}

// Rewrites the kOverhead bytes of headers at `frame` for the next hop. `new_dst_ip` (host
// order) replaces the IPv4 destination unless 0. False, and nothing written, when the nerve
// TTL is 1 or less (the frame has no hop left).
// Inline: a forwarding node runs it on every transit frame.
inline bool rewrite_for_hop(std::byte* frame, const Mac& src, const Mac& dst, std::uint32_t new_dst_ip) noexcept {
  std::byte* n = frame + layout::kHdrOff;
  const auto ttl = static_cast<std::uint8_t>(n[layout::hdr::kTtl]);
  if (ttl <= 1) return false;
  // The UDP checksum (reliable frames and acks carry one) covers the nerve TTL and, through
  // the pseudo-header, the IPv4 destination: updated like the IPv4 one. 0 (none) stays 0.
  std::byte* udp_csum = frame + layout::kUdpOff + 6;
  std::uint16_t uc = bytes::load_be<std::uint16_t>(udp_csum);
  const bool has_uc = uc != 0;
  static_assert((layout::kHdrOff + layout::hdr::kTtl - layout::kUdpOff) % 2 == 0, "TTL is a word's high byte");
  const std::uint16_t tw = bytes::load_be<std::uint16_t>(n + layout::hdr::kTtl);
  const auto tw_new = static_cast<std::uint16_t>(tw - 0x100);
  if (has_uc) uc = checksum_update(uc, tw, tw_new);
  n[layout::hdr::kTtl] = std::byte{static_cast<std::uint8_t>(ttl - 1)};
  std::memcpy(frame, dst.data(), 6);
  std::memcpy(frame + 6, src.data(), 6);

  std::byte* ip = frame + layout::kIpOff;
  std::uint16_t hc = bytes::load_be<std::uint16_t>(ip + 10);
  // TTL is the high byte of the word at offset 8 (TTL, protocol).
  const std::uint16_t w8 = bytes::load_be<std::uint16_t>(ip + 8);
  const auto ip_ttl = static_cast<std::uint8_t>(w8 >> 8);
  const std::uint16_t w8_new = static_cast<std::uint16_t>(((ip_ttl > 1 ? ip_ttl - 1 : 1) << 8) | (w8 & 0xff));
  hc = checksum_update(hc, w8, w8_new);
  bytes::store_be<std::uint16_t>(ip + 8, w8_new);
  if (new_dst_ip != 0) {
    const std::uint32_t was = bytes::load_be<std::uint32_t>(ip + 16);
    hc = checksum_update(hc, static_cast<std::uint16_t>(was >> 16), static_cast<std::uint16_t>(new_dst_ip >> 16));
    hc = checksum_update(hc, static_cast<std::uint16_t>(was & 0xffff), static_cast<std::uint16_t>(new_dst_ip & 0xffff));
    if (has_uc) {
      uc = checksum_update(uc, static_cast<std::uint16_t>(was >> 16), static_cast<std::uint16_t>(new_dst_ip >> 16));
      uc = checksum_update(uc, static_cast<std::uint16_t>(was & 0xffff), static_cast<std::uint16_t>(new_dst_ip & 0xffff));
    }
    bytes::store_be<std::uint32_t>(ip + 16, new_dst_ip);
  }
  bytes::store_be<std::uint16_t>(ip + 10, hc);
  if (has_uc) bytes::store_be<std::uint16_t>(udp_csum, uc == 0 ? 0xffff : uc);
  return true;
}

}  // namespace nerve::wire
