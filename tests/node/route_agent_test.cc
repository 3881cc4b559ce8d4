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

TEST_CASE("agent: a database sync that finds the outbox full is sent as it empties, not lost",
          "[stage][routing][agent]") {
  test::StageRig rig("ag2");
  node::Routing& r = *rig.routing;
  node::RouteAgent& agent = r.agent;
  std::uint64_t t = rig.clock->now_ns();
  agent.step(t);
  REQUIRE(posted(r).size() == 1);
  // The neighbour's advertisement: now the database holds two.
  std::vector<std::byte> buf(route::lsa_len(1));
  const std::size_t len = route::encode(buf, route::Lsa{2, 7, 0, {route::LinkAdvert{1, true, 0, 0}}});
  REQUIRE(r.inbox.post(0, std::span<const std::byte>(buf.data(), len)));
  agent.step(t += 1'000'000);
  REQUIRE(agent.stats().db_size == 2);
  CHECK(posted(r).empty());

  // The datapath falls behind: every letter of the outbox is taken.
  const std::array<std::byte, 4> junk{};
  unsigned filled = 0;
  while (r.outbox.vacant() > 0 && r.outbox.post(0, junk)) ++filled;
  REQUIRE(filled > 0);
  REQUIRE(r.outbox.vacant() == 0);
  // The link goes down and comes back: the neighbour is owed the whole database (and this
  // node's new advertisement), and there is no room for any of it.
  r.links.shared(0).up.store(false);
  agent.step(t += 1'000'000);
  r.links.shared(0).up.store(true);
  agent.step(t += 1'000'000);
  const auto syncs = agent.stats().db_syncs;
  CHECK(syncs >= 1);
  // The datapath catches up: the junk goes, and the next tick sends what was owed.
  unsigned taken = 0;
  while (node::Mailbox::Letter* l = r.outbox.take()) {
    CHECK(l->len == junk.size());
    r.outbox.done(l);
    ++taken;
  }
  CHECK(taken == filled);
  agent.step(t += 1'000'000);
  const auto sent = posted(r);
  bool own = false, theirs = false;
  for (const auto& l : sent) {
    if (l.origin == 1 && l.links.size() == 1 && l.links[0].up) own = true;  // the newest: the link up
    if (l.origin == 2 && l.seq == 7) theirs = true;
  }
  INFO(sent.size() << " advertisements sent after the outbox emptied");
  CHECK(own);
  CHECK(theirs);
  // Once sent, nothing more is owed.
  agent.step(t += 1'000'000);
  CHECK(posted(r).empty());

  // A new advertisement of its own (it joins a group) while the outbox is full, no link
  // changing: the flood is owed, and goes once there is room.
  filled = 0;
  while (r.outbox.vacant() > 0 && r.outbox.post(0, junk)) ++filled;
  agent.set_groups(1);
  agent.step(t += 1'000'000);
  for (taken = 0; node::Mailbox::Letter* l = r.outbox.take(); ++taken) r.outbox.done(l);
  CHECK(taken == filled);  // nothing but the junk: the flood did not fit
  agent.step(t += 1'000'000);
  bool joined = false;
  for (const auto& l : posted(r)) joined |= l.origin == 1 && l.groups == 1;
  CHECK(joined);
}
