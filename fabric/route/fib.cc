#include "fib.hpp"

#include <algorithm>
#include <memory>

namespace nerve::route {

namespace {

struct Candidate {
  std::uint64_t key;
  std::uint8_t slot;
  bool operator<(const Candidate& o) const noexcept { return key != o.key ? key < o.key : slot < o.slot; }
};

void push_unique(HopSet& hs, std::uint8_t slot) {
  if (hs.n == kMaxHops) return;
  for (unsigned k = 0; k < hs.n; ++k)
    if (hs.slot[k] == slot) return;
  hs.slot[hs.n++] = slot;
}

}  // namespace

std::unique_ptr<Fib> build_fib(const FibInputs& in, std::uint64_t version) {
  const Topology& t = in.db.topology();
  const std::uint32_t n = t.size();
  const std::uint32_t self = in.self;
  auto fib = std::make_unique<Fib>();
  fib->version_ = version;
  fib->dest_.resize(n);

  // Unicast: this node's view (its own links as the datapath sees them now).
  const Graph local(in.db, self, in.links);
  std::array<SpfResult, kMetrics> root;
  for (unsigned m = 0; m < kMetrics; ++m) spf(local, self, m, false, root[m]);
  // Shortest paths from each neighbour, for the loop-free alternates.
  std::vector<std::uint32_t> nbrs;
  for (const LocalLink& l : in.links)
    if (l.peer != kNoIndex && std::find(nbrs.begin(), nbrs.end(), l.peer) == nbrs.end()) nbrs.push_back(l.peer);
  std::vector<std::array<SpfResult, kMetrics>> from_nbr(nbrs.size());
  for (std::size_t j = 0; j < nbrs.size(); ++j)
    for (unsigned m = 0; m < kMetrics; ++m) spf(local, nbrs[j], m, false, from_nbr[j][m]);
  auto nbr_pos = [&](std::uint32_t peer) {
    return static_cast<std::size_t>(std::find(nbrs.begin(), nbrs.end(), peer) - nbrs.begin());
  };

  std::vector<Candidate> primary, alternate;
  for (std::uint32_t d = 0; d < n; ++d) {
    if (d == self) continue;
    Fib::Dest& dest = fib->dest_[d];
    for (unsigned m = 0; m < kMetrics; ++m) {
      const std::uint64_t best = root[m].dist[d];
      dest.cost[m] = best;
      HopSet& hs = dest.by_metric[m];
      primary.clear();
      alternate.clear();
      for (std::size_t s = 0; s < in.links.size() && s < kMaxLinks; ++s) {
        const LocalLink& l = in.links[s];
        if (l.peer == kNoIndex) continue;
        const auto slot = static_cast<std::uint8_t>(s);
        if (best != kInf && ((root[m].first[d] >> s) & 1u)) {
          primary.push_back({link_cost(l, m), slot});
          continue;
        }
        // A loop-free alternate (RFC 5286, inequality 1), down links included: the datapath
        // skips those, and one that comes back is used at once.
        const SpfResult& fn = from_nbr[nbr_pos(l.peer)][m];
        if (fn.dist[d] == kInf) continue;
        if (best == kInf || fn.dist[self] == kInf || fn.dist[d] < fn.dist[self] + best)
          alternate.push_back({std::uint64_t{link_cost(l, m)} + fn.dist[d], slot});
      }
      std::sort(primary.begin(), primary.end());
      std::sort(alternate.begin(), alternate.end());
      for (const config::StaticRoute& sr : in.static_routes) {
        if (t.index(sr.to) != d) continue;
        const std::uint32_t via = t.index(sr.via);
        for (std::size_t s = 0; s < in.links.size() && s < kMaxLinks; ++s)
          if (in.links[s].peer == via) push_unique(hs, static_cast<std::uint8_t>(s));
      }
      const bool pinned = hs.n != 0;
      for (const Candidate& c : primary) push_unique(hs, c.slot);
      // Load lanes spread over the equal-cost paths; delay lanes take the first.
      hs.n_equal = static_cast<std::uint8_t>(
          pinned ? 1 : m == static_cast<unsigned>(config::RouteMetric::kLoad) ? std::max<std::size_t>(1, hs.n) : 1);
      if (hs.n == 0) hs.n_equal = 0;
      for (const Candidate& c : alternate) push_unique(hs, c.slot);
    }
  }

  // Two paths: per destination, the cheapest pair of this node's up links whose paths share no
  // node but the ends. A link's path is its far end, then whatever that neighbour's shortest
  // paths on the delay metric pass: where a transit node has equal-cost choices its own table
  // picks one, so every node on any of them counts (the shortest-path DAG from the neighbour,
  // walked back from the destination), not just one path of them. Candidates are ordered by
  // cost first; a path's nodes are gathered only when the search reaches it (the cheapest two
  // are disjoint most of the time).
  struct PathCandidate {
    std::uint64_t cost;
    std::uint8_t slot;
    std::uint32_t first = 0, len = 0;  // its nodes: interior[first, first + len)
    enum : std::uint8_t { kUnknown, kUsable, kThroughSelf } state = kUnknown;
  };
  // Edges into each node on the delay metric: (from, cost), by `to`.
  std::vector<std::uint32_t> in_off(n + 1, 0);
  std::vector<std::pair<std::uint32_t, std::uint32_t>> in_edges;
  for (std::uint32_t u = 0; u < n; ++u)
    for (const Graph::Edge& e : local.out(u)) ++in_off[e.to + 1];
  for (std::uint32_t v = 0; v < n; ++v) in_off[v + 1] += in_off[v];
  in_edges.resize(in_off[n]);
  {
    std::vector<std::uint32_t> at(in_off.begin(), in_off.end() - 1);
    for (std::uint32_t u = 0; u < n; ++u)
      for (const Graph::Edge& e : local.out(u)) in_edges[at[e.to]++] = {u, e.cost[0]};
  }
  std::vector<PathCandidate> cands;
  std::vector<std::uint32_t> interior, walk;
  std::vector<std::uint32_t> mark(n, 0), seen(n, 0);
  std::uint32_t stamp = 0, seen_stamp = 0;
  // The nodes of candidate c's path to d (not d): back from d over every edge on a shortest
  // path from the neighbour, ending at the neighbour itself (distance 0). One that may pass
  // this node is no candidate.
  auto gather = [&](PathCandidate& c, std::uint32_t d) {
    const std::uint32_t nbr = in.links[c.slot].peer;
    c.first = static_cast<std::uint32_t>(interior.size());
    c.state = PathCandidate::kUsable;
    if (nbr == d) return;
    const SpfResult& fn = from_nbr[nbr_pos(nbr)][0];
    ++seen_stamp;
    walk.assign(1, d);
    seen[d] = seen_stamp;
    while (!walk.empty()) {
      const std::uint32_t v = walk.back();
      walk.pop_back();
      for (std::uint32_t k = in_off[v]; k < in_off[v + 1]; ++k) {
        const auto [u, cost] = in_edges[k];
        if (seen[u] == seen_stamp || fn.dist[u] == kInf || fn.dist[u] + cost != fn.dist[v]) continue;
        if (u == self) {
          interior.resize(c.first);
          c.state = PathCandidate::kThroughSelf;
          return;
        }
        seen[u] = seen_stamp;
        interior.push_back(u);
        if (u != nbr) walk.push_back(u);
      }
    }
    c.len = static_cast<std::uint32_t>(interior.size()) - c.first;
  };
  const auto up_links = std::count_if(in.links.begin(), in.links.end(),
                                      [](const LocalLink& l) { return l.up && l.peer != kNoIndex; });
  for (std::uint32_t d = 0; d < n && up_links >= 2; ++d) {
    if (d == self) continue;
    // Reached through one neighbour of its own only (a host on one leaf): both paths would
    // pass it.
    if (in_off[d + 1] - in_off[d] == 1 && in_edges[in_off[d]].first != self) continue;
    cands.clear();
    interior.clear();
    for (std::size_t s = 0; s < in.links.size() && s < kMaxLinks; ++s) {
      const LocalLink& l = in.links[s];
      if (l.peer == kNoIndex || !l.up) continue;
      std::uint64_t cost = link_cost(l, 0);
      if (l.peer != d) {
        const std::uint64_t rest = from_nbr[nbr_pos(l.peer)][0].dist[d];
        if (rest == kInf) continue;
        cost += rest;
      }
      cands.push_back(PathCandidate{cost, static_cast<std::uint8_t>(s)});
    }
    std::sort(cands.begin(), cands.end(), [](const PathCandidate& a, const PathCandidate& b) {
      return a.cost != b.cost ? a.cost < b.cost : a.slot < b.slot;
    });
    Fib::Dest& dest = fib->dest_[d];
    for (std::size_t i = 0; i < cands.size() && !dest.has_pair; ++i) {
      if (cands[i].state == PathCandidate::kUnknown) gather(cands[i], d);
      if (cands[i].state != PathCandidate::kUsable) continue;
      ++stamp;
      for (std::uint32_t k = 0; k < cands[i].len; ++k) mark[interior[cands[i].first + k]] = stamp;
      for (std::size_t j = i + 1; j < cands.size(); ++j) {
        // Two ports (one NIC failing takes one path), unless the links say nothing of theirs.
        const std::uint32_t pi = in.links[cands[i].slot].port, pj = in.links[cands[j].slot].port;
        if (pi == pj && pi != kNoIndex) continue;
        if (cands[j].state == PathCandidate::kUnknown) gather(cands[j], d);
        if (cands[j].state != PathCandidate::kUsable) continue;
        bool shared = false;
        for (std::uint32_t k = 0; k < cands[j].len && !shared; ++k) shared = mark[interior[cands[j].first + k]] == stamp;
        if (shared) continue;
        // In link order, so that "path 1" and "path 2" stay put while measured delays move.
        dest.pair = {std::min(cands[i].slot, cands[j].slot), std::max(cands[i].slot, cands[j].slot)};
        dest.has_pair = true;
        break;
      }
    }
  }

  // Groups of every node: its advertisement's, the cluster file's until it arrives; ours now.
  fib->groups_.resize(n);
  for (std::uint32_t v = 0; v < n; ++v) {
    const Lsa* l = in.db.get(v);
    fib->groups_[v] = l ? l->groups : (v < in.default_groups.size() ? in.default_groups[v] : 0);
  }
  fib->groups_[self] = in.own_groups;

  // Broadcast and multicast trees: per source, on the consensus graph.
  fib->child_off_.assign(n + 1, 0);
  if (in.trees) {
    const Graph consensus(in.db, kNoIndex, {});
    SpfResult tree;
    std::vector<std::uint64_t> below(n);
    for (std::uint32_t src = 0; src < n; ++src) {
      fib->child_off_[src] = static_cast<std::uint32_t>(fib->children_.size());
      spf(consensus, src, kHops, true, tree);
      // Children of this node in src's tree, with the groups in each child's subtree.
      bool any = false;
      for (std::uint32_t v : tree.order)
        if (tree.parent[v] == self) any = true;
      if (!any) continue;
      for (std::uint32_t v : tree.order) below[v] = fib->groups_[v];
      for (auto it = tree.order.rbegin(); it != tree.order.rend(); ++it)
        if (tree.parent[*it] != kNoIndex) below[tree.parent[*it]] |= below[*it];
      for (std::uint32_t v : tree.order)
        if (tree.parent[v] == self) fib->children_.push_back(TreeChild{v, below[v]});
    }
  }
  fib->child_off_[n] = static_cast<std::uint32_t>(fib->children_.size());
  if (!in.trees)
    for (std::uint32_t src = 0; src < n; ++src) fib->child_off_[src] = 0;
  return fib;
}

}  // namespace nerve::route
