// The dispatch stage: for each valid frame, deliver it here, forward it, or refuse it.
//
//   - the source must be a node of the cluster (unknown_source), sending from its own IPv4
//     address (source_mismatch);
//   - the frame must be addressed to the receiving port's MAC (wrong_dst_mac);
//   - destination this node: its IPv4 address must be ours (wrong_dst_ip), then deliver;
//   - destination another node: forward. This node has no forwarding engine yet, so such a
//     frame is refused (not_for_us); the routing layer plugs in here, handing transit frames
//     to the TX stage with their headers rewritten in place.
//
// Owner thread only.
#pragma once

#include <cstdint>
#include <vector>

#include "../route/route_table.hpp"
#include "nerve/stats.hpp"
#include "rx_item.hpp"

namespace nerve::node {

class DispatchStage {
 public:
  DispatchStage(std::uint16_t self, std::uint32_t self_ip, const route::NodeTable& nodes,
                std::vector<wire::Mac> port_macs, stats::LcoreStats& st)
      : self_(self), self_ip_(self_ip), nodes_(nodes), port_macs_(std::move(port_macs)), st_(st) {}

  // Keeps the frames for this node at the front of items[0..n), in order, and returns how
  // many; refuses (counted, freed) the others. `port` is the port they arrived on.
  std::uint16_t run(std::size_t port, RxItem* items, std::uint16_t n) noexcept;

 private:
  std::uint16_t self_;
  std::uint32_t self_ip_;
  const route::NodeTable& nodes_;
  std::vector<wire::Mac> port_macs_;
  stats::LcoreStats& st_;
};

}  // namespace nerve::node
