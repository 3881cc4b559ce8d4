#include "topology.hpp"

#include <algorithm>
#include <stdexcept>

namespace nerve::route {

Topology::Topology(const config::Cluster& c) {
  for (const config::Node& n : c.nodes) {
    index_[n.id] = static_cast<std::uint32_t>(ids_.size());
    ids_.push_back(n.id);
  }
  std::vector<std::pair<std::uint32_t, std::uint32_t>> edges;
  for (const config::Node& n : c.nodes)
    for (const config::Port& p : n.ports)
      for (const std::uint16_t peer : p.peers) edges.emplace_back(index_[n.id], index_[peer]);
  build(edges);
}

Topology::Topology(std::vector<std::uint16_t> ids, const std::vector<std::pair<std::uint16_t, std::uint16_t>>& links)
    : ids_(std::move(ids)) {
  for (std::uint32_t i = 0; i < ids_.size(); ++i) {
    if (ids_[i] == 0 || ids_[i] == 0xffff || index_[ids_[i]] != kNoIndex) throw std::invalid_argument("bad or repeated node id");
    index_[ids_[i]] = i;
  }
  std::vector<std::pair<std::uint32_t, std::uint32_t>> edges;
  for (const auto& [a, b] : links) {
    if (index_[a] == kNoIndex || index_[b] == kNoIndex || a == b) throw std::invalid_argument("bad link");
    edges.emplace_back(index_[a], index_[b]);
    edges.emplace_back(index_[b], index_[a]);
  }
  build(edges);
}

void Topology::build(const std::vector<std::pair<std::uint32_t, std::uint32_t>>& edges) {
  std::vector<std::vector<std::uint32_t>> adj(ids_.size());
  for (const auto& [a, b] : edges) adj[a].push_back(b);
  off_.assign(ids_.size() + 1, 0);
  for (std::size_t i = 0; i < adj.size(); ++i) {
    std::sort(adj[i].begin(), adj[i].end());
    adj[i].erase(std::unique(adj[i].begin(), adj[i].end()), adj[i].end());
    off_[i + 1] = off_[i] + static_cast<std::uint32_t>(adj[i].size());
    adj_.insert(adj_.end(), adj[i].begin(), adj[i].end());
  }
}

bool Topology::linked(std::uint32_t a, std::uint32_t b) const noexcept {
  const auto l = links(a);
  return std::binary_search(l.begin(), l.end(), b);
}

std::uint64_t Lsdb::mix(std::uint16_t origin, std::uint64_t seq) noexcept {
  // splitmix64 of the pair: equal sets give equal XORs, different ones almost never do.
  std::uint64_t z = seq + 0x9e3779b97f4a7c15ull * (std::uint64_t{origin} + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

Lsdb::Apply Lsdb::apply(Lsa lsa, std::uint64_t now_ns) {
  const std::uint32_t idx = topo_.index(lsa.origin);
  if (idx == kNoIndex) return Apply::kUnknownOrigin;
  Entry& e = entries_[idx];
  if (e.lsa) {
    if (lsa.seq == e.lsa->seq) {
      e.refreshed_ns = now_ns;
      return Apply::kSame;
    }
    if (lsa.seq < e.lsa->seq) return Apply::kOlder;
  }
  const auto before = lsa.links.size();
  std::erase_if(lsa.links, [&](const LinkAdvert& a) {
    const std::uint32_t n = topo_.index(a.nbr);
    return n == kNoIndex || !topo_.linked(idx, n);
  });
  ignored_links_ += before - lsa.links.size();
  std::sort(lsa.links.begin(), lsa.links.end(), [](const LinkAdvert& a, const LinkAdvert& b) { return a.nbr < b.nbr; });
  // Two adverts of one neighbour (parallel links): keep the better one.
  std::vector<LinkAdvert> merged;
  for (const LinkAdvert& a : lsa.links) {
    if (!merged.empty() && merged.back().nbr == a.nbr) {
      LinkAdvert& m = merged.back();
      if (!m.up || (a.up && a.delay_ns < m.delay_ns)) m = a;
      continue;
    }
    merged.push_back(a);
  }
  lsa.links = std::move(merged);
  if (e.lsa) digest_ ^= mix(e.lsa->origin, e.lsa->seq);
  else ++held_;
  digest_ ^= mix(lsa.origin, lsa.seq);
  e.lsa = std::move(lsa);
  e.refreshed_ns = now_ns;
  return Apply::kNewer;
}

const LinkAdvert* Lsdb::advert(std::uint32_t idx, std::uint32_t nbr_idx) const noexcept {
  const Lsa* l = get(idx);
  if (!l) return nullptr;
  const std::uint16_t nbr = topo_.id(nbr_idx);
  const auto it = std::lower_bound(l->links.begin(), l->links.end(), nbr,
                                   [](const LinkAdvert& a, std::uint16_t id) { return a.nbr < id; });
  return it != l->links.end() && it->nbr == nbr ? &*it : nullptr;
}

std::size_t Lsdb::expire(std::uint64_t before_ns, std::uint32_t keep) {
  std::size_t gone = 0;
  for (std::uint32_t i = 0; i < entries_.size(); ++i) {
    Entry& e = entries_[i];
    if (!e.lsa || i == keep || e.refreshed_ns >= before_ns) continue;
    digest_ ^= mix(e.lsa->origin, e.lsa->seq);
    e.lsa.reset();
    --held_;
    ++gone;
  }
  return gone;
}

}  // namespace nerve::route
