// The node's routing state as the stages see it: the cluster as a graph, the node's links,
// a header template per destination, the forwarding table in use and which links are up; and
// the routing agent (its own thread) with the two mailboxes that join it to the datapath.
//
// The datapath owns `fib` and `up`: the link stage writes `up` (heartbeats), refresh() swaps in
// the agent's newest table between bursts and hands the old one back.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "../route/fib.hpp"
#include "../route/route_table.hpp"
#include "../route/topology.hpp"
#include "../wire/header_template.hpp"
#include "links.hpp"
#include "mailbox.hpp"
#include "nerve/clock.hpp"
#include "nerve/config.hpp"
#include "nerve/stats.hpp"
#include "route_agent.hpp"

namespace nerve::node {

struct Routing {
  Routing(const config::Cluster& c, const config::Node& self, std::span<const wire::Mac> port_macs, Clock& clock,
          const stats::LcoreStats& st);

  route::Topology topo;
  route::NodeTable nodes;
  std::uint32_t self_idx;
  LinkTable links;
  // Per destination (dense index): the headers of a frame from this node to it; the Ethernet
  // addresses are the link's, patched per frame.
  std::vector<wire::HeaderTemplate> dest;
  std::array<std::uint8_t, wire::kPriorities> metric{};  // per lane: 0 delay, 1 load
  std::uint8_t ttl;
  Mailbox inbox;   // datapath -> agent: advertisements received
  Mailbox outbox;  // agent -> datapath: advertisements to send
  RouteAgent agent;
  const route::Fib* fib;  // the datapath's table
  std::uint64_t up;       // the datapath's link mask (bit = link slot)

  // Between bursts: the agent's newest table, if there is one. Returns whether it changed.
  bool refresh() noexcept {
    const route::Fib* f = agent.take_next();
    if (!f) return false;
    fib = f;
    agent.in_use(f->version());
    return true;
  }
  std::uint32_t index(std::uint16_t id) const noexcept { return topo.index(id); }
};

}  // namespace nerve::node
