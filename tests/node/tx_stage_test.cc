// The TX stage, stepped: headers from the route's template, ids and the clock's timestamp;
// P0 leaves at once; a drain hands over all of P0 but at most one burst of each lower lane, so
// a P0 frame never waits behind a whole backlog; full lanes push back or shed as configured.
#include <catch2/catch.hpp>

#include <map>

#include "node/idle.hpp"
#include "node/tx_stage.hpp"
#include "stage_rig.hpp"

using namespace nerve;

namespace {

struct Tx {
  explicit Tx(test::StageRig& r)
      : rig(r), idle(r.self), tx(r.ports, *r.routing, r.self, r.pool->get(), config::max_payload(r.cluster.mtu), *r.clock,
                               r.st, idle, r.guard, r.p0) {}
  SendStatus send(std::uint8_t prio, std::uint32_t tag, const SendOptions& o = {}) {
    rte_mbuf* m = tx.alloc(8);
    REQUIRE(m != nullptr);
    std::memcpy(rte_pktmbuf_mtod(m, void*), &tag, 4);
    const SendStatus s = tx.send(m, 2, MsgType::kMetric, prio, o);
    if (s != SendStatus::kOk) rte_pktmbuf_free(m);
    return s;
  }
  test::StageRig& rig;
  node::IdlePolicy idle;
  node::TxStage tx;
};

}  // namespace

TEST_CASE("tx: a frame leaves with its route's headers, a fresh id and the clock's time", "[stage][tx]") {
  test::StageRig rig("tx1");
  Tx t(rig);
  rig.clock->set(5'000'000'000);
  const std::uint32_t id = t.tx.next_msg_id();
  REQUIRE(t.send(0, 11) == SendStatus::kOk);  // P0: out at once
  rig.clock->advance(1000);
  REQUIRE(t.send(0, 12) == SendStatus::kOk);
  const auto got = rig.take(0);
  REQUIRE(got.size() == 2);
  CHECK(got[0].hdr.msg_id == id);
  CHECK(got[1].hdr.msg_id == id + 1);
  CHECK(got[0].hdr.timestamp_ns == 5'000'000'000);
  CHECK(got[1].hdr.timestamp_ns == 5'000'001'000);
  CHECK(got[0].hdr.src_node == 1);
  CHECK(got[0].hdr.dst == 2);
  CHECK(got[0].ep.src_ip == rig.self.ip);
  CHECK(got[0].ep.dst_ip == rig.peer.ip);
  CHECK(got[0].ep.dst_mac == rig.peer.mac);
  CHECK(got[0].ep.src_mac == rig.self.mac);
  CHECK(got[0].hdr.type == MsgType::kMetric);
  CHECK(rig.st.sent[static_cast<std::size_t>(MsgType::kMetric)][0].get() == 2);
  CHECK(rig.st.tx_frames.get() == 2);
}

TEST_CASE("tx: a drain moves all of P0 but one burst of each lower lane", "[stage][tx]") {
  test::StageRig rig("tx2", "lane_depth = [512, 512, 512, 1024, 4096]");
  Tx t(rig);
  // Fill the P4 ring queue (4096 slots) and then 1000 more, which stay in the lane.
  for (std::uint32_t i = 0; i < 4095 + 1000; ++i) REQUIRE(t.send(4, i) == SendStatus::kOk);
  const std::uint32_t backlog = t.tx.queued(0, 4);
  REQUIRE(backlog >= 1000);
  auto make_room = [&](std::size_t frames) {
    std::size_t read = 0;
    while (read < frames) read += rig.take(4, static_cast<std::uint16_t>(frames - read)).size();
  };

  SECTION("P0 quiet: a full lower-lane burst") {
    make_room(100);
    const unsigned moved = t.tx.drain();
    CHECK(moved == node::kBurst);  // one P4 burst: not the 100 that fit
    CHECK(t.tx.queued(0, 4) == backlog - node::kBurst);
  }
  SECTION("P0 flowing: all of P0, then a short lower-lane burst") {
    // Three P0 frames held for a batch, then room for 100 P4 frames at the far end.
    SendOptions more;
    more.more = true;
    for (std::uint32_t i = 0; i < 3; ++i) REQUIRE(t.send(0, 900 + i, more) == SendStatus::kOk);
    CHECK(t.tx.queued(0, 0) == 3);
    make_room(100);
    const unsigned moved = t.tx.drain();
    CHECK(moved == 3 + node::kShortBurst);  // P0 whole; a P0 frame waits behind at most 8 others
    CHECK(t.tx.queued(0, 0) == 0);
    CHECK(t.tx.queued(0, 4) == backlog - node::kShortBurst);
    const auto p0 = rig.take(0);
    REQUIRE(p0.size() == 3);
    CHECK(t.tx.waiting() == backlog - node::kShortBurst);
  }
}

TEST_CASE("tx: P0-P2 push back on a full lane, P3/P4 shed unless never_shed", "[stage][tx]") {
  test::StageRig rig("tx3", "lane_depth = [32, 32, 32, 32, 32]", "lanes = \"software\"");
  Tx t(rig);
  // The shared ring takes 4095; then each lane holds 32.
  std::uint32_t n = 0;
  while (t.send(1, n) == SendStatus::kOk) REQUIRE(++n < 10000);
  CHECK(rig.st.backpressure[1].get() == 1);
  CHECK(t.tx.queued(0, 1) == 32);
  for (std::uint32_t i = 0; i < 40; ++i) REQUIRE(t.send(4, i) == SendStatus::kOk);
  CHECK(rig.st.shed[4].get() == 8);
  SendOptions keep;
  keep.never_shed = true;
  CHECK(t.send(4, 99, keep) == SendStatus::kBackpressure);
  CHECK(rig.st.backpressure[4].get() == 1);
  CHECK(t.tx.queued(0, 4) == 32);
}

TEST_CASE("tx: no route and bad arguments are refused, the frame stays the caller's", "[stage][tx]") {
  test::StageRig rig("tx4");
  Tx t(rig);
  rte_mbuf* m = t.tx.alloc(8);
  REQUIRE(m != nullptr);
  CHECK(t.tx.send(m, 7, MsgType::kMetric, 0, {}) == SendStatus::kNoRoute);
  CHECK(t.tx.send(m, 2, MsgType::kMetric, 5, {}) == SendStatus::kBadArgument);
  CHECK(t.tx.send(m, 2, static_cast<MsgType>(9), 0, {}) == SendStatus::kBadArgument);
  CHECK(rig.st.tx_no_route.get() == 1);
  CHECK(t.tx.alloc(t.tx.max_payload() + 1) == nullptr);
  rte_pktmbuf_free(m);
}

TEST_CASE("tx: a P0 batch (`more`) waits for its last send, but never beyond a full burst", "[stage][tx]") {
  test::StageRig rig("tx5");
  Tx t(rig);
  SendOptions more;
  more.more = true;
  for (std::uint32_t i = 0; i < node::kBurst - 1; ++i) REQUIRE(t.send(0, i, more) == SendStatus::kOk);
  CHECK(t.tx.queued(0, 0) == node::kBurst - 1);  // held for the batch
  CHECK(rig.take(0).empty());
  REQUIRE(t.send(0, 99, more) == SendStatus::kOk);  // the 32nd: a full burst leaves
  CHECK(t.tx.queued(0, 0) == 0);
  CHECK(rig.take(0).size() == node::kBurst);
}

TEST_CASE("tx: while P0 flows, a lower lane leaves in short bursts", "[stage][tx]") {
  test::StageRig rig("tx6");
  Tx t(rig);
  REQUIRE(t.send(0, 1) == SendStatus::kOk);  // P0 traffic: the node now favours P0's latency
  CHECK(rig.p0.flowing());
  rig.take(0);
  for (std::uint32_t i = 0; i < node::kShortBurst - 1; ++i) REQUIRE(t.send(3, i) == SendStatus::kOk);
  CHECK(t.tx.queued(0, 3) == node::kShortBurst - 1);
  REQUIRE(t.send(3, 99) == SendStatus::kOk);
  CHECK(t.tx.queued(0, 3) == 0);  // a short burst left
  CHECK(rig.take(3).size() == node::kShortBurst);
  // Once P0 has been quiet for the window, lower lanes wait for a full burst again.
  for (std::uint32_t i = 0; i < node::P0Watch::kWindowPolls; ++i) rig.p0.tick();
  CHECK_FALSE(rig.p0.flowing());
  for (std::uint32_t i = 0; i < node::kShortBurst; ++i) REQUIRE(t.send(3, i) == SendStatus::kOk);
  CHECK(t.tx.queued(0, 3) == node::kShortBurst);
}

namespace {

// Transit frames through t (as the forward stage hands them over, headers already rewritten),
// ids from `first`, lanes in turn from `lanes`.
void forward(test::StageRig& rig, Tx& t, std::uint32_t first, std::uint32_t n, std::initializer_list<std::uint8_t> lanes) {
  for (std::uint32_t i = 0; i < n; ++i) {
    const std::uint8_t prio = *(lanes.begin() + i % lanes.size());
    t.tx.forward(rig.mbuf(rig.frame(prio, first + i)), 0, prio);
  }
}

// Everything the far end holds on queue q, in arrival order: (lane, id).
std::vector<std::pair<std::uint8_t, std::uint32_t>> take_all(test::StageRig& rig, std::uint16_t q) {
  std::vector<std::pair<std::uint8_t, std::uint32_t>> out;
  for (;;) {
    const auto got = rig.take(q);
    if (got.empty()) return out;
    for (const auto& d : got) out.emplace_back(d.hdr.priority, d.hdr.msg_id);
  }
}

}  // namespace

TEST_CASE("tx: transit frames of one lane leave together; behind a backlog, or of several lanes, they queue in order",
          "[stage][tx][forward]") {
  for (const bool shared : {false, true}) {
    INFO((shared ? "one shared queue" : "a queue per lane"));
    test::StageRig rig(shared ? "txf2" : "txf1", "lane_depth = [512, 512, 512, 1024, 1024]",
                       shared ? "lanes = \"software\"" : "");
    Tx t(rig);
    const std::uint16_t q3 = shared ? 0 : 3;
    const unsigned free_before = rig.free_mbufs();

    // P0 leaves at once; a lower lane waits for the end of the burst being dispatched, and
    // while P0 flows leaves a short burst at a time: a P0 frame never waits behind more.
    forward(rig, t, 1, 1, {0});
    CHECK(take_all(rig, 0).size() == 1);
    REQUIRE(rig.p0.flowing());
    forward(rig, t, 100, 20, {3});
    t.tx.forward_flush();
    // Short bursts leave as they fill (the gathered one, then the lane's); the rest waits.
    auto short_burst = take_all(rig, q3);
    REQUIRE(short_burst.size() % node::kShortBurst == 0);
    CHECK(t.tx.queued(0, 3) == 20 - short_burst.size());
    CHECK(t.tx.queued(0, 3) < node::kShortBurst);
    for (int round = 0; round < 10 && t.tx.queued(0, 3) != 0; ++round) {
      t.tx.drain();
      for (const auto& g : take_all(rig, q3)) short_burst.push_back(g);
    }
    for (const auto& g : take_all(rig, q3)) short_burst.push_back(g);
    REQUIRE(short_burst.size() == 20);
    for (std::uint32_t i = 0; i < 20; ++i) CHECK(short_burst[i] == std::make_pair(std::uint8_t{3}, 100 + i));
    // P0 quiet: whole bursts.
    for (std::uint32_t i = 0; i < node::P0Watch::kWindowPolls; ++i) rig.p0.tick();
    REQUIRE_FALSE(rig.p0.flowing());
    forward(rig, t, 10, 20, {3});
    CHECK(take_all(rig, q3).empty());
    t.tx.forward_flush();
    auto got = take_all(rig, q3);
    REQUIRE(got.size() == 20);
    for (std::uint32_t i = 0; i < 20; ++i) CHECK(got[i] == std::make_pair(std::uint8_t{3}, 10 + i));
    CHECK(t.tx.queued(0, 3) == 0);
    CHECK(rig.st.forwarded[3].get() == 40);
    CHECK(rig.st.forwarded_port[0].get() == 41);

    // More than the port's queue takes (4,095): the rest waits in the lane, and what comes
    // after queues behind it, never past it.
    forward(rig, t, 1000, 4095 + 300, {3});
    t.tx.forward_flush();
    CHECK(t.tx.queued(0, 3) == 300);
    // The port has room again (the far end read 64) while the backlog still waits.
    std::vector<std::pair<std::uint8_t, std::uint32_t>> all;
    for (int k = 0; k < 2; ++k)
      for (const auto& d : rig.take(q3)) all.emplace_back(d.hdr.priority, d.hdr.msg_id);
    REQUIRE(all.size() == 64);
    forward(rig, t, 1000 + 4095 + 300, 40, {3});
    t.tx.forward_flush();
    CHECK(t.tx.queued(0, 3) == 300 + 40 - 64);  // the backlog's head took the room, in order
    for (int round = 0; round < 100 && all.size() < 4095 + 340; ++round) {
      for (const auto& g : take_all(rig, q3)) all.push_back(g);
      t.tx.drain();
    }
    REQUIRE(all.size() == 4095 + 340);
    for (std::uint32_t i = 0; i < all.size(); ++i) CHECK(all[i].second == 1000 + i);
    CHECK(rig.st.forwarded[3].get() == 40 + 4095 + 340);
    CHECK(rig.st.shed[3].get() == 0);

    // A burst of several lanes: each frame on its own lane, each lane in its order.
    forward(rig, t, 20000, 64, {1, 2, 3, 4});
    t.tx.forward_flush();
    t.tx.flush_all();
    std::map<std::uint8_t, std::vector<std::uint32_t>> by_lane;
    for (std::uint16_t q = 0; q < (shared ? 1 : 5); ++q)
      for (const auto& [prio, id] : take_all(rig, q)) {
        if (!shared) CHECK(prio == q);
        by_lane[prio].push_back(id);
      }
    for (std::uint8_t prio = 1; prio <= 4; ++prio) {
      REQUIRE(by_lane[prio].size() == 16);
      for (std::uint32_t k = 0; k < 16; ++k) CHECK(by_lane[prio][k] == 20000 + (prio - 1) + 4 * k);
      CHECK(rig.st.forwarded[prio].get() == (prio == 3 ? 40 + 4095 + 340 + 16 : 16));
    }

    // What is gathered and not yet handed over goes back to the pool at shutdown.
    forward(rig, t, 30000, 10, {4});
    t.tx.free_all();
    CHECK(rig.free_mbufs() == free_before);
  }
}
