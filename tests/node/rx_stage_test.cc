// The RX stage's order, seen by a pipeline that records what it is handed: paired queues read
// P0 first and again after every lower burst; a shared queue is classified and handed on P0
// first.
#include <catch2/catch.hpp>

#include "node/rx_stage.hpp"
#include "stage_rig.hpp"

using namespace nerve;

namespace {

struct Recorder {
  struct Burst {
    std::uint8_t prio;
    std::uint16_t n;
  };
  std::vector<Burst> bursts;
  std::uint16_t limit = 1000;
  std::uint16_t room(int, std::uint32_t held) noexcept {
    return held >= limit ? 0 : static_cast<std::uint16_t>(std::min<std::uint32_t>(node::kBurst, limit - held));
  }
  static std::uint8_t prio_of(const rte_mbuf* m) {
    constexpr std::size_t kAt = wire::kEthLen + wire::kIpv4Len + wire::kUdpLen + 4;
    return m->data_len > kAt ? rte_pktmbuf_mtod_offset(m, const std::uint8_t*, kAt)[0] : 4;
  }
  void operator()(std::size_t, rte_mbuf** m, std::uint16_t n) noexcept {
    const auto prio = prio_of(m[0]);
    for (std::uint16_t i = 1; i < n; ++i)
      if (prio_of(m[i]) != prio) bursts.push_back({255, 0});  // a mixed burst: never expected
    bursts.push_back({prio, n});
    rte_pktmbuf_free_bulk(m, n);
  }
};

std::vector<std::vector<std::byte>> frames(const test::StageRig& rig, std::uint8_t prio, unsigned n) {
  std::vector<std::vector<std::byte>> v;
  for (unsigned i = 0; i < n; ++i) v.push_back(rig.frame(prio, i));
  return v;
}

}  // namespace

TEST_CASE("rx, paired queues: P0 first; lower lanes in turn, or every poll while busy", "[stage][rx]") {
  test::StageRig rig("rx1");
  node::RxStage rx(rig.ports, rig.guard, rig.p0);
  rig.inject(4, frames(rig, 4, 40));
  rig.inject(2, frames(rig, 2, 5));
  rig.inject(0, frames(rig, 0, 2));
  Recorder r;
  // One rotation reads every idle lower queue once; P0 goes first.
  unsigned got = 0;
  for (unsigned i = 0; i < (wire::kPriorities - 1) * node::RxStage::kIdleEvery; ++i) got += rx.poll(r);
  CHECK(got == 2 + 5 + 40);
  REQUIRE(r.bursts.size() >= 3);
  CHECK(r.bursts[0].prio == 0);
  CHECK(r.bursts[0].n == 2);
  CHECK(r.bursts[1].prio == 2);
  CHECK(r.bursts[1].n == 5);
  // P0 flows, so the backlogged P4 lane comes in short bursts, all in the same poll, with
  // queue 0 read between them.
  CHECK(rig.p0.flowing());
  unsigned p4 = 0;
  for (std::size_t i = 2; i < r.bursts.size(); ++i) {
    CHECK(r.bursts[i].prio == 4);
    CHECK(r.bursts[i].n <= node::kShortBurst);
    p4 += r.bursts[i].n;
  }
  CHECK(p4 == 40);
  // P4 had traffic: it is read every poll now. A P0 frame that arrives with more P4 is handed
  // on first.
  rig.inject(4, frames(rig, 4, 10));
  rig.inject(0, frames(rig, 0, 1));
  r.bursts.clear();
  CHECK(rx.poll(r) == 11);
  REQUIRE(r.bursts.size() == 3);
  CHECK(r.bursts[0].prio == 0);
  CHECK(r.bursts[1].prio == 4);
  CHECK(r.bursts[1].n == node::kShortBurst);
  CHECK(r.bursts[2].n == 10 - node::kShortBurst);
}

TEST_CASE("rx, paired queues: with P0 quiet, lower lanes come in full bursts", "[stage][rx]") {
  test::StageRig rig("rx5");
  node::RxStage rx(rig.ports, rig.guard, rig.p0);
  rig.inject(3, frames(rig, 3, 40));
  Recorder r;
  for (unsigned i = 0; i < (wire::kPriorities - 1) * node::RxStage::kIdleEvery; ++i) rx.poll(r);
  CHECK_FALSE(rig.p0.flowing());
  REQUIRE(r.bursts.size() == 2);
  CHECK(r.bursts[0].n == node::kBurst);
  CHECK(r.bursts[1].n == 8);
}

TEST_CASE("rx, one shared queue: classified, P0 handed on first", "[stage][rx]") {
  test::StageRig rig("rx2", "", "lanes = \"software\"");
  node::RxStage rx(rig.ports, rig.guard, rig.p0);
  std::vector<std::vector<std::byte>> mixed;
  for (unsigned i = 0; i < 60; ++i) mixed.push_back(rig.frame(i % 3 == 0 ? 4 : 3, i));
  mixed.push_back(rig.frame(0, 100));
  mixed.push_back(std::vector<std::byte>(10));  // too short for a priority: the lowest lane
  rig.inject(0, std::vector<std::vector<std::byte>>(mixed.begin(), mixed.begin() + 32));
  rig.inject(0, std::vector<std::vector<std::byte>>(mixed.begin() + 32, mixed.end()));
  Recorder r;
  CHECK(rx.poll(r) == 62);
  REQUIRE(r.bursts.size() >= 3);
  CHECK(r.bursts[0].prio == 0);
  CHECK(r.bursts[0].n == 1);
  CHECK(r.bursts[1].prio == 3);
  for (const auto& b : r.bursts) CHECK(b.prio != 255);
}

TEST_CASE("rx: with no room downstream, frames stay in the port", "[stage][rx]") {
  test::StageRig rig("rx3", "", "lanes = \"software\"");
  node::RxStage rx(rig.ports, rig.guard, rig.p0);
  rig.inject(0, frames(rig, 1, 20));
  Recorder r;
  r.limit = 7;
  CHECK(rx.poll(r) == 7);
  r.limit = 100;
  CHECK(rx.poll(r) == 13);
}
