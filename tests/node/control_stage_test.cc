// The control stage: requests from other threads share one budget per poll; a reply counts
// only from the node asked; deadlines run on the node's clock; shutdown ends everything.
#include <catch2/catch.hpp>

#include <rte_ring.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "nerve/node.hpp"
#include "node/control_stage.hpp"
#include "../support.hpp"

using namespace nerve;

namespace {

ProxySend metric_to(NodeId to, std::uint32_t count, const std::string& payload) {
  ProxySend s;
  s.dst = to;
  s.type = MsgType::kMetric;
  s.priority = 3;
  s.count = count;
  s.fill = ProxySend::copy_of(std::as_bytes(std::span(payload)));
  return s;
}

// Echoes every command back as its response, in the same mbuf.
void echo_commands(Node& n) {
  n.on_message([&n](RxMessage& m) {
    if (m.type() != MsgType::kCommand) return;
    TxFrame f = n.take_frame(m);
    n.respond(m, f);
  });
}

}  // namespace

TEST_CASE("control: all requests together send at most one budget per poll", "[stage][control]") {
  auto c = test::ring_pair_cluster("co1");
  Node a(c, 1, test::eal());
  Node b(c, 2, test::eal());
  b.on_message([](const RxMessage&) {});
  const std::string p = "bulk";
  std::atomic<int> done{0};
  ProxyResult r1, r2, r3;
  std::thread t1([&] { r1 = a.proxy().send(metric_to(2, 3000, p)); ++done; });
  std::thread t2([&] { r2 = a.proxy().send(metric_to(2, 3000, p)); ++done; });
  std::thread t3([&] { r3 = a.proxy().send(metric_to(2, 3000, p)); ++done; });
  std::uint64_t last = 0, most = 0, polls = 0;
  while (done.load() < 3) {
    a.poll();
    const std::uint64_t sent = a.snapshot().sent_total();
    most = std::max(most, sent - last);
    last = sent;
    b.poll();
    ++polls;
  }
  t1.join();
  t2.join();
  t3.join();
  CHECK(r1.sent == 3000);
  CHECK(r2.sent == 3000);
  CHECK(r3.sent == 3000);
  CHECK(most <= node::ControlStage::kBudget);
  CHECK(most > 0);
  CHECK(polls >= 9000 / node::ControlStage::kBudget);
}

TEST_CASE("control: a request times out on the node's clock; a late reply matches nothing", "[stage][control]") {
  auto clock = Clock::manual(3'000'000'000'000'000'000ull);
  NodeOptions o;
  o.clock = clock.get();
  auto c = test::ring_pair_cluster("co2");
  Node a(c, 1, test::eal(), o);
  Node b(c, 2, test::eal(), o);
  std::vector<RxMessage> held;  // b holds the commands and answers late
  b.on_message([&](RxMessage& m) { held.push_back(std::move(m)); });
  std::vector<std::uint32_t> stray;  // responses a delivers to its own handler
  a.on_message([&](const RxMessage& m) { stray.push_back(m.header().corr_id); });
  ProxySend s = metric_to(2, 1, "ping");
  s.type = MsgType::kCommand;
  s.await_reply = true;
  s.timeout = std::chrono::milliseconds(500);
  std::atomic<bool> done{false};
  ProxyResult r;
  std::thread caller([&] {
    r = a.proxy().send(s);
    done = true;
  });
  while (held.empty()) {
    a.poll();
    b.poll();
  }
  clock->advance(std::chrono::milliseconds(499));
  for (int i = 0; i < 100; ++i) a.poll();
  CHECK_FALSE(done.load());  // not yet: 499 ms of 500
  clock->advance(std::chrono::milliseconds(2));
  while (!done.load()) a.poll();
  caller.join();
  CHECK(r.status == SendStatus::kTimeout);
  CHECK(r.sent == 1);
  CHECK(r.replies == 0);
  // The answer comes after all: it answers nothing of the proxy's and goes to the handler.
  TxFrame f = b.take_frame(held[0]);
  REQUIRE(b.respond(held[0], f) == SendStatus::kOk);
  test::settle(a, b);
  REQUIRE(stray.size() == 1);
  CHECK(stray[0] == held[0].header().msg_id);
}

TEST_CASE("control: a reply from a node other than the one asked is refused", "[stage][control]") {
  // a links to b and c; a asks b; c answers first with the right correlation id.
  const auto cl = config::load_string(R"(
[cluster]
name = "co3"
[[node]]
id = 1
mac = "02:00:00:00:03:01"
ip = "198.18.3.1"
control_socket = "/tmp/co3-1.sock"
  [[node.port]]
  kind = "ring"
  pair = "co3ab"
  peers = [2]
  [[node.port]]
  kind = "ring"
  pair = "co3ac"
  peers = [3]
[[node]]
id = 2
mac = "02:00:00:00:03:02"
ip = "198.18.3.2"
control_socket = "/tmp/co3-2.sock"
  [[node.port]]
  kind = "ring"
  pair = "co3ab"
  peers = [1]
[[node]]
id = 3
mac = "02:00:00:00:03:03"
ip = "198.18.3.3"
control_socket = "/tmp/co3-3.sock"
  [[node.port]]
  kind = "ring"
  pair = "co3ac"
  peers = [1]
)");
  Node a(cl, 1, test::eal());
  Node b(cl, 2, test::eal());
  Node c(cl, 3, test::eal());
  std::vector<RxMessage> asked;
  b.on_message([&](RxMessage& m) { asked.push_back(std::move(m)); });
  ProxySend s = metric_to(2, 1, "who");
  s.type = MsgType::kCommand;
  s.await_reply = true;
  std::atomic<bool> done{false};
  ProxyResult r;
  std::thread caller([&] {
    r = a.proxy().send(s);
    done = true;
  });
  while (asked.empty()) {
    a.poll();
    b.poll();
  }
  // c forges the response: its own addresses (it passes dispatch), b's request id.
  wire::Endpoints ep;
  ep.src_mac = {2, 0, 0, 0, 3, 3};
  ep.dst_mac = {2, 0, 0, 0, 3, 1};
  ep.src_ip = 0xc6120303;
  ep.dst_ip = 0xc6120301;
  wire::Header h;
  h.type = MsgType::kResponse;
  h.priority = 3;
  h.src_node = 3;
  h.dst = 1;
  h.ttl = 8;
  h.corr_id = asked[0].header().msg_id;
  h.timestamp_ns = a.clock().now_ns();
  h.payload_len = 6;
  std::vector<std::byte> f(wire::frame_len(6));
  wire::encode_headers(std::span<std::byte, wire::kOverhead>(f.data(), wire::kOverhead), ep, h);
  std::memcpy(f.data() + wire::kOverhead, "forged", 6);
  rte_mempool* pool = rte_pktmbuf_pool_create("co3forge", 63, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, 0);
  REQUIRE(pool != nullptr);
  rte_mbuf* m = rte_pktmbuf_alloc(pool);
  std::memcpy(rte_pktmbuf_append(m, static_cast<std::uint16_t>(f.size())), f.data(), f.size());
  rte_ring* to_a = rte_ring_lookup("nvco3ac3ba");  // queue 3 (P3) of the a-c pair, c -> a
  REQUIRE(to_a != nullptr);
  REQUIRE(rte_ring_enqueue(to_a, m) == 0);
  for (int i = 0; i < 40; ++i) a.poll();  // P3's queue, idle until now, is read within 16 polls
  CHECK_FALSE(done.load());
  CHECK(a.snapshot().refused[static_cast<std::size_t>(wire::Refusal::kResponseMismatch)] == 1);
  // Then b answers: that one counts.
  TxFrame ans = b.alloc(4);
  std::memcpy(ans.payload().data(), "real", 4);
  REQUIRE(b.respond(asked[0], ans) == SendStatus::kOk);
  while (!done.load()) {
    a.poll();
    b.poll();
  }
  caller.join();
  CHECK(r.status == SendStatus::kOk);
  CHECK(r.replies == 1);
  CHECK(r.reply == "real");
  rte_mempool_free(pool);
}

TEST_CASE("control: shutdown ends queued and running requests at once", "[stage][control]") {
  auto c = test::ring_pair_cluster("co4");
  Node a(c, 1, test::eal());
  Node b(c, 2, test::eal());
  echo_commands(b);
  ProxySend slow = metric_to(2, 1'000'000, "slow");
  slow.rate_mps = 10;  // a day's schedule
  std::atomic<int> done{0};
  ProxyResult r1, r2;
  std::thread t1([&] { r1 = a.proxy().send(slow); ++done; });
  while (a.snapshot().sent_total() == 0) {
    a.poll();
    b.poll();
  }
  std::thread t2([&] { r2 = a.proxy().send(slow); ++done; });
  while (done.load() < 2) a.cancel_requests();
  t1.join();
  t2.join();
  CHECK(r1.status == SendStatus::kShutdown);
  CHECK(r1.sent >= 1);
  CHECK(r2.status == SendStatus::kShutdown);
}
