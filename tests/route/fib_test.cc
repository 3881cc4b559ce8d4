// Route computation on generated topologies (chain, ring, leaf-spine, random; up to 1,024
// nodes): shortest paths against a brute-force reference, loop-free forwarding when every node
// follows its own table, loop-free alternates, equal-cost spreading, static routes, and
// broadcast/multicast trees that give every node exactly one copy.
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <set>

#include "route/fib.hpp"
#include "route/generate.hpp"

using namespace nerve;
using namespace nerve::route;

namespace {

constexpr unsigned kDelay = 0, kLoad = 1;

// Every node's view of its own links, from a converged database: one slot per neighbour.
std::vector<LocalLink> local_links(const Lsdb& db, std::uint32_t u) {
  std::vector<LocalLink> out;
  const Topology& t = db.topology();
  for (const std::uint32_t v : t.links(u)) {
    const LinkAdvert* a = db.advert(u, v);
    out.push_back(LocalLink{v, a && a->up, a ? a->delay_ns : 0, a ? a->load : std::uint8_t{0}});
  }
  return out;
}

struct Net {
  Net(const gen::Generated& g, std::uint32_t max_delay, std::uint8_t max_load, std::uint64_t seed,
      std::vector<std::uint64_t> member_of = {})
      : topo(g.ids, g.links), db(topo) {
    lsas = gen::advertise(topo, db, max_delay, max_load, seed);
    if (!member_of.empty()) {
      for (std::uint32_t u = 0; u < topo.size(); ++u) {
        lsas[u].groups = member_of[u];
        lsas[u].seq = 2;
        db.apply(lsas[u], 0);
      }
    }
    groups = member_of.empty() ? std::vector<std::uint64_t>(topo.size(), 0) : member_of;
  }
  void build_all(bool trees = true) {
    fibs.clear();
    links.clear();
    for (std::uint32_t u = 0; u < topo.size(); ++u) {
      links.push_back(local_links(db, u));
      FibInputs in{db, u, links.back(), {}, groups, groups[u], trees};
      fibs.push_back(build_fib(in, 1));
    }
  }
  // The peer of u's link slot s.
  std::uint32_t peer(std::uint32_t u, int s) const { return links[u][static_cast<std::size_t>(s)].peer; }

  Topology topo;
  Lsdb db;
  std::vector<Lsa> lsas;
  std::vector<std::uint64_t> groups;
  std::vector<std::vector<LocalLink>> links;
  std::vector<std::unique_ptr<Fib>> fibs;
};

// Floyd-Warshall over the same edge costs as Graph.
std::vector<std::vector<std::uint64_t>> all_pairs(const Lsdb& db, unsigned metric) {
  const Topology& t = db.topology();
  const std::uint32_t n = t.size();
  std::vector<std::vector<std::uint64_t>> d(n, std::vector<std::uint64_t>(n, kInf));
  for (std::uint32_t u = 0; u < n; ++u) {
    d[u][u] = 0;
    for (const std::uint32_t v : t.links(u)) {
      const LinkAdvert* a = db.advert(u, v);
      const LinkAdvert* b = db.advert(v, u);
      if (!a || !a->up || !b || !b->up) continue;
      d[u][v] = metric == kDelay ? kHopCostNs + a->delay_ns : kLoadBase + kLoadStep * a->load;
    }
  }
  for (std::uint32_t k = 0; k < n; ++k)
    for (std::uint32_t i = 0; i < n; ++i) {
      if (d[i][k] == kInf) continue;
      for (std::uint32_t j = 0; j < n; ++j)
        if (d[k][j] != kInf && d[i][k] + d[k][j] < d[i][j]) d[i][j] = d[i][k] + d[k][j];
    }
  return d;
}

// Follows next hops from src to dst, every node using its own table; returns the path cost, or
// kInf on a loop or a dead end.
std::uint64_t walk(const Net& net, std::uint32_t src, std::uint32_t dst, unsigned metric, std::uint32_t flow,
                   std::uint64_t all_up = ~0ull) {
  std::uint64_t cost = 0;
  std::uint32_t at = src;
  for (std::uint32_t hops = 0; hops <= net.topo.size(); ++hops) {
    if (at == dst) return cost;
    const int s = net.fibs[at]->hops(dst, metric).pick(flow, all_up);
    if (s < 0) return kInf;
    cost += link_cost(net.links[at][static_cast<std::size_t>(s)], metric);
    at = net.peer(at, s);
  }
  return kInf;
}

}  // namespace

TEST_CASE("spf: distances equal a brute-force reference on random graphs", "[route][spf]") {
  for (std::uint64_t seed = 1; seed <= 6; ++seed) {
    Net net(gen::random(40, 3.0, seed), 50'000, 8, seed);
    for (unsigned m : {kDelay, kLoad}) {
      const auto ref = all_pairs(net.db, m);
      for (std::uint32_t u = 0; u < net.topo.size(); u += 7) {
        const auto links = local_links(net.db, u);
        const Graph g(net.db, u, links);
        SpfResult r;
        spf(g, u, m, true, r);
        for (std::uint32_t v = 0; v < net.topo.size(); ++v) REQUIRE(r.dist[v] == ref[u][v]);
        // Parents lie on shortest paths.
        for (std::uint32_t v = 0; v < net.topo.size(); ++v)
          if (v != u) REQUIRE(ref[u][r.parent[v]] + ref[r.parent[v]][v] == ref[u][v]);
      }
    }
  }
}

TEST_CASE("fib: every node following its own table reaches every destination on a shortest path",
          "[route][fib]") {
  struct Case {
    const char* name;
    gen::Generated g;
  };
  const Case cases[] = {{"chain", gen::chain(12)},
                        {"ring", gen::ring(13)},
                        {"leaf-spine", gen::leaf_spine(2, 3, 2)},
                        {"random", gen::random(60, 3.5, 11)}};
  for (const Case& c : cases) {
    INFO(c.name);
    Net net(c.g, 20'000, 6, 3);
    net.build_all(false);
    for (unsigned m : {kDelay, kLoad}) {
      const auto ref = all_pairs(net.db, m);
      for (std::uint32_t s = 0; s < net.topo.size(); ++s)
        for (std::uint32_t d = 0; d < net.topo.size(); ++d) {
          if (s == d) continue;
          REQUIRE(net.fibs[s]->cost(d, m) == ref[s][d]);
          for (std::uint32_t flow : {0u, 1u, 7u, 12345u}) REQUIRE(walk(net, s, d, m, flow) == ref[s][d]);
        }
    }
  }
}

TEST_CASE("fib: loop-free alternates never send a frame back", "[route][fib]") {
  for (const auto& g : {gen::ring(9), gen::random(50, 4.0, 5), gen::leaf_spine(3, 4, 1)}) {
    Net net(g, 10'000, 0, 21);
    net.build_all(false);
    std::size_t alternates = 0;
    for (std::uint32_t s = 0; s < net.topo.size(); ++s)
      for (std::uint32_t d = 0; d < net.topo.size(); ++d) {
        if (s == d) continue;
        const HopSet& hs = net.fibs[s]->hops(d, kDelay);
        REQUIRE(hs.n >= 1);
        for (unsigned k = 1; k < hs.n; ++k) {
          // The neighbour an alternate leads to must not route d back through s.
          const std::uint32_t n = net.peer(s, hs.slot[k]);
          if (n == d) continue;
          const int back = net.fibs[n]->hops(d, kDelay).pick(0, ~0ull);
          REQUIRE(back >= 0);
          REQUIRE(net.peer(n, back) != s);
          ++alternates;
        }
      }
    CHECK(alternates > 0);
  }
}

TEST_CASE("fib: a failed link is routed around at once by the alternates, then by new routes",
          "[route][fib]") {
  // The diamond 1-2-4, 1-3-4: the path over 2 is faster (100 ns links), over 3 slower (500 ns).
  gen::Generated g{{1, 2, 3, 4}, {{1, 2}, {1, 3}, {2, 4}, {3, 4}}};
  Net net(g, 0, 0, 1);
  auto set_delay = [&](std::uint16_t a, std::uint16_t b, std::uint32_t ns, bool up = true) {
    for (std::uint16_t u : {a, b}) {
      Lsa& l = net.lsas[net.topo.index(u)];
      for (auto& adv : l.links)
        if (adv.nbr == (u == a ? b : a)) {
          adv.delay_ns = ns;
          adv.up = up;
        }
      ++l.seq;
      net.db.apply(l, 0);
    }
  };
  set_delay(1, 2, 100);
  set_delay(2, 4, 100);
  set_delay(1, 3, 500);
  set_delay(3, 4, 500);
  net.build_all(false);
  const std::uint32_t a = net.topo.index(1), d = net.topo.index(4);
  const HopSet& hs = net.fibs[a]->hops(d, kDelay);
  REQUIRE(hs.n == 2);
  CHECK(net.topo.id(net.peer(a, hs.slot[0])) == 2);
  CHECK(net.topo.id(net.peer(a, hs.slot[1])) == 3);  // 3 reaches 4 without coming back: an LFA
  // The link 1-2 goes down at 1: the datapath clears its bit; the table (unchanged) gives the
  // alternate at once.
  const std::uint64_t up = ~0ull & ~(std::uint64_t{1} << hs.slot[0]);
  CHECK(net.topo.id(net.peer(a, hs.pick(0, up))) == 3);
  // Then both ends advertise it down and every table is rebuilt: 1 reaches 4 over 3.
  set_delay(1, 2, 100, false);
  net.build_all(false);
  CHECK(walk(net, a, d, kDelay, 0) == 2 * (kHopCostNs + 500));
  CHECK(walk(net, d, a, kDelay, 0) == 2 * (kHopCostNs + 500));
  CHECK(walk(net, net.topo.index(2), a, kDelay, 0) == 3 * kHopCostNs + 100 + 500 + 500);
}

TEST_CASE("fib: in a ring, a neighbour whose path comes back is no alternate", "[route][fib]") {
  // RFC 5286 coverage is partial: from 0 to its neighbour 1 in an even ring, 5's shortest path
  // to 1 is through 0 itself, so it is no loop-free alternate; routes move once the failure is
  // advertised.
  Net net(gen::ring(6), 0, 0, 1);
  net.build_all(false);
  const HopSet& hs = net.fibs[0]->hops(1, kDelay);
  REQUIRE(hs.n == 1);
  CHECK(net.peer(0, hs.slot[0]) == 1);
}

TEST_CASE("fib: load lanes spread flows over equal-cost paths, delay lanes take one", "[route][fib]") {
  // Leaf-spine with 2 spines: a host reaches a host on another leaf over either spine.
  const auto g = gen::leaf_spine(2, 2, 1);  // spines 1,2; leaves 3,4; hosts 5 (on 3), 6 (on 4)
  Net net(g, 0, 0, 1);
  net.build_all(false);
  const std::uint32_t leaf3 = net.topo.index(3), host6 = net.topo.index(6);
  const HopSet& load = net.fibs[leaf3]->hops(host6, kLoad);
  CHECK(load.n_equal == 2);
  std::set<std::uint32_t> via;
  for (std::uint32_t flow = 0; flow < 16; ++flow) via.insert(net.peer(leaf3, load.pick(flow, ~0ull)));
  CHECK(via == std::set<std::uint32_t>{0, 1});
  // One flow always takes the same spine.
  CHECK(load.pick(5, ~0ull) == load.pick(5, ~0ull));
  const HopSet& delay = net.fibs[leaf3]->hops(host6, kDelay);
  CHECK(delay.n_equal == 1);
  CHECK(delay.n == 2);  // the other spine as an alternate
  // Loaded links move load lanes: spine 1's links are busy.
  for (std::uint32_t u = 0; u < net.topo.size(); ++u) {
    Lsa l = net.lsas[u];
    for (auto& a : l.links)
      if (u == 0 || a.nbr == 1) a.load = 10;
    l.seq = 5;
    net.db.apply(l, 0);
  }
  net.build_all(false);
  const HopSet& moved = net.fibs[leaf3]->hops(host6, kLoad);
  CHECK(moved.n_equal == 1);
  CHECK(net.peer(leaf3, moved.slot[0]) == net.topo.index(2));
}

// The nodes a frame passes between src and dst when it leaves src by link `slot` and every
// node after follows its own delay table; empty when it does not arrive.
std::vector<std::uint32_t> path_via(const Net& net, std::uint32_t src, int slot, std::uint32_t dst) {
  std::vector<std::uint32_t> interior;
  std::uint32_t at = net.peer(src, slot);
  for (std::uint32_t hops = 0; hops <= net.topo.size(); ++hops) {
    if (at == dst) return interior;
    interior.push_back(at);
    const int s = net.fibs[at]->hops(dst, kDelay).pick(0, ~0ull);
    if (s < 0) return {};
    at = net.peer(at, s);
  }
  return {};
}

TEST_CASE("fib: two paths share no node but their ends", "[route][fib][paths]") {
  struct Case {
    const char* name;
    gen::Generated g;
    bool any;  // some destinations have two paths (with routing by destination, not all:
               // a neighbour's own shortest path may come back through the sender)
  };
  const Case cases[] = {{"ring", gen::ring(11), true},
                        {"leaf-spine", gen::leaf_spine(2, 4, 0), true},
                        {"random", gen::random(60, 4.0, 9), true},
                        {"chain", gen::chain(6), false}};
  // Measured delays (no equal-cost ties), then equal links (hop counts, before any delay is
  // measured): where a transit node has equal-cost choices, its own table picks one, and the
  // pair must be disjoint whichever it is.
  for (const std::uint32_t max_delay : {20'000u, 0u})
  for (const Case& c : cases) {
    INFO(c.name << (max_delay ? ", measured delays" : ", equal links"));
    Net net(c.g, max_delay, 0, 5);
    net.build_all(false);
    std::size_t pairs = 0, total = 0;
    for (std::uint32_t s = 0; s < net.topo.size(); ++s)
      for (std::uint32_t d = 0; d < net.topo.size(); ++d) {
        if (s == d) continue;
        ++total;
        int a = -1, b = -1;
        if (!net.fibs[s]->two_paths(d, a, b)) continue;
        ++pairs;
        INFO(s << " -> " << d << " over slots " << a << ", " << b);
        REQUIRE(a != b);
        const auto pa = path_via(net, s, a, d), pb = path_via(net, s, b, d);
        // Both arrive (an empty interior is the destination itself, next door).
        CHECK((net.peer(s, a) == d || !pa.empty()));
        CHECK((net.peer(s, b) == d || !pb.empty()));
        for (const std::uint32_t v : pa) CHECK(std::find(pb.begin(), pb.end(), v) == pb.end());
        CHECK(std::find(pa.begin(), pa.end(), s) == pa.end());
        CHECK(std::find(pb.begin(), pb.end(), s) == pb.end());
        // In link order; one of them is a shortest path.
        CHECK(a < b);
        auto cost_of = [&](int slot, const std::vector<std::uint32_t>& interior) {
          std::uint64_t cost = link_cost(net.links[s][static_cast<std::size_t>(slot)], kDelay);
          for (std::size_t k = 0; k < interior.size(); ++k) {
            const std::uint32_t next = k + 1 < interior.size() ? interior[k + 1] : d;
            for (const LocalLink& l : net.links[interior[k]])
              if (l.peer == next) {
                cost += link_cost(l, kDelay);
                break;
              }
          }
          return cost;
        };
        // With ties, the shortest candidate may meet every other one somewhere among its
        // equal-cost paths: then the cheapest disjoint pair is two longer paths, and only the
        // disjointness above is promised.
        if (max_delay != 0) CHECK(std::min(cost_of(a, pa), cost_of(b, pb)) == net.fibs[s]->cost(d, kDelay));
      }
    INFO(pairs << " of " << total << " have two paths");
    CHECK((pairs > 0) == c.any);
  }
}

TEST_CASE("fib: two links to one neighbour are two paths to it; a down link is none", "[route][fib][paths]") {
  // Nodes 0 and 1 joined twice, 1 and 2 once: 0 reaches 1 over either link, 2 over one path only
  // (both of its paths pass node 1).
  const gen::Generated g{{1, 2, 3}, {{1, 2}, {1, 2}, {2, 3}}};
  Topology topo(g.ids, g.links);
  Lsdb db(topo);
  std::vector<LocalLink> links = {{1, true, 0, 0}, {1, true, 0, 0}};
  std::vector<std::uint64_t> groups(3, 0);
  auto fib = build_fib(FibInputs{db, 0, links, {}, groups, 0, false}, 1);
  int a = -1, b = -1;
  REQUIRE(fib->two_paths(1, a, b));
  CHECK(((a == 0 && b == 1) || (a == 1 && b == 0)));
  CHECK_FALSE(fib->two_paths(2, a, b));
  links[1].up = false;
  fib = build_fib(FibInputs{db, 0, links, {}, groups, 0, false}, 2);
  CHECK_FALSE(fib->two_paths(1, a, b));
}

TEST_CASE("fib: a static route puts its link first", "[route][fib]") {
  Net net(gen::ring(6), 0, 0, 1);
  std::vector<LocalLink> links = local_links(net.db, 0);
  const config::StaticRoute sr{2, 6};  // to node 2 (index 1) via node 6 (index 5): the long way
  FibInputs in{net.db, 0, links, std::span(&sr, 1), {}, 0, false};
  const auto fib = build_fib(in, 1);
  const HopSet& hs = fib->hops(1, kDelay);
  REQUIRE(hs.n == 2);
  CHECK(links[hs.slot[0]].peer == 5);
  CHECK(links[hs.slot[1]].peer == 1);
  CHECK(fib->hops(1, kLoad).n_equal == 1);
}

TEST_CASE("fib: broadcast trees give every node exactly one copy; multicast only members' branches",
          "[route][fib][tree]") {
  for (const auto& g : {gen::leaf_spine(2, 3, 2), gen::random(40, 3.0, 3), gen::ring(8)}) {
    const std::uint32_t n = static_cast<std::uint32_t>(g.ids.size());
    // Groups: 0 = every third node, 1 = node 5 alone, 2 = nobody.
    std::vector<std::uint64_t> groups(n, 0);
    for (std::uint32_t u = 0; u < n; u += 3) groups[u] |= 1;
    groups[5] |= 2;
    Net net(g, 5'000, 0, 17, groups);
    net.build_all(true);
    for (std::uint32_t src = 0; src < n; ++src) {
      // Broadcast: copies flow down the children every node computed for src.
      std::vector<int> copies(n, 0);
      std::vector<std::uint32_t> frontier{src};
      copies[src] = 1;
      while (!frontier.empty()) {
        const std::uint32_t at = frontier.back();
        frontier.pop_back();
        for (const TreeChild& c : net.fibs[at]->children(src)) {
          ++copies[c.peer];
          if (copies[c.peer] == 1) frontier.push_back(c.peer);
        }
      }
      for (std::uint32_t v = 0; v < n; ++v) REQUIRE(copies[v] == 1);
      // Multicast to each group: members get one copy; a branch without members gets none.
      for (unsigned grp = 0; grp < 3; ++grp) {
        std::vector<int> got(n, 0);
        std::vector<std::uint32_t> f{src};
        while (!f.empty()) {
          const std::uint32_t at = f.back();
          f.pop_back();
          for (const TreeChild& c : net.fibs[at]->children(src)) {
            if (!((c.groups >> grp) & 1u)) continue;
            ++got[c.peer];
            f.push_back(c.peer);
          }
        }
        for (std::uint32_t v = 0; v < n; ++v) {
          if (v == src) continue;
          const bool member = (groups[v] >> grp) & 1u;
          REQUIRE(got[v] <= 1);
          if (member) REQUIRE(got[v] == 1);
        }
        if (grp == 2) {
          for (std::uint32_t v = 0; v < n; ++v) REQUIRE(got[v] == 0);
        }
      }
    }
  }
}

TEST_CASE("fib: 1,024-node topologies", "[route][fib][scale]") {
  for (const char* name : {"leaf-spine", "random", "ring"}) {
    INFO(name);
    const auto g = gen::by_name(name, 1024, 3);
    Net net(g, 20'000, 4, 5);
    const auto links = local_links(net.db, 17);
    FibInputs in{net.db, 17, links, {}, net.groups, 0, true};
    const auto fib = build_fib(in, 1);
    REQUIRE(fib->size() == net.topo.size());
    const auto n = net.topo.size();
    std::size_t children = 0;
    for (std::uint32_t d = 0; d < n; ++d) {
      if (d != 17) REQUIRE(fib->reachable(d));
      children += fib->children(d).size();
    }
    // Node 17 is a leaf of most sources' trees, an inner node of some.
    CHECK(children < std::size_t{n} * links.size());
  }
}
