// The routing agent (fabric/node/route_agent.cc), stepped by hand on a manual clock: what it
// advertises when a link's measured delay moves, and what its own routes take meanwhile.
#include <catch2/catch.hpp>

#include <vector>

#include "route/protocol.hpp"
#include "stage_rig.hpp"

using namespace nerve;

namespace {

// The advertisements the agent posted for the datapath to send, decoded.
std::vector<route::Lsa> posted(node::Routing& r) {
  std::vector<route::Lsa> out;
  while (node::Mailbox::Letter* l = r.outbox.take()) {
    route::Lsa lsa;
    CHECK(route::decode(std::span<const std::byte>(l->bytes, l->len), lsa) == route::ProtoError::kNone);
    out.push_back(std::move(lsa));
    r.outbox.done(l);
  }
  return out;
}

}  // namespace

TEST_CASE("agent: a delay that moves inside the advertising interval goes out when it ends, and routes wait for it",
          "[stage][routing][agent]") {
  test::StageRig rig("ag1");
  node::Routing& r = *rig.routing;
  node::RouteAgent& agent = r.agent;
  const std::uint32_t peer = r.index(2);
  std::uint64_t t = rig.clock->now_ns();

  agent.step(t);  // the first advertisement: the link up, its delay not measured yet
  auto first = posted(r);
  REQUIRE(first.size() == 1);
  REQUIRE(first[0].links.size() == 1);
  CHECK(first[0].links[0].delay_ns == 0);
  const std::uint64_t hop = agent.current()->cost(peer, 0);

  // The link's first round trip, 1 ms later: inside kOriginateMinNs of that advertisement, so
  // it waits; and this node's own routes keep the advertised figure meanwhile, as its
  // neighbour's do (a route the others do not know of yet is how frames loop).
  r.links.shared(0).rtt_ns.store(40'000);
  agent.step(t += 1'000'000);
  CHECK(posted(r).empty());
  CHECK(agent.current()->cost(peer, 0) == hop);
  // The neighbour's advertisement arrives meanwhile: a new table, with the same figure.
  const std::uint64_t tables = agent.stats().fib_builds;
  std::vector<std::byte> buf(route::lsa_len(1));
  const std::size_t len = route::encode(buf, route::Lsa{2, 1, 0, {route::LinkAdvert{1, true, 0, 0}}});
  REQUIRE(len == buf.size());
  REQUIRE(r.inbox.post(0, std::span<const std::byte>(buf.data(), len)));
  agent.step(t += 1'000'000);
  CHECK(agent.stats().fib_builds == tables + 1);
  CHECK(agent.current()->cost(peer, 0) == hop);
  CHECK(posted(r).empty());  // nothing floods back to where it came from

  // Once the interval is over it goes out, although the delay has not moved since: it is not
  // left for the next refresh (lsa_refresh_ms, seconds away).
  agent.step(t += node::RouteAgent::kOriginateMinNs);
  auto second = posted(r);
  REQUIRE(second.size() == 1);
  REQUIRE(second[0].links.size() == 1);
  CHECK(second[0].links[0].delay_ns == 20'000);  // one way: half the round trip
  CHECK(second[0].seq > first[0].seq);
  CHECK(agent.current()->cost(peer, 0) == hop + 20'000);

  // Jitter (less than double) is not advertised; a round trip halved is, at once when the
  // interval allows.
  r.links.shared(0).rtt_ns.store(60'000);
  agent.step(t += node::RouteAgent::kOriginateMinNs);
  CHECK(posted(r).empty());
  r.links.shared(0).rtt_ns.store(10'000);
  agent.step(t += 1'000'000);
  auto third = posted(r);
  REQUIRE(third.size() == 1);
  CHECK(third[0].links[0].delay_ns == 5'000);
  CHECK(agent.current()->cost(peer, 0) == hop + 5'000);
}
