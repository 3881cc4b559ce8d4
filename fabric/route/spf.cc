#include "spf.hpp"

#include <algorithm>
#include <queue>

namespace nerve::route {

namespace {

std::uint32_t delay_cost(std::uint32_t delay_ns) noexcept {
  const std::uint64_t c = std::uint64_t{kHopCostNs} + delay_ns;
  return c > 0xffffffffu ? 0xffffffffu : static_cast<std::uint32_t>(c);
}
std::uint32_t load_cost(std::uint8_t load) noexcept {
  return kLoadBase + kLoadStep * std::uint32_t{load > kMaxLoad ? kMaxLoad : load};
}

}  // namespace

std::uint32_t link_cost(const LocalLink& l, unsigned metric) noexcept {
  return metric == 0 ? delay_cost(l.delay_ns) : metric == 1 ? load_cost(l.load) : 1;
}

Graph::Graph(const Lsdb& db, std::uint32_t root, std::span<const LocalLink> local) : root_(root) {
  const Topology& t = db.topology();
  const std::uint32_t n = t.size();
  off_.assign(n + 1, 0);
  edges_.reserve(t.link_count() * 2 + local.size());
  // Does v agree that its link to u is up? Root: one of its links to u is up. Others: their
  // advertisement says so, or they have not advertised yet.
  auto agrees = [&](std::uint32_t v, std::uint32_t u) {
    if (v == root) {
      for (const LocalLink& l : local)
        if (l.peer == u && l.up) return true;
      return false;
    }
    if (!db.get(v)) return true;
    const LinkAdvert* a = db.advert(v, u);
    return a && a->up;
  };
  for (std::uint32_t u = 0; u < n; ++u) {
    off_[u] = static_cast<std::uint32_t>(edges_.size());
    if (u == root) {
      for (std::size_t s = 0; s < local.size(); ++s) {
        const LocalLink& l = local[s];
        if (!l.up || l.peer == kNoIndex || !agrees(l.peer, u)) continue;
        edges_.push_back(Edge{l.peer, {delay_cost(l.delay_ns), load_cost(l.load), 1}, static_cast<std::int32_t>(s)});
      }
      continue;
    }
    const Lsa* lsa = db.get(u);
    if (lsa) {
      for (const LinkAdvert& a : lsa->links) {
        const std::uint32_t v = t.index(a.nbr);
        if (!a.up || !agrees(v, u)) continue;
        edges_.push_back(Edge{v, {delay_cost(a.delay_ns), load_cost(a.load), 1}, -1});
      }
    } else {
      for (const std::uint32_t v : t.links(u))
        if (agrees(v, u)) edges_.push_back(Edge{v, {delay_cost(0), load_cost(0), 1}, -1});
    }
  }
  off_[n] = static_cast<std::uint32_t>(edges_.size());
}

void spf(const Graph& g, std::uint32_t source, unsigned metric, bool parents, SpfResult& out) {
  const std::uint32_t n = g.size();
  out.dist.assign(n, kInf);
  const bool from_root = source == g.root();
  if (from_root) out.first.assign(n, 0);
  using Item = std::pair<std::uint64_t, std::uint32_t>;
  std::priority_queue<Item, std::vector<Item>, std::greater<>> heap;
  out.dist[source] = 0;
  heap.emplace(0, source);
  if (parents) out.order.clear();
  while (!heap.empty()) {
    const auto [d, u] = heap.top();
    heap.pop();
    if (d != out.dist[u]) continue;  // a stale entry
    if (parents) out.order.push_back(u);
    for (const Graph::Edge& e : g.out(u)) {
      const std::uint64_t nd = d + e.cost[metric];
      std::uint64_t& dv = out.dist[e.to];
      if (nd > dv) continue;
      if (from_root) {
        // Positive costs: every predecessor on a shortest path to e.to pops before it, so
        // first[u] is final here.
        const std::uint64_t f = u == source ? std::uint64_t{1} << e.slot : out.first[u];
        if (nd < dv) out.first[e.to] = f;
        else out.first[e.to] |= f;
      }
      if (nd < dv) {
        dv = nd;
        heap.emplace(nd, e.to);
      }
    }
  }
  if (!parents) return;
  // The lowest-index predecessor on a shortest path: every node that computes this tree from
  // the same database picks the same parent.
  out.parent.assign(n, kNoIndex);
  for (std::uint32_t u = 0; u < n; ++u) {
    if (out.dist[u] == kInf) continue;
    for (const Graph::Edge& e : g.out(u))
      if (e.to != source && out.dist[u] + e.cost[metric] == out.dist[e.to] && u < out.parent[e.to])
        out.parent[e.to] = u;
  }
}

}  // namespace nerve::route
