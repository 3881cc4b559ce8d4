// Priority lanes end to end over a net_ring pair, in both RX modes: paired queues (lane i on
// ring queue i) and software classification (one shared queue). Ordering is asserted, never
// timing.
#include <catch2/catch.hpp>

#include <rte_ring.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <cstring>
#include <thread>
#include <vector>

#include "nerve/node.hpp"
#include "support.hpp"

using namespace nerve;

namespace {

struct Seen {
  std::uint8_t prio;
  std::uint32_t seq;
};

// Records (priority, sequence) of every message `n` delivers, in delivery order.
const std::vector<Seen>& record(Node& n) {
  static std::vector<Seen> seen;
  seen.clear();
  n.on_message([](const RxMessage& m) {
    std::uint32_t seq = 0;
    std::memcpy(&seq, m.payload().data(), 4);
    seen.push_back({m.priority(), seq});
  });
  return seen;
}

SendStatus send_seq(Node& n, std::uint8_t prio, std::uint32_t seq) {
  TxFrame f = n.alloc(8);
  REQUIRE(f);
  std::memcpy(f.payload().data(), &seq, 4);
  return n.send(f, 2, MsgType::kStatus, prio);
}

}  // namespace

TEST_CASE("ring and memif ports pair one queue per lane; others classify in software", "[lanes]") {
  {
    auto paired = test::ring_pair_cluster("ln1");
    Node a(paired, 1, test::eal());
    CHECK(a.ports()[0].lane_mode == config::LaneMode::kPaired);
  }
  auto soft = test::ring_pair_cluster("ln2", 8191, "", "lanes = \"software\"");
  Node b(soft, 1, test::eal());
  CHECK(b.ports()[0].lane_mode == config::LaneMode::kSoftware);
}

TEST_CASE("paired queues: a P0 frame sent behind a full P4 backlog is the first one delivered", "[lanes]") {
  // P4 lane deep enough to hold a backlog the ring queue cannot take.
  auto c = test::ring_pair_cluster("ln3", 16383, "lane_depth = [512, 512, 512, 1024, 8192]");
  Node a(c, 1, test::eal());
  Node b(c, 2, test::eal());
  const std::vector<Seen>& seen = record(b);
  for (std::uint32_t i = 0; i < 6000; ++i) REQUIRE(send_seq(a, 4, i) == SendStatus::kOk);
  a.flush();  // the P4 ring queue (4096) fills; the rest stays in the P4 lane
  CHECK(a.ports()[0].tx_queued[4] > 0);
  REQUIRE(send_seq(a, 0, 777) == SendStatus::kOk);  // leaves at once, on its own queue
  b.poll();
  REQUIRE(!seen.empty());
  CHECK(seen.front().prio == 0);
  CHECK(seen.front().seq == 777);
  test::settle(a, b);
  CHECK(seen.size() == 6001);
  std::uint32_t next = 0;  // and P4 stayed in order
  for (const auto& s : seen)
    if (s.prio == 4) CHECK(s.seq == next++);
}

TEST_CASE("software lanes: a P0 frame overtakes every P4 frame still queued in the node", "[lanes]") {
  auto c = test::ring_pair_cluster("ln4", 16383, "lane_depth = [512, 512, 512, 1024, 8192]",
                                   "lanes = \"software\"");
  Node a(c, 1, test::eal());
  Node b(c, 2, test::eal());
  const std::vector<Seen>& seen = record(b);
  for (std::uint32_t i = 0; i < 6000; ++i) REQUIRE(send_seq(a, 4, i) == SendStatus::kOk);
  a.flush();
  const std::uint32_t in_port = 6000 - a.ports()[0].tx_queued[4];  // already in the shared ring
  REQUIRE(in_port < 6000);
  REQUIRE(send_seq(a, 0, 777) == SendStatus::kOk);
  test::settle(a, b);
  REQUIRE(seen.size() == 6001);
  std::size_t p0_at = 0;
  while (seen[p0_at].prio != 0) ++p0_at;
  // Everything the port already held may precede it (one shared ring); nothing still in the
  // node's P4 lane may.
  CHECK(p0_at <= in_port);
  CHECK(p0_at >= in_port - 4 * 32);  // and the receiver delivered it ahead of its own bursts
}

TEST_CASE("full P3 and P4 lanes shed their oldest frames and count them", "[lanes]") {
  auto c = test::ring_pair_cluster("ln5", 16383, "lane_depth = [512, 512, 512, 64, 64]");
  Node a(c, 1, test::eal());
  Node b(c, 2, test::eal());
  const std::vector<Seen>& seen = record(b);
  // The ring queue takes 4095 (+ what one flush burst carries); then the lane keeps 64, and
  // every frame beyond sheds the oldest queued one.
  for (std::uint32_t i = 0; i < 5000; ++i) REQUIRE(send_seq(a, 3, i) == SendStatus::kOk);
  const auto s = a.snapshot();
  CHECK(s.lanes[3].shed > 0);
  CHECK(s.lanes[3].backpressure == 0);
  test::settle(a, b);
  CHECK(seen.size() + s.lanes[3].shed == 5000);  // every frame delivered or counted as shed
  CHECK(seen.back().seq == 4999);                 // the newest survive
}

TEST_CASE("full P0, P1 and P2 lanes push back; the frame stays with the caller", "[lanes]") {
  auto c = test::ring_pair_cluster("ln6", 16383, "lane_depth = [64, 64, 64, 64, 64]", "lanes = \"software\"");
  Node a(c, 1, test::eal());
  Node b(c, 2, test::eal());
  b.on_message([](const RxMessage&) {});
  for (std::uint8_t prio : {0, 1, 2}) {
    std::uint32_t ok = 0;
    SendStatus st = SendStatus::kOk;
    TxFrame f;
    while (true) {
      f = a.alloc(8);
      REQUIRE(f);
      st = a.send(f, 2, MsgType::kAlert, prio);
      if (st != SendStatus::kOk) break;
      REQUIRE(++ok < 20000);
    }
    CHECK(st == SendStatus::kBackpressure);
    CHECK(f);
    CHECK(a.snapshot().lanes[prio].backpressure == 1);
    CHECK(a.snapshot().lanes[prio].shed == 0);
    test::settle(a, b);
    CHECK(a.send(f, 2, MsgType::kAlert, prio) == SendStatus::kOk);
    test::settle(a, b);
  }
}

TEST_CASE("a never_shed send on a full P4 lane pushes back; a counted bulk send loses nothing", "[lanes]") {
  auto c = test::ring_pair_cluster("ln7", 16383, "lane_depth = [64, 64, 64, 64, 64]", "lanes = \"software\"");
  Node a(c, 1, test::eal());
  Node b(c, 2, test::eal());
  std::uint64_t delivered = 0;
  b.on_message([&](const RxMessage&) { ++delivered; });

  SendOptions keep;
  keep.never_shed = true;
  SendStatus st = SendStatus::kOk;
  TxFrame f;
  for (std::uint32_t sent = 0; st == SendStatus::kOk; ++sent) {
    REQUIRE(sent < 20000);
    f = a.alloc(8);
    REQUIRE(f);
    st = a.send(f, 2, MsgType::kMetric, 4, keep);
  }
  CHECK(st == SendStatus::kBackpressure);
  CHECK(f);  // still the caller's
  CHECK(a.snapshot().lanes[4].shed == 0);
  CHECK(a.snapshot().lanes[4].backpressure == 1);
  f = TxFrame{};
  test::settle(a, b);

  // The proxy's bulk send outruns a receiver that polls rarely: it waits, it does not shed.
  delivered = 0;
  std::atomic<bool> stop{false};
  std::thread datapath([&] {
    for (unsigned i = 0; !stop.load(); ++i) {
      a.poll();
      if (i % 64 == 0) b.poll();
    }
    test::settle(a, b);
  });
  ProxySend bulk;
  bulk.dst = 2;
  bulk.type = MsgType::kMetric;
  bulk.priority = 4;
  const std::string m = "m";
  bulk.fill = ProxySend::copy_of(std::as_bytes(std::span(m)));
  bulk.count = 30000;
  const ProxyResult r = a.proxy().send(bulk);
  stop = true;
  datapath.join();
  CHECK(r.status == SendStatus::kOk);
  CHECK(r.sent == 30000);
  CHECK(delivered == 30000);
  CHECK(a.snapshot().lanes[4].shed == 0);
  CHECK(a.snapshot().lanes[4].backpressure > 1);
}

TEST_CASE("a P0 send with `more` waits for its batch; the batch leaves with the last send", "[lanes]") {
  auto c = test::ring_pair_cluster("ln8");
  Node a(c, 1, test::eal());
  Node b(c, 2, test::eal());
  const std::vector<Seen>& seen = record(b);
  SendOptions more;
  more.more = true;
  for (std::uint32_t i = 0; i < 3; ++i) {
    TxFrame f = a.alloc(8);
    REQUIRE(f);
    std::memcpy(f.payload().data(), &i, 4);
    REQUIRE(a.send(f, 2, MsgType::kCommand, 0, more) == SendStatus::kOk);
  }
  CHECK(a.ports()[0].tx_queued[0] == 3);  // held: nothing has left yet
  b.poll();
  CHECK(seen.empty());
  REQUIRE(send_seq(a, 0, 3) == SendStatus::kOk);  // no `more`: the batch leaves now
  CHECK(a.ports()[0].tx_queued[0] == 0);
  b.poll();
  REQUIRE(seen.size() == 4);
  for (std::uint32_t i = 0; i < 4; ++i) CHECK(seen[i].seq == i);

  // A batch whose last send never comes still leaves at the next poll().
  TxFrame f = a.alloc(8);
  REQUIRE(f);
  std::memcpy(f.payload().data(), "\x09\0\0\0", 4);
  REQUIRE(a.send(f, 2, MsgType::kCommand, 0, more) == SendStatus::kOk);
  CHECK(a.ports()[0].tx_queued[0] == 1);
  a.poll();
  CHECK(a.ports()[0].tx_queued[0] == 0);
  b.poll();
  REQUIRE(seen.size() == 5);
  CHECK(seen.back().seq == 9);
}

TEST_CASE("a lane whose consumer stalls holds up no other lane; nothing is lost, and it drains after",
          "[lanes][flow]") {
  // Node 2 has no handler: its application calls recv(0) and never recv(4) until the end. P4
  // traffic (reliable and not) fills its recv() queue and then waits where it is (the port's
  // P4 queue, the P4 session's window), pushing back on the P4 sender alone; P0 flows through.
  auto c = test::ring_pair_cluster("ln9", 16383);
  c.reliable_give_up_ms = 60'000;  // the stall is the test, not a failure
  Node a(c, 1, test::eal());
  NodeOptions o;
  o.rx_queue_depth = 64;
  Node b(c, 2, test::eal(), o);
  auto send = [&](std::uint8_t prio, std::uint32_t seq, bool reliable) {
    TxFrame f = a.alloc(8);
    REQUIRE(f);
    std::memcpy(f.payload().data(), &seq, 4);
    return a.send(f, 2, MsgType::kStatus, prio, {.never_shed = true, .reliable = reliable});
  };
  auto seq_of = [](const RxMessage& m) {
    std::uint32_t seq = 0;
    std::memcpy(&seq, m.payload().data(), 4);
    return seq;
  };
  // P4 until the sender is pushed back on both kinds (the reliable window, the unreliable lane).
  std::uint32_t p4_reliable = 0, p4_plain = 0;
  bool reliable_full = false, plain_full = false;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while ((!reliable_full || !plain_full) && std::chrono::steady_clock::now() < end) {
    if (!reliable_full) {
      const SendStatus s = send(4, p4_reliable, true);
      if (s == SendStatus::kOk) ++p4_reliable;
      else reliable_full = s == SendStatus::kBackpressure && a.snapshot().rel[4].window_full > 0;
    }
    if (!plain_full) {
      // (Unreliable P4 and reliable P4 share the lane: numbered apart, 1,000,000 up.)
      const SendStatus s = send(4, 1'000'000 + p4_plain, false);
      if (s == SendStatus::kOk) ++p4_plain;
      else plain_full = s == SendStatus::kBackpressure;
    }
    a.poll(), b.poll();
  }
  REQUIRE(reliable_full);
  REQUIRE(plain_full);
  // P0 meanwhile: every message, in order, reliable and not.
  std::vector<std::uint32_t> p0;
  for (std::uint32_t i = 0; i < 2000; ++i) {
    while (send(0, i, i % 2 == 0) != SendStatus::kOk) a.poll(), b.poll();
    a.poll(), b.poll();
    while (auto m = b.recv(0)) p0.push_back(seq_of(*m));
  }
  while (p0.size() < 2000 && std::chrono::steady_clock::now() < end) {
    a.poll(), b.poll();
    while (auto m = b.recv(0)) p0.push_back(seq_of(*m));
  }
  REQUIRE(p0.size() == 2000);
  for (std::uint32_t i = 0; i < 2000; ++i) REQUIRE(p0[i] == i);
  CHECK(b.snapshot().rx_lane_full == 0);
  // The P4 consumer wakes: everything accepted arrives, once, each kind in order.
  std::vector<std::uint32_t> rel, plain;
  while ((rel.size() < p4_reliable || plain.size() < p4_plain) && std::chrono::steady_clock::now() < end) {
    a.poll(), b.poll();
    while (auto m = b.recv(4)) (seq_of(*m) >= 1'000'000 ? plain : rel).push_back(seq_of(*m));
  }
  REQUIRE(rel.size() == p4_reliable);
  REQUIRE(plain.size() == p4_plain);
  for (std::uint32_t i = 0; i < p4_reliable; ++i) REQUIRE(rel[i] == i);
  for (std::uint32_t i = 0; i < p4_plain; ++i) REQUIRE(plain[i] == 1'000'000 + i);
  CHECK(a.snapshot().rel[4].failed == 0);
  CHECK(a.snapshot().lanes[4].shed == 0);
}

TEST_CASE("recv() takes the highest lane first; recv(lane) one lane", "[lanes][flow]") {
  auto c = test::ring_pair_cluster("ln10", 8191);
  Node a(c, 1, test::eal());
  Node b(c, 2, test::eal());
  for (std::uint32_t i = 0; i < 3; ++i) REQUIRE(send_seq(a, 3, i) == SendStatus::kOk);
  for (std::uint32_t i = 0; i < 3; ++i) REQUIRE(send_seq(a, 1, 10 + i) == SendStatus::kOk);
  a.flush();
  test::settle(a, b);
  auto seq = [](const std::optional<RxMessage>& m) {
    std::uint32_t s = 0;
    std::memcpy(&s, m->payload().data(), 4);
    return s;
  };
  auto m = b.recv(3);
  REQUIRE(m);
  CHECK(seq(m) == 0);
  CHECK_FALSE(b.recv(2));
  CHECK_FALSE(b.recv(7));  // no such lane
  std::vector<std::uint32_t> order;
  while (auto n = b.recv()) order.push_back(seq(n));
  CHECK(order == std::vector<std::uint32_t>{10, 11, 12, 1, 2});
}
