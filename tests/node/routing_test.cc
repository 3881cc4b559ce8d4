// Routing across nodes in one process (net_ring links): heartbeats and link liveness, frames
// forwarded over several hops, routes around a failed link, broadcast and multicast trees,
// load-balanced services.
#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include "nerve/node.hpp"
#include "support.hpp"

using namespace nerve;
using namespace std::chrono_literals;

namespace {

}  // namespace

TEST_CASE("heartbeats keep a link up and measure its round trip", "[routing][heartbeat]") {
  auto c = test::ring_pair_cluster("rt1");
  Node a(c, 1, test::eal());
  Node b(c, 2, test::eal());
  const auto end = std::chrono::steady_clock::now() + 20s;
  while ((a.links()[0].heartbeats_rx < 50 || b.links()[0].heartbeats_rx < 50) && std::chrono::steady_clock::now() < end) {
    a.poll();
    b.poll();
  }
  for (Node* n : {&a, &b}) {
    const auto links = n->links();
    REQUIRE(links.size() == 1);
    INFO("node " << n->id() << " rtt " << links[0].rtt_ns << " rx " << links[0].heartbeats_rx << " downs "
                 << links[0].downs);
    CHECK(links[0].up);
    CHECK(links[0].heartbeats_rx >= 50);
    CHECK(links[0].heartbeats_tx >= 50);
    CHECK(links[0].rtt_ns > 0);
    CHECK(links[0].rtt_ns < 100'000'000);
  }
}

namespace {

// One thread steps every node of these tests: a busy machine that takes it away for a few ms
// would have the nodes declare each other down under the default (3 missed heartbeats).
// Tests that are not about detection allow 100; the failover tests keep the default.
constexpr const char* kLenient = "heartbeat_miss = 100";

// A cluster of `n` nodes (ids 1..n) joined by net_ring pairs, one per link, inside this
// process. `keys` go into [cluster]; `extra` after the nodes ([[group]], [[service]]);
// `port_keys` into every port.
config::Cluster ring_cluster(const std::string& tag, unsigned n, const std::vector<std::pair<unsigned, unsigned>>& links,
                             const std::string& keys = "", const std::string& extra = "",
                             const std::string& port_keys = "") {
  std::string t = fmt::format("[cluster]\nname = \"{}\"\n{}\n", tag, keys);
  for (unsigned id = 1; id <= n; ++id) {
    t += fmt::format("[[node]]\nid = {0}\nmac = \"02:00:00:00:{1:02x}:{0:02x}\"\nip = \"198.18.{1}.{0}\"\n"
                     "control_socket = \"/tmp/nerve-test-{2}-{0}.sock\"\nmbufs = 4095\n",
                     id, 100 + tag.size() % 50, tag);
    for (const auto& [a, b] : links) {
      if (a != id && b != id) continue;
      t += fmt::format("  [[node.port]]\n  kind = \"ring\"\n  pair = \"{}{}x{}\"\n  peers = [{}]\n", tag, a, b,
                       a == id ? b : a);
      if (!port_keys.empty()) t += "  " + port_keys + "\n";
    }
  }
  return config::load_string(t + extra);
}

// What a node did, for a failure message.
std::string describe(Node& n, std::size_t got) {
  const auto s = n.snapshot();
  std::uint64_t downs = 0, fwd = 0, dropped = 0;
  for (const auto& l : n.links()) downs += l.downs;
  for (unsigned p = 0; p < wire::kPriorities; ++p) {
    fwd += s.forwarded[p];
    dropped += s.forward_dropped[p];
  }
  std::string out = fmt::format("node {}: delivered {}, forwarded {}, dropped {}, link downs {}, alloc failed {}",
                                n.id(), got, fwd, dropped, downs, s.alloc_failed);
  for (std::size_t r = 1; r < wire::kRefusalCount; ++r)
    if (s.refused[r]) out += fmt::format(", {} {}", wire::to_string(static_cast<wire::Refusal>(r)), s.refused[r]);
  return out;
}

// A node's lane `prio`: its next hop and cost to every destination, and its reliable sessions'
// counters, for a failure message.
std::string describe_lane(Node& n, unsigned prio) {
  const auto r = n.snapshot().rel[prio];
  std::string out = fmt::format(
      "node {} lane {}: sent {}, acked {}, failed {}, retransmits {} + fast {}, window full {}, in order {}, "
      "reordered {}, duplicates {}, stale {}, acks tx {} rx {} dropped {}, no session {}; routes",
      n.id(), prio, r.sent, r.acked, r.failed, r.retransmits, r.fast_retransmits, r.window_full, r.in_order,
      r.reordered, r.duplicates, r.stale, r.acks_tx, r.acks_rx, r.acks_dropped, r.no_session);
  for (const auto& route : n.routes())
    out += fmt::format(" {}->{} ({} ns)", route.dst, route.lanes[prio].next_hop, route.lanes[prio].cost);
  for (const auto& l : n.links()) out += fmt::format("; link to {} rtt {} ns", l.peer, l.rtt_ns);
  const auto ri = n.routing();
  out += fmt::format("; tables {}, advertisements originated {}, received {}, db syncs {}, mailbox dropped {}",
                     ri.table_version, ri.lsa_originated, ri.lsa_received, ri.db_syncs, ri.mailbox_dropped);
  return out;
}

struct Fabric {
  explicit Fabric(const config::Cluster& c) {
    for (const auto& n : c.nodes) nodes.push_back(std::make_unique<Node>(c, n.id, test::eal()));
    received.resize(nodes.size() + 1);
    for (auto& n : nodes) {
      const NodeId id = n->id();
      n->on_message([this, id](RxMessage& m) {
        received[id].push_back(Got{m.source(), m.type(), m.priority(), m.header().ttl, m.header().flags,
                                   std::string(reinterpret_cast<const char*>(m.payload().data()), m.payload().size())});
      });
    }
  }
  Node& operator[](NodeId id) { return *nodes[id - 1u]; }
  void poll(std::initializer_list<NodeId> skip = {}) {
    for (auto& n : nodes)
      if (std::find(skip.begin(), skip.end(), n->id()) == skip.end()) n->poll();
    for (rte_ring* r : sinks) {
      void* got[64];
      while (const unsigned k = rte_ring_dequeue_burst(r, got, 64, nullptr))
        for (unsigned i = 0; i < k; ++i) rte_pktmbuf_free(static_cast<rte_mbuf*>(got[i]));
    }
  }
  // The ring pairs `pairs` (ring_cluster's names) lose what is sent on them from now on, as a
  // dead host's links do. A node that is only no longer polled leaves its rings to fill: each
  // holds up to 4,095 of its sender's mbufs, and heartbeats alone would empty a test node's pool
  // in a few seconds.
  void sink(std::initializer_list<std::string> pairs) {
    for (const auto& p : pairs) {
      const std::size_t had = sinks.size();
      for (unsigned q = 0; q < wire::kPriorities; ++q)
        for (const char* dir : {"ab", "ba"})
          if (rte_ring* r = rte_ring_lookup(fmt::format("nv{}{}{}", p, q, dir).c_str())) sinks.push_back(r);
      INFO("ring pair " << p);
      REQUIRE(sinks.size() - had >= 2);  // both directions of at least one queue
    }
  }
  // Polls until `done()` or the deadline; returns done().
  // Until every node has a route up to every other: the advertisements have spread.
  bool converged() {
    for (auto& n : nodes) {
      const auto routes = n->routes();
      if (routes.size() + 1 != nodes.size()) return false;
      for (const auto& r : routes)
        if (r.lanes[0].next_hop == 0) return false;
    }
    return true;
  }
  template <typename Done>
  bool until(Done&& done, std::chrono::milliseconds limit = 10s, std::initializer_list<NodeId> skip = {}) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (!done() && std::chrono::steady_clock::now() < end) poll(skip);
    return done();
  }
  SendStatus send(NodeId from, NodeId to, const std::string& text, std::uint8_t prio = 0,
                  MsgType type = MsgType::kStatus) {
    TxFrame f = (*this)[from].alloc(text.size());
    if (!f) return SendStatus::kBackpressure;
    std::memcpy(f.payload().data(), text.data(), text.size());
    return (*this)[from].send(f, to, type, prio);
  }
  struct Got {
    NodeId src;
    MsgType type;
    std::uint8_t prio, ttl, flags;
    std::string text;
  };
  std::vector<std::unique_ptr<Node>> nodes;
  std::vector<std::vector<Got>> received;  // by node id
  std::vector<rte_ring*> sinks;            // rings emptied after every poll (sink())
};

}  // namespace

namespace {

// Steps the manual clock `advance` at a time, polling `a` alone, until its first link is down,
// at most `steps` times: the clock then, or 0.
std::uint64_t poll_until_down(Clock& clock, Node& a, int steps, std::uint64_t advance) {
  for (int i = 0; i < steps; ++i) {
    clock.advance(advance);
    for (int k = 0; k < 100; ++k) a.poll();
    if (!a.links()[0].up) return clock.now_ns();
  }
  return 0;
}

}  // namespace

TEST_CASE("a silent link is down heartbeat_miss and a half periods after it was last heard, not later; a node "
          "that was itself stopped gives its neighbours one period more, no less and no more",
          "[routing][heartbeat]") {
  // On a manual clock, in steps of 50 us, with the default heartbeats (1 kHz, 3 missed).
  auto clock = Clock::manual();
  NodeOptions o;
  o.clock = clock.get();
  const auto c = ring_cluster("hbd", 2, {{1, 2}});
  REQUIRE(c.heartbeat_hz == 1000);
  REQUIRE(c.heartbeat_miss == 3);
  Node a(c, 1, test::eal(), o);
  Node b(c, 2, test::eal(), o);
  constexpr std::uint64_t kStep = 50'000;
  std::uint64_t b_sent_at = 0;  // when b last sent a heartbeat (a reads it at that step)
  auto step = [&](bool with_b) {
    clock->advance(kStep);
    const std::uint64_t tx = b.links()[0].heartbeats_tx;
    for (int i = 0; i < 100; ++i) {  // more polls than the slow path's cadence (every 64)
      if (with_b) b.poll();
      a.poll();
    }
    if (b.links()[0].heartbeats_tx != tx) b_sent_at = clock->now_ns();
  };
  auto until_down = [&](int steps, std::uint64_t advance) { return poll_until_down(*clock, a, steps, advance); };
  for (int i = 0; i < 200; ++i) step(true);  // 10 ms
  REQUIRE(a.links()[0].up);
  REQUIRE(a.links()[0].heartbeats_rx >= 8);
  REQUIRE(a.links()[0].downs == 0);

  // b stops: a declares the link down 3.5 periods after b's last heartbeat, at that step.
  std::uint64_t down_at = until_down(200, kStep);
  REQUIRE(down_at != 0);
  INFO("down " << (down_at - b_sent_at) << " ns after b's last heartbeat");
  CHECK(down_at - b_sent_at > 3'500'000);
  CHECK(down_at - b_sent_at <= 3'500'000 + kStep);
  CHECK(a.links()[0].downs == 1);

  // b runs again (late by 3.5 ms itself, which it does not hold against a): the link is up at
  // a's next read of it.
  step(true);
  CHECK(a.links()[0].up);
  for (int i = 0; i < 100; ++i) step(true);
  CHECK(b.links()[0].downs == 0);

  // Neither runs for 20 ms (the host stopped them): when they run again, each reads the
  // other's heartbeat before judging; nothing goes down.
  clock->advance(20'000'000);
  for (int i = 0; i < 200; ++i) step(true);
  CHECK(a.links()[0].up);
  CHECK(b.links()[0].up);
  CHECK(a.links()[0].downs == 1);
  CHECK(b.links()[0].downs == 0);

  // b dies while a is stopped for 10 ms: a declares it down one period after it runs again
  // (its rings hold nothing from b), not 3.5 ms after that.
  clock->advance(10'000'000);
  const std::uint64_t resumed_at = clock->now_ns();
  down_at = until_down(200, kStep);
  REQUIRE(down_at != 0);
  INFO("down " << (down_at - resumed_at) << " ns after a ran again");
  CHECK(down_at - resumed_at > 1'000'000);
  CHECK(down_at - resumed_at <= 1'000'000 + 2 * kStep);
  CHECK(a.links()[0].downs == 2);

  // b runs again; then dies while a runs late at every tick (a slow, loaded node: 1.3 ms
  // between runs): a still counts its silence, and declares it down within a few runs.
  for (int i = 0; i < 100; ++i) step(true);
  REQUIRE(a.links()[0].up);
  const std::uint64_t died_at = clock->now_ns();
  down_at = until_down(20, 1'300'000);
  REQUIRE(down_at != 0);
  INFO("down " << (down_at - died_at) << " ns after b's last run");
  CHECK(down_at - died_at <= 10'000'000);
  CHECK(a.links()[0].downs == 3);
}

TEST_CASE("a neighbour whose traffic arrives is alive, even while its heartbeats do not", "[routing][heartbeat]") {
  // b's timers do not run (it is not polled), so it sends no heartbeats; its P0 messages leave
  // at once all the same. On its own port, they keep a's link up; once they stop, the link
  // goes down 3.5 periods after the last of them.
  auto clock = Clock::manual();
  NodeOptions o;
  o.clock = clock.get();
  const auto c = ring_cluster("hbt", 2, {{1, 2}});
  Node a(c, 1, test::eal(), o);
  Node b(c, 2, test::eal(), o);
  for (int i = 0; i < 100; ++i) {
    clock->advance(50'000);
    for (int k = 0; k < 100; ++k) a.poll(), b.poll();
  }
  REQUIRE(a.links()[0].up);
  unsigned got = 0;
  a.on_message([&](const RxMessage&) { ++got; });
  const std::byte word[4]{};
  for (int i = 0; i < 200; ++i) {  // 10 ms
    clock->advance(50'000);
    REQUIRE(b.send_copy(1, MsgType::kStatus, 0, word) == SendStatus::kOk);
    for (int k = 0; k < 100; ++k) a.poll();
  }
  CHECK(got == 200);
  CHECK(a.links()[0].up);
  CHECK(a.links()[0].downs == 0);
  const std::uint64_t last = clock->now_ns();
  const std::uint64_t down_at = poll_until_down(*clock, a, 200, 50'000);
  REQUIRE(down_at != 0);
  CHECK(down_at - last > 3'500'000);
  CHECK(down_at - last <= 3'550'000);
}

TEST_CASE("a host that stops both ends of a link takes neither down, whatever the phase, even at heartbeat_miss = 1",
          "[routing][heartbeat]") {
  auto clock = Clock::manual();
  NodeOptions o;
  o.clock = clock.get();
  const auto c = ring_cluster("hbs", 2, {{1, 2}}, "heartbeat_miss = 1");
  Node a(c, 1, test::eal(), o);
  for (int i = 0; i < 100; ++i) a.poll();  // a's ticks start now, b's 350 us later
  clock->advance(350'000);
  Node b(c, 2, test::eal(), o);
  auto step = [&](std::uint64_t ns) {
    clock->advance(ns);
    for (int i = 0; i < 100; ++i) a.poll(), b.poll();
  };
  for (int i = 0; i < 100; ++i) step(50'000);
  REQUIRE(a.links()[0].up);
  REQUIRE(b.links()[0].up);
  // Stops of 5 ms (neither polled), each at another point of the heartbeat period; after each,
  // one end runs its timers before the other has run at all.
  for (int k = 0; k < 40; ++k) {
    for (int j = 0; j <= k % 20; ++j) step(50'000);  // the stop comes at another point of a period each time
    clock->advance(5'000'000);
    Node& first = k % 2 ? a : b;
    for (int i = 0; i < 100; ++i) first.poll();
    for (int j = 0; j < 7; ++j) {  // the other 350 us later: the ends' ticks stay out of phase
      clock->advance(50'000);
      for (int i = 0; i < 100; ++i) first.poll();
    }
    for (int i = 0; i < 60; ++i) step(50'000);
  }
  CHECK(a.links()[0].downs == 0);
  CHECK(b.links()[0].downs == 0);
}

TEST_CASE("a link whose port goes down (memif: its peer gone) is down at the next tick, and stays down until the "
          "port is up again",
          "[routing][heartbeat]") {
  // Lenient heartbeats (100 missed): only the port's state can take the link down here, and the
  // ring keeps carrying heartbeats while its link is marked down.
  auto c = test::ring_pair_cluster("hbc");
  Node a(c, 1, test::eal());
  Node b(c, 2, test::eal());
  auto settled = [&] { return a.links()[0].up && a.links()[0].heartbeats_rx > 5 && b.links()[0].heartbeats_rx > 5; };
  auto run_until = [&](auto&& done) {
    const auto end = std::chrono::steady_clock::now() + 10s;
    while (!done() && std::chrono::steady_clock::now() < end) a.poll(), b.poll();
    return done();
  };
  REQUIRE(run_until(settled));
  const std::uint16_t id = a.ports()[0].dpdk_port;
  const auto rx_before = a.links()[0].heartbeats_rx;
  REQUIRE(rte_eth_dev_set_link_down(id) == 0);
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE(run_until([&] { return !a.links()[0].up; }));
  INFO("down after " << std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count()
                     << " us");
  CHECK(a.links()[0].downs == 1);
  // Heartbeats still arrive (the ring does not stop), and do not bring it up.
  REQUIRE(run_until([&] { return a.links()[0].heartbeats_rx > rx_before + 20; }));
  CHECK_FALSE(a.links()[0].up);
  REQUIRE(rte_eth_dev_set_link_up(id) == 0);
  REQUIRE(run_until([&] { return a.links()[0].up; }));
  CHECK(a.links()[0].downs == 1);
  CHECK(b.links()[0].downs == 0);
}

TEST_CASE("a message crosses two hops, forwarded in place on its own lane", "[routing][forward]") {
  const auto c = ring_cluster("rtc", 3, {{1, 2}, {2, 3}}, kLenient);
  Fabric f(c);
  constexpr unsigned kPerLane = 200;
  for (std::uint8_t prio = 0; prio < wire::kPriorities; ++prio)
    for (unsigned i = 0; i < kPerLane; ++i) {
      REQUIRE(f.send(1, 3, fmt::format("m{}-{}", prio, i), prio) == SendStatus::kOk);
      f.poll();
    }
  REQUIRE(f.until([&] { return f.received[3].size() == kPerLane * wire::kPriorities; }));
  test::settle(f[1], f[2], f[3]);
  CHECK(f.received[3].size() == kPerLane * wire::kPriorities);
  CHECK(f.received[2].empty());  // node 2 only forwards
  std::map<std::uint8_t, unsigned> per_lane;
  for (const auto& g : f.received[3]) {
    CHECK(g.src == 1);
    CHECK(g.ttl == c.ttl - 1);  // one hop
    ++per_lane[g.prio];
  }
  for (std::uint8_t prio = 0; prio < wire::kPriorities; ++prio) CHECK(per_lane[prio] == kPerLane);
  const auto s2 = f[2].snapshot();
  for (std::uint8_t prio = 0; prio < wire::kPriorities; ++prio) {
    CHECK(s2.forwarded[prio] == kPerLane);
    CHECK(s2.transit[prio].count == kPerLane);  // latency to this hop recorded
  }
  CHECK(s2.forwarded_port[1] == kPerLane * wire::kPriorities);  // out of the port to 3
  // And back: 3 reaches 1 the same way.
  REQUIRE(f.send(3, 1, "back") == SendStatus::kOk);
  REQUIRE(f.until([&] { return f.received[1].size() == 1; }));
  CHECK(f.received[1][0].text == "back");
  // Routes as status shows them.
  const auto routes = f[1].routes();
  REQUIRE(routes.size() == 2);
  for (const auto& r : routes) {
    CHECK(r.lanes[0].next_hop == 2);
    CHECK(r.lanes[4].next_hop == 2);
    CHECK(r.lanes[0].metric == "delay");
    CHECK(r.lanes[4].metric == "load");
  }
}

TEST_CASE("a frame whose TTL runs out is refused where it ends, and counted", "[routing][forward]") {
  const auto c = ring_cluster("rtt", 3, {{1, 2}, {2, 3}}, std::string(kLenient) + "\nttl = 1");
  Fabric f(c);
  REQUIRE(f.send(1, 3, "far") == SendStatus::kOk);
  REQUIRE(f.until([&] { return f[2].snapshot().refused[static_cast<std::size_t>(wire::Refusal::kTtlExpired)] == 1; }));
  test::settle(f[1], f[2], f[3]);
  CHECK(f.received[3].empty());
  REQUIRE(f.send(1, 2, "near") == SendStatus::kOk);  // one hop is fine
  REQUIRE(f.until([&] { return f.received[2].size() == 1; }));
}

TEST_CASE("a node that stops is routed around: first by the alternate, then by new routes",
          "[routing][failover]") {
  // The diamond 1-2-4, 1-3-4, default heartbeats (1 kHz, down after 3 missed).
  const auto c = ring_cluster("rtd", 4, {{1, 2}, {1, 3}, {2, 4}, {3, 4}});
  Fabric f(c);
  REQUIRE(f.until([&] { return f.converged(); }));
  // Traffic from 1 to 4 flows over one of the two middle nodes.
  unsigned sent = 0;
  auto pump = [&](unsigned n, std::initializer_list<NodeId> skip = {}) {
    for (unsigned i = 0; i < n; ++i) {
      if (f.send(1, 4, fmt::format("{}", sent)) == SendStatus::kOk) ++sent;
      for (int k = 0; k < 20; ++k) f.poll(skip);
    }
  };
  // Warm-up while the link delays are measured and the tables follow them. A frame caught in
  // a transient loop as two nodes' tables disagree is refused (`loop`, `ttl_expired`), not
  // delivered: the phases below count what arrives from their own start.
  pump(200);
  f.until([&] { return f.received[4].size() == sent; }, 2s);
  // The path P0 takes once the delays have settled: the node that carries the next 50
  // messages, all of them, every one delivered.
  NodeId via = 0;
  for (int attempt = 0; attempt < 40 && via == 0; ++attempt) {
    const auto f2 = f[2].snapshot().forwarded[0], f3 = f[3].snapshot().forwarded[0];
    const auto got = f.received[4].size();
    pump(50);
    if (!f.until([&] { return f.received[4].size() - got == 50; }, 2s)) continue;
    if (f[2].snapshot().forwarded[0] - f2 == 50) via = 2;
    if (f[3].snapshot().forwarded[0] - f3 == 50) via = 3;
  }
  REQUIRE(via != 0);
  const NodeId other = via == 2 ? 3 : 2;
  // `via` stops (no longer polled, as if killed): within a few ms node 1 sends by `other`.
  const auto before = f[other].snapshot().forwarded[0];
  f.sink({fmt::format("rtd1x{}", via), fmt::format("rtd{}x4", via)});
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE(f.until([&] {
    pump(1, {via});
    return f[other].snapshot().forwarded[0] > before;
  }, 10s, {via}));
  const auto moved_after = std::chrono::steady_clock::now() - t0;
  INFO("rerouted after " << std::chrono::duration_cast<std::chrono::microseconds>(moved_after).count() << " us");
  CHECK(moved_after < 2s);
  // (Node 4's advertisement that its link to `via` is down may move the route first.)
  CHECK(f.until([&] { return !f[1].links()[via == 2 ? 0 : 1].up; }, 10s, {via}));
  // Everything sent from now on arrives.
  const auto delivered = f.received[4].size();
  const unsigned sent_before = sent;
  pump(300, {via});
  REQUIRE(f.until([&] { return f.received[4].size() - delivered == sent - sent_before; }, 10s, {via}));
  // The routing protocol converges: node 1's table no longer lists `via` for node 4.
  REQUIRE(f.until([&] {
    const auto r = f[1].routes();
    return std::any_of(r.begin(), r.end(), [&](const RouteInfo& ri) { return ri.dst == 4 && ri.lanes[0].paths == 1; });
  }, 10s, {via}));
  // `via` comes back: its link comes up again and carries traffic once more.
  f.sinks.clear();
  REQUIRE(f.until([&] { return f[1].links()[via == 2 ? 0 : 1].up; }));
}

TEST_CASE("two paths across a diamond: each message once; a middle node that stops costs nothing",
          "[routing][paths]") {
  const auto c = ring_cluster("rtp", 4, {{1, 2}, {1, 3}, {2, 4}, {3, 4}}, kLenient);
  Fabric f(c);
  REQUIRE(f.until([&] { return f.converged(); }));
  // Node 1's table has the pair: one copy by node 2, one by node 3.
  REQUIRE(f.until([&] {
    for (const auto& r : f[1].routes())
      if (r.dst == 4 && r.two_paths[1].next_hop != 0) return true;
    return false;
  }));
  for (const auto& r : f[1].routes()) {
    if (r.dst != 4) continue;
    CHECK(std::set<NodeId>{r.two_paths[0].next_hop, r.two_paths[1].next_hop} == std::set<NodeId>{2, 3});
  }
  unsigned sent = 0;
  auto pump = [&](unsigned n, std::initializer_list<NodeId> skip = {}) {
    for (unsigned i = 0; i < n;) {
      const std::string text = fmt::format("m{}", sent);
      TxFrame fr = f[1].alloc(text.size());
      REQUIRE(fr);
      std::memcpy(fr.payload().data(), text.data(), text.size());
      if (f[1].send(fr, 4, MsgType::kStatus, 0, {.channel = 3, .paths = 2}) == SendStatus::kOk) ++sent, ++i;
      for (int k = 0; k < 10; ++k) f.poll(skip);
    }
  };
  auto counts = [&] {
    for (const auto& ch : f[4].snapshot().paths)
      if (!ch.other && ch.src == 1 && ch.channel == 3) return ch;
    return stats::Snapshot::PathChannel{};
  };
  // P0 routes by measured delay: a thread descheduled for a few ms can make a middle node's way
  // to node 4 through node 1 look shorter for a moment, and send its copy back to the source,
  // which refuses it (`loop`, docs/architecture.md "Two paths": what it does not promise).
  const auto loops = [&] { return f[1].snapshot().refused[static_cast<std::size_t>(wire::Refusal::kLoop)]; };
  const auto loops_before = loops();
  pump(300);
  // Every message once, and every second copy come and discarded or, sent back, refused by the
  // source (however slowly this thread steps the four nodes).
  const bool both = f.until([&] {
    return f.received[4].size() == sent && counts().discarded + (loops() - loops_before) == 300;
  }, 20s);
  auto account = [&] {
    const auto ch = counts();
    std::string out = describe(f[2], 0) + "; " + describe(f[3], 0) + "; " + describe(f[4], f.received[4].size()) +
                      fmt::format(" of {} sent; won {}+{}, discarded {}; node 1 refused {} as loops", sent, ch.won1,
                                  ch.won2, ch.discarded, loops());
    for (NodeId n = 1; n <= 4; ++n) {
      const auto s = f[n].snapshot();
      out += fmt::format("\nnode {}: rx {} tx {} fwd by port {}/{} backpressure {} lane full {} deferred {} two {} one {}",
                         n, s.rx_frames, s.tx_frames, s.forwarded_port[0], s.forwarded_port[1], s.tx_backpressure,
                         s.rx_lane_full, s.rx_deferred, s.paths_two[0], s.paths_one[0]);
    }
    return out;
  };
  INFO(account());
  REQUIRE(both);
  CHECK(f.received[4].size() == sent);  // once each
  for (unsigned i = 0; i < sent; ++i) REQUIRE(f.received[4][i].text == fmt::format("m{}", i));
  CHECK(f[2].snapshot().forwarded[0] >= 300);  // both middle nodes carried a copy of each
  CHECK(f[3].snapshot().forwarded[0] >= 300);
  CHECK(counts().won1 + counts().won2 == 300);
  // Node 2 stops (no longer polled, as if killed): what it held is lost, yet every message
  // arrives, by node 3, with no gap, before and after node 1 notices.
  const std::size_t before = f.received[4].size();
  const unsigned sent_before = sent;
  f.sink({"rtp1x2", "rtp2x4"});
  pump(300, {2});
  const bool all = f.until([&] { return f.received[4].size() - before == sent - sent_before; }, 10s, {2});
  INFO(account());
  REQUIRE(all);
  for (std::size_t i = before; i < f.received[4].size(); ++i)
    REQUIRE(f.received[4][i].text == fmt::format("m{}", i));
}

TEST_CASE("a broadcast reaches every other node exactly once", "[routing][broadcast]") {
  // A ring of six with a chord: several paths between most pairs.
  const auto c = ring_cluster("rtb", 6, {{1, 2}, {2, 3}, {3, 4}, {4, 5}, {5, 6}, {6, 1}, {2, 5}}, kLenient);
  Fabric f(c);
  REQUIRE(f.until([&] { return f.converged(); }));
  constexpr unsigned kCount = 300;
  for (NodeId src : {1, 4}) {
    for (auto& r : f.received) r.clear();
    for (unsigned i = 0; i < kCount; ++i) {
      TxFrame fr = f[src].alloc(8);
      REQUIRE(fr);
      std::memcpy(fr.payload().data(), &i, 4);
      REQUIRE(f[src].broadcast(fr, MsgType::kAlert, static_cast<std::uint8_t>(i % 5)) == SendStatus::kOk);
      f.poll();
    }
    const bool all = f.until([&] {
      for (NodeId id = 1; id <= 6; ++id)
        if (id != src && f.received[id].size() < kCount) return false;
      return true;
    });
    for (NodeId id = 1; id <= 6; ++id) UNSCOPED_INFO(describe(f[id], f.received[id].size()));
    REQUIRE(all);
    test::settle(f[1], f[2], f[3], f[4], f[5], f[6]);
    for (NodeId id = 1; id <= 6; ++id) {
      INFO("node " << id << " from " << src);
      CHECK(f.received[id].size() == (id == src ? 0u : kCount));
      for (const auto& g : f.received[id]) CHECK((g.flags & wire::flag::kBroadcast) != 0);
    }
  }
  for (NodeId id = 1; id <= 6; ++id) CHECK(f[id].snapshot().refused[static_cast<std::size_t>(wire::Refusal::kDuplicate)] == 0);
}

TEST_CASE("a multicast reaches its members once, and a node that joins at run time", "[routing][multicast]") {
  const auto c = ring_cluster("rtm", 5, {{1, 2}, {2, 3}, {3, 4}, {4, 5}, {1, 5}}, kLenient,
                              "[[group]]\nname = \"ops\"\nid = 40\nmembers = [3, 5]\n");
  Fabric f(c);
  REQUIRE(f.until([&] { return f.converged(); }));
  auto send_round = [&](unsigned n) {
    for (unsigned i = 0; i < n; ++i) {
      TxFrame fr = f[1].alloc(4);
      REQUIRE(fr);
      REQUIRE(f[1].multicast(fr, 40, MsgType::kStatus, 2) == SendStatus::kOk);
      f.poll();
    }
  };
  send_round(100);
  REQUIRE(f.until([&] { return f.received[3].size() == 100 && f.received[5].size() == 100; }));
  test::settle(f[1], f[2], f[3], f[4], f[5]);
  CHECK(f.received[2].empty());
  CHECK(f.received[4].empty());
  CHECK(f.received[3].size() == 100);
  CHECK(f.received[5].size() == 100);
  CHECK(f[3].groups() == std::vector<std::uint16_t>{40});
  // Node 4 joins: once its advertisement has spread, it gets the group's messages too.
  REQUIRE(f[4].join(40));
  CHECK_FALSE(f[4].join(41));
  // Every node's tree must know it before a message is sent, and every datapath must route by
  // that table: a copy is never held back for a member that joins later.
  std::array<std::uint64_t, 6> knows{};  // per node: a table version that has node 4 as a member
  REQUIRE(f.until([&] {
    bool all = true;
    for (NodeId id = 1; id <= 5; ++id) {
      if (knows[id] == 0 && f[id].members(40) == std::vector<NodeId>{3, 4, 5}) knows[id] = f[id].routing().table_version;
      all = all && knows[id] != 0 && f[id].routing().table_in_use >= knows[id];
    }
    return all;
  }));
  for (auto& r : f.received) r.clear();
  send_round(50);
  const bool all = f.until([&] { return f.received[3].size() == 50 && f.received[4].size() == 50 && f.received[5].size() == 50; });
  std::string state;
  for (NodeId id = 1; id <= 5; ++id) state += describe(f[id], f.received[id].size()) + "\n";
  INFO(state);
  REQUIRE(all);
  test::settle(f[1], f[2], f[3], f[4], f[5]);
  CHECK(f.received[2].empty());
  CHECK(f.received[4].size() == 50);
  // A multicast to a group the cluster file does not have is refused at once.
  TxFrame fr = f[1].alloc(4);
  CHECK(f[1].multicast(fr, 99, MsgType::kStatus, 2) == SendStatus::kBadArgument);
}

namespace {

// Node 1 in the middle of instances 2, 3 and 4 (a star), with three services over them.
config::Cluster service_cluster(const std::string& tag, std::uint32_t timeout_ms = 1000, const std::string& keys = kLenient,
                                const std::string& port_keys = "") {
  return ring_cluster(tag, 4, {{1, 2}, {1, 3}, {1, 4}}, keys,
                      fmt::format("[[service]]\nname = \"rr\"\nid = 7\ninstances = [2, 3, 4]\npolicy = \"round_robin\"\n"
                                  "timeout_ms = {0}\n"
                                  "[[service]]\nname = \"kv\"\nid = 8\ninstances = [2, 3, 4]\npolicy = \"hash\"\n"
                                  "timeout_ms = {0}\n"
                                  "[[service]]\nname = \"lo\"\nid = 9\ninstances = [2, 3, 4]\n"
                                  "policy = \"least_outstanding\"\ntimeout_ms = {0}\n",
                                  timeout_ms),
                      port_keys);
}

// The instances answer every request at once (node 1's handler records what comes back).
void answer_requests(Fabric& f, std::initializer_list<NodeId> ids) {
  for (const NodeId id : ids) {
    Node& n = f[id];
    n.on_message([&n, &f, id](RxMessage& m) {
      f.received[id].push_back(Fabric::Got{m.source(), m.type(), m.priority(), m.header().ttl, m.header().flags, ""});
      if (m.type() != MsgType::kCommand) return;
      TxFrame r = n.alloc(2);
      REQUIRE(r);
      REQUIRE(n.respond(m, r) == SendStatus::kOk);
    });
  }
}

std::map<NodeId, std::uint64_t> sent_per_instance(Node& n, std::uint16_t service) {
  std::map<NodeId, std::uint64_t> out;
  for (const auto& s : n.services())
    if (s.id == service)
      for (const auto& i : s.instances) out[i.node] = i.sent;
  return out;
}

SendStatus send_to_service(Node& n, std::uint16_t service, MsgType type, std::uint64_t key = 0,
                           NodeId* chosen = nullptr) {
  TxFrame fr = n.alloc(4);
  if (!fr) return SendStatus::kBackpressure;
  SendOptions o;
  o.key = key;
  return n.send_service(fr, service, type, 1, o, chosen);
}

}  // namespace

TEST_CASE("a service spreads requests over its instances by policy, and every request is answered",
          "[routing][service]") {
  const auto c = service_cluster("rts");
  Fabric f(c);
  answer_requests(f, {2, 3, 4});
  REQUIRE(f.until([&] {
    const auto s = f[1].services();
    return std::all_of(s[0].instances.begin(), s[0].instances.end(), [](const auto& i) { return i.live; });
  }));

  SECTION("round robin: each instance in turn") {
    for (unsigned i = 0; i < 300; ++i) {
      REQUIRE(send_to_service(f[1], 7, MsgType::kCommand) == SendStatus::kOk);
      f.poll();
    }
    REQUIRE(f.until([&] { return f.received[2].size() + f.received[3].size() + f.received[4].size() == 300; }));
    CHECK(f.received[2].size() == 100);
    CHECK(f.received[3].size() == 100);
    CHECK(f.received[4].size() == 100);
    REQUIRE(f.until([&] {
      const auto services = f[1].services();  // a range-for over a temporary's member dangles
      for (const auto& i : services[0].instances)
        if (i.answered != 100 || i.outstanding != 0) return false;
      return true;
    }));
    const auto services = f[1].services();
    for (const auto& i : services[0].instances) {
      CHECK(i.live);
      CHECK(i.requests == 100);
      CHECK(i.timed_out + i.failed_down == 0);
    }
  }

  SECTION("hash: one key, one instance; many keys spread") {
    std::map<std::uint64_t, NodeId> where;
    for (std::uint64_t key = 1; key <= 300; ++key) {
      NodeId chosen = 0;
      REQUIRE(send_to_service(f[1], 8, MsgType::kStatus, key, &chosen) == SendStatus::kOk);
      where[key] = chosen;
      f.poll();
    }
    for (std::uint64_t key = 1; key <= 300; key += 7) {
      NodeId again = 0;
      REQUIRE(send_to_service(f[1], 8, MsgType::kStatus, key, &again) == SendStatus::kOk);
      CHECK(again == where[key]);
      f.poll();
    }
    std::map<NodeId, unsigned> per;
    for (const auto& [k, n] : where) ++per[n];
    for (const NodeId id : {2, 3, 4}) {
      INFO("instance " << id << " has " << per[id] << " of 300 keys");
      CHECK(per[id] > 60);   // expected 100; 60 is 5 standard deviations below
      CHECK(per[id] < 140);
    }
  }

  SECTION("least outstanding: a slow instance gets fewer requests") {
    // Instance 2 answers only every fifth poll, one request at a time.
    std::deque<RxMessage> held;
    f[2].on_message([&](RxMessage& m) {
      f.received[2].push_back(Fabric::Got{m.source(), m.type(), m.priority(), 0, 0, ""});
      held.push_back(std::move(m));
    });
    unsigned tick = 0;
    std::size_t most_held = 0;
    auto slow_answer = [&] {
      most_held = std::max(most_held, held.size());
      if (++tick % 5 != 0 || held.empty()) return;
      TxFrame r = f[2].alloc(2);
      REQUIRE(r);
      REQUIRE(f[2].respond(held.front(), r) == SendStatus::kOk);
      held.pop_front();
    };
    for (unsigned i = 0; i < 600; ++i) {
      const SendStatus st = send_to_service(f[1], 9, MsgType::kCommand);
      REQUIRE((st == SendStatus::kOk || st == SendStatus::kBackpressure));
      f.poll();
      slow_answer();
    }
    const auto per = sent_per_instance(f[1], 9);
    // The slow instance can answer 120 in 600 polls: it is sent about that, not a third (200),
    // and its queue stays short (round robin would leave 80 waiting).
    INFO("sent: 2 (slow) " << per.at(2) << ", 3 " << per.at(3) << ", 4 " << per.at(4) << "; most held " << most_held);
    CHECK(per.at(2) < 160);
    CHECK(per.at(2) < per.at(3));
    CHECK(per.at(2) < per.at(4));
    CHECK(most_held <= 20);
    // Every request is answered in the end.
    REQUIRE(f.until([&] {
      slow_answer();
      const auto s = f[1].services()[2];
      return std::all_of(s.instances.begin(), s.instances.end(), [](const auto& i) { return i.outstanding == 0; });
    }));
  }

  SECTION("an unknown service is refused; a message is not a tracked request") {
    TxFrame fr = f[1].alloc(4);
    CHECK(f[1].send_service(fr, 99, MsgType::kCommand, 1) == SendStatus::kBadArgument);
    CHECK(fr);
    REQUIRE(send_to_service(f[1], 7, MsgType::kMetric) == SendStatus::kOk);
    const auto s = f[1].services()[0];
    std::uint64_t sent = 0, requests = 0;
    for (const auto& i : s.instances) {
      sent += i.sent;
      requests += i.requests;
    }
    CHECK(sent == 1);
    CHECK(requests == 0);
  }
}

TEST_CASE("reliable service requests through lossy links: every one answered, reliably both ways",
          "[routing][service][reliable]") {
  // Every port drops 5 % of lane 1 (heartbeats, on P0, are spared): sent unreliably, about one
  // request or response in ten would be lost and time out; reliably, each is sent again.
  const auto c = service_cluster("rtr", 10'000, kLenient, "fault = \"drop=0.05,lanes=1,seed=11\"");
  Fabric f(c);
  answer_requests(f, {2, 3, 4});
  std::vector<ServiceFailure> failures;
  std::vector<DeliveryFailure> lost;
  f[1].on_service_failure([&](const ServiceFailure& e) { failures.push_back(e); });
  f[1].on_delivery_failure([&](const DeliveryFailure& e) { lost.push_back(e); });
  REQUIRE(f.until([&] {
    const auto s = f[1].services()[0];
    return std::all_of(s.instances.begin(), s.instances.end(), [](const auto& i) { return i.live; });
  }));
  constexpr unsigned kRequests = 300;
  for (unsigned i = 0; i < kRequests;) {
    TxFrame fr = f[1].alloc(4);
    REQUIRE(fr);
    const SendStatus st = f[1].send_service(fr, 7, MsgType::kCommand, 1, {.reliable = true});
    if (st == SendStatus::kOk) ++i;
    else REQUIRE(st == SendStatus::kBackpressure);
    f.poll();
  }
  auto answered = [&] {
    std::uint64_t n = 0;
    const auto services = f[1].services();  // (a range-for over a temporary's member would dangle)
    for (const auto& i : services[0].instances) n += i.answered;
    return n;
  };
  const bool all = f.until([&] { return answered() == kRequests; }, 30s);
  INFO("answered " << answered() << ", service failures " << failures.size() << ", delivery failures " << lost.size()
                   << ", retransmits " << f[1].snapshot().rel[1].retransmits << " + fast "
                   << f[1].snapshot().rel[1].fast_retransmits);
  REQUIRE(all);
  CHECK(failures.empty());
  CHECK(lost.empty());
  // The requests went reliably, and what the links lost was sent again.
  const auto r1 = f[1].snapshot().rel[1];
  CHECK(r1.sent == kRequests);
  CHECK(r1.retransmits + r1.fast_retransmits > 0);
  // Every instance took requests (reliably) and answered them reliably (a response to a
  // reliable request is one). The shares need not be equal: an instance whose credit is used
  // up pushes back, and the next try picks another.
  std::uint64_t requests = 0, responses = 0;
  for (NodeId id : {2, 3, 4}) {
    CHECK(!f.received[id].empty());
    for (const auto& g : f.received[id]) CHECK((g.flags & wire::flag::kReliable) != 0);
    requests += f.received[id].size();
    responses += f[id].snapshot().rel[1].sent;
  }
  CHECK(requests == kRequests);  // each once
  CHECK(responses == kRequests);
}

TEST_CASE("a reliable broadcast and multicast through lossy links: every recipient gets each message once, in order",
          "[routing][broadcast][multicast][reliable]") {
  // A ring of five with a chord; every port drops 5 % of lane 2 (heartbeats, on P0, are spared).
  const auto c = ring_cluster("rtrb", 5, {{1, 2}, {2, 3}, {3, 4}, {4, 5}, {5, 1}, {2, 4}}, kLenient,
                              "[[group]]\nname = \"ops\"\nid = 40\nmembers = [3, 5]\n",
                              "fault = \"drop=0.05,lanes=2,seed=7\"");
  Fabric f(c);
  std::vector<DeliveryFailure> lost;
  f[1].on_delivery_failure([&](const DeliveryFailure& e) { lost.push_back(e); });
  REQUIRE(f.until([&] { return f.converged(); }));
  const unsigned free1 = f[1].mbufs_available();
  // Sends message i (its number as payload) reliably to every node or to group 40; a push-back
  // (a recipient out of credit) sends nothing, and the frame stays the caller's to send again.
  unsigned pushed_back = 0;
  auto send_all = [&](std::uint32_t first, unsigned n, bool group) {
    for (std::uint32_t i = first; i < first + n;) {
      TxFrame fr = f[1].alloc(4);
      REQUIRE(fr);
      std::memcpy(fr.payload().data(), &i, 4);
      const SendStatus st = group ? f[1].multicast(fr, 40, MsgType::kStatus, 2, {.reliable = true})
                                  : f[1].broadcast(fr, MsgType::kStatus, 2, {.reliable = true});
      if (st == SendStatus::kOk) {
        ++i;
      } else {
        REQUIRE(st == SendStatus::kBackpressure);
        REQUIRE(fr);
        ++pushed_back;
      }
      f.poll();
    }
  };
  // What node `id` received from node 1 on lane 2: the message numbers, in arrival order.
  auto numbers = [&](NodeId id) {
    std::vector<std::uint32_t> out;
    for (const auto& g : f.received[id]) {
      if (g.src != 1 || g.prio != 2 || g.text.size() != 4 || (g.flags & wire::flag::kReliable) == 0) continue;
      std::uint32_t i = 0;
      std::memcpy(&i, g.text.data(), 4);
      out.push_back(i);
    }
    return out;
  };
  std::vector<std::uint32_t> broadcast(600), group(200);
  for (std::uint32_t i = 0; i < 600; ++i) broadcast[i] = i;
  for (std::uint32_t i = 0; i < 200; ++i) group[i] = 600 + i;
  send_all(0, 600, false);  // unpaced: credit paces it
  send_all(600, 200, true);
  auto members = [&](NodeId id) { return id == 3 || id == 5; };
  const bool all = f.until([&] {
    for (NodeId id = 2; id <= 5; ++id)
      if (numbers(id).size() < (members(id) ? 800u : 600u)) return false;
    return true;
  }, 30s);
  for (NodeId id = 1; id <= 5; ++id) {
    UNSCOPED_INFO(describe(f[id], f.received[id].size()));
    UNSCOPED_INFO(describe_lane(f[id], 2) << "; got " << numbers(id).size());
  }
  REQUIRE(all);
  test::settle(f[1], f[2], f[3], f[4], f[5]);
  for (NodeId id = 2; id <= 5; ++id) {
    INFO("node " << id);
    auto want = broadcast;
    if (members(id)) want.insert(want.end(), group.begin(), group.end());
    CHECK(numbers(id) == want);  // each once, in the order sent
  }
  CHECK(numbers(1).empty());
  CHECK(lost.empty());
  const auto r = f[1].snapshot().rel[2];
  CHECK(r.sent == 600 * 4 + 200 * 2);  // one reliable copy per recipient
  CHECK(r.retransmits + r.fast_retransmits > 0);  // the links' losses were sent again
  INFO("pushed back " << pushed_back);
  // Every copy acknowledged: node 1's kept frames and shared payloads are back in its pool.
  CHECK(f.until([&] { return f[1].mbufs_available() + 64 >= free1; }));

  SECTION("a recipient that stops is reported for each copy it did not take, and dropped as unreachable") {
    // Node 4 stops polling. Node 1 keeps broadcasting: until 4 is declared down, copies to it
    // are sent; once its credit is spent, the broadcast waits for it (all or nothing); once it
    // is down (100 missed heartbeats) it is no longer a recipient, and every copy it did not
    // acknowledge is reported failed when given up (reliable_give_up_ms).
    for (auto& g : f.received) g.clear();
    const auto sent_before = f[1].snapshot().rel[2].sent;
    std::uint32_t i = 1000;
    const auto end = std::chrono::steady_clock::now() + 30s;
    while (i < 1400 && std::chrono::steady_clock::now() < end) {
      TxFrame fr = f[1].alloc(4);
      REQUIRE(fr);
      std::memcpy(fr.payload().data(), &i, 4);
      const SendStatus st = f[1].broadcast(fr, MsgType::kStatus, 2, {.reliable = true});
      if (st == SendStatus::kOk) ++i;
      else REQUIRE(st == SendStatus::kBackpressure);
      f.poll({4});
    }
    REQUIRE(i == 1400);
    auto taken = [&] { return numbers(2).size() + numbers(3).size() + numbers(5).size(); };
    const auto copies = [&] { return f[1].snapshot().rel[2].sent - sent_before; };
    // Every copy is delivered or, to node 4, reported: nothing in between.
    REQUIRE(f.until([&] { return taken() + lost.size() == copies(); }, 30s, {4}));
    const auto r1 = f[1].snapshot().rel[2];
    INFO("copies " << copies() << ", delivered " << taken() << ", reported " << lost.size() << "; node 1 lane 2: "
                   << r1.retransmits << " timer + " << r1.fast_retransmits << " fast retransmits, " << r1.failed
                   << " given up; " << describe_lane(f[1], 2));
    CHECK(!lost.empty());
    for (const auto& e : lost) CHECK(e.dst == 4);
    for (NodeId id : {2, 3, 5}) {
      std::vector<std::uint32_t> want(400);
      for (std::uint32_t k = 0; k < 400; ++k) want[k] = 1000 + k;
      CHECK(numbers(id) == want);
    }
  }
}

TEST_CASE("requests to an instance that goes down or does not answer are reported failed, never lost",
          "[routing][service]") {
  const auto c = service_cluster("rtf", 300, "");  // detection at the default: 3 ms
  Fabric f(c);
  answer_requests(f, {3, 4});
  f[2].on_message([&](RxMessage&) { f.received[2].push_back({}); });  // receives, never answers
  std::vector<ServiceFailure> failures;
  f[1].on_service_failure([&](const ServiceFailure& e) { failures.push_back(e); });
  REQUIRE(f.until([&] {
    const auto s = f[1].services()[0];
    return std::all_of(s.instances.begin(), s.instances.end(), [](const auto& i) { return i.live; });
  }));

  // Round robin over 2, 3, 4: instance 2's requests time out (300 ms), the rest are answered.
  for (unsigned i = 0; i < 30; ++i) {
    REQUIRE(send_to_service(f[1], 7, MsgType::kCommand) == SendStatus::kOk);
    f.poll();
  }
  REQUIRE(f.until([&] { return failures.size() == 10; }, 10s));
  for (const auto& e : failures) {
    CHECK(e.service == 7);
    CHECK(e.instance == 2);
    CHECK(e.timed_out);
  }
  auto inst = f[1].services()[0].instances;
  CHECK(inst[0].timed_out == 10);
  CHECK(inst[1].answered == 10);
  CHECK(inst[2].answered == 10);

  // Instance 3 stops (no longer polled): its open requests fail as soon as its link is down,
  // well before their timeout, and no request goes to it after.
  failures.clear();
  f[3].on_message([&](RxMessage&) {});
  for (unsigned i = 0; i < 3; ++i) REQUIRE(send_to_service(f[1], 7, MsgType::kCommand) == SendStatus::kOk);
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE(f.until([&] {
    return std::any_of(failures.begin(), failures.end(), [](const ServiceFailure& e) { return e.instance == 3; });
  }, 10s, {3}));
  const auto took = std::chrono::steady_clock::now() - t0;
  for (const auto& e : failures)
    if (e.instance == 3) CHECK_FALSE(e.timed_out);
  INFO("failed after " << std::chrono::duration_cast<std::chrono::microseconds>(took).count() << " us");
  CHECK(f[1].services()[0].instances[1].live == false);
  CHECK(f[1].services()[0].instances[1].failed_down == 1);
  const auto to3 = f[1].services()[0].instances[1].sent;
  for (unsigned i = 0; i < 20; ++i) {
    NodeId chosen = 0;
    REQUIRE(send_to_service(f[1], 7, MsgType::kCommand, 0, &chosen) == SendStatus::kOk);
    CHECK(chosen != 3);
    f.poll({3});
  }
  CHECK(f[1].services()[0].instances[1].sent == to3);
}
