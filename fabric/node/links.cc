#include "links.hpp"

namespace nerve::node {

LinkTable::LinkTable(const config::Cluster& c, const config::Node& self, const route::Topology& topo,
                     std::span<const wire::Mac> port_macs) {
  for (std::size_t j = 0; j < self.ports.size(); ++j)
    for (const std::uint16_t peer : self.ports[j].peers) {
      const config::Node& pn = c.node(peer);
      Link l;
      l.port = static_cast<std::uint32_t>(j);
      l.peer = peer;
      l.peer_idx = topo.index(peer);
      l.peer_mac = pn.mac;
      l.port_mac = port_macs[j];
      l.peer_ip = pn.ip;
      links_.push_back(l);
    }
  if (links_.size() > route::kMaxLinks)
    throw config::ConfigError("node " + std::to_string(self.id) + ": at most " + std::to_string(route::kMaxLinks) +
                              " links (port, peer pairs), got " + std::to_string(links_.size()));
  shared_ = std::make_unique<LinkShared[]>(links_.size());
}

int LinkTable::find(std::size_t port, std::uint16_t peer) const noexcept {
  for (std::size_t s = 0; s < links_.size(); ++s)
    if (links_[s].port == port && links_[s].peer == peer) return static_cast<int>(s);
  return -1;
}

}  // namespace nerve::node
