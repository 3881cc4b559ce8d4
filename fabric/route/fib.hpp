// The forwarding information base: what the datapath reads to send and forward.
//
// Built whole by the routing agent from the link-state database (build_fib), handed to the
// datapath, never changed after: the datapath swaps one Fib for the next between bursts and
// hands the old one back to be freed. Lookups take no lock and allocate nothing.
//
// Per destination (dense index) and metric: up to kMaxHops candidate links of this node.
//   - delay: the lowest-cost path first, then loop-free alternates (RFC 5286: a neighbour n
//     whose own shortest path to the destination does not come back through this node,
//     dist(n, d) < dist(n, self) + dist(self, d)), cheapest first. The first candidate whose
//     link is up carries the frame, so a link that fails is routed around at once, before the
//     routing protocol has converged.
//   - load: the same, but the equal-cost shortest paths come first (n_equal of them) and a
//     frame takes the one its flow hashes to (so one channel's frames keep their order).
//   - a static route ([[node.route]]) puts its link first.
//   - two paths (two_paths): the pair of links whose paths share no node, for messages sent
//     over both (docs/architecture.md, "Two paths"); a link's path is every node on any of its
//     far end's shortest paths, so equal-cost choices at transit nodes cannot make them meet.
// Per source node: this node's children in the source's broadcast tree (the shortest-path tree
// by hop count, parents chosen by lowest index, so every node computes the same tree from the
// same database, and trees move only when links go up or down, not with measured delays),
// each with the groups that have a member in the child's subtree: a broadcast is copied to
// every child, a multicast only to the children whose mask has the group.
//
// No DPDK.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "nerve/config.hpp"
#include "spf.hpp"

namespace nerve::route {

inline constexpr std::size_t kMaxLinks = 64;  // link slots per node (a bit each in masks)
inline constexpr std::size_t kMaxHops = 4;    // candidates per destination and metric

struct HopSet {
  std::uint8_t n = 0;        // candidates
  std::uint8_t n_equal = 0;  // the first n_equal are equal-cost (spread by flow); 1 for delay
  std::array<std::uint8_t, kMaxHops> slot{};

  // The link to use: among the equal-cost ones, the flow's (or the next up after it); then the
  // first alternate that is up. -1: none is up.
  int pick(std::uint32_t flow, std::uint64_t links_up) const noexcept {
    if (n_equal > 1) {
      const unsigned start = flow % n_equal;
      for (unsigned k = 0; k < n_equal; ++k) {
        const std::uint8_t s = slot[(start + k) % n_equal];
        if ((links_up >> s) & 1u) return s;
      }
    }
    for (unsigned k = 0; k < n; ++k)
      if ((links_up >> slot[k]) & 1u) return slot[k];
    return -1;
  }
};

struct TreeChild {
  std::uint32_t peer;     // dense index of the child (a neighbour)
  std::uint64_t groups;   // bit g: the child's subtree holds a member of group g
};

struct FibInputs {
  const Lsdb& db;
  std::uint32_t self;                    // dense index
  std::span<const LocalLink> links;      // this node's links, by slot
  std::span<const config::StaticRoute> static_routes;
  // Groups of every node (dense index) when its LSA has not arrived: the cluster file's members.
  std::span<const std::uint64_t> default_groups;
  std::uint64_t own_groups = 0;          // this node's, now
  bool trees = true;                     // broadcast trees for every source (N shortest-path runs)
};

class Fib {
 public:
  std::uint32_t size() const noexcept { return static_cast<std::uint32_t>(dest_.size()); }
  const HopSet& hops(std::uint32_t dst, unsigned metric) const noexcept { return dest_[dst].by_metric[metric]; }
  std::uint64_t cost(std::uint32_t dst, unsigned metric) const noexcept { return dest_[dst].cost[metric]; }
  bool reachable(std::uint32_t dst) const noexcept { return dest_[dst].cost[0] != kInf; }
  std::span<const TreeChild> children(std::uint32_t source) const noexcept {
    return {children_.data() + child_off_[source], children_.data() + child_off_[source + 1]};
  }
  std::uint64_t groups_of(std::uint32_t node) const noexcept { return groups_[node]; }
  // Two paths to `dst` (a message sent over both): two of this node's links, on two ports, each
  // starting a path (the delay metric's shortest path of the link's far end, as the link-state
  // database gives it) that shares no node with the other's but this node and `dst`: of such pairs, the
  // one with the cheapest path, then the cheapest second; the two in link order (path 1 is the
  // lower slot). False when there is none.
  bool two_paths(std::uint32_t dst, int& first, int& second) const noexcept {
    const Dest& d = dest_[dst];
    if (!d.has_pair) return false;
    first = d.pair[0];
    second = d.pair[1];
    return true;
  }
  std::uint64_t version() const noexcept { return version_; }

 private:
  friend std::unique_ptr<Fib> build_fib(const FibInputs& in, std::uint64_t version);
  struct Dest {
    std::array<HopSet, kMetrics> by_metric{};
    std::array<std::uint64_t, kMetrics> cost{kInf, kInf};
    std::array<std::uint8_t, 2> pair{};
    bool has_pair = false;
  };
  std::vector<Dest> dest_;
  std::vector<std::uint32_t> child_off_;
  std::vector<TreeChild> children_;
  std::vector<std::uint64_t> groups_;
  std::uint64_t version_ = 0;
};

std::unique_ptr<Fib> build_fib(const FibInputs& in, std::uint64_t version);

}  // namespace nerve::route
