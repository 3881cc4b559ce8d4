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
bool rewrite_for_hop(std::byte* frame, const Mac& src, const Mac& dst, std::uint32_t new_dst_ip) noexcept;

}  // namespace nerve::wire
