// Who is who in the cluster, and where frames for each destination go.
//
// NodeTable: every node of the cluster file by id, in flat tables indexed by node id (a lookup
// is one load), so the datapath checks a frame's source against its node's address.
// RouteTable: per destination node, the port that reaches it and the header template of the
// route. Today routes are the peers of the node's own ports (direct links); the routing
// protocol adds routes through other nodes to the same table.
//
// Built on the control thread at start-up, read by the datapath. No DPDK.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "../wire/header_template.hpp"
#include "nerve/config.hpp"

namespace nerve::route {

class NodeTable {
 public:
  explicit NodeTable(const config::Cluster& c);
  bool known(std::uint16_t id) const noexcept { return ip_[id] != 0; }
  std::uint32_t ip(std::uint16_t id) const noexcept { return ip_[id]; }  // 0 when unknown

 private:
  std::vector<std::uint32_t> ip_ = std::vector<std::uint32_t>(65536, 0);
};

struct Route {
  std::uint16_t dst = wire::kNodeNone;
  std::uint32_t port = 0;          // index into the node's ports
  wire::HeaderTemplate headers;    // Ethernet/IPv4/UDP/nerve headers of every frame on the route
};

class RouteTable {
 public:
  // The direct routes of `self`: each peer listed by a port is reached through the first port
  // listing it. `port_macs[i]` is port i's MAC (the source MAC of frames leaving it).
  RouteTable(const config::Cluster& c, const config::Node& self, std::span<const wire::Mac> port_macs);

  const Route* find(std::uint16_t dst) const noexcept {
    const std::int32_t i = index_[dst];
    return i < 0 ? nullptr : &routes_[static_cast<std::size_t>(i)];
  }
  const std::vector<Route>& routes() const noexcept { return routes_; }

 private:
  std::vector<std::int32_t> index_ = std::vector<std::int32_t>(65536, -1);
  std::vector<Route> routes_;
};

}  // namespace nerve::route
