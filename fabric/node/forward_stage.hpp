// The forward stage: frames this node passes on (the zero-copy forwarding engine).
//
// Unicast for another node: the frame leaves by the link the forwarding table gives for its
// destination on its own lane's metric (flow = source, destination, channel, so one channel's
// frames keep one path and their order), headers rewritten in place in the received mbuf
// (wire::rewrite_for_hop: next hop's MACs, TTLs - 1, IPv4 checksum updated incrementally) and
// queued on the same lane; never copied, never delivered here. Refused and counted: a TTL that
// runs out (ttl_expired), a frame this node sent itself (loop), no route up (no_route).
//
// The transit fast path (transit(), ahead of validation): a unicast frame for another node that
// passes wire::checks::transit() (every check of the codec but the UDP checksum, which stays
// the destination's), comes from a cluster node's own address, to this port's MAC and the
// destination's address, and has a route, is rewritten and sent on at once, without being
// decoded: only the fields forwarding reads are loaded, and consecutive frames of one flow
// share one route lookup. Everything else (frames for this node, broadcast, multicast, fabric
// messages, and every frame that is to be refused) takes the full path: validate, dispatch,
// and unicast() or tree(), which count each refusal by its reason.
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
  // `filter`: the validate stage's; `port_macs`: each port's MAC.
  ForwardStage(const config::Cluster& c, Routing& routing, TxStage& tx, stats::LcoreStats& st,
               const wire::RxFilter& filter, std::vector<wire::Mac> port_macs);

  // The fast path for the burst frames[0, n) read from `port` at `now_ns`: sends on the frames
  // it can (counted as received and forwarded) and keeps the others, in order, at frames[0, k)
  // for the full path. Returns k.
  std::uint16_t transit(std::size_t port, rte_mbuf** frames, std::uint16_t n, std::uint64_t now_ns) noexcept;

  // A unicast frame for another node, read at `now_ns`: sent on or refused (consumed).
  void unicast(RxItem& it, std::uint64_t now_ns) noexcept;
  // A broadcast or multicast copy: copies sent on to the children; true when the frame is to
  // be delivered here as well (the caller keeps it), false when it was consumed.
  bool tree(RxItem& it, std::uint64_t now_ns) noexcept;

 private:
  void refuse(rte_mbuf* m, wire::Refusal r) noexcept;
  // The link slot to `dst` for the flow (src, dst, channel) on lane `prio`'s metric; -1: none.
  int route(std::uint16_t src, std::uint16_t dst, std::uint16_t channel, std::uint8_t prio) const noexcept {
    const std::uint32_t di = r_.index(dst);
    if (di == route::kNoIndex) return -1;
    const std::uint32_t flow = (std::uint32_t{src} * 0x9e3779b1u) ^ (std::uint32_t{dst} * 0x85ebca6bu) ^
                               (std::uint32_t{channel} * 0xc2b2ae35u);
    return r_.fib->hops(di, r_.metric[prio]).pick(flow, r_.up);
  }
  // Per-hop latency: the sender's timestamp to `now_ns`, when it is a plausible one.
  void record_transit(std::uint8_t prio, std::uint64_t ts, std::uint64_t now_ns) noexcept {
    if (ts != 0 && ts <= now_ns && now_ns - ts <= window_ns_) st_.transit_ns[prio].record(now_ns - ts);
  }

  Routing& r_;
  TxStage& tx_;
  stats::LcoreStats& st_;
  std::uint16_t self_;
  std::uint64_t window_ns_;
  wire::RxFilter filter_;
  std::vector<wire::Mac> port_macs_;
  std::vector<std::int8_t> group_index_;  // group id -> index in the cluster file, -1: none
  std::vector<SeenWindow> seen_;              // per source (dense index)
};

}  // namespace nerve::node
