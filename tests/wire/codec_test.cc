// The frame codec: round trips of every type, priority and flag, and one test per class of
// malformed frame. Runs under ASan+UBSan in CI, so an out-of-bounds read fails the build.
#include <catch2/catch.hpp>

#include <random>
#include <vector>

#include "nerve/wire.hpp"
#include "wire/checks.hpp"

using namespace nerve::wire;

namespace {

Endpoints endpoints() {
  Endpoints ep;
  ep.src_mac = {0x02, 0, 0, 0, 0, 0x01};
  ep.dst_mac = {0x02, 0, 0, 0, 0, 0x02};
  ep.src_ip = 0xc6120001;  // 198.18.0.1
  ep.dst_ip = 0xc6120002;  // 198.18.0.2
  return ep;
}

Header header(MsgType t = MsgType::kCommand, std::uint8_t prio = 0, std::uint16_t len = 32) {
  Header h;
  h.type = t;
  h.priority = prio;
  h.src_node = 1;
  h.dst = 2;
  h.ttl = 8;
  h.channel = 7;
  h.seq = 0x01020304;
  h.ack = 0x05060708;
  h.msg_id = 99;
  h.corr_id = 42;
  h.key_epoch = 3;
  h.timestamp_ns = 0x1122334455667788ull;
  h.payload_len = len;
  return h;
}

// A reliable frame (or an ack) gets a session and a UDP checksum, as senders give it.
std::vector<std::byte> build(const Endpoints& ep, Header h) {
  const bool enc = (h.flags & flag::kEncrypted) != 0;
  const bool sequenced = (h.flags & flag::kReliable) != 0 || h.type == MsgType::kAck;
  if (sequenced && h.session == 0) h.session = 0x0a0b0c0d;
  std::vector<std::byte> f(frame_len(h.payload_len, enc));
  encode_headers(std::span<std::byte, kOverhead>(f.data(), kOverhead), ep, h);
  for (std::size_t i = kOverhead; i < f.size(); ++i) f[i] = std::byte(static_cast<std::uint8_t>(i * 7));
  if (sequenced) fill_udp_checksum(f);
  return f;
}

// Every feature flag enabled, so the round trips cover them all; kPlain is a node that runs none.
constexpr RxFilter kFilter{kDefaultUdpPort, 1500, flag::kKnown};
constexpr RxFilter kPlain{kDefaultUdpPort, 1500, 0};

Refusal decode_copy(const std::vector<std::byte>& f, const RxFilter& filter = kFilter) {
  // An exact-size heap copy, so a read past the end trips ASan.
  std::vector<std::byte> copy(f.begin(), f.end());
  Decoded d;
  return decode(copy, filter, d);
}

void fix_ip_checksum(std::vector<std::byte>& f) {
  f[kEthLen + 10] = f[kEthLen + 11] = std::byte{0};
  const std::uint16_t c = ipv4_checksum(std::span<const std::byte>(f.data() + kEthLen, kIpv4Len));
  f[kEthLen + 10] = std::byte(c >> 8);
  f[kEthLen + 11] = std::byte(c & 0xff);
}

constexpr std::size_t kHdr = kEthLen + kIpv4Len + kUdpLen;  // offset of the nerve header

// decode() accepts the frame and a hop other than `self` may forward it.
bool may_pass_decoded(const std::vector<std::byte>& f, std::uint16_t self) {
  std::vector<std::byte> copy(f.begin(), f.end());
  Decoded d;
  return decode(copy, kFilter, d) == Refusal::kNone && d.hdr.type != MsgType::kFabric && d.hdr.ttl > 1 &&
         (d.hdr.flags & (flag::kBroadcast | flag::kMulticast)) == 0 && d.hdr.dst != self;
}

}  // namespace

TEST_CASE("every type, priority and flag combination round-trips", "[wire]") {
  const auto ep = endpoints();
  int checked = 0;
  for (std::uint8_t t = kMsgTypeFirst; t <= kMsgTypeLast; ++t) {
    for (std::uint8_t p = 0; p < kPriorities; ++p) {
      for (unsigned fl = 0; fl <= flag::kKnown; ++fl) {
        if ((fl & flag::kBroadcast) && (fl & flag::kMulticast)) continue;  // exclusive by definition
        // A fragment is part of a reliable unicast message: other combinations are refused below.
        if ((fl & flag::kFragment) && (!(fl & flag::kReliable) || (fl & (flag::kBroadcast | flag::kMulticast))))
          continue;
        // Two paths: unicast only; the second-path flag marks one of the two copies.
        if ((fl & flag::kSecondPath) && !(fl & flag::kTwoPaths)) continue;
        if ((fl & flag::kTwoPaths) && (fl & (flag::kBroadcast | flag::kMulticast))) continue;
        Header h = header(static_cast<MsgType>(t), p, static_cast<std::uint16_t>(17 + p));
        h.flags = static_cast<std::uint8_t>(fl);
        if (fl & flag::kBroadcast) h.dst = kBroadcast;
        if (fl & flag::kMulticast) h.dst = 300;  // a group id
        if (fl & flag::kFragment) { h.frag_count = 700; h.frag_index = 699; }  // 16 bits each
        const auto f = build(ep, h);
        std::vector<std::byte> copy(f);
        Decoded d;
        REQUIRE(decode(copy, kFilter, d) == Refusal::kNone);
        CHECK(d.hdr.type == h.type);
        CHECK(d.hdr.priority == p);
        CHECK(d.hdr.flags == h.flags);
        CHECK(d.hdr.src_node == 1);
        CHECK(d.hdr.dst == h.dst);
        CHECK(d.hdr.channel == 7);
        CHECK(d.hdr.seq == h.seq);
        CHECK(d.hdr.ack == h.ack);
        CHECK(d.hdr.msg_id == 99);
        CHECK(d.hdr.corr_id == 42);
        CHECK(d.hdr.key_epoch == 3);
        CHECK(d.hdr.ttl == 8);
        CHECK(d.hdr.frag_index == h.frag_index);
        CHECK(d.hdr.frag_count == h.frag_count);
        CHECK(d.hdr.session == ((fl & flag::kReliable) ? 0x0a0b0c0du : 0u));
        CHECK(d.hdr.timestamp_ns == h.timestamp_ns);
        CHECK(d.hdr.payload_len == h.payload_len);
        CHECK(d.ep.src_mac == ep.src_mac);
        CHECK(d.ep.dst_mac == ep.dst_mac);
        CHECK(d.ep.src_ip == ep.src_ip);
        CHECK(d.ep.dst_ip == ep.dst_ip);
        REQUIRE(d.payload.size() == h.payload_len);
        CHECK(d.payload.data() == copy.data() + kOverhead);
        // DSCP carries the priority.
        CHECK((std::to_integer<unsigned>(f[kEthLen + 1]) >> 2) == kDscp[p]);
        ++checked;
      }
    }
  }
  // Of the low six bits, 48 sets without broadcast and multicast together; of the 24 with the
  // fragment flag only the 4 reliable unicast ones: 28, 12 of them unicast. A unicast set goes
  // with no two-paths flag, two paths, or two paths and second path: 12 * 3 + 16 = 52.
  CHECK(checked == 6 * 5 * 52);
}

TEST_CASE("wire layout is the one docs/wire.md specifies", "[wire]") {
  const auto f = build(endpoints(), header(MsgType::kAlert, 2, 4));
  REQUIRE(f.size() == 94);
  CHECK(f[12] == std::byte{0x08});                  // EtherType 0x0800
  CHECK(f[13] == std::byte{0x00});
  CHECK(f[kEthLen] == std::byte{0x45});             // IPv4, IHL 5
  CHECK(f[kEthLen + 1] == std::byte{26 << 2});      // P2 = AF31
  CHECK(f[kEthLen + 9] == std::byte{17});           // UDP
  CHECK(f[kHdr + 0] == std::byte{'N'});             // magic, little-endian 0x564e
  CHECK(f[kHdr + 1] == std::byte{'V'});
  CHECK(f[kHdr + 2] == std::byte{kVersion});
  CHECK(f[kHdr + 3] == std::byte{4});               // alert
  CHECK(f[kHdr + 4] == std::byte{2});
  CHECK(f[kHdr + 16] == std::byte{0x04});           // seq 0x01020304, little-endian
  CHECK(f[kHdr + 32] == std::byte{0x88});           // timestamp low byte first
  CHECK(f[kHdr + 40] == std::byte{4});              // payload length
  CHECK(ipv4_checksum(std::span<const std::byte>(f.data() + kEthLen, kIpv4Len)) == 0);
}

TEST_CASE("a frame truncated at every byte offset is refused", "[wire]") {
  for (std::uint16_t len : {0, 1, 64}) {
    const auto f = build(endpoints(), header(MsgType::kMetric, 1, len));
    for (std::size_t cut = 0; cut < f.size(); ++cut) {
      std::vector<std::byte> prefix(f.begin(), f.begin() + static_cast<std::ptrdiff_t>(cut));
      Decoded d;
      const Refusal r = decode(prefix, kFilter, d);
      INFO("cut at " << cut);
      CHECK(r != Refusal::kNone);
      CHECK(r == (cut < kOverhead ? Refusal::kTruncated : Refusal::kIpLength));
    }
    CHECK(decode_copy(f) == Refusal::kNone);
  }
}

TEST_CASE("each class of malformed frame is refused with its reason", "[wire]") {
  const auto good = build(endpoints(), header(MsgType::kStatus, 3, 40));
  REQUIRE(decode_copy(good) == Refusal::kNone);

  auto mutate = [&](auto&& fn, bool fix_checksum = false) {
    auto f = good;
    fn(f);
    if (fix_checksum) fix_ip_checksum(f);
    return decode_copy(f);
  };
  CHECK(mutate([](auto& f) { f[12] = std::byte{0x86}; f[13] = std::byte{0xdd}; }) == Refusal::kNotIpv4);
  CHECK(mutate([](auto& f) { f[kEthLen] = std::byte{0x46}; }, true) == Refusal::kBadIpHeader);
  CHECK(mutate([](auto& f) { f[kEthLen] = std::byte{0x65}; }, true) == Refusal::kBadIpHeader);
  CHECK(mutate([](auto& f) { f[kEthLen + 6] = std::byte{0x20}; }, true) == Refusal::kIpFragment);
  CHECK(mutate([](auto& f) { f[kEthLen + 7] = std::byte{0x01}; }, true) == Refusal::kIpFragment);
  CHECK(mutate([](auto& f) { f[kEthLen + 6] = std::byte{0x00}; }, true) == Refusal::kIpFragment);  // DF clear
  CHECK(mutate([](auto& f) { f[kEthLen + 15] ^= std::byte{0x01}; }) == Refusal::kBadIpChecksum);
  CHECK(mutate([](auto& f) { f[kEthLen + 3] = std::byte(std::to_integer<int>(f[kEthLen + 3]) + 1); }, true) ==
        Refusal::kIpLength);
  CHECK(mutate([](auto& f) { f.push_back(std::byte{0}); }) == Refusal::kIpLength);
  CHECK(mutate([](auto& f) { f[kEthLen + 9] = std::byte{6}; }, true) == Refusal::kNotUdp);
  CHECK(mutate([](auto& f) { f[kEthLen + kIpv4Len + 3] ^= std::byte{1}; }) == Refusal::kWrongPort);
  CHECK(mutate([](auto& f) { f[kEthLen + kIpv4Len + 5] ^= std::byte{1}; }) == Refusal::kUdpLength);
  CHECK(mutate([](auto& f) { f[kEthLen + kIpv4Len + 7] = std::byte{1}; }) == Refusal::kBadUdpChecksum);
  CHECK(mutate([](auto& f) { f[kHdr] = std::byte{'X'}; }) == Refusal::kBadMagic);
  CHECK(mutate([](auto& f) { f[kHdr + 2] = std::byte{1}; }) == Refusal::kBadVersion);  // the layout before 2
  CHECK(mutate([](auto& f) { f[kHdr + 3] = std::byte{0}; }) == Refusal::kUnknownType);
  CHECK(mutate([](auto& f) { f[kHdr + 3] = std::byte{9}; }) == Refusal::kUnknownType);  // 7 fabric, 8 ack
  CHECK(mutate([](auto& f) { f[kHdr + 4] = std::byte{5}; }) == Refusal::kBadPriority);
  CHECK(mutate([](auto& f) { f[kHdr + 4] = std::byte{0}; }) == Refusal::kDscpMismatch);
  // Every flag bit is defined in version 2 (kUnknownFlags waits for a version with fewer).
  CHECK(mutate([](auto& f) { f[kHdr + 5] = std::byte{flag::kTwoPaths}; }) == Refusal::kNone);
  CHECK(mutate([](auto& f) { f[kHdr + 5] = std::byte{flag::kSecondPath}; }) == Refusal::kBadPaths);
  CHECK(mutate([](auto& f) {
    f[kHdr + 5] = std::byte{flag::kTwoPaths | flag::kBroadcast};
    f[kHdr + 10] = f[kHdr + 11] = std::byte{0xff};
  }) == Refusal::kBadPaths);
  CHECK(mutate([](auto& f) { f[kHdr + 46] = std::byte{2}; }) == Refusal::kBadFragment);  // a count, no flag
  CHECK(mutate([](auto& f) { f[kHdr + 47] = std::byte{1}; }) == Refusal::kBadFragment);
  CHECK(mutate([](auto& f) { f[kHdr + 45] = std::byte{1}; }) == Refusal::kBadSequence);  // a session, not reliable
  CHECK(mutate([](auto& f) { f[kHdr + 40] = std::byte{41}; }) == Refusal::kPayloadLength);
  CHECK(mutate([](auto& f) { f[kHdr + 5] = std::byte{flag::kEncrypted}; }) == Refusal::kPayloadLength);
  CHECK(mutate([](auto& f) { f[kHdr + 15] = std::byte{2}; }) == Refusal::kBadFragment);
  CHECK(mutate([](auto& f) { f[kHdr + 5] = std::byte{flag::kFragment}; }) == Refusal::kBadFragment);
  CHECK(mutate([](auto& f) { f[kHdr + 8] = f[kHdr + 9] = std::byte{0}; }) == Refusal::kBadAddress);
  CHECK(mutate([](auto& f) { f[kHdr + 5] = std::byte{flag::kBroadcast}; }) == Refusal::kBadAddress);
  CHECK(mutate([](auto& f) { f[kHdr + 10] = f[kHdr + 11] = std::byte{0xff}; }) == Refusal::kBadAddress);
  CHECK(mutate([](auto& f) { f[kHdr + 6] = std::byte{0}; }) == Refusal::kTtlExpired);
}

TEST_CASE("reliable frames and acks carry a session, a sequence number and a UDP checksum", "[wire]") {
  Header h = header(MsgType::kStatus, 1, 24);
  h.flags = flag::kReliable;
  const auto good = build(endpoints(), h);
  Decoded d;
  std::vector<std::byte> copy(good);
  REQUIRE(decode(copy, kFilter, d) == Refusal::kNone);
  CHECK(d.hdr.session == 0x0a0b0c0du);
  CHECK(d.hdr.seq == 0x01020304u);
  // Without a checksum, a session or a sequence number: refused.
  auto f = good;
  f[kEthLen + kIpv4Len + 6] = f[kEthLen + kIpv4Len + 7] = std::byte{0};
  CHECK(decode_copy(f) == Refusal::kBadSequence);
  Header no_seq = h;
  no_seq.seq = 0;
  CHECK(decode_copy(build(endpoints(), no_seq)) == Refusal::kBadSequence);
  // Any bit flipped past the IPv4 header is caught by the checksum (or a field's own check).
  for (std::size_t byte = kEthLen + kIpv4Len; byte < good.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      auto g = good;
      g[byte] ^= std::byte(1u << bit);
      INFO("byte " << byte << " bit " << bit);
      CHECK(decode_copy(g) != Refusal::kNone);
    }
  }
  // An ack: a session, no reliable flag, unicast.
  Header a = header(MsgType::kAck, 1, 8);
  CHECK(decode_copy(build(endpoints(), a)) == Refusal::kNone);
  a.flags = flag::kReliable;
  CHECK(decode_copy(build(endpoints(), a)) == Refusal::kBadSequence);
}

TEST_CASE("the UDP checksum agrees with RFC 768 summed the plain way, at every length", "[wire]") {
  std::mt19937 rng(7);
  // Random payloads, and payloads of all ones (the most carries) up to a full frame.
  for (std::uint16_t len = 0; len <= 1424; len = static_cast<std::uint16_t>(len < 200 ? len + 1 : len + 97)) {
    Header h = header(MsgType::kMetric, 2, len);
    h.flags = flag::kReliable;
    h.session = 5;
    auto f = build(endpoints(), h);
    for (std::size_t i = kOverhead; i < f.size(); ++i) f[i] = len % 2 == 0 && len >= 100 ? std::byte{0xff} : std::byte(rng() & 0xff);
    fill_udp_checksum(f);
    // Reference: 16-bit big-endian words of the pseudo-header and the datagram, one at a time.
    std::uint32_t sum = 0xc612 + 0x0001 + 0xc612 + 0x0002 + 17 + static_cast<std::uint32_t>(f.size() - 34);
    for (std::size_t i = 34; i < f.size(); i += 2) {
      const auto hi = std::to_integer<std::uint32_t>(f[i]);
      const auto lo = i + 1 < f.size() ? std::to_integer<std::uint32_t>(f[i + 1]) : 0u;
      sum += (hi << 8) | lo;
    }
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    INFO("payload " << len);
    CHECK(sum == 0xffff);  // a correct checksum makes the whole sum all ones
    CHECK(decode_copy(f) == Refusal::kNone);
  }
}

TEST_CASE("flags of features a node does not run are refused, each one", "[wire]") {
  for (const std::uint8_t fl : {flag::kReliable, flag::kEncrypted, flag::kFragment, flag::kAckRequest,
                                flag::kMulticast, flag::kBroadcast}) {
    Header h = header(MsgType::kCommand, 0, 32);
    h.flags = fl;
    if (fl == flag::kBroadcast) h.dst = kBroadcast;
    // A fragment is reliable: the filter below runs reliable delivery too.
    const std::uint8_t with = fl == flag::kFragment ? flag::kFragment | flag::kReliable : fl;
    if (fl == flag::kFragment) { h.frag_count = 2; h.frag_index = 1; h.flags = with; }
    const auto f = build(endpoints(), h);
    INFO("flag " << int(fl));
    CHECK(decode_copy(f, RxFilter{kDefaultUdpPort, 1500, static_cast<std::uint8_t>(with & ~fl)}) ==
          Refusal::kFeatureDisabled);
    CHECK(decode_copy(f, RxFilter{kDefaultUdpPort, 1500, with}) == Refusal::kNone);
  }
  CHECK(decode_copy(build(endpoints(), header()), kPlain) == Refusal::kNone);
}

TEST_CASE("a fragment is part of a reliable unicast message; its index and count are 16 bits", "[wire]") {
  constexpr RxFilter kAll{kDefaultUdpPort, 1500, flag::kKnown & ~flag::kEncrypted};
  Header h = header(MsgType::kCommand, 2, 32);
  h.flags = flag::kFragment | flag::kReliable;
  h.frag_count = 65535;
  h.frag_index = 65534;
  auto f = build(endpoints(), h);
  CHECK(decode_copy(f, kAll) == Refusal::kNone);
  CHECK(std::to_integer<unsigned>(f[kHdr + 14]) == 0xfe);  // index, little-endian, bytes 14-15
  CHECK(std::to_integer<unsigned>(f[kHdr + 15]) == 0xff);
  CHECK(std::to_integer<unsigned>(f[kHdr + 46]) == 0xff);  // count, bytes 46-47
  CHECK(std::to_integer<unsigned>(f[kHdr + 47]) == 0xff);
  h.frag_index = 65535;  // not below the count
  CHECK(decode_copy(build(endpoints(), h), kAll) == Refusal::kBadFragment);
  h.frag_index = 0;
  h.frag_count = 1;  // a fragment of one
  CHECK(decode_copy(build(endpoints(), h), kAll) == Refusal::kBadFragment);
  h.frag_count = 2;
  h.flags = flag::kFragment;  // not reliable
  CHECK(decode_copy(build(endpoints(), h), kAll) == Refusal::kBadFragment);
  h.flags = flag::kFragment | flag::kReliable | flag::kMulticast;  // not unicast
  h.dst = 300;
  CHECK(decode_copy(build(endpoints(), h), kAll) == Refusal::kBadFragment);
}

TEST_CASE("a frame above the cluster's MTU is refused before anything else is read", "[wire]") {
  const auto at_mtu = build(endpoints(), header(MsgType::kMetric, 4, 1500 - 20 - 8 - 48));
  CHECK(at_mtu.size() == 1514);
  CHECK(decode_copy(at_mtu) == Refusal::kNone);
  const auto over = build(endpoints(), header(MsgType::kMetric, 4, 1500 - 20 - 8 - 48 + 1));
  CHECK(decode_copy(over) == Refusal::kOverMtu);
  auto junk = std::vector<std::byte>(1600, std::byte{0xff});
  CHECK(decode_copy(junk) == Refusal::kOverMtu);
  CHECK(decode_copy(over, RxFilter{kDefaultUdpPort, 9000, 0}) == Refusal::kNone);
}

TEST_CASE("a correct non-zero UDP checksum is accepted", "[wire]") {
  auto f = build(endpoints(), header(MsgType::kCommand, 0, 9));
  // Compute the RFC 768 checksum by hand over pseudo-header + UDP datagram.
  const std::size_t udp = kEthLen + kIpv4Len;
  const std::size_t len = f.size() - udp;
  std::uint32_t sum = 0xc612 + 0x0001 + 0xc612 + 0x0002 + 17 + static_cast<std::uint32_t>(len);
  for (std::size_t i = 0; i < len; i += 2) {
    const unsigned hi = std::to_integer<unsigned>(f[udp + i]);
    const unsigned lo = i + 1 < len ? std::to_integer<unsigned>(f[udp + i + 1]) : 0;
    sum += (hi << 8) | lo;
  }
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  const auto c = static_cast<std::uint16_t>(~sum);
  f[udp + 6] = std::byte(c >> 8);
  f[udp + 7] = std::byte(c & 0xff);
  CHECK(decode_copy(f) == Refusal::kNone);
  f[f.size() - 1] ^= std::byte{0x10};
  CHECK(decode_copy(f) == Refusal::kBadUdpChecksum);
}

TEST_CASE("random corruption never crashes and never reads outside the frame", "[wire]") {
  std::mt19937_64 rng(12345);
  const auto good = build(endpoints(), header(MsgType::kResourceRequest, 4, 100));
  std::size_t accepted = 0, refused = 0;
  for (int i = 0; i < 200000; ++i) {
    auto f = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) f[rng() % f.size()] = std::byte(static_cast<std::uint8_t>(rng()));
    if (rng() % 8 == 0) f.resize(rng() % (f.size() + 1));
    std::vector<std::byte> exact(f.begin(), f.end());
    Decoded d;
    const Refusal r = decode(exact, kFilter, d);
    REQUIRE(static_cast<std::size_t>(r) < kRefusalCount);
    if (r == Refusal::kNone) {
      ++accepted;
      REQUIRE(d.payload.data() + d.payload.size() <= exact.data() + exact.size());
    } else {
      ++refused;
    }
  }
  CHECK(refused > 0);
  CHECK(accepted > 0);  // flips in the payload or timestamp leave a valid frame
}

// The transit fast path skips decode() for frames a hop only passes on: it must accept exactly
// what decode() accepts (or refuses for its UDP checksum alone, which stays the destination's)
// and a hop may forward, and leave everything else to the full path.
TEST_CASE("the transit check is decode's checks but the UDP checksum, for frames a hop passes on", "[wire]") {
  constexpr std::uint16_t kSelf = 3;
  // A frame refused for its UDP checksum alone is judged as it would be with the right one.
  const auto may_pass = [](const std::vector<std::byte>& f) {
    if (decode_copy(f) != Refusal::kBadUdpChecksum) return may_pass_decoded(f, kSelf);
    auto fixed = f;
    fill_udp_checksum(fixed);
    return may_pass_decoded(fixed, kSelf);
  };
  Header reliable = header(MsgType::kResourceRequest, 2, 100);
  reliable.flags = flag::kReliable;
  reliable.session = 5;
  const std::vector<std::vector<std::byte>> goods = {build(endpoints(), header(MsgType::kStatus, 3, 40)),
                                                     build(endpoints(), reliable)};
  for (const auto& good : goods) REQUIRE(checks::transit(good.data(), good.size(), kFilter, kSelf));
  std::mt19937_64 rng(777);
  std::size_t passed = 0, kept = 0;
  for (int i = 0; i < 200000; ++i) {
    auto f = goods[static_cast<std::size_t>(i) % goods.size()];
    const int flips = 1 + static_cast<int>(rng() % 3);
    // Mostly the headers (where every check is), now and then anywhere.
    for (int k = 0; k < flips; ++k)
      f[rng() % (rng() % 4 == 0 ? f.size() : kOverhead)] = std::byte(static_cast<std::uint8_t>(rng()));
    if (rng() % 16 == 0) fix_ip_checksum(f);
    if (rng() % 16 == 0) f.resize(rng() % (f.size() + 1));
    std::vector<std::byte> exact(f.begin(), f.end());
    const bool pass = checks::transit(exact.data(), exact.size(), kFilter, kSelf);
    INFO("iteration " << i);
    REQUIRE(pass == may_pass(f));
    ++(pass ? passed : kept);
  }
  CHECK(passed > 1000);
  CHECK(kept > 1000);
  // The cases a hop leaves to the full path although decode() accepts them.
  auto to = [&](auto&& fn) {
    Header h = header(MsgType::kStatus, 3, 40);
    fn(h);
    const auto f = build(endpoints(), h);
    REQUIRE(decode_copy(f) == Refusal::kNone);
    return checks::transit(f.data(), f.size(), kFilter, kSelf);
  };
  CHECK_FALSE(to([](Header& h) { h.dst = kSelf; }));
  CHECK_FALSE(to([](Header& h) { h.ttl = 1; }));
  CHECK_FALSE(to([](Header& h) { h.type = MsgType::kFabric; }));
  CHECK_FALSE(to([](Header& h) { h.flags = flag::kBroadcast; h.dst = kBroadcast; }));
  CHECK_FALSE(to([](Header& h) { h.flags = flag::kMulticast; }));
  CHECK(to([](Header& h) { h.ttl = 2; }));
  CHECK(checks::transit(goods[0].data(), goods[0].size(), kPlain, kSelf));
  CHECK_FALSE(checks::transit(goods[1].data(), goods[1].size(), kPlain, kSelf));  // a node that runs no reliability
}

TEST_CASE("message type names parse back", "[wire]") {
  for (std::uint8_t t = kMsgTypeFirst; t <= kMsgTypeLast; ++t) {
    MsgType out{};
    REQUIRE(parse_msg_type(to_string(static_cast<MsgType>(t)), out));
    CHECK(out == static_cast<MsgType>(t));
  }
  MsgType out{};
  CHECK_FALSE(parse_msg_type("bogus", out));
  for (std::size_t r = 0; r < kRefusalCount; ++r) CHECK(to_string(static_cast<Refusal>(r)) != "unknown");
}
