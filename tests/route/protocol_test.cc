// The routing protocol's messages: what is encoded decodes to the same, and every malformed
// message is refused with its reason, never read past its end.
#include <catch2/catch.hpp>

#include <random>
#include <vector>

#include "route/protocol.hpp"

using namespace nerve::route;

namespace {

Lsa sample_lsa() {
  Lsa l;
  l.origin = 7;
  l.seq = 0x0123456789abcdefull;
  l.groups = 0x8000000000000005ull;
  l.links = {{3, true, 2, 1500}, {9, false, 0, 0}, {65534, true, kMaxLoad, 0xffffffffu}};
  return l;
}

}  // namespace

TEST_CASE("protocol: heartbeat and link state round trip", "[route][protocol]") {
  std::vector<std::byte> buf(256);
  Heartbeat hb{111, 222, 0xdeadbeefcafef00dull};
  REQUIRE(encode(buf, hb) == kHeartbeatLen);
  CHECK(peek_kind(buf) == MsgKind::kHeartbeat);
  Heartbeat back;
  REQUIRE(decode(std::span(buf).first(kHeartbeatLen), back) == ProtoError::kNone);
  CHECK(back.echo_ts_ns == 111);
  CHECK(back.echo_hold_ns == 222);
  CHECK(back.digest == hb.digest);

  const Lsa l = sample_lsa();
  const std::size_t n = encode(buf, l);
  REQUIRE(n == lsa_len(3));
  CHECK(peek_kind(buf) == MsgKind::kLinkState);
  Lsa lb;
  REQUIRE(decode(std::span(buf).first(n), lb) == ProtoError::kNone);
  CHECK(lb == l);
}

TEST_CASE("protocol: an encoder refuses a buffer too small", "[route][protocol]") {
  std::vector<std::byte> buf(kHeartbeatLen - 1);
  CHECK(encode(buf, Heartbeat{}) == 0);
  std::vector<std::byte> small(lsa_len(3) - 1);
  CHECK(encode(small, sample_lsa()) == 0);
}

TEST_CASE("protocol: malformed messages are refused by reason", "[route][protocol]") {
  std::vector<std::byte> hb(kHeartbeatLen);
  encode(hb, Heartbeat{1, 2, 3});
  Heartbeat h;
  CHECK(decode(std::span(hb).first(1), h) == ProtoError::kTruncated);
  CHECK(decode(std::span(hb).first(kHeartbeatLen - 1), h) == ProtoError::kTruncated);
  {
    auto m = hb;
    m.push_back(std::byte{0});
    CHECK(decode(m, h) == ProtoError::kBadLength);
  }
  {
    auto m = hb;
    m[1] = std::byte{2};
    CHECK(decode(m, h) == ProtoError::kBadVersion);
  }
  {
    auto m = hb;
    m[0] = std::byte{9};
    CHECK(decode(m, h) == ProtoError::kUnknownKind);
  }
  for (std::size_t at : {2u, 3u, 4u, 7u}) {
    auto m = hb;
    m[at] = std::byte{1};
    CHECK(decode(m, h) == ProtoError::kBadField);
  }

  std::vector<std::byte> ls(lsa_len(3));
  encode(ls, sample_lsa());
  Lsa l;
  CHECK(decode(std::span(ls).first(10), l) == ProtoError::kTruncated);
  CHECK(decode(std::span(ls).first(ls.size() - 1), l) == ProtoError::kBadLength);  // link count says 3
  CHECK(decode(hb, l) == ProtoError::kUnknownKind);
  {
    auto m = ls;
    m[4] = std::byte{200};  // 200 links claimed
    CHECK(decode(m, l) == ProtoError::kBadLength);
  }
  {
    auto m = ls;
    m[6] = std::byte{1};  // reserved
    CHECK(decode(m, l) == ProtoError::kBadField);
  }
  {
    auto m = ls;
    m[2] = m[3] = std::byte{0};  // origin 0
    CHECK(decode(m, l) == ProtoError::kBadField);
  }
  {
    auto m = ls;
    m[kLsaFixedLen + 2] = std::byte{0x02};  // an undefined link flag
    CHECK(decode(m, l) == ProtoError::kBadField);
  }
  {
    auto m = ls;
    m[kLsaFixedLen + 3] = std::byte{kMaxLoad + 1};
    CHECK(decode(m, l) == ProtoError::kBadField);
  }
  {
    auto m = ls;
    m[kLsaFixedLen] = m[kLsaFixedLen + 1] = std::byte{0};  // neighbour 0
    CHECK(decode(m, l) == ProtoError::kBadField);
  }
}

TEST_CASE("protocol: random bytes never decode past their end", "[route][protocol]") {
  // Under AddressSanitizer (scripts/test.sh's asan build) a read past the span is an error.
  std::mt19937_64 rng(42);
  std::size_t accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::vector<std::byte> m(rng() % 80);
    for (auto& b : m) b = std::byte{static_cast<std::uint8_t>(rng())};
    if (!m.empty()) m[0] = std::byte{static_cast<std::uint8_t>(1 + rng() % 2)};
    if (m.size() > 1) m[1] = std::byte{kProtocolVersion};
    Heartbeat h;
    Lsa l;
    accepted += decode(m, h) == ProtoError::kNone;
    accepted += decode(m, l) == ProtoError::kNone;
  }
  CHECK(accepted < 20000);
}
