// The node's links: one slot per (port, peer) the cluster file declares, and what the datapath
// and the routing agent share about each.
//
// A slot is a link to a neighbour: frames for that neighbour leave by the slot's port with the
// slot's MACs. Routes (route::Fib) name slots; `up_mask` (the datapath's) says which may carry
// frames now. LinkShared is written by the datapath (heartbeats) and read by the routing agent:
// each field one writer, relaxed atomics.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "../route/fib.hpp"
#include "../route/topology.hpp"
#include "nerve/config.hpp"
#include "nerve/wire.hpp"

namespace nerve::node {

struct Link {
  std::uint32_t port = 0;      // index into the node's ports
  std::uint16_t peer = 0;      // node id
  std::uint32_t peer_idx = 0;  // dense index (route::Topology)
  wire::Mac peer_mac{};
  wire::Mac port_mac{};
  std::uint32_t peer_ip = 0;
};

struct alignas(64) LinkShared {
  std::atomic<bool> up{true};
  std::atomic<std::uint32_t> rtt_ns{0};        // smoothed round trip; 0: not measured yet
  std::atomic<std::uint64_t> peer_digest{0};   // the peer's database digest, from its last heartbeat
  std::atomic<std::uint64_t> heartbeats_rx{0};
  std::atomic<std::uint64_t> heartbeats_tx{0};
  std::atomic<std::uint64_t> downs{0};         // times the link was declared down
};

class LinkTable {
 public:
  // The slots of node `self`: for each port in order, each peer it lists.
  LinkTable(const config::Cluster& c, const config::Node& self, const route::Topology& topo,
            std::span<const wire::Mac> port_macs);

  std::size_t size() const noexcept { return links_.size(); }
  const Link& operator[](std::size_t s) const noexcept { return links_[s]; }
  LinkShared& shared(std::size_t s) noexcept { return shared_[s]; }
  const LinkShared& shared(std::size_t s) const noexcept { return shared_[s]; }
  // The slot of the link to `peer` on `port`, or -1.
  int find(std::size_t port, std::uint16_t peer) const noexcept;

 private:
  std::vector<Link> links_;
  std::unique_ptr<LinkShared[]> shared_;
};

}  // namespace nerve::node
