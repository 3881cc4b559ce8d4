#include "protocol.hpp"

#include "../wire/bytes.hpp"

namespace nerve::route {

using wire::bytes::load_le;
using wire::bytes::store_le;

// Byte offsets (docs/wire.md, "Fabric messages").
namespace off {
inline constexpr std::size_t kKind = 0, kVersion = 1;
// heartbeat
inline constexpr std::size_t kHbReserved = 2, kEchoTs = 8, kEchoHold = 16, kDigest = 24;
// link state
inline constexpr std::size_t kOrigin = 2, kLinks = 4, kLsaReserved = 6, kSeq = 8, kGroups = 16;
// one link, from its start
inline constexpr std::size_t kNbr = 0, kFlags = 2, kLoad = 3, kDelay = 4;
}  // namespace off

inline constexpr std::uint8_t kLinkUp = 1u << 0;

MsgKind peek_kind(std::span<const std::byte> msg) noexcept {
  return msg.empty() ? MsgKind{} : static_cast<MsgKind>(msg[0]);
}

std::size_t encode(std::span<std::byte> out, const Heartbeat& hb) noexcept {
  if (out.size() < kHeartbeatLen) return 0;
  std::byte* p = out.data();
  p[off::kKind] = std::byte{static_cast<std::uint8_t>(MsgKind::kHeartbeat)};
  p[off::kVersion] = std::byte{kProtocolVersion};
  store_le<std::uint16_t>(p + off::kHbReserved, 0);
  store_le<std::uint32_t>(p + 4, 0);
  store_le<std::uint64_t>(p + off::kEchoTs, hb.echo_ts_ns);
  store_le<std::uint64_t>(p + off::kEchoHold, hb.echo_hold_ns);
  store_le<std::uint64_t>(p + off::kDigest, hb.digest);
  return kHeartbeatLen;
}

std::size_t encode(std::span<std::byte> out, const Lsa& lsa) noexcept {
  const std::size_t len = lsa_len(lsa.links.size());
  if (out.size() < len || lsa.links.size() > 0xffff) return 0;
  std::byte* p = out.data();
  p[off::kKind] = std::byte{static_cast<std::uint8_t>(MsgKind::kLinkState)};
  p[off::kVersion] = std::byte{kProtocolVersion};
  store_le<std::uint16_t>(p + off::kOrigin, lsa.origin);
  store_le<std::uint16_t>(p + off::kLinks, static_cast<std::uint16_t>(lsa.links.size()));
  store_le<std::uint16_t>(p + off::kLsaReserved, 0);
  store_le<std::uint64_t>(p + off::kSeq, lsa.seq);
  store_le<std::uint64_t>(p + off::kGroups, lsa.groups);
  std::byte* l = p + kLsaFixedLen;
  for (const LinkAdvert& a : lsa.links) {
    store_le<std::uint16_t>(l + off::kNbr, a.nbr);
    l[off::kFlags] = std::byte{a.up ? kLinkUp : std::uint8_t{0}};
    l[off::kLoad] = std::byte{a.load};
    store_le<std::uint32_t>(l + off::kDelay, a.delay_ns);
    l += kLinkAdvertLen;
  }
  return len;
}

namespace {

ProtoError check_head(std::span<const std::byte> msg, MsgKind kind, std::size_t fixed) noexcept {
  if (msg.size() < 2) return ProtoError::kTruncated;
  if (static_cast<MsgKind>(msg[off::kKind]) != kind) return ProtoError::kUnknownKind;
  if (static_cast<std::uint8_t>(msg[off::kVersion]) != kProtocolVersion) return ProtoError::kBadVersion;
  if (msg.size() < fixed) return ProtoError::kTruncated;
  return ProtoError::kNone;
}

}  // namespace

ProtoError decode(std::span<const std::byte> msg, Heartbeat& out) noexcept {
  if (const ProtoError e = check_head(msg, MsgKind::kHeartbeat, kHeartbeatLen); e != ProtoError::kNone) return e;
  if (msg.size() != kHeartbeatLen) return ProtoError::kBadLength;
  const std::byte* p = msg.data();
  if (load_le<std::uint16_t>(p + off::kHbReserved) != 0 || load_le<std::uint32_t>(p + 4) != 0) return ProtoError::kBadField;
  out.echo_ts_ns = load_le<std::uint64_t>(p + off::kEchoTs);
  out.echo_hold_ns = load_le<std::uint64_t>(p + off::kEchoHold);
  out.digest = load_le<std::uint64_t>(p + off::kDigest);
  return ProtoError::kNone;
}

ProtoError decode(std::span<const std::byte> msg, Lsa& out) {
  if (const ProtoError e = check_head(msg, MsgKind::kLinkState, kLsaFixedLen); e != ProtoError::kNone) return e;
  const std::byte* p = msg.data();
  const std::size_t n = load_le<std::uint16_t>(p + off::kLinks);
  if (msg.size() != lsa_len(n)) return ProtoError::kBadLength;
  if (load_le<std::uint16_t>(p + off::kLsaReserved) != 0) return ProtoError::kBadField;
  out.origin = load_le<std::uint16_t>(p + off::kOrigin);
  if (out.origin == 0 || out.origin == 0xffff) return ProtoError::kBadField;
  out.seq = load_le<std::uint64_t>(p + off::kSeq);
  out.groups = load_le<std::uint64_t>(p + off::kGroups);
  out.links.clear();
  out.links.reserve(n);
  const std::byte* l = p + kLsaFixedLen;
  for (std::size_t i = 0; i < n; ++i, l += kLinkAdvertLen) {
    LinkAdvert a;
    a.nbr = load_le<std::uint16_t>(l + off::kNbr);
    const auto flags = static_cast<std::uint8_t>(l[off::kFlags]);
    a.load = static_cast<std::uint8_t>(l[off::kLoad]);
    a.delay_ns = load_le<std::uint32_t>(l + off::kDelay);
    if (a.nbr == 0 || a.nbr == 0xffff || (flags & ~kLinkUp) != 0 || a.load > kMaxLoad) return ProtoError::kBadField;
    a.up = (flags & kLinkUp) != 0;
    out.links.push_back(a);
  }
  return ProtoError::kNone;
}

}  // namespace nerve::route
