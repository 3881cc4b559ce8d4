// The checks of a received frame, as docs/wire.md specifies them, in the order they run.
// decode() runs every one of them and then reads the header out; a transit node's fast path
// (node::ForwardStage::transit) runs all but the UDP checksum and reads only what forwarding
// needs. Inline: both run once per frame.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "bytes.hpp"
#include "layout.hpp"
#include "nerve/wire.hpp"

namespace nerve::wire::checks {

inline constexpr std::uint16_t kEtherTypeIpv4 = 0x0800;
inline constexpr std::uint8_t kIpProtoUdp = 17;

inline std::uint8_t u8(const std::byte* p) noexcept { return std::to_integer<std::uint8_t>(*p); }

// Six bytes at a and b equal: a 4-byte and a 2-byte compare (memcmp of std::array is a call).
inline bool same_mac(const void* a, const void* b) noexcept {
  std::uint32_t a4, b4;
  std::uint16_t a2, b2;
  std::memcpy(&a4, a, 4);
  std::memcpy(&b4, b, 4);
  std::memcpy(&a2, static_cast<const std::byte*>(a) + 4, 2);
  std::memcpy(&b2, static_cast<const std::byte*>(b) + 4, 2);
  return ((a4 ^ b4) | static_cast<std::uint32_t>(a2 ^ b2)) == 0;
}

inline std::uint16_t fold(std::uint32_t sum) noexcept {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint16_t>(~sum & 0xffff);
}

// RFC 1071 over the usual 20-byte IPv4 header: five 32-bit words summed in 64 bits (section
// 2(B): the sum does not depend on the word size), folded, complemented. 0 when it verifies.
inline std::uint16_t ipv4_header_sum(const std::byte* p) noexcept {
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < kIpv4Len; i += 4) sum += bytes::load_be<std::uint32_t>(p + i);
  sum = (sum & 0xffffffffu) + (sum >> 32);
  sum = (sum & 0xffffffffu) + (sum >> 32);
  return fold(static_cast<std::uint32_t>((sum & 0xffff) + (sum >> 16)));
}

// Ethernet, IPv4 and UDP of the frame f[0, size): kNone when they carry a nerve datagram to
// `filter`'s port. After it, every fixed offset below kOverhead is in bounds and the UDP length
// is size - kUdpOff.
inline Refusal framing(const std::byte* f, std::size_t size, const RxFilter& filter) noexcept {
  using bytes::load_be;
  // Length first: after this check every fixed offset below is in bounds.
  if (size < kOverhead) [[unlikely]] return Refusal::kTruncated;
  if (size > kEthLen + filter.mtu) [[unlikely]] return Refusal::kOverMtu;
  if (load_be<std::uint16_t>(f + 12) != kEtherTypeIpv4) return Refusal::kNotIpv4;

  const std::byte* ip = f + layout::kIpOff;
  if (u8(ip) != 0x45) return Refusal::kBadIpHeader;
  // Every nerve frame is sent with DF and never fragmented: MF, an offset, or DF clear (a
  // datagram some host reassembled from fragments) all mean it was.
  const std::uint16_t frag = load_be<std::uint16_t>(ip + 6);
  if ((frag & 0x7fff) != 0x4000) return Refusal::kIpFragment;
  if (ipv4_header_sum(ip) != 0) return Refusal::kBadIpChecksum;
  const std::size_t ip_total = load_be<std::uint16_t>(ip + 2);
  // Frames shorter than 60 bytes are padded by the NIC; ours never are, so the IP datagram must
  // fill the frame exactly.
  if (ip_total != size - kEthLen) return Refusal::kIpLength;
  if (u8(ip + 9) != kIpProtoUdp) return Refusal::kNotUdp;

  const std::byte* udp = f + layout::kUdpOff;
  if (load_be<std::uint16_t>(udp + 2) != filter.udp_port) return Refusal::kWrongPort;
  if (load_be<std::uint16_t>(udp + 4) != ip_total - kIpv4Len) return Refusal::kUdpLength;
  return Refusal::kNone;
}

// The nerve header of a frame that passed framing() (and, in decode(), its UDP checksum):
// kNone when its fields agree with each other, with the UDP length and with `filter`. The TTL
// is the caller's to judge (0 for a delivery, 1 or less for a hop).
inline Refusal header(const std::byte* f, std::size_t size, const RxFilter& filter) noexcept {
  using bytes::load_be;
  using bytes::load_le;
  namespace h = layout::hdr;
  const std::byte* n = f + layout::kHdrOff;
  if (load_le<std::uint16_t>(n + h::kMagic) != kMagic) return Refusal::kBadMagic;
  if (u8(n + h::kVersion) != kVersion) return Refusal::kBadVersion;
  const std::uint8_t type = u8(n + h::kType);
  if ((type < kMsgTypeFirst || type > kMsgTypeLast) && type != static_cast<std::uint8_t>(MsgType::kFabric) &&
      type != static_cast<std::uint8_t>(MsgType::kAck))
    return Refusal::kUnknownType;
  const std::uint8_t prio = u8(n + h::kPriority);
  if (prio >= kPriorities) return Refusal::kBadPriority;
  if ((u8(f + layout::kIpOff + 1) >> 2) != kDscp[prio]) return Refusal::kDscpMismatch;
  const std::uint8_t flags = u8(n + h::kFlags);
  if ((flags & ~flag::kKnown) != 0) return Refusal::kUnknownFlags;
  if ((flags & ~filter.enabled_flags) != 0) return Refusal::kFeatureDisabled;

  const std::size_t udp_len = size - layout::kUdpOff;
  const std::uint16_t payload_len = load_le<std::uint16_t>(n + h::kPayloadLen);
  const bool encrypted = (flags & flag::kEncrypted) != 0;
  if (kUdpLen + kHeaderLen + payload_len + (encrypted ? kTagLen : 0) != udp_len) return Refusal::kPayloadLength;

  const std::uint16_t frag_index = load_le<std::uint16_t>(n + h::kFragIndex);
  const std::uint16_t frag_count = load_le<std::uint16_t>(n + h::kFragCount);
  // A fragment is part of a reliable unicast message (its session delivers the parts in order).
  if ((flags & flag::kFragment) != 0
          ? (frag_count < 2 || frag_index >= frag_count || (flags & flag::kReliable) == 0 ||
             (flags & (flag::kBroadcast | flag::kMulticast)) != 0)
          : (frag_count != 1 || frag_index != 0))
    return Refusal::kBadFragment;

  const std::uint16_t src = load_le<std::uint16_t>(n + h::kSrc);
  const std::uint16_t dst = load_le<std::uint16_t>(n + h::kDst);
  const bool bcast = (flags & flag::kBroadcast) != 0;
  const bool mcast = (flags & flag::kMulticast) != 0;
  if (src == kNodeNone || src == kBroadcast || (bcast && (mcast || dst != kBroadcast)) ||
      (!bcast && (dst == kNodeNone || dst == kBroadcast)))
    return Refusal::kBadAddress;
  // Two paths: a unicast application message's copies (the first to arrive wins).
  if ((flags & (flag::kTwoPaths | flag::kSecondPath)) != 0 &&
      ((flags & flag::kTwoPaths) == 0 || bcast || mcast || type == static_cast<std::uint8_t>(MsgType::kAck) ||
       type == static_cast<std::uint8_t>(MsgType::kFabric)))
    return Refusal::kBadPaths;
  static_assert(kHeaderLen - h::kFragCount == 2, "the fragment count ends the header");
  // Reliable frames and acks: a session (and a sequence number) and a UDP checksum, so that a
  // corrupted one is refused and sent again rather than delivered; no other frame has a session.
  const std::uint32_t session = load_le<std::uint32_t>(n + h::kSession);
  const bool reliable = (flags & flag::kReliable) != 0;
  const bool ack = type == static_cast<std::uint8_t>(MsgType::kAck);
  if ((reliable || ack) ? (session == 0 || (reliable && load_le<std::uint32_t>(n + h::kSeq) == 0) ||
                           load_be<std::uint16_t>(f + layout::kUdpOff + 6) == 0 ||
                           (ack && (reliable || bcast || mcast)))
                        : session != 0)
    return Refusal::kBadSequence;
  return Refusal::kNone;
}

// A frame a transit node may pass on at once (node::ForwardStage::transit): unicast, not a
// fabric message (those are for neighbours), for a node other than `self`, with a TTL for one
// more hop, and passing every check of decode() but the UDP checksum, which stays the
// destination's to verify (the rewrite for the hop updates it, so it still covers the datagram
// end to end). Anything else takes the full path, which delivers it, forwards it, or refuses it
// with its reason.
inline bool transit(const std::byte* f, std::size_t size, const RxFilter& filter, std::uint16_t self) noexcept {
  namespace h = layout::hdr;
  if (size < kOverhead) [[unlikely]] return false;
  const std::byte* n = f + layout::kHdrOff;
  if ((u8(n + h::kFlags) & (flag::kBroadcast | flag::kMulticast)) != 0 ||
      u8(n + h::kType) == static_cast<std::uint8_t>(MsgType::kFabric) || u8(n + h::kTtl) <= 1 ||
      bytes::load_le<std::uint16_t>(n + h::kDst) == self)
    return false;
  return framing(f, size, filter) == Refusal::kNone && header(f, size, filter) == Refusal::kNone;
}

}  // namespace nerve::wire::checks
