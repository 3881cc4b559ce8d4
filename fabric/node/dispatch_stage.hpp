// The dispatch stage: for each valid frame, deliver it here, forward it, or refuse it.
//
//   - the source must be a node of the cluster (unknown_source), sending from its own IPv4
//     address (source_mismatch);
//   - the frame must be addressed to the receiving port's MAC (wrong_dst_mac);
//   - broadcast or multicast: addressed to this node's IPv4 address (wrong_dst_ip; each copy is
//     addressed to the neighbour that receives it); the forward stage sends it on down the
//     tree and says whether it is delivered here too;
//   - unicast to this node: its IPv4 address must be ours (wrong_dst_ip); a `fabric` message
//     goes to the link stage (heartbeats, link state), anything else is delivered (a message
//     sent over two paths: its first copy; the paths stage drops the later one);
//   - unicast to another node: the IPv4 destination must be that node's (wrong_dst_ip); the
//     forward stage sends it on.
//
// Owner thread only.
#pragma once

#include <cstdint>
#include <vector>

#include "forward_stage.hpp"
#include "link_stage.hpp"
#include "nerve/stats.hpp"
#include "paths_stage.hpp"
#include "routing.hpp"
#include "rx_item.hpp"

namespace nerve::node {

class DispatchStage {
 public:
  DispatchStage(std::uint16_t self, std::uint32_t self_ip, const route::NodeTable& nodes,
                std::vector<wire::Mac> port_macs, stats::LcoreStats& st, ForwardStage& forward, LinkStage& link,
                PathsStage& paths)
      : self_(self), self_ip_(self_ip), nodes_(nodes), port_macs_(std::move(port_macs)), st_(st), forward_(forward),
        link_(link), paths_(paths) {}

  // Keeps the frames to deliver here at the front of items[0..n), in order, and returns how
  // many; forwards, hands to the link stage, or refuses (counted, freed) the others. `port` is
  // the port they arrived on, `now_ns` when their burst was read.
  std::uint16_t run(std::size_t port, RxItem* items, std::uint16_t n, std::uint64_t now_ns) noexcept;

 private:
  std::uint16_t self_;
  std::uint32_t self_ip_;
  const route::NodeTable& nodes_;
  std::vector<wire::Mac> port_macs_;
  stats::LcoreStats& st_;
  ForwardStage& forward_;
  LinkStage& link_;
  PathsStage& paths_;
};

}  // namespace nerve::node
