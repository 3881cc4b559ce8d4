// The fault-injecting port over a net_ring pair: what it says it did to the frames is what the
// receiver sees, and one seed gives one sequence of faults.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <vector>

#include "nerve/node.hpp"
#include "support.hpp"

using namespace nerve;

namespace {

constexpr std::uint32_t kMessages = 20000;
constexpr std::size_t kPayload = 64;

struct Run {
  std::vector<std::uint32_t> got;  // message indices, in delivery order
  std::uint32_t altered = 0;       // delivered with a payload other than the one sent
  PortInfo port;                   // the receiver's port, with its fault counts
  stats::Snapshot rx;
};

void fill(std::span<std::byte> p, std::uint32_t i) {
  for (std::size_t k = 0; k < p.size(); k += 4) std::memcpy(p.data() + k, &i, 4);
}

// kMessages P2 messages from node 1 to node 2, whose port injects `fault` (lane 2 only, so the
// heartbeats (P0) and link-state advertisements (P1) pass untouched and the faults depend on the messages alone).
// `gap`: the time between sends (0: as fast as the lanes take them).
Run run(const std::string& pair, const std::string& fault, std::uint32_t messages = kMessages,
        std::chrono::microseconds gap = {}) {
  auto c = test::ring_pair_cluster(pair, 16383, "", fmt::format("fault = \"{},lanes=2\"", fault));
  Node a(c, 1, test::eal());
  Node b(c, 2, test::eal());
  Run r;
  b.on_message([&](const RxMessage& m) {
    std::uint32_t i = 0;
    std::memcpy(&i, m.payload().data(), 4);
    std::vector<std::byte> want(kPayload);
    fill(want, i);
    if (m.payload().size() != kPayload || std::memcmp(m.payload().data(), want.data(), kPayload) != 0) ++r.altered;
    r.got.push_back(i);
  });
  auto next = std::chrono::steady_clock::now();
  for (std::uint32_t i = 0; i < messages;) {
    if (gap.count() > 0) {
      while (std::chrono::steady_clock::now() < next) a.poll(), b.poll();
      next += gap;
    }
    TxFrame f = a.alloc(kPayload);
    REQUIRE(f);
    fill(f.payload(), i);
    const SendStatus s = a.send(f, 2, MsgType::kMetric, 2, {.more = true});
    if (s == SendStatus::kOk) ++i;
    else b.poll(), a.poll();
  }
  a.flush();
  // Delayed and reordered frames leave at later bursts: poll until no message came for 50 ms
  // and 2,000 polls (heartbeats keep flowing meanwhile; an idle lower-lane queue is read every
  // few polls, and a poll can take long on a loaded machine or under a sanitizer).
  auto quiet_since = std::chrono::steady_clock::now();
  unsigned quiet_polls = 0;
  for (std::size_t had = 0;
       quiet_polls < 2000 || std::chrono::steady_clock::now() - quiet_since < std::chrono::milliseconds(50);) {
    a.poll(), b.poll();
    ++quiet_polls;
    if (r.got.size() != had) {
      had = r.got.size();
      quiet_since = std::chrono::steady_clock::now();
      quiet_polls = 0;
    }
  }
  r.port = b.ports()[0];
  r.rx = b.snapshot();
  return r;
}

}  // namespace

TEST_CASE("fault profiles parse, and bad ones are refused naming the item", "[fault]") {
  const auto f = config::parse_fault("drop=0.01,dup=0.005,reorder=0.01,delay_us=50,corrupt=0.001,lanes=0-2,seed=9", "k");
  CHECK(f.drop == 0.01);
  CHECK(f.dup == 0.005);
  CHECK(f.delay == 1.0);  // delay_us alone delays every frame
  CHECK(f.delay_us == 50);
  CHECK(f.lanes == 0b00111);
  CHECK(f.seed == 9);
  CHECK(config::parse_fault(config::format_fault(f), "k").lanes == f.lanes);
  CHECK_THROWS_WITH(config::parse_fault("drop=2", "k"), Catch::Contains("drop='2'"));
  CHECK_THROWS_WITH(config::parse_fault("lose=0.1", "k"), Catch::Contains("unknown fault 'lose'"));
  CHECK_THROWS_WITH(config::parse_fault("lanes=5", "k"), Catch::Contains("lanes"));
  CHECK_THROWS_WITH(config::parse_fault("delay=0.5", "k"), Catch::Contains("delay needs delay_us"));
  CHECK_FALSE(config::parse_fault("", "k").any());
}

TEST_CASE("drop: the receiver gets exactly the frames the port did not drop, seeded", "[fault]") {
  const Run r = run("fd1", "drop=0.05,seed=42");
  CHECK(r.port.fault_seen == kMessages);
  CHECK(r.port.fault_dropped > kMessages * 3 / 100);
  CHECK(r.port.fault_dropped < kMessages * 7 / 100);
  CHECK(r.got.size() == kMessages - r.port.fault_dropped);
  CHECK(std::is_sorted(r.got.begin(), r.got.end()));
  // The same seed drops the same frames; another seed other ones.
  const Run again = run("fd2", "drop=0.05,seed=42");
  CHECK(again.got == r.got);
  const Run other = run("fd3", "drop=0.05,seed=43");
  CHECK(other.got != r.got);
}

TEST_CASE("dup: every duplicated frame arrives twice, right behind itself", "[fault]") {
  const Run r = run("fd4", "dup=0.05,seed=7");
  CHECK(r.port.fault_duplicated > kMessages * 3 / 100);
  CHECK(r.got.size() == kMessages + r.port.fault_duplicated);
  std::map<std::uint32_t, int> times;
  for (std::uint32_t i : r.got) ++times[i];
  CHECK(times.size() == kMessages);
  std::uint64_t twice = 0;
  for (const auto& [i, n] : times) twice += n == 2;
  CHECK(twice == r.port.fault_duplicated);
}

TEST_CASE("reorder: each held frame arrives after the one behind it, nothing lost", "[fault]") {
  const Run r = run("fd5", "reorder=0.05,seed=7");
  CHECK(r.port.fault_reordered > kMessages * 3 / 100);
  REQUIRE(r.got.size() == kMessages);
  std::uint64_t inversions = 0;
  for (std::size_t k = 1; k < r.got.size(); ++k) inversions += r.got[k] < r.got[k - 1];
  CHECK(inversions > 0);
  CHECK(inversions <= r.port.fault_reordered);
  std::vector<std::uint32_t> sorted = r.got;
  std::sort(sorted.begin(), sorted.end());
  CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());
}

TEST_CASE("corrupt: a flipped bit is refused by a checksum or arrives altered, never unnoticed by the count",
          "[fault]") {
  const Run r = run("fd6", "corrupt=0.05,seed=3");
  CHECK(r.port.fault_corrupted > kMessages * 3 / 100);
  // Every message is delivered or refused; what was delivered altered or refused was corrupted.
  CHECK(r.got.size() + r.rx.refused_total() == kMessages);
  CHECK(r.altered + r.rx.refused_total() <= r.port.fault_corrupted);
  CHECK(r.rx.refused_total() > 0);
}

TEST_CASE("delay: every frame of the lane arrives at least delay_us late", "[fault]") {
  // Paced (one message every 5 us), and fewer than the holding ring takes (4,096) even when a
  // busy machine lets them pile up.
  const Run r = run("fd7", "delay_us=300,seed=1", 4000, std::chrono::microseconds(5));
  CHECK(r.port.fault_delayed == 4000);
  REQUIRE(r.got.size() == 4000);
  CHECK(std::is_sorted(r.got.begin(), r.got.end()));  // one delay for all keeps the order
  CHECK(r.rx.lanes[2].min >= 300'000);
}
