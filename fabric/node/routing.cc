#include "routing.hpp"

#include <fmt/format.h>

namespace nerve::node {

Routing::Routing(const config::Cluster& c, const config::Node& self, std::span<const wire::Mac> port_macs, Clock& clock,
                 const stats::LcoreStats& st)
    : topo(c),
      nodes(c),
      self_idx(topo.index(self.id)),
      links(c, self, topo, port_macs),
      ttl(c.ttl),
      // Advertisements are small (route::lsa_len(kMaxLinks) bytes); room for four databases.
      inbox(fmt::format("nvi{}", self.id), 4 * topo.size() + 64, route::lsa_len(route::kMaxLinks)),
      outbox(fmt::format("nvo{}", self.id), 4 * topo.size() + 64, route::lsa_len(route::kMaxLinks)),
      agent(c, self, topo, links, inbox, outbox, clock, st),
      fib(agent.initial()),
      up(links.size() >= 64 ? ~0ull : (std::uint64_t{1} << links.size()) - 1) {
  dest.reserve(topo.size());
  for (std::uint32_t i = 0; i < topo.size(); ++i) {
    const config::Node& n = c.node(topo.id(i));
    wire::Endpoints ep;
    ep.src_ip = self.ip;
    ep.dst_ip = n.ip;
    ep.src_port = ep.dst_port = c.udp_port;
    dest.emplace_back(ep, self.id, n.id);
  }
  for (unsigned l = 0; l < wire::kPriorities; ++l) metric[l] = static_cast<std::uint8_t>(c.route_metric[l]);
}

}  // namespace nerve::node
