// The frame codec. Layout and every check are specified in docs/wire.md; the offsets below are
// the ones in its tables.
#include "nerve/wire.hpp"

#include <bit>
#include <cassert>

#include "bytes.hpp"
#include "checks.hpp"
#include "layout.hpp"

namespace nerve::wire {
namespace {

using bytes::load_be;
using bytes::load_le;
using bytes::store_be;
using bytes::store_le;

using checks::fold;
using checks::ipv4_header_sum;
using checks::kEtherTypeIpv4;
using checks::kIpProtoUdp;
using checks::u8;
constexpr std::uint8_t kIpDefaultTtl = 64;

using layout::kHdrOff;
using layout::kIpOff;
using layout::kUdpOff;
namespace h = layout::hdr;

// `sum` plus the RFC 1071 sum of `data` read as big-endian 16-bit words (unfolded). Summed as
// little-endian 32-bit words into four 64-bit accumulators (four independent chains, and no
// carry to wrap until the end: overflow would take 2^32 words), folded, then swapped: the
// ones'-complement sum does not depend on the word size or the byte order (RFC 1071 section
// 2(A), 2(B)). Reliable frames are summed on every send and receive: twice on each way of a
// round trip.
std::uint32_t sum16(std::span<const std::byte> data, std::uint32_t sum) noexcept {
  static_assert(std::endian::native == std::endian::little);
  const std::byte* p = data.data();
  std::size_t n = data.size();
  std::uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  for (; n >= 16; p += 16, n -= 16) {
    a0 += load_le<std::uint32_t>(p);
    a1 += load_le<std::uint32_t>(p + 4);
    a2 += load_le<std::uint32_t>(p + 8);
    a3 += load_le<std::uint32_t>(p + 12);
  }
  std::uint64_t acc = a0 + a1 + a2 + a3;
  for (; n >= 4; p += 4, n -= 4) acc += load_le<std::uint32_t>(p);
  if (n >= 2) acc += load_le<std::uint16_t>(p), p += 2, n -= 2;
  if (n != 0) acc += std::to_integer<std::uint8_t>(*p);  // the first byte of a word: its low byte here
  acc = (acc & 0xffffffffu) + (acc >> 32);
  acc = (acc & 0xffffffffu) + (acc >> 32);
  acc = (acc & 0xffffu) + (acc >> 16);
  acc = (acc & 0xffffu) + (acc >> 16);
  acc = (acc & 0xffffu) + (acc >> 16);
  const auto le = static_cast<std::uint16_t>(acc);
  return sum + static_cast<std::uint16_t>((le >> 8) | (le << 8));
}

// RFC 768 checksum over the IPv4 pseudo-header and the whole UDP datagram.
std::uint16_t udp_checksum(std::uint32_t src_ip, std::uint32_t dst_ip,
                           std::span<const std::byte> udp) noexcept {
  std::uint32_t sum = (src_ip >> 16) + (src_ip & 0xffff) + (dst_ip >> 16) + (dst_ip & 0xffff);
  sum += kIpProtoUdp + static_cast<std::uint32_t>(udp.size());
  return fold(sum16(udp, sum));
}

}  // namespace

void fill_udp_checksum(std::span<std::byte> frame) noexcept {
  std::byte* udp = frame.data() + kUdpOff;
  const std::size_t udp_len = frame.size() - kUdpOff;
  store_be<std::uint16_t>(udp + 6, 0);
  std::uint16_t c = udp_checksum(load_be<std::uint32_t>(frame.data() + kIpOff + 12),
                                 load_be<std::uint32_t>(frame.data() + kIpOff + 16),
                                 std::span<const std::byte>(udp, udp_len));
  if (c == 0) c = 0xffff;  // RFC 768: a computed 0 is sent as all ones
  store_be<std::uint16_t>(udp + 6, c);
}

std::uint16_t ipv4_checksum(std::span<const std::byte> ip_header) noexcept {
  if (ip_header.size() == kIpv4Len) return ipv4_header_sum(ip_header.data());
  return fold(sum16(ip_header, 0));
}

void encode_headers(std::span<std::byte, kOverhead> out, const Endpoints& ep, const Header& hdr) noexcept {
  assert(hdr.priority < kPriorities);
  assert(hdr.payload_len <= kMaxPayload);
  std::byte* f = out.data();
  const bool encrypted = (hdr.flags & flag::kEncrypted) != 0;
  const std::size_t udp_len = kUdpLen + kHeaderLen + hdr.payload_len + (encrypted ? kTagLen : 0);

  // Ethernet II
  std::memcpy(f, ep.dst_mac.data(), 6);
  std::memcpy(f + 6, ep.src_mac.data(), 6);
  store_be<std::uint16_t>(f + 12, kEtherTypeIpv4);

  // IPv4, no options; DF set: nerve fragments itself and never relies on IP fragmentation.
  std::byte* ip = f + kIpOff;
  ip[0] = std::byte{0x45};
  ip[1] = std::byte{static_cast<std::uint8_t>(kDscp[hdr.priority] << 2)};
  store_be<std::uint16_t>(ip + 2, static_cast<std::uint16_t>(kIpv4Len + udp_len));
  store_be<std::uint16_t>(ip + 4, 0);       // identification: unused with DF
  store_be<std::uint16_t>(ip + 6, 0x4000);  // DF
  ip[8] = std::byte{kIpDefaultTtl};
  ip[9] = std::byte{kIpProtoUdp};
  store_be<std::uint16_t>(ip + 10, 0);
  store_be<std::uint32_t>(ip + 12, ep.src_ip);
  store_be<std::uint32_t>(ip + 16, ep.dst_ip);
  store_be<std::uint16_t>(ip + 10, ipv4_checksum(std::span<const std::byte>(ip, kIpv4Len)));

  // UDP
  std::byte* udp = f + kUdpOff;
  store_be<std::uint16_t>(udp + 0, ep.src_port);
  store_be<std::uint16_t>(udp + 2, ep.dst_port);
  store_be<std::uint16_t>(udp + 4, static_cast<std::uint16_t>(udp_len));
  store_be<std::uint16_t>(udp + 6, 0);

  // nerve header
  std::byte* n = f + kHdrOff;
  store_le<std::uint16_t>(n + h::kMagic, kMagic);
  n[h::kVersion] = std::byte{kVersion};
  n[h::kType] = std::byte{static_cast<std::uint8_t>(hdr.type)};
  n[h::kPriority] = std::byte{hdr.priority};
  n[h::kFlags] = std::byte{hdr.flags};
  n[h::kTtl] = std::byte{hdr.ttl};
  n[h::kKeyEpoch] = std::byte{hdr.key_epoch};
  store_le<std::uint16_t>(n + h::kSrc, hdr.src_node);
  store_le<std::uint16_t>(n + h::kDst, hdr.dst);
  store_le<std::uint16_t>(n + h::kChannel, hdr.channel);
  store_le<std::uint16_t>(n + h::kFragIndex, hdr.frag_index);
  store_le<std::uint32_t>(n + h::kSeq, hdr.seq);
  store_le<std::uint32_t>(n + h::kAck, hdr.ack);
  store_le<std::uint32_t>(n + h::kMsgId, hdr.msg_id);
  store_le<std::uint32_t>(n + h::kCorrId, hdr.corr_id);
  store_le<std::uint64_t>(n + h::kTimestamp, hdr.timestamp_ns);
  store_le<std::uint16_t>(n + h::kPayloadLen, hdr.payload_len);
  store_le<std::uint32_t>(n + h::kSession, hdr.session);
  store_le<std::uint16_t>(n + h::kFragCount, hdr.frag_count);
}

Refusal decode(std::span<const std::byte> frame, const RxFilter& filter, Decoded& out) noexcept {
  const std::byte* f = frame.data();
  if (const Refusal r = checks::framing(f, frame.size(), filter); r != Refusal::kNone) return r;
  const std::byte* ip = f + kIpOff;
  const std::byte* udp = f + kUdpOff;
  const std::size_t udp_len = frame.size() - kUdpOff;
  const std::uint32_t src_ip = load_be<std::uint32_t>(ip + 12);
  const std::uint32_t dst_ip = load_be<std::uint32_t>(ip + 16);
  if (load_be<std::uint16_t>(udp + 6) != 0 &&
      udp_checksum(src_ip, dst_ip, std::span<const std::byte>(udp, udp_len)) != 0)
    return Refusal::kBadUdpChecksum;
  if (const Refusal r = checks::header(f, frame.size(), filter); r != Refusal::kNone) return r;

  const std::byte* n = f + kHdrOff;
  const std::uint8_t ttl = u8(n + h::kTtl);
  if (ttl == 0) return Refusal::kTtlExpired;

  std::memcpy(out.ep.dst_mac.data(), f, 6);
  std::memcpy(out.ep.src_mac.data(), f + 6, 6);
  out.ep.src_ip = src_ip;
  out.ep.dst_ip = dst_ip;
  out.ep.src_port = load_be<std::uint16_t>(udp);
  out.ep.dst_port = filter.udp_port;

  Header& hd = out.hdr;
  hd.type = static_cast<MsgType>(u8(n + h::kType));
  hd.priority = u8(n + h::kPriority);
  hd.flags = u8(n + h::kFlags);
  hd.ttl = ttl;
  hd.key_epoch = u8(n + h::kKeyEpoch);
  hd.src_node = load_le<std::uint16_t>(n + h::kSrc);
  hd.dst = load_le<std::uint16_t>(n + h::kDst);
  hd.channel = load_le<std::uint16_t>(n + h::kChannel);
  hd.frag_index = load_le<std::uint16_t>(n + h::kFragIndex);
  hd.frag_count = load_le<std::uint16_t>(n + h::kFragCount);
  hd.seq = load_le<std::uint32_t>(n + h::kSeq);
  hd.ack = load_le<std::uint32_t>(n + h::kAck);
  hd.msg_id = load_le<std::uint32_t>(n + h::kMsgId);
  hd.corr_id = load_le<std::uint32_t>(n + h::kCorrId);
  hd.timestamp_ns = load_le<std::uint64_t>(n + h::kTimestamp);
  hd.payload_len = load_le<std::uint16_t>(n + h::kPayloadLen);
  hd.session = load_le<std::uint32_t>(n + h::kSession);
  out.payload = frame.subspan(kOverhead, hd.payload_len);
  return Refusal::kNone;
}

std::string_view to_string(MsgType t) noexcept {
  switch (t) {
    case MsgType::kCommand: return "command";
    case MsgType::kStatus: return "status";
    case MsgType::kMetric: return "metric";
    case MsgType::kAlert: return "alert";
    case MsgType::kResourceRequest: return "request";
    case MsgType::kResponse: return "response";
    case MsgType::kFabric: return "fabric";
    case MsgType::kAck: return "ack";
  }
  return "unknown";
}

bool parse_msg_type(std::string_view s, MsgType& out) noexcept {
  for (std::uint8_t v = kMsgTypeFirst; v <= kMsgTypeLast; ++v) {
    const auto t = static_cast<MsgType>(v);
    if (s == to_string(t)) {
      out = t;
      return true;
    }
  }
  return false;
}

std::string_view to_string(Refusal r) noexcept {
  switch (r) {
    case Refusal::kNone: return "none";
    case Refusal::kTruncated: return "truncated";
    case Refusal::kOverMtu: return "over_mtu";
    case Refusal::kNotIpv4: return "not_ipv4";
    case Refusal::kBadIpHeader: return "bad_ip_header";
    case Refusal::kIpFragment: return "ip_fragment";
    case Refusal::kBadIpChecksum: return "bad_ip_checksum";
    case Refusal::kIpLength: return "ip_length";
    case Refusal::kNotUdp: return "not_udp";
    case Refusal::kWrongPort: return "wrong_port";
    case Refusal::kUdpLength: return "udp_length";
    case Refusal::kBadUdpChecksum: return "bad_udp_checksum";
    case Refusal::kBadMagic: return "bad_magic";
    case Refusal::kBadVersion: return "bad_version";
    case Refusal::kUnknownType: return "unknown_type";
    case Refusal::kBadPriority: return "bad_priority";
    case Refusal::kDscpMismatch: return "dscp_mismatch";
    case Refusal::kUnknownFlags: return "unknown_flags";
    case Refusal::kFeatureDisabled: return "feature_disabled";
    case Refusal::kPayloadLength: return "payload_length";
    case Refusal::kBadFragment: return "bad_fragment";
    case Refusal::kBadPaths: return "bad_paths";
    case Refusal::kBadAddress: return "bad_address";
    case Refusal::kBadSequence: return "bad_sequence";
    case Refusal::kTtlExpired: return "ttl_expired";
    case Refusal::kBadFabric: return "bad_fabric";
    case Refusal::kUnknownSource: return "unknown_source";
    case Refusal::kSourceMismatch: return "source_mismatch";
    case Refusal::kWrongDstMac: return "wrong_dst_mac";
    case Refusal::kWrongDstIp: return "wrong_dst_ip";
    case Refusal::kNoRoute: return "no_route";
    case Refusal::kLoop: return "loop";
    case Refusal::kDuplicate: return "duplicate";
    case Refusal::kUnknownGroup: return "unknown_group";
    case Refusal::kBadTimestamp: return "bad_timestamp";
    case Refusal::kResponseMismatch: return "response_mismatch";
    case Refusal::kCount: break;
  }
  return "unknown";
}

}  // namespace nerve::wire
