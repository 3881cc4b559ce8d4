// Shortest paths over the link-state database (Dijkstra), for both route metrics.
//
// The graph has an edge u -> v when the cluster file links u and v and both ends say the link
// is up (the two-way check: a node that died cannot keep itself in the graph by its last
// advertisement). A node whose advertisement has not arrived yet is taken at its word in the
// cluster file: its links up, unmeasured. The root's own edges come from its live link table
// (one edge per link, so parallel links to one neighbour stay apart) rather than from its
// advertisement.
//
// Edge costs (all integers, all > 0, so equal costs compare exactly):
//   delay: kHopCostNs + the one-way delay its owner measured (0 until measured: hop count)
//   load:  kLoadBase + kLoadStep * the link's load level (0..15)
//   hops:  1 (broadcast and multicast trees: they change only when links do)
//
// No DPDK. Allocates: for the routing agent's thread.
#pragma once

#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "topology.hpp"

namespace nerve::route {

inline constexpr std::uint64_t kInf = std::numeric_limits<std::uint64_t>::max();
inline constexpr std::uint32_t kHopCostNs = 1000;  // per hop: a node's own processing, ~1 us
inline constexpr std::uint32_t kLoadBase = 1024;
inline constexpr std::uint32_t kLoadStep = 256;
inline constexpr unsigned kMetrics = 2;                 // config::RouteMetric: delay, load
inline constexpr unsigned kHops = 2;                    // a third cost: 1 per link (broadcast trees)

// One of the root's links as the datapath sees it.
struct LocalLink {
  std::uint32_t peer = kNoIndex;  // dense index
  bool up = false;
  std::uint32_t delay_ns = 0;     // one-way estimate; 0: not measured
  std::uint8_t load = 0;          // 0..kMaxLoad
  std::uint32_t port = kNoIndex;  // the node's port the link leaves by (two paths: on two ports); kNoIndex: its own
};

class Graph {
 public:
  // The graph as `root` sees it: `local` are root's links (slot = position in the span).
  // With root = kNoIndex, the consensus graph: every node's edges from its advertisement
  // (or the cluster file), as every other node sees them: trees are computed on it.
  Graph(const Lsdb& db, std::uint32_t root, std::span<const LocalLink> local);

  std::uint32_t size() const noexcept { return static_cast<std::uint32_t>(off_.size() - 1); }
  struct Edge {
    std::uint32_t to;
    std::uint32_t cost[kMetrics + 1];  // delay, load, hops
    std::int32_t slot;  // the root's link slot for the root's edges, else -1
  };
  std::span<const Edge> out(std::uint32_t u) const noexcept { return {edges_.data() + off_[u], edges_.data() + off_[u + 1]}; }
  std::uint32_t root() const noexcept { return root_; }

 private:
  std::uint32_t root_;
  std::vector<std::uint32_t> off_;
  std::vector<Edge> edges_;
};

struct SpfResult {
  std::vector<std::uint64_t> dist;     // kInf: unreachable
  std::vector<std::uint64_t> first;    // from the graph's root only: bit s = root's link slot s starts a shortest path
  std::vector<std::uint32_t> parent;   // with parents: the lowest-index predecessor on a shortest path; kNoIndex for the source
  std::vector<std::uint32_t> order;    // with parents: reached nodes, nearest first
};

// The cost of one of the root's links on `metric`, as Graph gives it.
std::uint32_t link_cost(const LocalLink& l, unsigned metric) noexcept;

// Shortest paths from `source` on `metric` (0 delay, 1 load, 2 hops). `first` is filled when source is
// the graph's root; `parent` when `parents` is set.
void spf(const Graph& g, std::uint32_t source, unsigned metric, bool parents, SpfResult& out);

}  // namespace nerve::route
