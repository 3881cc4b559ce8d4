// Messages sent over two paths (SendOptions::paths = 2): two links between two nodes, one of
// them losing frames, or both; the receiver delivers each message once, in order where it is
// reliable, and counts which path won and the copies it discarded.
#include <catch2/catch.hpp>

#include <chrono>
#include <cstring>
#include <vector>

#include "nerve/node.hpp"
#include "support.hpp"

using namespace nerve;

namespace {

// Nodes 1 and 2 joined by two net_ring pairs; each of node 2's ports (and node 1's, for the
// acks) injects the given faults into what it receives, on lane 1 only (heartbeats, on P0,
// keep both links up).
config::Cluster two_link_cluster(const std::string& tag, const std::string& fault_a, const std::string& fault_b,
                                 const std::string& back = "") {
  std::string t = fmt::format("[cluster]\nname = \"t{}\"\nheartbeat_miss = 100\n", tag);
  for (int id = 1; id <= 2; ++id) {
    t += fmt::format("[[node]]\nid = {0}\nmac = \"02:00:00:00:02:{0:02x}\"\nip = \"198.18.2.{0}\"\n"
                     "control_socket = \"/tmp/nerve-test-{1}-{0}.sock\"\nmbufs = 16383\n",
                     id, tag);
    for (int link = 0; link < 2; ++link) {
      const std::string& f = id == 2 ? (link == 0 ? fault_a : fault_b) : back;
      t += fmt::format("  [[node.port]]\n  kind = \"ring\"\n  pair = \"{}{}\"\n  peers = [{}]\n", tag, link, 3 - id);
      if (!f.empty()) t += fmt::format("  fault = \"{},lanes=1,seed={}\"\n", f, 7 + link);
    }
  }
  return config::load_string(t);
}

struct Received {
  std::vector<std::uint32_t> got;
  void take(const RxMessage& m) {
    std::uint32_t i = 0;
    std::memcpy(&i, m.payload().data(), 4);
    got.push_back(i);
  }
};

// Sends `count` numbered messages from a to node 2 on lane 1 over two paths, stepping both
// nodes, until b has them all (or the deadline passes).
void stream(Node& a, Node& b, std::uint32_t count, bool reliable, const Received& r) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (std::uint32_t i = 0; i < count && std::chrono::steady_clock::now() < end;) {
    TxFrame f = a.alloc(32);
    REQUIRE(f);
    std::memcpy(f.payload().data(), &i, 4);
    const SendStatus s =
        a.send(f, 2, MsgType::kMetric, 1, {.channel = 5, .never_shed = true, .reliable = reliable, .paths = 2});
    if (s == SendStatus::kOk) ++i;
    else REQUIRE(s == SendStatus::kBackpressure);
    a.poll(), b.poll();
  }
  while (r.got.size() < count && std::chrono::steady_clock::now() < end) a.poll(), b.poll();
  if (reliable)
    while (a.snapshot().rel[1].acked < count && std::chrono::steady_clock::now() < end) a.poll(), b.poll();
  test::settle(a, b);  // late copies too
}

// Node b's counters for (source 1, channel 5).
stats::Snapshot::PathChannel channel_of(Node& b) {
  for (const auto& c : b.snapshot().paths)
    if (!c.other && c.src == 1 && c.channel == 5) return c;
  return {};
}

// The nodes' mbufs back in their pools (within a few in flight), stepping both until they are.
void returned(Node& a, Node& b, unsigned free_a, unsigned free_b) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  auto back = [&] { return a.mbufs_available() + 64 >= free_a && b.mbufs_available() + 64 >= free_b; };
  while (!back() && std::chrono::steady_clock::now() < end) a.poll(), b.poll();
  INFO("a " << a.mbufs_available() << " of " << free_a << ", b " << b.mbufs_available() << " of " << free_b);
  CHECK(back());
}

// Routes up on both links before anything is sent.
void wait_up(Node& a, Node& b) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  auto up = [&] {
    const auto l = a.links();
    return l.size() == 2 && l[0].up && l[1].up;
  };
  while (!up() && std::chrono::steady_clock::now() < end) a.poll(), b.poll();
  REQUIRE(up());
  // The table with both links in it (built by the routing agent's thread).
  while (std::chrono::steady_clock::now() < end) {
    const auto r = a.routes();
    if (!r.empty() && r.front().two_paths[1].next_hop != 0) break;
    a.poll(), b.poll();
  }
  REQUIRE(a.routes().front().two_paths[1].next_hop != 0);
}

}  // namespace

TEST_CASE("two paths: a path that loses every frame costs nothing; a clean pair delivers each message once",
          "[paths]") {
  // Two nodes whose first link drops all of lane 1 (or nothing), a stream of kCount messages
  // over two paths, and every mbuf back in its pool after.
  static constexpr std::uint32_t kCount = 5'000;
  auto run = [](const std::string& tag, const std::string& fault_a, auto&& check) {
    auto c = two_link_cluster(tag, fault_a, "");
    Node a(c, 1, test::eal());
    Node b(c, 2, test::eal());
    Received r;
    b.on_message([&](const RxMessage& m) { r.take(m); });
    wait_up(a, b);
    const unsigned free_a = a.mbufs_available(), free_b = b.mbufs_available();
    stream(a, b, kCount, false, r);
    REQUIRE(r.got.size() == kCount);  // once each
    for (std::uint32_t i = 0; i < kCount; ++i) REQUIRE(r.got[i] == i);
    // (The lossy link's ring is read slowly, a queue that yields nothing being read less
    // often: until it is empty.)
    returned(a, b, free_a, free_b);
    CHECK(a.snapshot().paths_two[1] == kCount);
    CHECK(a.snapshot().paths_one[1] == 0);
    check(b, channel_of(b));
  };
  SECTION("one path loses everything") {
    run("tp1", "drop=1", [](Node& b, const stats::Snapshot::PathChannel& ch) {
      // Every copy on the first link that was read was lost; all but the few returned() allows
      // in flight were read.
      CHECK(b.ports()[0].fault_seen + 64 >= kCount);
      CHECK(b.ports()[0].fault_dropped == b.ports()[0].fault_seen);
      CHECK(ch.won1 == 0);
      CHECK(ch.won2 == kCount);
      CHECK(ch.discarded == 0);
    });
  }
  SECTION("both paths clean") {
    run("tp2", "", [](Node& b, const stats::Snapshot::PathChannel& ch) {
      CHECK(ch.won1 + ch.won2 == kCount);  // two copies of each arrived
      CHECK(ch.discarded == kCount);
      CHECK(b.snapshot().delivered[static_cast<std::size_t>(MsgType::kMetric)][1] == kCount);
    });
  }
}

TEST_CASE("two paths: reliable messages through 5% loss on each path arrive once, in order, rarely sent again",
          "[paths][reliable]") {
  auto c = two_link_cluster("tp3", "drop=0.05,reorder=0.01", "drop=0.05,reorder=0.01", "drop=0.05");
  c.reliable_give_up_ms = 60'000;  // exactness, not timing, is asserted
  Node a(c, 1, test::eal());
  Node b(c, 2, test::eal());
  Received r;
  b.on_message([&](const RxMessage& m) { r.take(m); });
  wait_up(a, b);
  const unsigned free_a = a.mbufs_available();
  constexpr std::uint32_t kCount = 20'000;
  stream(a, b, kCount, true, r);
  returned(a, b, free_a, b.mbufs_available());  // kept frames, their copies: all back once acked
  REQUIRE(r.got.size() == kCount);
  for (std::uint32_t i = 0; i < kCount; ++i) REQUIRE(r.got[i] == i);
  const auto sa = a.snapshot().rel[1];
  CHECK(sa.acked == kCount);
  CHECK(sa.failed == 0);
  const auto ch = channel_of(b);
  CHECK(ch.won1 > 0);
  CHECK(ch.won2 > 0);
  // Counted for messages whose copies (first transmissions) came; one sent again after both
  // were lost goes over one path, as an ordinary reliable frame.
  CHECK(ch.won1 + ch.won2 <= kCount);
  CHECK(ch.won1 + ch.won2 > kCount * 99 / 100);
  CHECK(ch.discarded > kCount / 2);
  // A message is sent again only when both its copies (or its acks) were lost: with 5 % loss on
  // each path, far fewer than the 5 % of frames each path loses.
  const std::uint64_t lost = b.ports()[0].fault_dropped + b.ports()[1].fault_dropped;
  INFO("retransmits " << sa.retransmits << " fast " << sa.fast_retransmits << ", frames lost " << lost);
  CHECK(lost > kCount / 20);
  CHECK(sa.retransmits + sa.fast_retransmits < lost / 2);
}

TEST_CASE("two paths: a path whose lane is full is left out; the copy goes by the other", "[paths]") {
  // Node 2 never reads: once the first link's ring and lane are full, sends still go, by the
  // second link alone, and push back only when both are full.
  auto c = two_link_cluster("tp4", "", "");
  Node a(c, 1, test::eal());
  {
    Node b(c, 2, test::eal());
    wait_up(a, b);
  }  // (b stops: nothing reads either ring now)
  std::uint32_t sent = 0;
  SendStatus s = SendStatus::kOk;
  for (; sent < 100'000 && s == SendStatus::kOk; ++sent) {
    TxFrame f = a.alloc(32);
    REQUIRE(f);
    s = a.send(f, 2, MsgType::kMetric, 1, {.channel = 5, .paths = 2});
  }
  CHECK(s == SendStatus::kBackpressure);
  const auto st = a.snapshot();
  INFO("sent " << sent << ": two " << st.paths_two[1] << ", one " << st.paths_one[1]);
  CHECK(st.paths_two[1] > 0);
  CHECK(st.paths_one[1] + st.paths_two[1] + 1 == sent);  // every accepted send counted once
}
