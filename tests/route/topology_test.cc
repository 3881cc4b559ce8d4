// The cluster as a graph, and the link-state database: newest advertisement wins, links the
// cluster file does not have are dropped, equal databases have equal digests.
#include <catch2/catch.hpp>

#include "nerve/config.hpp"
#include "route/generate.hpp"
#include "route/topology.hpp"

using namespace nerve;
using namespace nerve::route;

namespace {

const char* kTriangle = R"(
[cluster]
name = "t"
[[node]]
id = 10
mac = "02:00:00:00:00:0a"
ip = "198.18.0.10"
control_socket = "/tmp/t10.sock"
  [[node.port]]
  kind = "null"
  peers = [20, 30]
[[node]]
id = 20
mac = "02:00:00:00:00:14"
ip = "198.18.0.20"
control_socket = "/tmp/t20.sock"
  [[node.port]]
  kind = "null"
  peers = [10]
  [[node.port]]
  kind = "null"
  peers = [30, 10]
[[node]]
id = 30
mac = "02:00:00:00:00:1e"
ip = "198.18.0.30"
control_socket = "/tmp/t30.sock"
  [[node.port]]
  kind = "null"
  peers = [10, 20]
[[node]]
id = 40
mac = "02:00:00:00:00:28"
ip = "198.18.0.40"
control_socket = "/tmp/t40.sock"
  [[node.port]]
  kind = "null"
)";

}  // namespace

TEST_CASE("topology: nodes by dense index and the links of the cluster file", "[route][topology]") {
  const auto c = config::load_string(kTriangle);
  const Topology t(c);
  REQUIRE(t.size() == 4);
  CHECK(t.id(0) == 10);
  CHECK(t.index(30) == 2);
  CHECK(t.index(5) == kNoIndex);
  // 20 lists 10 on two ports: one link in the graph.
  CHECK(t.links(t.index(20)).size() == 2);
  CHECK(t.link_count() == 3);
  CHECK(t.linked(t.index(10), t.index(30)));
  CHECK_FALSE(t.linked(t.index(10), t.index(40)));
  CHECK(t.links(t.index(40)).empty());
}

TEST_CASE("topology: generated graphs are connected and have the asked shape", "[route][topology]") {
  const auto ls = gen::leaf_spine(2, 3, 2);
  const Topology t(ls.ids, ls.links);
  CHECK(t.size() == 2 + 3 + 6);
  CHECK(t.links(0).size() == 3);                 // a spine: every leaf
  CHECK(t.links(t.index(3)).size() == 2 + 2);    // a leaf: both spines, two hosts
  const auto r = gen::random(200, 4.0, 7);
  const Topology tr(r.ids, r.links);
  // Connected: a walk from node 0 reaches all.
  std::vector<bool> seen(tr.size());
  std::vector<std::uint32_t> stack{0};
  seen[0] = true;
  std::size_t reached = 1;
  while (!stack.empty()) {
    const auto u = stack.back();
    stack.pop_back();
    for (auto v : tr.links(u))
      if (!seen[v]) {
        seen[v] = true;
        ++reached;
        stack.push_back(v);
      }
  }
  CHECK(reached == 200);
  CHECK(tr.link_count() >= 380);
  CHECK_THROWS(Topology({1, 1}, {}));
  CHECK_THROWS(Topology({1, 2}, {{1, 3}}));
}

TEST_CASE("lsdb: newest wins; unknown origins and links are refused", "[route][lsdb]") {
  const auto c = config::load_string(kTriangle);
  const Topology t(c);
  Lsdb db(t);
  Lsa a{10, 5, 0, {{30, true, 0, 100}, {20, true, 1, 200}, {40, true, 0, 1}}};
  CHECK(db.apply(a, 1) == Lsdb::Apply::kNewer);
  CHECK(db.ignored_links() == 1);  // 10 has no link to 40
  const Lsa* got = db.get(t.index(10));
  REQUIRE(got);
  REQUIRE(got->links.size() == 2);
  CHECK(got->links[0].nbr == 20);  // sorted
  CHECK(db.advert(t.index(10), t.index(30))->delay_ns == 100);
  CHECK(db.advert(t.index(10), t.index(40)) == nullptr);
  CHECK(db.apply(a, 2) == Lsdb::Apply::kSame);
  a.seq = 4;
  CHECK(db.apply(a, 3) == Lsdb::Apply::kOlder);
  a.seq = 6;
  a.links = {{20, false, 0, 0}};
  CHECK(db.apply(a, 4) == Lsdb::Apply::kNewer);
  CHECK_FALSE(db.advert(t.index(10), t.index(20))->up);
  CHECK(db.apply(Lsa{99, 1, 0, {}}, 5) == Lsdb::Apply::kUnknownOrigin);
  CHECK(db.size() == 1);
}

TEST_CASE("lsdb: parallel links of one neighbour merge into the better one", "[route][lsdb]") {
  const auto c = config::load_string(kTriangle);
  const Topology t(c);
  Lsdb db(t);
  db.apply(Lsa{20, 1, 0, {{10, true, 0, 900}, {10, true, 0, 300}, {10, false, 0, 1}}}, 0);
  const LinkAdvert* a = db.advert(t.index(20), t.index(10));
  REQUIRE(a);
  CHECK(a->up);
  CHECK(a->delay_ns == 300);
}

TEST_CASE("lsdb: equal databases have equal digests, in any order; entries expire", "[route][lsdb]") {
  const auto g = gen::random(50, 3.0, 1);
  const Topology t(g.ids, g.links);
  Lsdb a(t), b(t);
  const auto lsas = gen::advertise(t, a, 1000, 3, 9);
  for (auto it = lsas.rbegin(); it != lsas.rend(); ++it) b.apply(*it, 0);
  CHECK(a.digest() == b.digest());
  CHECK(a.digest() != 0);
  Lsa newer = lsas[3];
  newer.seq = 2;
  b.apply(newer, 10);
  CHECK(a.digest() != b.digest());
  a.apply(newer, 10);
  CHECK(a.digest() == b.digest());
  // Everything but node 0 and the refreshed node 3 was last refreshed at 0.
  CHECK(a.expire(5, 0) == 48);
  CHECK(a.size() == 2);
  CHECK(a.get(3) != nullptr);
}
