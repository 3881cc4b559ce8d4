// The routing protocol's messages: the payload of `fabric` frames (wire type 7), exchanged
// between neighbours only, never delivered to applications. docs/wire.md describes them byte by
// byte; all fields little-endian, like the nerve header.
//
//   heartbeat    (P0, every 1/heartbeat_hz on every link): liveness, the link's round trip
//                (the echo of the peer's last heartbeat and how long it was held), and the
//                sender's link-state database digest (neighbours whose digests disagree for
//                a while resend their databases to each other).
//   link state   (P1, flooded hop by hop): one node's links (up/down, one-way delay, load
//                level) and the groups it has joined; newest sequence number wins.
//
// The codec works on byte spans (no DPDK): unit-tested and fuzzed. Decoding is strict: a
// message that does not parse exactly is refused as a whole.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace nerve::route {

inline constexpr std::uint8_t kProtocolVersion = 1;

enum class MsgKind : std::uint8_t {
  kHeartbeat = 1,
  kLinkState = 2,
};

struct Heartbeat {
  std::uint64_t echo_ts_ns = 0;    // the send timestamp of the peer's last heartbeat on this link; 0: none yet
  std::uint64_t echo_hold_ns = 0;  // how long after its arrival this heartbeat left
  std::uint64_t digest = 0;        // the sender's link-state database digest
};
inline constexpr std::size_t kHeartbeatLen = 32;

// One link as its owner advertises it.
struct LinkAdvert {
  std::uint16_t nbr = 0;        // neighbour's node id
  bool up = false;
  std::uint8_t load = 0;        // load level, 0..kMaxLoad: floor(log2(1 + frames/s / 1024))
  std::uint32_t delay_ns = 0;   // one-way delay estimate (half the round trip); 0: not measured
  bool operator==(const LinkAdvert&) const = default;
};
inline constexpr std::uint8_t kMaxLoad = 15;

// A link-state advertisement: everything one node says about itself.
struct Lsa {
  std::uint16_t origin = 0;
  std::uint64_t seq = 0;        // newer wins; an origin starts from its wall clock, so a restart goes forward
  std::uint64_t groups = 0;     // bit g: member of the cluster file's group g
  std::vector<LinkAdvert> links;
  bool operator==(const Lsa&) const = default;
};
inline constexpr std::size_t kLsaFixedLen = 24;
inline constexpr std::size_t kLinkAdvertLen = 8;
constexpr std::size_t lsa_len(std::size_t links) noexcept { return kLsaFixedLen + links * kLinkAdvertLen; }

// Why a fabric message was refused (counted by the node as `bad_fabric`).
enum class ProtoError : std::uint8_t {
  kNone = 0,
  kTruncated,     // shorter than its fixed part
  kBadVersion,
  kUnknownKind,
  kBadLength,     // length disagrees with the kind or the link count
  kBadField,      // a reserved byte set, an undefined flag, a load level out of range, node 0
};

MsgKind peek_kind(std::span<const std::byte> msg) noexcept;  // 0-valued on an empty message

// Encoders return the bytes written (0 when `out` is too small).
std::size_t encode(std::span<std::byte> out, const Heartbeat& hb) noexcept;
std::size_t encode(std::span<std::byte> out, const Lsa& lsa) noexcept;

ProtoError decode(std::span<const std::byte> msg, Heartbeat& out) noexcept;
// Allocates (links): for the routing agent's thread, not the datapath.
ProtoError decode(std::span<const std::byte> msg, Lsa& out);

}  // namespace nerve::route
