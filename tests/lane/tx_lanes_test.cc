// The TX scheduler on deterministic inputs: order, the starvation guard, back-pressure and
// shedding.
#include <catch2/catch.hpp>

#include <vector>

#include "lane/tx_lanes.hpp"

using namespace nerve::lane;

namespace {

struct Frame {
  unsigned lane;
  unsigned seq;
};

std::vector<Frame> frames(unsigned lane, unsigned n) {
  std::vector<Frame> v;
  for (unsigned i = 0; i < n; ++i) v.push_back({lane, i});
  return v;
}

std::vector<Frame*> drain(TxLanes<Frame>& t, unsigned n) {
  std::vector<Frame*> out(n);
  std::vector<std::uint8_t> lanes(n);
  out.resize(t.pull(out.data(), lanes.data(), n));
  for (std::size_t i = 0; i < out.size(); ++i) REQUIRE(out[i]->lane == lanes[i]);
  return out;
}

}  // namespace

TEST_CASE("strict priority: P0 leaves first, each lane in FIFO order", "[lane]") {
  LaneConfig cfg;
  cfg.min_share = {0, 0, 0, 0, 0};  // pure strict priority
  TxLanes<Frame> t(cfg);
  auto p4 = frames(4, 10), p2 = frames(2, 10), p0 = frames(0, 10);
  Frame* ev = nullptr;
  for (auto& f : p4) REQUIRE(t.push(4, &f, &ev) == Push::kQueued);
  for (auto& f : p2) REQUIRE(t.push(2, &f, &ev) == Push::kQueued);
  for (auto& f : p0) REQUIRE(t.push(0, &f, &ev) == Push::kQueued);
  const auto out = drain(t, 30);
  REQUIRE(out.size() == 30);
  for (unsigned i = 0; i < 30; ++i) {
    CHECK(out[i]->lane == (i < 10 ? 0u : i < 20 ? 2u : 4u));
    CHECK(out[i]->seq == i % 10);
  }
  CHECK(t.total() == 0);
}

TEST_CASE("a P0 frame queued behind a full P4 backlog leaves in the next burst, first", "[lane]") {
  TxLanes<Frame> t;
  auto p4 = frames(4, 1024);
  Frame* ev = nullptr;
  for (auto& f : p4) t.push(4, &f, &ev);
  Frame p0{0, 0};
  REQUIRE(t.push(0, &p0, &ev) == Push::kQueued);
  const auto out = drain(t, 32);
  REQUIRE(out.size() == 32);
  CHECK(out[0] == &p0);
}

TEST_CASE("starvation guard: P4 still moves under a sustained P0 load", "[lane]") {
  LaneConfig cfg;
  cfg.min_share = {0, 0.01, 0.01, 0.01, 0.05};  // P4 gets at least 5 % of slots
  TxLanes<Frame> t(cfg);
  auto p0 = frames(0, 10000), p4 = frames(4, 1000);
  Frame* ev = nullptr;
  unsigned p4_out = 0, total = 0;
  std::size_t next0 = 0, next4 = 0;
  // Keep P0 backlogged the whole time, as a sustained load would.
  for (int round = 0; round < 100; ++round) {
    while (t.size(0) < 64 && next0 < p0.size()) t.push(0, &p0[next0++], &ev);
    while (t.size(4) < 64 && next4 < p4.size()) t.push(4, &p4[next4++], &ev);
    for (Frame* f : drain(t, 32)) {
      ++total;
      if (f->lane == 4) ++p4_out;
    }
  }
  CHECK(total == 3200);
  CHECK(p4_out >= 3200 * 5 / 100 - 1);  // its share, to within one frame
  CHECK(p4_out <= 3200 * 5 / 100 + 1);  // and no more: P0 keeps the rest
}

TEST_CASE("without a share, strict priority starves P4 (the guard is what moves it)", "[lane]") {
  LaneConfig cfg;
  cfg.min_share = {0, 0, 0, 0, 0};
  TxLanes<Frame> t(cfg);
  auto p0 = frames(0, 64), p4 = frames(4, 64);
  Frame* ev = nullptr;
  for (auto& f : p4) t.push(4, &f, &ev);
  for (auto& f : p0) t.push(0, &f, &ev);
  for (Frame* f : drain(t, 64)) CHECK(f->lane == 0);
}

TEST_CASE("full P0-P2 lanes push back and keep nothing", "[lane]") {
  LaneConfig cfg;
  cfg.depth = {4, 4, 4, 4, 4};
  TxLanes<Frame> t(cfg);
  for (unsigned lane : {0u, 1u, 2u}) {
    auto f = frames(lane, 5);
    Frame* ev = nullptr;
    for (unsigned i = 0; i < 4; ++i) REQUIRE(t.push(lane, &f[i], &ev) == Push::kQueued);
    CHECK(t.push(lane, &f[4], &ev) == Push::kBackpressure);
    CHECK(ev == nullptr);
    CHECK(t.size(lane) == 4);
    Frame* out[4];
    REQUIRE(t.pull_lane(lane, out, 4) == 4);
    CHECK(out[0] == &f[0]);  // the queued frames, untouched, in order
  }
}

TEST_CASE("full P3/P4 lanes shed their oldest frame", "[lane]") {
  LaneConfig cfg;
  cfg.depth = {4, 4, 4, 4, 4};
  TxLanes<Frame> t(cfg);
  for (unsigned lane : {3u, 4u}) {
    auto f = frames(lane, 6);
    Frame* ev = nullptr;
    for (unsigned i = 0; i < 4; ++i) REQUIRE(t.push(lane, &f[i], &ev) == Push::kQueued);
    CHECK(t.push(lane, &f[4], &ev) == Push::kShed);
    CHECK(ev == &f[0]);
    CHECK(t.push(lane, &f[5], &ev) == Push::kShed);
    CHECK(ev == &f[1]);
    Frame* out[4];
    REQUIRE(t.pull_lane(lane, out, 4) == 4);
    CHECK(out[0] == &f[2]);
    CHECK(out[3] == &f[5]);
  }
}

TEST_CASE("frames a port did not take go back in front, in order", "[lane]") {
  TxLanes<Frame> t;
  auto p0 = frames(0, 3), p1 = frames(1, 3);
  Frame* ev = nullptr;
  for (auto& f : p1) t.push(1, &f, &ev);
  for (auto& f : p0) t.push(0, &f, &ev);
  Frame* out[6];
  std::uint8_t lanes[6];
  REQUIRE(t.pull(out, lanes, 6) == 6);
  t.unpull(out + 2, lanes + 2, 4);  // the port took two
  Frame* again[4];
  REQUIRE(t.pull(again, lanes, 4) == 4);
  CHECK(again[0] == &p0[2]);
  CHECK(again[1] == &p1[0]);
  CHECK(again[3] == &p1[2]);
}
