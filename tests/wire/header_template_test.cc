// Header templates: a frame written from a route's template is byte for byte the frame
// encode_headers() builds field by field, for any header; and it decodes.
#include <catch2/catch.hpp>

#include <random>
#include <vector>

#include "nerve/wire.hpp"
#include "wire/header_template.hpp"

using namespace nerve::wire;

namespace {

Endpoints endpoints() {
  Endpoints ep;
  ep.src_mac = {0x02, 0, 0, 0, 0, 0x01};
  ep.dst_mac = {0x02, 0, 0, 0, 0, 0x02};
  ep.src_ip = 0xc6120001;
  ep.dst_ip = 0xc6120002;
  ep.src_port = ep.dst_port = 47801;
  return ep;
}

}  // namespace

TEST_CASE("a template writes what encode_headers writes, for random headers", "[wire][template]") {
  const Endpoints ep = endpoints();
  const HeaderTemplate t(ep, 1, 2);
  std::mt19937_64 rng(7);
  for (int i = 0; i < 20000; ++i) {
    Header h;
    h.type = static_cast<MsgType>(kMsgTypeFirst + rng() % kMsgTypeLast);
    h.priority = static_cast<std::uint8_t>(rng() % kPriorities);
    h.flags = static_cast<std::uint8_t>(rng() & flag::kKnown);
    h.ttl = static_cast<std::uint8_t>(rng());
    h.key_epoch = static_cast<std::uint8_t>(rng());
    h.src_node = 1;
    h.dst = 2;
    h.channel = static_cast<std::uint16_t>(rng());
    h.frag_index = static_cast<std::uint16_t>(rng());
    h.frag_count = static_cast<std::uint16_t>(rng());
    h.seq = static_cast<std::uint32_t>(rng());
    h.ack = static_cast<std::uint32_t>(rng());
    h.msg_id = static_cast<std::uint32_t>(rng());
    h.corr_id = static_cast<std::uint32_t>(rng());
    h.timestamp_ns = rng();
    h.payload_len = static_cast<std::uint16_t>(rng() % 9000);
    std::array<std::byte, kOverhead> want{}, got{};
    encode_headers(want, ep, h);
    t.write(got.data(), h);
    INFO("iteration " << i);
    REQUIRE(got == want);
  }
}

TEST_CASE("a templated frame decodes, with a valid IPv4 checksum", "[wire][template]") {
  const HeaderTemplate t(endpoints(), 1, 2);
  CHECK(t.dst() == 2);
  for (std::uint8_t p = 0; p < kPriorities; ++p) {
    Header h;
    h.type = MsgType::kStatus;
    h.priority = p;
    h.ttl = 8;
    h.msg_id = 5;
    h.timestamp_ns = 123;
    h.payload_len = static_cast<std::uint16_t>(17 * (p + 1));
    std::vector<std::byte> f(frame_len(h.payload_len));
    t.write(f.data(), h);
    CHECK(ipv4_checksum(std::span<const std::byte>(f.data() + kEthLen, kIpv4Len)) == 0);
    Decoded d;
    REQUIRE(decode(f, RxFilter{47801, 1500, 0}, d) == Refusal::kNone);
    CHECK(d.hdr.priority == p);
    CHECK(d.hdr.src_node == 1);
    CHECK(d.hdr.dst == 2);
    CHECK(d.hdr.payload_len == h.payload_len);
  }
}

TEST_CASE("with checksum offload the IPv4 checksum is left for the port", "[wire][template]") {
  const HeaderTemplate t(endpoints(), 1, 2);
  Header h;
  h.payload_len = 10;
  std::array<std::byte, kOverhead> f{};
  t.write(f.data(), h, false);
  CHECK(f[kEthLen + 10] == std::byte{0});
  CHECK(f[kEthLen + 11] == std::byte{0});
  t.write(f.data(), h, true);
  CHECK(ipv4_checksum(std::span<const std::byte>(f.data() + kEthLen, kIpv4Len)) == 0);
}
