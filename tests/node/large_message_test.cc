// Messages larger than one frame: cut into fragments, sent reliably, put together again, over a
// net_ring pair whose ports drop, duplicate, reorder and corrupt frames (drivers/fault.hpp).
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "nerve/node.hpp"
#include "support.hpp"

using namespace nerve;

namespace {

// Message `i`'s byte at offset k: every byte depends on both, so a fragment out of place, lost
// or doubled changes what arrives.
std::byte pattern(std::uint32_t i, std::size_t k) {
  return static_cast<std::byte>((k * 131u + i * 7u + (k >> 8) * 17u) & 0xff);
}
void fill(std::span<std::byte> p, std::uint32_t i) {
  for (std::size_t k = 0; k < p.size(); ++k) p[k] = pattern(i, k);
  if (p.size() >= 4) std::memcpy(p.data(), &i, 4);
}
bool intact(std::span<const std::byte> p, std::uint32_t i, std::size_t size) {
  if (p.size() != size) return false;
  std::uint32_t got = 0;
  if (size >= 4) std::memcpy(&got, p.data(), 4);
  if (size >= 4 && got != i) return false;
  for (std::size_t k = 4; k < p.size(); ++k)
    if (p[k] != pattern(i, k)) return false;
  return true;
}

struct Got {
  std::uint32_t index;
  std::size_t size;
  bool large;
  bool whole;
};

// Sends messages of `sizes` (in order) from a to node 2 on lane `prio`, reliably, stepping both
// nodes while a buffer, the window or the lane pushes back. Returns when b has them all or
// `deadline` passes.
void send_all(Node& a, Node& b, std::uint8_t prio, const std::vector<std::size_t>& sizes, const std::vector<Got>& got,
              std::chrono::seconds deadline) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  for (std::uint32_t i = 0; i < sizes.size();) {
    TxFrame f = a.alloc(sizes[i]);
    if (f) {
      fill(f.payload(), i);
      SendStatus s;
      while ((s = a.send(f, 2, MsgType::kStatus, prio, {.never_shed = true, .reliable = true})) ==
                 SendStatus::kBackpressure &&
             std::chrono::steady_clock::now() < end)
        a.poll(), b.poll();
      REQUIRE(s == SendStatus::kOk);
      ++i;
    } else {
      a.poll(), b.poll();  // every send buffer in use: the stage gives them back as it cuts
    }
    REQUIRE(std::chrono::steady_clock::now() < end);
  }
  while (got.size() < sizes.size() && std::chrono::steady_clock::now() < end) a.poll(), b.poll();
}

}  // namespace

TEST_CASE("large: messages up to 1 MiB arrive whole and in order through drop, duplication, reordering and "
          "corruption, lost fragments sent again alone",
          "[large]") {
  auto c = test::ring_pair_cluster("lg1", 16383, "",
                                   "fault = \"drop=0.01,dup=0.005,reorder=0.01,corrupt=0.001,lanes=3,seed=21\"");
  c.reliable_give_up_ms = 60'000;  // exactness, not timing: a sanitizer's slow polls give up nothing
  Node a(c, 1, test::eal());
  Node b(c, 2, test::eal());
  REQUIRE(a.max_message() == 1u << 20);
  const std::size_t one = a.max_payload();
  // Large ones of every shape (just over one frame, exact multiples, 1 MiB) between small ones
  // on the same lane: a session's order holds across them.
  const std::vector<std::size_t> sizes = {48,      one + 1, 1u << 20, 3 * one, 100,     65'536, one,
                                          2 * one + 7, 1u << 20, 48, 300'000, 1u << 20, 12};
  std::vector<Got> got;
  b.on_message([&](const RxMessage& m) {
    std::uint32_t i = 0;
    std::memcpy(&i, m.payload().data(), 4);
    got.push_back({i, m.payload().size(), m.large(), i < sizes.size() && intact(m.payload(), i, sizes[i])});
  });
  send_all(a, b, 3, sizes, got, std::chrono::seconds(120));
  REQUIRE(got.size() == sizes.size());
  std::uint64_t large = 0, fragments = 0;
  for (std::uint32_t i = 0; i < sizes.size(); ++i) {
    INFO("message " << i << " of " << sizes[i] << " bytes");
    CHECK(got[i].index == i);
    CHECK(got[i].size == sizes[i]);
    CHECK(got[i].whole);
    CHECK(got[i].large == (sizes[i] > one));
    if (sizes[i] > one) {
      ++large;
      fragments += (sizes[i] + one - 1) / one;
    }
  }
  // Until the sender holds nothing unacknowledged.
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (a.snapshot().rel[3].acked < a.snapshot().rel[3].sent && std::chrono::steady_clock::now() < end)
    a.poll(), b.poll();
  const auto sa = a.snapshot().rel[3], sb = b.snapshot().rel[3];
  CHECK(sa.split == large);
  CHECK(sb.joined == large);
  CHECK(sb.join_aborted == 0);
  CHECK(sa.sent == fragments + (sizes.size() - large));  // one frame per fragment, sent once
  CHECK(sa.acked == sa.sent);
  CHECK(sa.failed == 0);
  // Frames were lost and sent again, and only those: a handful of the fragments, not messages.
  CHECK(b.ports()[0].fault_dropped > 0);
  CHECK(sa.retransmits + sa.fast_retransmits >= b.ports()[0].fault_dropped);
  CHECK(sa.retransmits + sa.fast_retransmits < fragments / 4);
  CHECK(sb.duplicates > 0);
}

TEST_CASE("large: limits are refused clearly, and buffers come back", "[large]") {
  auto c = test::ring_pair_cluster("lg2", 8191);
  c.max_message = 100'000;
  c.message_buffers = 2;
  Node a(c, 1, test::eal());
  Node b(c, 2, test::eal());
  CHECK(a.max_message() == 100'000);
  CHECK_FALSE(a.alloc(100'001));  // above max_message
  {
    TxFrame f1 = a.alloc(100'000), f2 = a.alloc(50'000);
    REQUIRE(f1);
    REQUIRE(f2);
    CHECK(f1.large());
    CHECK_FALSE(a.alloc(70'000));  // both buffers in use
    // Only unicast sends take large frames; the frame stays the caller's.
    CHECK(a.broadcast(f1, MsgType::kStatus, 3) == SendStatus::kTooLarge);
    CHECK(a.send(f1, 9, MsgType::kStatus, 3) == SendStatus::kNoRoute);
    CHECK(a.send(f1, 2, MsgType::kStatus, 9) == SendStatus::kBadArgument);
    CHECK(f1);
  }
  CHECK(a.alloc(70'000));  // freed frames give their buffers back
  std::vector<std::byte> big(200'000);
  CHECK(a.send_copy(2, MsgType::kStatus, 3, big) == SendStatus::kTooLarge);
  // A large frame trimmed to one frame's size goes as one reliable frame.
  std::optional<RxMessage> in;
  b.on_message([&](RxMessage& m) { in.emplace(std::move(m)); });
  TxFrame f = a.alloc(60'000);
  REQUIRE(f);
  fill(f.payload(), 0);
  f.truncate(40);
  REQUIRE(a.send(f, 2, MsgType::kStatus, 3) == SendStatus::kOk);
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!in && std::chrono::steady_clock::now() < end) a.poll(), b.poll();
  REQUIRE(in);
  CHECK_FALSE(in->large());
  CHECK(intact(in->payload(), 0, 40));
  CHECK((in->header().flags & wire::flag::kReliable) != 0);
  CHECK(a.snapshot().rel[3].split == 0);
}

TEST_CASE("large: a receiver out of reassembly buffers holds the next message back until one is free",
          "[large]") {
  auto c = test::ring_pair_cluster("lg3", 16383);
  c.message_buffers = 1;
  c.reliable_give_up_ms = 60'000;
  Node a(c, 1, test::eal());
  Node b(c, 2, test::eal());
  std::deque<RxMessage> kept;  // the application holds on to what it received
  b.on_message([&](RxMessage& m) { kept.push_back(std::move(m)); });
  const std::size_t size = 200'000;
  for (std::uint32_t i = 0; i < 2; ++i) {
    TxFrame f;
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!(f = a.alloc(size)) && std::chrono::steady_clock::now() < end) a.poll(), b.poll();
    REQUIRE(f);
    fill(f.payload(), i);
    SendStatus s;
    while ((s = a.send(f, 2, MsgType::kMetric, 4)) == SendStatus::kBackpressure && std::chrono::steady_clock::now() < end)
      a.poll(), b.poll();
    REQUIRE(s == SendStatus::kOk);
  }
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while ((kept.empty() || b.snapshot().rel[4].join_waits == 0) && std::chrono::steady_clock::now() < end)
    a.poll(), b.poll();
  REQUIRE(kept.size() == 1);
  CHECK(b.snapshot().rel[4].join_waits == 1);  // the second one's first fragment waits
  for (int k = 0; k < 2000; ++k) a.poll(), b.poll();
  CHECK(kept.size() == 1);                     // ... however long
  CHECK(a.snapshot().rel[4].failed == 0);
  CHECK(intact(kept.front().payload(), 0, size));
  kept.pop_front();  // the buffer goes back: the second message completes
  end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (kept.empty() && std::chrono::steady_clock::now() < end) a.poll(), b.poll();
  REQUIRE(kept.size() == 1);
  CHECK(intact(kept.front().payload(), 1, size));
  CHECK(b.snapshot().rel[4].joined == 2);
  // take_frame() of a large message (as a responder that keeps only the request's header does)
  // gives its buffer back at once: a third message completes while the second is still held.
  CHECK_FALSE(b.take_frame(kept.front()));
  CHECK(kept.front().payload().empty());
  CHECK(kept.front().header().src_node == 1);
  TxFrame f;
  end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!(f = a.alloc(size)) && std::chrono::steady_clock::now() < end) a.poll(), b.poll();
  REQUIRE(f);
  fill(f.payload(), 2);
  SendStatus s;
  while ((s = a.send(f, 2, MsgType::kMetric, 4)) == SendStatus::kBackpressure && std::chrono::steady_clock::now() < end)
    a.poll(), b.poll();
  REQUIRE(s == SendStatus::kOk);
  while (kept.size() < 2 && std::chrono::steady_clock::now() < end) a.poll(), b.poll();
  REQUIRE(kept.size() == 2);
  CHECK(intact(kept.back().payload(), 2, size));
}

TEST_CASE("large: a message its sender gives up is reported once, and the receiver drops what it had of it",
          "[large]") {
  auto c = test::ring_pair_cluster("lg4", 16383);
  c.reliable_give_up_ms = 100;
  c.heartbeat_miss = 1000;  // b stops reading for the give-up time and more: it is alive all the same
  Node a(c, 1, test::eal());
  Node b(c, 2, test::eal());
  std::vector<DeliveryFailure> failed;
  a.on_delivery_failure([&](const DeliveryFailure& f) { failed.push_back(f); });
  std::vector<std::uint32_t> got;
  b.on_message([&](const RxMessage& m) {
    std::uint32_t i = 0;
    std::memcpy(&i, m.payload().data(), 4);
    CHECK(intact(m.payload(), i, m.payload().size()));
    got.push_back(i);
  });
  // Message 0: b takes the first window's worth of fragments, then stops reading; a gives the
  // message up (once, for all its fragments) and stops cutting it.
  TxFrame f = a.alloc(1u << 20);
  REQUIRE(f);
  fill(f.payload(), 0);
  REQUIRE(a.send(f, 2, MsgType::kStatus, 3) == SendStatus::kOk);
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (b.snapshot().rel[3].in_order == 0 && std::chrono::steady_clock::now() < end) a.poll(), b.poll();
  REQUIRE(b.snapshot().rel[3].in_order > 0);
  b.poll();
  end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (failed.empty() && std::chrono::steady_clock::now() < end) a.poll();  // b does not read
  REQUIRE(failed.size() == 1);
  for (int k = 0; k < 1000; ++k) a.poll();
  CHECK(failed.size() == 1);  // once per message, not once per fragment
  CHECK(failed[0].dst == 2);
  CHECK(a.snapshot().rel[3].failed == 1);
  // Message 1 goes whole; b learns from it that message 0 was given up, and drops its part.
  f = a.alloc(300'000);
  REQUIRE(f);  // message 0's buffer came back when it failed
  fill(f.payload(), 1);
  SendStatus s;
  end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while ((s = a.send(f, 2, MsgType::kStatus, 3)) == SendStatus::kBackpressure && std::chrono::steady_clock::now() < end)
    a.poll(), b.poll();
  REQUIRE(s == SendStatus::kOk);
  while (got.empty() && std::chrono::steady_clock::now() < end) a.poll(), b.poll();
  REQUIRE(got.size() == 1);
  CHECK(got[0] == 1);
  CHECK(b.snapshot().rel[3].join_aborted == 1);  // once per message
  CHECK(b.snapshot().rel[3].joined == 1);
}

TEST_CASE("large: a request answered with a large response, and large messages from the proxy", "[large]") {
  auto c = test::ring_pair_cluster("lg5", 16383, "", "fault = \"drop=0.01,lanes=0-4,seed=4\"");
  c.reliable_give_up_ms = 60'000;
  Node a(c, 1, test::eal());
  Node b(c, 2, test::eal());
  std::uint32_t metrics = 0, bad = 0;
  std::deque<std::pair<RxMessage, TxFrame>> owed;
  b.on_message([&](RxMessage& m) {
    if (m.type() == MsgType::kMetric) {
      std::uint32_t i = 0;
      std::memcpy(&i, m.payload().data(), 4);
      if (!intact(m.payload(), i, 150'000)) ++bad;
      ++metrics;
      return;
    }
    TxFrame r = b.alloc(500'000);  // the answer to a small request: half a megabyte
    REQUIRE(r);
    fill(r.payload(), 77);
    owed.emplace_back(std::move(m), std::move(r));
  });
  std::optional<RxMessage> answer;
  a.on_message([&](RxMessage& m) { answer.emplace(std::move(m)); });
  TxFrame q = a.alloc(16);
  REQUIRE(q);
  REQUIRE(a.send(q, 2, MsgType::kCommand, 1, {.reliable = true}) == SendStatus::kOk);
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!answer && std::chrono::steady_clock::now() < end) {
    a.poll(), b.poll();
    while (!owed.empty() && b.respond(owed.front().first, owed.front().second) == SendStatus::kOk) owed.pop_front();
  }
  REQUIRE(answer);
  CHECK(answer->type() == MsgType::kResponse);
  CHECK(answer->large());
  CHECK(intact(answer->payload(), 77, 500'000));

  // The proxy (any thread): three 150 kB metrics, built in the datapath's send buffers.
  ProxySend req;
  req.dst = 2;
  req.type = MsgType::kMetric;
  req.priority = 2;
  req.count = 3;
  req.size = 150'000;
  req.reliable = true;
  req.timeout = std::chrono::seconds(30);
  req.fill = [](std::uint32_t i, std::span<std::byte> room) {
    fill(room.first(150'000), i);
    return std::size_t{150'000};
  };
  std::atomic<bool> stop{false};
  std::thread t([&] {
    while (!stop.load()) a.poll(), b.poll();
  });
  const ProxyResult r = a.proxy().send(req);
  end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (b.snapshot().rel[2].joined < 3 && std::chrono::steady_clock::now() < end) std::this_thread::yield();
  // Above max_message, or to more than one node: refused.
  req.size = (1u << 20) + 1;
  const SendStatus above = a.proxy().send(req).status;
  req.size = 150'000;
  req.target = ProxySend::Target::kBroadcast;
  const SendStatus broadcast = a.proxy().send(req).status;
  stop = true;
  t.join();
  CHECK(r.status == SendStatus::kOk);
  CHECK(r.sent == 3);
  CHECK(metrics == 3);
  CHECK(bad == 0);
  CHECK(above == SendStatus::kTooLarge);
  CHECK(broadcast == SendStatus::kTooLarge);  // large messages go to one node
}
