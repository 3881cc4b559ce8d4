// nerve wire format: Ethernet / IPv4 / UDP / nerve header / payload [/ AEAD tag].
//
// docs/wire.md is the normative description, byte by byte; this header and codec.cc implement
// it. The codec works on plain byte spans and needs no EAL, so it is unit-tested and fuzzed
// without a NIC. Ethernet, IPv4 and UDP fields are big-endian (network order) as their RFCs
// say; the nerve header is little-endian, the native order of every host we target, so the
// datapath reads it without swapping.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace nerve::wire {

inline constexpr std::uint16_t kMagic = 0x564e;     // bytes 'N' 'V' on the wire (little-endian)
inline constexpr std::uint8_t kVersion = 2;  // 2: 16-bit fragment index and count
inline constexpr std::uint16_t kDefaultUdpPort = 47800;

inline constexpr std::size_t kEthLen = 14;
inline constexpr std::size_t kIpv4Len = 20;          // no IP options, ever
inline constexpr std::size_t kUdpLen = 8;
inline constexpr std::size_t kHeaderLen = 48;        // the nerve header
inline constexpr std::size_t kOverhead = kEthLen + kIpv4Len + kUdpLen + kHeaderLen;  // 90
inline constexpr std::size_t kTagLen = 16;           // AEAD tag after the payload when encrypted
inline constexpr std::size_t kMaxPayload = 65535 - kIpv4Len - kUdpLen - kHeaderLen - kTagLen;

inline constexpr std::uint16_t kNodeNone = 0;        // never a valid node id
inline constexpr std::uint16_t kBroadcast = 0xffff;  // dst of a broadcast frame
inline constexpr int kPriorities = 5;                // P0 (critical) .. P4 (background)

// Message types (SPEC.md "Message Types", plus the response to a request).
enum class MsgType : std::uint8_t {
  kCommand = 1,          // system command
  kStatus = 2,           // status update
  kMetric = 3,           // performance metric
  kAlert = 4,            // alert notification
  kResourceRequest = 5,  // resource request
  kResponse = 6,         // reply to a command or request; corr_id names it
  // The fabric's own control traffic between neighbours (heartbeats, link state); handled by
  // the node, never delivered to applications, never sent by them.
  kFabric = 7,
  // Reliable delivery's acknowledgement (fabric/node/reliable_stage.hpp): from the receiver of a
  // reliable session to its sender, routed end to end like any unicast; never delivered to
  // applications, never sent by them.
  kAck = 8,
};
// Application message types: kMsgTypeFirst .. kMsgTypeLast.
inline constexpr std::uint8_t kMsgTypeFirst = 1;
inline constexpr std::uint8_t kMsgTypeLast = 6;
inline constexpr int kMsgTypes = kMsgTypeLast;  // index by type value; slot 0 unused

std::string_view to_string(MsgType t) noexcept;
// Parses "command", "status", "metric", "alert", "request", "response" (and the enum names).
bool parse_msg_type(std::string_view s, MsgType& out) noexcept;

namespace flag {
inline constexpr std::uint8_t kReliable = 1u << 0;    // sender wants it sequenced and acked
inline constexpr std::uint8_t kEncrypted = 1u << 1;   // payload is AEAD ciphertext + tag
inline constexpr std::uint8_t kFragment = 1u << 2;    // part frag_index of frag_count
inline constexpr std::uint8_t kAckRequest = 1u << 3;  // receiver should ack now
inline constexpr std::uint8_t kMulticast = 1u << 4;   // dst is a group id
inline constexpr std::uint8_t kBroadcast = 1u << 5;   // dst is kBroadcast
inline constexpr std::uint8_t kTwoPaths = 1u << 6;    // sent over two disjoint paths: the receiver keeps the first copy
inline constexpr std::uint8_t kSecondPath = 1u << 7;  // ... and this is the copy sent over the second path
inline constexpr std::uint8_t kKnown = 0xff;
}  // namespace flag

// IPv4 DSCP per priority: P0 = EF, P1 = AF41, P2 = AF31, P3 = AF21, P4 = CS1 (RFC 4594).
inline constexpr std::array<std::uint8_t, kPriorities> kDscp = {46, 34, 26, 18, 8};

using Mac = std::array<std::uint8_t, 6>;

// Link and network addressing of one frame. IPs and ports in host order.
struct Endpoints {
  Mac src_mac{};
  Mac dst_mac{};
  std::uint32_t src_ip = 0;
  std::uint32_t dst_ip = 0;
  std::uint16_t src_port = kDefaultUdpPort;
  std::uint16_t dst_port = kDefaultUdpPort;
};

// The nerve header, decoded (host order).
struct Header {
  MsgType type = MsgType::kCommand;
  std::uint8_t priority = 0;
  std::uint8_t flags = 0;
  std::uint8_t ttl = 1;
  std::uint8_t key_epoch = 0;
  std::uint16_t src_node = kNodeNone;
  std::uint16_t dst = kNodeNone;     // node id, group id (kMulticast) or kBroadcast
  std::uint16_t channel = 0;
  std::uint16_t frag_index = 0;      // with kFragment: this frame's part of the message
  std::uint16_t frag_count = 1;      // ... of this many (>= 2); 1 on every other frame
  std::uint32_t seq = 0;
  std::uint32_t ack = 0;
  std::uint32_t msg_id = 0;          // sender-unique id of this message
  std::uint32_t corr_id = 0;         // in a response: the msg_id of the request
  std::uint64_t timestamp_ns = 0;    // sender's clock when the frame was built
  std::uint16_t payload_len = 0;
  // A reliable frame: the sender's session on this lane, to this destination (newer sessions
  // have larger values, in serial-number order); an ack: the session it acknowledges. 0 on
  // every other frame.
  std::uint32_t session = 0;
};

// Why a frame was refused. Every received frame is either delivered (or, later, forwarded) or
// gets exactly one reason. The codec (decode) gives the first group; the node's stages give the
// rest (fabric/node: dispatch, deliver). docs/wire.md lists them all.
enum class Refusal : std::uint8_t {
  kNone = 0,
  // --- the codec
  kTruncated,        // shorter than the 90 bytes of headers
  kOverMtu,          // longer than the cluster's MTU allows (IP total length > mtu)
  kNotIpv4,          // EtherType is not 0x0800
  kBadIpHeader,      // IP version not 4, or header length not 20 (options are refused)
  kIpFragment,       // IP-level fragment (MF or offset set, or DF clear): nerve fragments itself
  kBadIpChecksum,
  kIpLength,         // IP total length disagrees with the frame
  kNotUdp,
  kWrongPort,        // UDP destination port is not the fabric's
  kUdpLength,        // UDP length disagrees with the IP total length
  kBadUdpChecksum,   // non-zero UDP checksum that does not verify
  kBadMagic,
  kBadVersion,
  kUnknownType,
  kBadPriority,
  kDscpMismatch,     // IPv4 DSCP is not the one for the header's priority
  kUnknownFlags,     // flag bits that no version defines
  kFeatureDisabled,  // a flag of a feature this node does not run (encrypted, fragment, ...)
  kPayloadLength,    // payload length disagrees with the UDP length
  kBadFragment,      // fragment fields inconsistent
  kBadPaths,         // second-path flag without the two-paths flag, or two paths on a broadcast, multicast, ack or fabric message
  kBadAddress,       // source node 0, or destination inconsistent with the flags
  kBadSequence,      // reliable frame without session or sequence number, an ack without session,
                     // a session on another frame, or either without a UDP checksum
  kTtlExpired,
  // --- the node's stages
  kBadFabric,        // a fabric message that does not parse, or not from a neighbour on that port
  kUnknownSource,    // source node is not in the cluster
  kSourceMismatch,   // source IP is not the source node's
  kWrongDstMac,      // destination MAC is not the receiving port's
  kWrongDstIp,       // destination IP is not this node's
  kNoRoute,          // a frame to forward, and no route to its destination is up
  kLoop,             // a frame to forward that this node sent itself
  kDuplicate,        // a broadcast or multicast copy already received
  kUnknownGroup,     // a multicast to a group the cluster file does not have
  kBadTimestamp,     // send timestamp 0, or outside the cluster's timestamp window
  kResponseMismatch, // a response to a request of ours, from a node other than the one asked
  kCount
};
inline constexpr std::size_t kRefusalCount = static_cast<std::size_t>(Refusal::kCount);
std::string_view to_string(Refusal r) noexcept;

// What the receiver accepts.
struct RxFilter {
  std::uint16_t udp_port = kDefaultUdpPort;
  std::uint16_t mtu = 1500;       // largest IP datagram (total length) accepted
  std::uint8_t enabled_flags = 0; // flag bits of features this node runs; others: kFeatureDisabled
};

// A decoded frame: views into the caller's buffer, valid while it is.
struct Decoded {
  Endpoints ep;
  Header hdr;
  std::span<const std::byte> payload;  // ciphertext when kEncrypted (tag excluded)
};

// Writes the kOverhead bytes of headers for a frame whose payload (hdr.payload_len bytes, plus
// kTagLen when encrypted) follows them. Fills in IPv4 total length, DSCP from hdr.priority,
// IPv4 checksum and UDP length; the UDP checksum is 0 (RFC 768: not computed). Caller
// guarantees hdr is valid (priority < 5, payload_len <= kMaxPayload); checked in debug builds.
void encode_headers(std::span<std::byte, kOverhead> out, const Endpoints& ep, const Header& hdr) noexcept;

// Strictly validates and decodes one frame. Reads nothing outside `frame`. Says nothing about
// whom the frame is for: that is the node's dispatch stage.
Refusal decode(std::span<const std::byte> frame, const RxFilter& filter, Decoded& out) noexcept;

// Total frame length (no FCS) for a payload of n bytes.
constexpr std::size_t frame_len(std::size_t payload, bool encrypted = false) noexcept {
  return kOverhead + payload + (encrypted ? kTagLen : 0);
}

// Fills in the UDP checksum of a whole frame (headers and payload contiguous at `frame`, IPv4
// header complete): reliable frames and acks carry one, so corruption anywhere in the UDP
// datagram is refused rather than delivered.
void fill_udp_checksum(std::span<std::byte> frame) noexcept;

// RFC 1071 ones'-complement sum, folded and complemented.
std::uint16_t ipv4_checksum(std::span<const std::byte> ip_header) noexcept;

}  // namespace nerve::wire
