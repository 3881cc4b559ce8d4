#include "forward_stage.hpp"

#include "../wire/rewrite.hpp"

namespace nerve::node {

ForwardStage::ForwardStage(const config::Cluster& c, Routing& routing, TxStage& tx, stats::LcoreStats& st)
    : r_(routing), tx_(tx), st_(st), self_(routing.topo.id(routing.self_idx)),
      window_ns_(std::uint64_t{c.timestamp_window_ms} * 1'000'000u), group_index_(65536, -1),
      seen_(routing.topo.size()) {
  for (std::size_t g = 0; g < c.groups.size(); ++g) group_index_[c.groups[g].id] = static_cast<std::int8_t>(g);
}

void ForwardStage::refuse(rte_mbuf* m, wire::Refusal r) noexcept {
  st_.refused[static_cast<std::size_t>(r)].add();
  rte_pktmbuf_free(m);
}

void ForwardStage::unicast(RxItem& it, std::uint64_t now_ns) noexcept {
  const wire::Header& h = it.d.hdr;
  if (h.src_node == self_) [[unlikely]]
    return refuse(it.m, wire::Refusal::kLoop);
  if (h.type == MsgType::kFabric) [[unlikely]]
    return refuse(it.m, wire::Refusal::kBadFabric);  // for neighbours only, never forwarded
  const std::uint32_t di = r_.index(h.dst);
  const std::uint32_t flow = (std::uint32_t{h.src_node} * 0x9e3779b1u) ^ (std::uint32_t{h.dst} * 0x85ebca6bu) ^
                             (std::uint32_t{h.channel} * 0xc2b2ae35u);
  const int slot = di == route::kNoIndex ? -1 : r_.fib->hops(di, r_.metric[h.priority]).pick(flow, r_.up);
  if (slot < 0) [[unlikely]]
    return refuse(it.m, wire::Refusal::kNoRoute);
  const Link& l = r_.links[static_cast<std::size_t>(slot)];
  if (!wire::rewrite_for_hop(rte_pktmbuf_mtod(it.m, std::byte*), l.port_mac, l.peer_mac, 0)) [[unlikely]]
    return refuse(it.m, wire::Refusal::kTtlExpired);
  const std::uint64_t ts = h.timestamp_ns;
  if (ts != 0 && ts <= now_ns && now_ns - ts <= window_ns_) st_.transit_ns[h.priority].record(now_ns - ts);
  tx_.forward(it.m, static_cast<std::size_t>(slot), h.priority);
}

bool ForwardStage::tree(RxItem& it, std::uint64_t now_ns) noexcept {
  const wire::Header& h = it.d.hdr;
  if (h.src_node == self_) [[unlikely]] {
    refuse(it.m, wire::Refusal::kLoop);
    return false;
  }
  if (h.type == MsgType::kFabric || h.type == MsgType::kResponse) [[unlikely]] {
    refuse(it.m, wire::Refusal::kBadAddress);  // fabric messages and responses are unicast
    return false;
  }
  int group = -1;
  if ((h.flags & wire::flag::kMulticast) != 0) {
    group = group_index_[h.dst];
    if (group < 0) [[unlikely]] {
      refuse(it.m, wire::Refusal::kUnknownGroup);
      return false;
    }
  }
  const std::uint32_t si = r_.index(h.src_node);
  if (seen_[si].seen(h.msg_id, h.timestamp_ns)) {
    refuse(it.m, wire::Refusal::kDuplicate);
    return false;
  }
  const unsigned copies = tx_.fan_out(it.m, si, group, h.priority);
  if (copies != 0) {
    const std::uint64_t ts = h.timestamp_ns;
    if (ts != 0 && ts <= now_ns && now_ns - ts <= window_ns_) st_.transit_ns[h.priority].record(now_ns - ts);
  }
  const bool here = group < 0 || ((r_.agent.groups() >> group) & 1u) != 0;
  if (!here) rte_pktmbuf_free(it.m);  // the copies hold the payload by reference
  return here;
}

}  // namespace nerve::node
