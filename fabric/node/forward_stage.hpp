// The forward stage: frames this node passes on (the zero-copy forwarding engine).
//
// Unicast for another node: the frame leaves by the link the forwarding table gives for its
// destination on its own lane's metric (flow = source, destination, channel, so one channel's
// frames keep one path and their order), headers rewritten in place in the received mbuf
// (wire::rewrite_for_hop: next hop's MACs, TTLs - 1, IPv4 checksum updated incrementally) and
// queued on the same lane; never copied, never delivered here. Refused and counted: a TTL that
// runs out (ttl_expired), a frame this node sent itself (loop), no route up (no_route).
//
// Broadcast and multicast: each copy is addressed to the neighbour that receives it. The node
// remembers the last 1,024 message ids of each source (a sliding window) and refuses a copy it
// has seen (duplicate), so even while trees change nobody delivers a message twice; it sends
// a copy to each of its children in the source's tree (multicast: only children whose subtree
// has a member), each a new header in front of the shared payload; and delivers the frame
// here when it is a broadcast or this node is a member of the group.
//
// Owner thread only. No allocation after start-up.
#pragma once

#include <rte_mbuf.h>

#include <array>
#include <cstdint>
#include <vector>

#include "nerve/config.hpp"
#include "nerve/stats.hpp"
#include "routing.hpp"
#include "rx_item.hpp"
#include "seen_window.hpp"
#include "tx_stage.hpp"

namespace nerve::node {

class ForwardStage {
 public:
  ForwardStage(const config::Cluster& c, Routing& routing, TxStage& tx, stats::LcoreStats& st);

  // A unicast frame for another node, read at `now_ns`: sent on or refused (consumed).
  void unicast(RxItem& it, std::uint64_t now_ns) noexcept;
  // A broadcast or multicast copy: copies sent on to the children; true when the frame is to
  // be delivered here as well (the caller keeps it), false when it was consumed.
  bool tree(RxItem& it, std::uint64_t now_ns) noexcept;

 private:
  void refuse(rte_mbuf* m, wire::Refusal r) noexcept;

  Routing& r_;
  TxStage& tx_;
  stats::LcoreStats& st_;
  std::uint16_t self_;
  std::uint64_t window_ns_;
  std::vector<std::int8_t> group_index_;  // group id -> index in the cluster file, -1: none
  std::vector<SeenWindow> seen_;              // per source (dense index)
};

}  // namespace nerve::node
