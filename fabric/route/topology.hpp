// The cluster as a graph, and what its nodes say about their links.
//
// Topology: every node of the cluster file by dense index (0..N-1, the file's order) and the
// links the file declares (a link is declared at both ends). Routes are computed over these
// links only; a node cannot advertise a link the file does not have.
// Lsdb: the link-state database, one advertisement (protocol.hpp) per origin, newest sequence
// number wins; entries not refreshed in time expire. Owned by the routing agent's thread.
//
// No DPDK.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "nerve/config.hpp"
#include "protocol.hpp"

namespace nerve::route {

inline constexpr std::uint32_t kNoIndex = ~0u;

class Topology {
 public:
  explicit Topology(const config::Cluster& c);
  // A generated topology (tests, benchmarks): nodes by id, undirected links by id.
  Topology(std::vector<std::uint16_t> ids, const std::vector<std::pair<std::uint16_t, std::uint16_t>>& links);

  std::uint32_t size() const noexcept { return static_cast<std::uint32_t>(ids_.size()); }
  std::uint16_t id(std::uint32_t i) const noexcept { return ids_[i]; }
  std::uint32_t index(std::uint16_t id) const noexcept { return index_[id]; }  // kNoIndex when not in the cluster
  // Configured neighbours of node i (dense indices, ascending, each once).
  std::span<const std::uint32_t> links(std::uint32_t i) const noexcept {
    return {adj_.data() + off_[i], adj_.data() + off_[i + 1]};
  }
  bool linked(std::uint32_t a, std::uint32_t b) const noexcept;
  std::size_t link_count() const noexcept { return adj_.size() / 2; }  // undirected

 private:
  void build(const std::vector<std::pair<std::uint32_t, std::uint32_t>>& edges);
  std::vector<std::uint16_t> ids_;
  std::vector<std::uint32_t> index_ = std::vector<std::uint32_t>(65536, kNoIndex);
  std::vector<std::uint32_t> off_, adj_;  // CSR
};

class Lsdb {
 public:
  enum class Apply : std::uint8_t {
    kNewer,          // stored (replacing an older one, or the first from its origin)
    kSame,           // the same sequence number as the stored one: nothing to do
    kOlder,          // older than the stored one
    kUnknownOrigin,  // origin not in the cluster
  };

  explicit Lsdb(const Topology& topo) : topo_(topo), entries_(topo.size()) {}

  // Links to nodes that are not configured neighbours of the origin are dropped (counted in
  // ignored_links()); the rest are kept sorted by neighbour id.
  Apply apply(Lsa lsa, std::uint64_t now_ns);
  const Lsa* get(std::uint32_t idx) const noexcept {
    return entries_[idx].lsa ? &*entries_[idx].lsa : nullptr;
  }
  // The advert of link idx -> nbr_idx in idx's LSA, or nullptr (no LSA, or no such link).
  const LinkAdvert* advert(std::uint32_t idx, std::uint32_t nbr_idx) const noexcept;
  // Removes entries last refreshed before `before_ns`, except `keep`'s. Returns how many went.
  std::size_t expire(std::uint64_t before_ns, std::uint32_t keep);
  // XOR of a mix of (origin, seq) over every entry: equal databases have equal digests.
  std::uint64_t digest() const noexcept { return digest_; }
  std::size_t size() const noexcept { return held_; }
  std::uint64_t ignored_links() const noexcept { return ignored_links_; }
  const Topology& topology() const noexcept { return topo_; }

 private:
  struct Entry {
    std::optional<Lsa> lsa;
    std::uint64_t refreshed_ns = 0;
  };
  static std::uint64_t mix(std::uint16_t origin, std::uint64_t seq) noexcept;
  const Topology& topo_;
  std::vector<Entry> entries_;
  std::uint64_t digest_ = 0;
  std::size_t held_ = 0;
  std::uint64_t ignored_links_ = 0;
};

}  // namespace nerve::route
