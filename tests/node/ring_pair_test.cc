// Two nodes in one process over a net_ring pair: every type and priority, 10,000 messages each
// way, none lost, every payload byte-exact; back-pressure; refusal counting of forged frames;
// the control proxy's request/response.
#include <catch2/catch.hpp>

#include <rte_mbuf.h>
#include <rte_ring.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "nerve/node.hpp"
#include "support.hpp"

using namespace nerve;

namespace {

constexpr std::uint32_t kPerLane = 10'000;

// Payload of message i of (type, prio): its index, then bytes derived from all three, with a
// length that varies from 8 to 207 bytes.
std::vector<std::byte> payload_for(std::uint8_t type, std::uint8_t prio, std::uint32_t i) {
  std::vector<std::byte> p(8 + (i * 7 + type * 3 + prio) % 200);
  std::memcpy(p.data(), &i, 4);
  p[4] = std::byte{type};
  p[5] = std::byte{prio};
  for (std::size_t k = 6; k < p.size(); ++k) p[k] = std::byte(static_cast<std::uint8_t>(i * 31 + k * 17 + type + prio));
  return p;
}

struct Checker {
  std::uint32_t next[wire::kMsgTypes + 1][wire::kPriorities] = {};
  std::uint64_t bad = 0, total = 0;
  void operator()(const RxMessage& m) {
    const auto t = static_cast<std::uint8_t>(m.type());
    std::uint32_t i = 0;
    if (m.payload().size() >= 4) std::memcpy(&i, m.payload().data(), 4);
    const auto want = payload_for(t, m.priority(), next[t][m.priority()]);
    if (i != next[t][m.priority()] || m.payload().size() != want.size() ||
        std::memcmp(m.payload().data(), want.data(), want.size()) != 0)
      ++bad;
    ++next[t][m.priority()];
    ++total;
  }
};

void pump(Node& a, Node& b, int rounds = 4) {
  for (int i = 0; i < rounds; ++i) {
    a.poll();
    b.poll();
  }
}

// Polls both until a whole round moves nothing.
void drain(Node& a, Node& b) {
  test::settle(a, b);
}

}  // namespace

TEST_CASE("10,000 messages of every type and priority each way, none lost, byte-exact", "[node][ring]") {
  auto cluster = test::ring_pair_cluster("rp1");
  Node a(cluster, 1, test::eal());
  Node b(cluster, 2, test::eal());
  Checker at_a, at_b;
  a.on_message([&](const RxMessage& m) { at_a(m); });
  b.on_message([&](const RxMessage& m) { at_b(m); });

  for (std::uint8_t t = wire::kMsgTypeFirst; t <= wire::kMsgTypeLast; ++t) {
    for (std::uint8_t p = 0; p < wire::kPriorities; ++p) {
      for (std::uint32_t i = 0; i < kPerLane; ++i) {
        for (auto [from, to] : {std::pair{&a, NodeId{2}}, std::pair{&b, NodeId{1}}}) {
          const auto bytes = payload_for(t, p, i);
          SendStatus s;
          while ((s = from->send_copy(to, static_cast<MsgType>(t), p, bytes)) == SendStatus::kBackpressure) pump(a, b);
          REQUIRE(s == SendStatus::kOk);
        }
        if (i % 64 == 0) pump(a, b, 1);
      }
    }
  }
  drain(a, b);
  const std::uint64_t expected = std::uint64_t{kPerLane} * wire::kMsgTypeLast * wire::kPriorities;
  CHECK(at_a.total == expected);
  CHECK(at_b.total == expected);
  CHECK(at_a.bad == 0);
  CHECK(at_b.bad == 0);
  for (std::uint8_t t = wire::kMsgTypeFirst; t <= wire::kMsgTypeLast; ++t)
    for (std::uint8_t p = 0; p < wire::kPriorities; ++p) {
      CHECK(at_b.next[t][p] == kPerLane);
      CHECK(at_a.next[t][p] == kPerLane);
    }
  const auto sa = a.snapshot(), sb = b.snapshot();
  for (unsigned l = 0; l < wire::kPriorities; ++l) {
    INFO("lane " << l);
    CHECK(sa.lanes[l].shed == 0);
    CHECK(sb.lanes[l].shed == 0);
  }
  CHECK(sa.sent_total() == expected);
  CHECK(sb.delivered_total() == expected);
  CHECK(sb.refused_total() == 0);
  CHECK(sb.lanes[0].count == kPerLane * wire::kMsgTypeLast);
  CHECK(sb.lanes[0].p50 > 0);
}

TEST_CASE("a full P2 lane pushes back and keeps the frame; nothing is lost", "[node][ring]") {
  auto cluster = test::ring_pair_cluster("rp2");
  Node a(cluster, 1, test::eal());
  Node b(cluster, 2, test::eal());
  std::uint64_t got = 0;
  b.on_message([&](const RxMessage&) { ++got; });
  std::uint64_t sent = 0;
  SendStatus s = SendStatus::kOk;
  TxFrame f;
  while (true) {  // never polling b: the ring (4096) and the TX buffer (512) fill up
    f = a.alloc(16);
    REQUIRE(f);
    s = a.send(f, 2, MsgType::kMetric, 2);
    if (s != SendStatus::kOk) break;
    ++sent;
    REQUIRE(sent < 100000);
  }
  CHECK(s == SendStatus::kBackpressure);
  CHECK(f);  // still ours
  CHECK(a.snapshot().tx_backpressure == 1);
  drain(a, b);
  REQUIRE(a.send(f, 2, MsgType::kMetric, 2) == SendStatus::kOk);
  ++sent;
  drain(a, b);
  CHECK(got == sent);
}

TEST_CASE("recv() queue: when full, frames wait in the port instead of being dropped", "[node][ring]") {
  auto cluster = test::ring_pair_cluster("rp3");
  NodeOptions small;
  small.rx_queue_depth = 64;
  Node a(cluster, 1, test::eal());
  Node b(cluster, 2, test::eal(), small);
  for (std::uint32_t i = 0; i < 1000; ++i) {
    const auto bytes = payload_for(2, 1, i);
    REQUIRE(a.send_copy(2, MsgType::kStatus, 1, bytes) == SendStatus::kOk);
    if (i % 32 == 0) a.poll();
  }
  a.poll();
  Checker c;
  // Without recv() the queue fills (64) and later polls shorten their bursts.
  for (int i = 0; i < 40; ++i) b.poll();
  CHECK(b.snapshot().rx_deferred > 0);
  for (int i = 0; i < 200 && c.total < 1000; ++i) {
    b.poll();
    while (auto m = b.recv()) c(*m);
  }
  CHECK(c.total == 1000);
  CHECK(c.bad == 0);
}

TEST_CASE("forged and malformed frames are refused and counted by reason", "[node][ring]") {
  auto cluster = test::ring_pair_cluster("rp4");
  Node a(cluster, 1, test::eal());
  Node b(cluster, 2, test::eal());
  std::uint64_t got = 0;
  b.on_message([&](const RxMessage&) { ++got; });

  // Write frames straight into the ring that feeds node 2, as a rogue sender on the link would.
  rte_ring* to_b = rte_ring_lookup("nvrp40ab");
  REQUIRE(to_b != nullptr);
  rte_mempool* pool = rte_pktmbuf_pool_create("forge", 255, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, 0);
  REQUIRE(pool != nullptr);
  auto inject = [&](std::vector<std::byte> bytes) {
    rte_mbuf* m = rte_pktmbuf_alloc(pool);
    REQUIRE(m != nullptr);
    std::memcpy(rte_pktmbuf_append(m, static_cast<std::uint16_t>(bytes.size())), bytes.data(), bytes.size());
    REQUIRE(rte_ring_enqueue(to_b, m) == 0);
  };
  // A frame as node 1 would send it to node 2.
  auto frame = [&](auto&& edit) {
    wire::Endpoints ep;
    ep.src_mac = {2, 0, 0, 0, 1, 1};
    ep.dst_mac = {2, 0, 0, 0, 1, 2};
    ep.src_ip = 0xc6120101;  // 198.18.1.1
    ep.dst_ip = 0xc6120102;
    wire::Header h;
    h.src_node = 1;
    h.dst = 2;
    h.ttl = 8;
    h.payload_len = 10;
    h.timestamp_ns = Clock::tsc().now_ns();
    edit(ep, h);
    auto f = std::vector<std::byte>(wire::frame_len(h.payload_len, (h.flags & wire::flag::kEncrypted) != 0));
    wire::encode_headers(std::span<std::byte, wire::kOverhead>(f.data(), wire::kOverhead), ep, h);
    return f;
  };
  auto as_is = [](wire::Endpoints&, wire::Header&) {};
  const auto good = frame(as_is);
  inject(good);                                                      // accepted
  inject(std::vector<std::byte>(good.begin(), good.begin() + 50));   // truncated
  inject(std::vector<std::byte>{});                                  // empty frame: truncated
  auto magic = good;
  magic[wire::kEthLen + wire::kIpv4Len + wire::kUdpLen] = std::byte{0};
  inject(magic);                                                                    // bad_magic
  inject(frame([](auto&, auto& h) { h.dst = 3; }));                                 // wrong_dst_ip (3 is no node)
  inject(frame([](auto& ep, auto&) { ep.dst_mac = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}; }));  // wrong_dst_mac
  inject(frame([](auto& ep, auto&) { ep.dst_ip = 0xc6120109; }));                   // wrong_dst_ip
  inject(frame([](auto& ep, auto&) { ep.src_ip = 0xc6120109; }));                   // source_mismatch
  inject(frame([](auto&, auto& h) { h.src_node = 77; }));                           // unknown_source
  inject(frame([](auto&, auto& h) { h.timestamp_ns = 0; }));                        // bad_timestamp
  inject(frame([](auto&, auto& h) { h.timestamp_ns = ~0ull; }));                    // bad_timestamp
  inject(frame([](auto&, auto& h) { h.flags = wire::flag::kEncrypted; }));          // feature_disabled
  inject(frame([](auto&, auto& h) { h.payload_len = 1500; }));                      // over_mtu
  pump(a, b, 4);

  const auto s = b.snapshot();
  using R = wire::Refusal;
  auto refused = [&](R r) { return s.refused[static_cast<std::size_t>(r)]; };
  CHECK(got == 1);
  CHECK(refused(R::kTruncated) == 2);
  CHECK(refused(R::kBadMagic) == 1);
  CHECK(refused(R::kWrongDstMac) == 1);
  CHECK(refused(R::kWrongDstIp) == 2);
  CHECK(refused(R::kSourceMismatch) == 1);
  CHECK(refused(R::kUnknownSource) == 1);
  CHECK(refused(R::kBadTimestamp) == 2);
  CHECK(refused(R::kFeatureDisabled) == 1);
  CHECK(refused(R::kOverMtu) == 1);
  CHECK(s.refused_total() == 12);
  CHECK(s.rx_frames - s.fabric_rx == 13);  // and the heartbeats
  // Refused timestamps are never recorded: the lane's histogram holds the one good frame.
  CHECK(s.lanes[0].count == 1);
  CHECK(s.lanes[0].max < 1'000'000'000);
  rte_mempool_free(pool);
}

TEST_CASE("proxy: another thread sends a command and gets the response", "[node][ring]") {
  auto cluster = test::ring_pair_cluster("rp5");
  Node a(cluster, 1, test::eal());
  Node b(cluster, 2, test::eal());
  b.on_message([&](const RxMessage& m) {
    if (m.type() != MsgType::kCommand) return;
    std::string reply = "re:" + std::string(reinterpret_cast<const char*>(m.payload().data()), m.payload().size());
    TxFrame f = b.alloc(reply.size());
    std::memcpy(f.payload().data(), reply.data(), reply.size());
    b.respond(m, f);
  });
  std::atomic<bool> stop{false};
  std::thread datapath([&] {
    while (!stop.load()) {
      a.poll();
      b.poll();
    }
  });
  const std::string ping = "ping";
  ProxySend req;
  req.dst = 2;
  req.type = MsgType::kCommand;
  req.priority = 0;
  req.fill = ProxySend::copy_of(std::as_bytes(std::span(ping)));
  req.await_reply = true;
  const ProxyResult r = a.proxy().send(req);
  ProxySend many = req;
  many.count = 500;
  many.fill = [](std::uint32_t i, std::span<std::byte> room) {
    const std::string p = "m#" + std::to_string(i);
    std::memcpy(room.data(), p.data(), p.size());
    return p.size();
  };
  const ProxyResult r2 = a.proxy().send(many);
  ProxySend nowhere = req;
  nowhere.dst = 9;
  const ProxyResult r3 = a.proxy().send(nowhere);
  stop = true;
  datapath.join();

  CHECK(r.status == SendStatus::kOk);
  CHECK(r.reply == "re:ping");
  CHECK(r.replies == 1);
  CHECK(r.rtt_ns > 0);
  CHECK(r2.status == SendStatus::kOk);
  CHECK(r2.sent == 500);
  CHECK(r2.replies == 500);
  CHECK(r2.reply == "re:m#0");
  CHECK(r3.status == SendStatus::kNoRoute);
}

TEST_CASE("status read from another thread while traffic flows: counters only grow", "[node][ring]") {
  // What nerved's control thread does while the datapath runs; under ThreadSanitizer (the
  // tsan build of scripts/test.sh) any unsynchronised access here is reported.
  auto cluster = test::ring_pair_cluster("rp6");
  Node a(cluster, 1, test::eal());
  Node b(cluster, 2, test::eal());
  b.on_message([](const RxMessage&) {});
  constexpr std::uint32_t kMessages = 20'000;
  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> reads{0};
  std::thread datapath([&] {
    std::uint32_t sent = 0;
    while (sent < kMessages) {
      for (unsigned k = 0; k < 32 && sent < kMessages; ++k) {
        TxFrame f = a.alloc(16);
        if (!f) break;
        std::memset(f.payload().data(), 0x11, 16);
        if (a.send(f, 2, MsgType::kMetric, static_cast<std::uint8_t>(sent % 5)) != SendStatus::kOk) break;
        ++sent;
      }
      a.poll();
      b.poll();
    }
    test::settle(a, b);
    // On a busy machine the reader may not have run yet: keep the nodes polling until it has
    // read a few times (bounded).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (reads.load() < 10 && std::chrono::steady_clock::now() < deadline) {
      a.poll();
      b.poll();
    }
    done = true;
  });
  std::uint64_t last_delivered = 0, last_tx = 0;
  bool monotonic = true;
  while (!done.load()) {
    const auto s = b.snapshot();
    const auto ports = a.ports();
    monotonic &= s.delivered_total() >= last_delivered && ports[0].opackets >= last_tx;
    last_delivered = s.delivered_total();
    last_tx = ports[0].opackets;
    ++reads;
  }
  datapath.join();
  CHECK(reads > 0);
  CHECK(monotonic);
  CHECK(b.snapshot().delivered_total() == kMessages);
  CHECK(b.snapshot().lanes[0].count == kMessages / 5);
}
