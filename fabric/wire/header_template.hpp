// Per-route header templates: the 90 bytes of Ethernet / IPv4 / UDP / nerve headers that do not
// change from frame to frame on one route (addresses, ports, magic, version, source and
// destination node), built once; a send copies them and patches the per-frame fields (type,
// priority and DSCP, flags, TTL, channel, ids, timestamp, lengths) and the IPv4 checksum, summed
// incrementally from the template's constant part (RFC 1071 section 2(C), RFC 1624).
//
// write() produces byte for byte what encode_headers() does (tests/wire/header_template_test.cc
// checks it over random fields), in a fraction of the work. No DPDK: unit-tested and fuzzed.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "nerve/wire.hpp"

namespace nerve::wire {

class HeaderTemplate {
 public:
  HeaderTemplate() = default;
  // The route from `ep.src_*` to `ep.dst_*`, carrying frames from node `src_node` to `dst`.
  HeaderTemplate(const Endpoints& ep, std::uint16_t src_node, std::uint16_t dst) noexcept;

  // Writes the kOverhead bytes of headers for a frame whose payload follows them. Uses every
  // field of `hdr` but src_node and dst, which are the template's. With `ip_checksum` false the
  // IPv4 checksum is left 0 for the port to fill in (TX checksum offload).
  void write(std::byte* out, const Header& hdr, bool ip_checksum = true) const noexcept;

  std::uint16_t dst() const noexcept { return dst_; }
  const std::array<std::byte, kOverhead>& bytes() const noexcept { return bytes_; }

 private:
  alignas(64) std::array<std::byte, kOverhead> bytes_{};
  std::uint32_t ip_sum_ = 0;  // ones'-complement sum of the IPv4 header words that never change
  std::uint16_t dst_ = kNodeNone;
};

}  // namespace nerve::wire
