#include "route_table.hpp"

namespace nerve::route {

NodeTable::NodeTable(const config::Cluster& c) {
  for (const auto& n : c.nodes) ip_[n.id] = n.ip;  // config guarantees ip != 0 is parsed; 0.0.0.0 is refused below
}

RouteTable::RouteTable(const config::Cluster& c, const config::Node& self, std::span<const wire::Mac> port_macs) {
  for (std::size_t j = 0; j < self.ports.size(); ++j) {
    for (const std::uint16_t peer : self.ports[j].peers) {
      if (index_[peer] >= 0) continue;  // the first port listing a peer carries its traffic
      const config::Node& pn = c.node(peer);
      wire::Endpoints ep;
      ep.src_mac = port_macs[j];
      ep.dst_mac = pn.mac;
      ep.src_ip = self.ip;
      ep.dst_ip = pn.ip;
      ep.src_port = ep.dst_port = c.udp_port;
      Route r;
      r.dst = peer;
      r.port = static_cast<std::uint32_t>(j);
      r.headers = wire::HeaderTemplate(ep, self.id, peer);
      index_[peer] = static_cast<std::int32_t>(routes_.size());
      routes_.push_back(r);
    }
  }
}

}  // namespace nerve::route
