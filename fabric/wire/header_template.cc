#include "header_template.hpp"

#include <cstring>

#include "bytes.hpp"
#include "layout.hpp"

namespace nerve::wire {

using bytes::load_be;
using bytes::store_be;
using bytes::store_le;

HeaderTemplate::HeaderTemplate(const Endpoints& ep, std::uint16_t src_node, std::uint16_t dst) noexcept : dst_(dst) {
  Header h;
  h.src_node = src_node;
  h.dst = dst;
  encode_headers(std::span<std::byte, kOverhead>(bytes_.data(), kOverhead), ep, h);
  // The IPv4 words that stay: identification, flags, TTL and protocol, the addresses. The first
  // word (version, DSCP), the total length and the checksum are summed per frame.
  const std::byte* ip = bytes_.data() + layout::kIpOff;
  std::uint32_t sum = 0;
  for (std::size_t off = 4; off < kIpv4Len; off += 2)
    if (off != 10) sum += load_be<std::uint16_t>(ip + off);
  ip_sum_ = sum;
}

void HeaderTemplate::write(std::byte* out, const Header& hdr, bool ip_checksum) const noexcept {
  std::memcpy(out, bytes_.data(), kOverhead);
  const bool encrypted = (hdr.flags & flag::kEncrypted) != 0;
  const auto udp_len = static_cast<std::uint16_t>(kUdpLen + kHeaderLen + hdr.payload_len + (encrypted ? kTagLen : 0));
  const auto ip_len = static_cast<std::uint16_t>(kIpv4Len + udp_len);
  const auto tos = static_cast<std::uint8_t>(kDscp[hdr.priority] << 2);

  std::byte* ip = out + layout::kIpOff;
  ip[1] = std::byte{tos};
  store_be<std::uint16_t>(ip + 2, ip_len);
  std::uint16_t csum = 0;
  if (ip_checksum) {
    std::uint32_t sum = ip_sum_ + (0x4500u | tos) + ip_len;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    csum = static_cast<std::uint16_t>(~sum & 0xffff);
  }
  store_be<std::uint16_t>(ip + 10, csum);
  store_be<std::uint16_t>(out + layout::kUdpOff + 4, udp_len);

  namespace h = layout::hdr;
  std::byte* n = out + layout::kHdrOff;
  n[h::kType] = std::byte{static_cast<std::uint8_t>(hdr.type)};
  n[h::kPriority] = std::byte{hdr.priority};
  n[h::kFlags] = std::byte{hdr.flags};
  n[h::kTtl] = std::byte{hdr.ttl};
  n[h::kKeyEpoch] = std::byte{hdr.key_epoch};
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

}  // namespace nerve::wire
