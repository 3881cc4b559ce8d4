// Credit across senders: a receiver shares each lane's budget of held frames among the
// sessions sending to it, grants each its share in every ack, and never holds more than the
// budget on a lane, however many senders it has and whatever they do.
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <vector>

#include "nerve/node.hpp"
#include "support.hpp"

using namespace nerve;

namespace {

constexpr std::uint32_t kMbufs = 4095;
// The receiver's budget per lane: a quarter of its pool shared by the five lanes
// (docs/architecture.md, "Reliable delivery").
constexpr std::uint32_t kBudget = kMbufs / 20;

// Node 1 in the middle, joined to each of nodes 2..n+1 by a net_ring pair; `lanes`: the
// ports' lanes ("auto": a queue per lane; "software": one shared queue).
config::Cluster star(const std::string& tag, unsigned senders, const std::string& lanes) {
  std::string t = fmt::format("[cluster]\nname = \"t{}\"\nheartbeat_miss = 100\nreliable_give_up_ms = 60000\n", tag);
  for (unsigned id = 1; id <= senders + 1; ++id) {
    t += fmt::format("[[node]]\nid = {0}\nmac = \"02:00:00:00:03:{0:02x}\"\nip = \"198.18.3.{0}\"\n"
                     "control_socket = \"/tmp/nerve-test-{1}-{0}.sock\"\nmbufs = {2}\n",
                     id, tag, kMbufs);
    for (unsigned peer = 1; peer <= senders + 1; ++peer) {
      if (peer == id || (peer != 1 && id != 1)) continue;
      t += fmt::format("  [[node.port]]\n  kind = \"ring\"\n  pair = \"{}{}\"\n  peers = [{}]\n  lanes = \"{}\"\n",
                       tag, std::max(id, peer), peer, lanes);
    }
  }
  return config::load_string(t);
}

struct Star {
  Star(const std::string& tag, unsigned senders, const std::string& lanes = "auto") : c(star(tag, senders, lanes)) {
    NodeOptions o;
    o.rx_queue_depth = 64;
    nodes.push_back(std::make_unique<Node>(c, 1, test::eal(), o));
    for (unsigned id = 2; id <= senders + 1; ++id) nodes.push_back(std::make_unique<Node>(c, id, test::eal()));
  }
  Node& rx() { return *nodes[0]; }
  void poll() {
    for (auto& n : nodes) n->poll();
  }
  // Every sender has a route to node 1.
  void wait_up() {
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    auto up = [&] {
      for (std::size_t k = 1; k < nodes.size(); ++k) {
        const auto r = nodes[k]->routes();
        if (r.empty() || r.front().lanes[0].next_hop == 0) return false;
      }
      return true;
    };
    while (!up() && std::chrono::steady_clock::now() < end) poll();
    REQUIRE(up());
  }
  config::Cluster c;
  std::vector<std::unique_ptr<Node>> nodes;  // [0]: node 1
};

SendStatus send(Node& n, std::uint8_t prio, std::uint32_t seq, bool reliable = true) {
  TxFrame f = n.alloc(8);
  if (!f) return SendStatus::kBackpressure;
  const std::uint32_t words[2] = {n.id(), seq};
  std::memcpy(f.payload().data(), words, 8);
  return n.send(f, 1, MsgType::kStatus, prio, {.never_shed = true, .reliable = reliable});
}

std::pair<std::uint32_t, std::uint32_t> words_of(const RxMessage& m) {
  std::uint32_t w[2] = {};
  std::memcpy(w, m.payload().data(), 8);
  return {w[0], w[1]};
}

}  // namespace

TEST_CASE("credit: five senders to a stalled lane hold no more than the receiver's budget; P0 flows; nothing lost",
          "[credit][flow]") {
  // Node 1 reads P0 and never P4 until the end. Five senders stream reliable P4 to it until
  // their credit runs out: without credit each would have its whole window (256) in flight,
  // 1,280 frames; with it the five share the lane's budget. With a queue per lane the frames
  // wait in node 1's P4 queues; with software lanes node 1 reads them and its sessions hold them.
  constexpr unsigned kSenders = 5;
  std::string lanes;
  SECTION("paired queues") { lanes = "auto"; }
  SECTION("software lanes") { lanes = "software"; }
  Star s("cr1" + lanes.substr(0, 1), kSenders, lanes);
  s.wait_up();
  std::vector<std::uint32_t> p4(kSenders + 2, 0);
  std::uint64_t peak = 0, most_senders = 0, least_credit = kReliableWindow;
  // Until every sender has been refused 200 times in a row: all of them stopped.
  std::vector<unsigned> refused(kSenders + 2, 0);
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  auto stopped = [&] {
    for (unsigned id = 2; id <= kSenders + 1; ++id)
      if (refused[id] < 200) return false;
    return true;
  };
  while (!stopped() && std::chrono::steady_clock::now() < end) {
    for (unsigned id = 2; id <= kSenders + 1; ++id) {
      const SendStatus st = send(*s.nodes[id - 1], 4, p4[id]);
      if (st == SendStatus::kOk) {
        ++p4[id];
        refused[id] = 0;
      } else {
        REQUIRE(st == SendStatus::kBackpressure);
        ++refused[id];
      }
    }
    s.poll();
    const auto r = s.rx().snapshot().rel[4];
    peak = std::max(peak, r.held);
    most_senders = std::max(most_senders, r.senders);
    if (r.senders != 0) least_credit = std::min(least_credit, r.credit);
  }
  REQUIRE(stopped());
  const auto r = s.rx().snapshot().rel[4];
  std::uint64_t in_flight = 0, total = 0;
  for (unsigned id = 2; id <= kSenders + 1; ++id) {
    const auto t = s.nodes[id - 1]->snapshot().rel[4];
    in_flight += t.sent - t.acked - t.failed;
    total += p4[id];
  }
  INFO(lanes << ": held peak " << peak << ", held " << r.held << ", in flight " << in_flight << ", senders at most "
              << most_senders << ", credit at least " << least_credit << ", over credit " << r.over_credit
              << ", sent " << total);
  // The receiver counted all five and shared its budget among them (then, the senders quiet,
  // fewer: a stalled sender counts while its receiver holds its frames).
  CHECK(most_senders == kSenders);
  CHECK(least_credit == kBudget / kSenders);
  // What node 1 holds for its senders: the budget, plus at most one frame a session (the one it
  // waits for next).
  CHECK(peak <= kBudget + kSenders);
  // In flight besides: what its recv() queue took (64), and on paired queues what waits in its
  // port. A sender granted while the others were not counted (this thread away for 10 ms on a
  // busy machine) may have up to the whole budget: at most twice the budget, far below the
  // 1,280 without credit.
  CHECK(in_flight <= 2 * kBudget + kSenders + 64);
  CHECK(in_flight >= kBudget / 2);  // the senders did use their credit
  if (lanes == "software") CHECK(peak >= kBudget / 2);  // ... and node 1 held it
  // P0 meanwhile, from every sender, reliable: every message, in order per sender.
  constexpr std::uint32_t kP0 = 200;
  std::vector<std::vector<std::uint32_t>> p0(kSenders + 2);
  std::size_t p0_got = 0;
  for (std::uint32_t i = 0; i < kP0; ++i) {
    for (unsigned id = 2; id <= kSenders + 1; ++id)
      while (send(*s.nodes[id - 1], 0, i) != SendStatus::kOk && std::chrono::steady_clock::now() < end) s.poll();
    s.poll();
    while (auto m = s.rx().recv(0)) p0[words_of(*m).first].push_back(words_of(*m).second), ++p0_got;
  }
  while (p0_got < kP0 * kSenders && std::chrono::steady_clock::now() < end) {
    s.poll();
    while (auto m = s.rx().recv(0)) p0[words_of(*m).first].push_back(words_of(*m).second), ++p0_got;
  }
  for (unsigned id = 2; id <= kSenders + 1; ++id) {
    REQUIRE(p0[id].size() == kP0);
    for (std::uint32_t i = 0; i < kP0; ++i) REQUIRE(p0[id][i] == i);
  }
  // Unreliable P4 from node 2 meanwhile: with a queue per lane it waits in node 1's P4 queue
  // for the consumer; on a shared queue, read past it for P0's sake, it is dropped, each frame
  // counted.
  constexpr std::uint32_t kPlain = 100, kPlainBase = 1'000'000;
  for (std::uint32_t i = 0; i < kPlain; ++i) {
    while (send(*s.nodes[1], 4, kPlainBase + i, false) != SendStatus::kOk && std::chrono::steady_clock::now() < end)
      s.poll();
    s.poll();
  }
  if (lanes == "software") {
    while (s.rx().snapshot().rx_lane_full < kPlain && std::chrono::steady_clock::now() < end) s.poll();
    CHECK(s.rx().snapshot().rx_lane_full == kPlain);
  }
  // The P4 consumer wakes: every reliable message arrives, once, in order per sender; the
  // unreliable ones that waited, in order.
  std::vector<std::vector<std::uint32_t>> got(kSenders + 2);
  std::vector<std::uint32_t> plain;
  const std::uint32_t plain_due = lanes == "software" ? 0 : kPlain;
  std::size_t n = 0;
  while ((n < total || plain.size() < plain_due) && std::chrono::steady_clock::now() < end) {
    s.poll();
    while (auto m = s.rx().recv(4)) {
      const auto [src, seq] = words_of(*m);
      if (seq >= kPlainBase) {
        plain.push_back(seq);
      } else {
        got[src].push_back(seq);
        ++n;
      }
    }
  }
  for (unsigned id = 2; id <= kSenders + 1; ++id) {
    REQUIRE(got[id].size() == p4[id]);
    for (std::uint32_t i = 0; i < p4[id]; ++i) REQUIRE(got[id][i] == i);
    CHECK(s.nodes[id - 1]->snapshot().rel[4].failed == 0);
  }
  REQUIRE(plain.size() == plain_due);
  for (std::uint32_t i = 0; i < plain_due; ++i) REQUIRE(plain[i] == kPlainBase + i);
  if (lanes != "software") CHECK(s.rx().snapshot().rx_lane_full == 0);
}

TEST_CASE("credit: a lone sender behind a stalled consumer is granted the lane's budget, and all is acknowledged after",
          "[credit]") {
  // One sender, software lanes, node 1 reading nothing: the sender goes past its initial credit
  // to the whole budget (the grant the acks carried), node 1 holds no more than that, and when
  // its consumer wakes every message arrives and is acknowledged, none given up.
  Star s("cr2", 1, "software");
  s.wait_up();
  Node& tx = *s.nodes[1];
  std::uint32_t sent = 0;
  unsigned refused = 0;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (refused < 200 && std::chrono::steady_clock::now() < end) {
    if (send(tx, 2, sent) == SendStatus::kOk) ++sent, refused = 0;
    else ++refused;
    s.poll();
  }
  REQUIRE(refused == 200);
  const auto t = tx.snapshot().rel[2];
  const auto r = s.rx().snapshot().rel[2];
  INFO("sent " << sent << ", in flight " << t.sent - t.acked << ", held " << r.held << ", credit " << r.credit);
  CHECK(r.senders == 1);
  CHECK(r.credit == std::min(kBudget, kReliableWindow));
  CHECK(t.sent - t.acked == std::min(kBudget, kReliableWindow));  // beyond the initial 32: the grant arrived
  CHECK(r.held <= kBudget + 1);
  CHECK(r.over_credit == 0);  // a sender that keeps to its grant loses nothing to the budget
  // The consumer wakes; the sender goes on to kCount.
  constexpr std::uint32_t kCount = 20'000;
  std::vector<std::uint32_t> got;
  while ((got.size() < kCount || tx.snapshot().rel[2].acked < kCount) && std::chrono::steady_clock::now() < end) {
    if (sent < kCount && send(tx, 2, sent) == SendStatus::kOk) ++sent;
    s.poll();
    while (auto m = s.rx().recv(2)) got.push_back(words_of(*m).second);
  }
  REQUIRE(got.size() == kCount);
  for (std::uint32_t i = 0; i < kCount; ++i) REQUIRE(got[i] == i);
  CHECK(tx.snapshot().rel[2].acked == kCount);
  CHECK(tx.snapshot().rel[2].failed == 0);
}
