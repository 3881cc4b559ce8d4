// The deliver stage through a node on a manual clock: latency is receive time minus the send
// timestamp, exactly; a timestamp outside the cluster's window is refused and never recorded;
// handlers may keep a message or take its frame.
#include <catch2/catch.hpp>

#include <chrono>
#include <cstring>
#include <vector>

#include "nerve/node.hpp"
#include "../support.hpp"

using namespace nerve;

namespace {

SendStatus send_tag(Node& n, NodeId to, std::uint8_t prio, std::uint32_t tag) {
  TxFrame f = n.alloc(8);
  REQUIRE(f);
  std::memcpy(f.payload().data(), &tag, 4);
  return n.send(f, to, MsgType::kStatus, prio);
}

}  // namespace

TEST_CASE("deliver: one-way latency on the node's clock, checked against the lane's budget", "[stage][deliver]") {
  auto clock = Clock::manual(2'000'000'000'000'000'000ull);
  NodeOptions o;
  o.clock = clock.get();
  auto c = test::ring_pair_cluster("de1", 8191, "lane_budget_us = [100, 500, 1000, 2000, 5000]");
  Node a(c, 1, test::eal(), o);
  Node b(c, 2, test::eal(), o);
  std::vector<std::uint64_t> lat;
  b.on_message([&](const RxMessage& m) { lat.push_back(m.latency_ns()); });
  REQUIRE(send_tag(a, 2, 0, 1) == SendStatus::kOk);
  clock->advance(40'000);  // 40 us in flight
  b.poll();
  REQUIRE(send_tag(a, 2, 0, 2) == SendStatus::kOk);
  clock->advance(150'000);  // 150 us: over P0's 100 us
  b.poll();
  REQUIRE(lat == std::vector<std::uint64_t>{40'000, 150'000});
  const auto s = b.snapshot();
  CHECK(s.lanes[0].count == 2);
  CHECK(s.lanes[0].deadline_miss == 1);
  CHECK(s.lanes[0].max >= 149'000);
}

TEST_CASE("deliver: timestamps outside the window are refused, never recorded", "[stage][deliver]") {
  auto clock = Clock::manual(2'000'000'000'000'000'000ull);
  NodeOptions o;
  o.clock = clock.get();
  {
    auto c = test::ring_pair_cluster("de2");
    REQUIRE(c.timestamp_window_ms == 10'000);
    Node a(c, 1, test::eal(), o);
    Node b(c, 2, test::eal(), o);
    unsigned got = 0;
    b.on_message([&](const RxMessage&) { ++got; });
    REQUIRE(send_tag(a, 2, 1, 1) == SendStatus::kOk);
    clock->advance(10'000'000'001);  // arrives 10 s + 1 ns after it was sent
    test::settle(a, b);
    CHECK(got == 0);
    CHECK(b.snapshot().refused[static_cast<std::size_t>(wire::Refusal::kBadTimestamp)] == 1);
    CHECK(b.snapshot().lanes[1].count == 0);
  }
  // From a sender whose clock runs ahead (another host), within the window: delivered, with
  // no negative delay recorded.
  auto ahead = Clock::manual(clock->now_ns() + 3'000'000'000ull);
  NodeOptions oa;
  oa.clock = ahead.get();
  auto c2 = test::ring_pair_cluster("de3");
  Node a2(c2, 1, test::eal(), oa);
  Node b2(c2, 2, test::eal(), o);
  std::uint64_t seen = ~0ull;
  b2.on_message([&](const RxMessage& m) { seen = m.latency_ns(); });
  REQUIRE(send_tag(a2, 2, 1, 1) == SendStatus::kOk);
  test::settle(a2, b2);
  CHECK(seen == 0);
  CHECK(b2.snapshot().lanes[1].count == 1);
}

TEST_CASE("deliver: a handler keeps a message, or answers with its frame, without copying", "[stage][deliver]") {
  auto c = test::ring_pair_cluster("de4");
  Node a(c, 1, test::eal());
  Node b(c, 2, test::eal());
  std::vector<RxMessage> kept;
  const std::byte* echoed_at = nullptr;
  b.on_message([&](RxMessage& m) {
    std::uint32_t tag = 0;
    std::memcpy(&tag, m.payload().data(), 4);
    if (tag % 2 == 0) {
      kept.push_back(std::move(m));  // kept past the handler
      return;
    }
    TxFrame f = b.take_frame(m);  // the same mbuf goes back
    echoed_at = f.payload().data();
    CHECK(m.payload().empty());
    CHECK(m.header().msg_id != 0);  // the request's header stays readable
    std::memcpy(f.payload().data(), "ECHO", 4);
    CHECK(b.respond(m, f) == SendStatus::kOk);
  });
  std::vector<std::string> replies;
  a.on_message([&](const RxMessage& m) {
    replies.emplace_back(reinterpret_cast<const char*>(m.payload().data()), m.payload().size());
  });
  const unsigned free_before = b.mbufs_available() + a.mbufs_available();
  for (std::uint32_t t = 0; t < 10; ++t) REQUIRE(send_tag(a, 2, 2, t) == SendStatus::kOk);
  test::settle(a, b);
  CHECK(kept.size() == 5);
  CHECK(replies.size() == 5);
  CHECK(replies[0].substr(0, 4) == "ECHO");
  CHECK(echoed_at != nullptr);
  for (std::size_t i = 0; i < kept.size(); ++i) {
    std::uint32_t tag = 0;
    std::memcpy(&tag, kept[i].payload().data(), 4);  // still valid: the mbuf is the message's
    CHECK(tag == 2 * i);
  }
  kept.clear();
  CHECK(b.mbufs_available() + a.mbufs_available() == free_before);
}

TEST_CASE("deliver: without a handler, messages queue for recv()", "[stage][deliver]") {
  auto c = test::ring_pair_cluster("de5");
  Node a(c, 1, test::eal());
  Node b(c, 2, test::eal());
  for (std::uint32_t t = 0; t < 100; ++t) REQUIRE(send_tag(a, 2, 3, t) == SendStatus::kOk);
  test::settle(a, b);
  std::uint32_t next = 0;
  while (auto m = b.recv()) {
    std::uint32_t tag = 0;
    std::memcpy(&tag, m->payload().data(), 4);
    CHECK(tag == next++);
  }
  CHECK(next == 100);
}

TEST_CASE("deliver: a response for a full lane on a shared queue is dropped, and its request reported timed out",
          "[stage][deliver]") {
  // Node 1 reads nothing (no handler, no recv()); its port's lanes share one queue, which it
  // reads past a full lane (for P0's sake). A service response that finds its lane full is
  // dropped before it closes its request: the request times out and is reported, not lost.
  const auto c = config::load_string(R"(
[cluster]
name = "tde6"
heartbeat_miss = 100

[[node]]
id = 1
mac = "02:00:00:00:01:01"
ip = "198.18.1.1"
control_socket = "/tmp/nerve-test-de6-1.sock"
  [[node.port]]
  kind = "ring"
  pair = "de6"
  peers = [2]
  lanes = "software"

[[node]]
id = 2
mac = "02:00:00:00:01:02"
ip = "198.18.1.2"
control_socket = "/tmp/nerve-test-de6-2.sock"
  [[node.port]]
  kind = "ring"
  pair = "de6"
  peers = [1]
  lanes = "software"

[[service]]
name = "echo"
id = 7
instances = [2]
timeout_ms = 50
)");
  NodeOptions o;
  o.rx_queue_depth = 16;
  Node a(c, 1, test::eal(), o);
  Node b(c, 2, test::eal());
  b.on_message([&b](RxMessage& m) {
    if (m.type() != MsgType::kCommand) return;
    TxFrame r = b.alloc(2);
    REQUIRE(r);
    REQUIRE(b.respond(m, r) == SendStatus::kOk);
  });
  std::vector<ServiceFailure> failures;
  a.on_service_failure([&](const ServiceFailure& e) { failures.push_back(e); });
  test::settle(a, b);
  // Node 1's P1 queue, full.
  for (std::uint32_t t = 0; t < 16; ++t) REQUIRE(send_tag(b, 1, 1, t) == SendStatus::kOk);
  test::settle(a, b);
  REQUIRE(a.snapshot().rx_lane_full == 0);
  TxFrame f = a.alloc(4);
  REQUIRE(f);
  REQUIRE(a.send_service(f, 7, MsgType::kCommand, 1) == SendStatus::kOk);
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (failures.empty() && std::chrono::steady_clock::now() < end) a.poll(), b.poll();
  REQUIRE(failures.size() == 1);
  CHECK(failures[0].service == 7);
  CHECK(failures[0].instance == 2);
  CHECK(failures[0].timed_out);
  CHECK(a.snapshot().rx_lane_full == 1);
  CHECK(a.snapshot().delivered[static_cast<std::size_t>(MsgType::kResponse)][1] == 0);
  // The queue still holds the 16 it had, in order.
  std::uint32_t next = 0;
  while (auto m = a.recv(1)) {
    std::uint32_t tag = 0;
    std::memcpy(&tag, m->payload().data(), 4);
    CHECK(tag == next++);
  }
  CHECK(next == 16);
}
