#include "forward_stage.hpp"

#include <rte_prefetch.h>

#include "../wire/checks.hpp"
#include "../wire/rewrite.hpp"

namespace nerve::node {

ForwardStage::ForwardStage(const config::Cluster& c, Routing& routing, TxStage& tx, stats::LcoreStats& st,
                           const wire::RxFilter& filter, std::vector<wire::Mac> port_macs)
    : r_(routing), tx_(tx), st_(st), self_(routing.topo.id(routing.self_idx)),
      window_ns_(std::uint64_t{c.timestamp_window_ms} * 1'000'000u), filter_(filter),
      port_macs_(std::move(port_macs)), group_index_(65536, -1),
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
  const int slot = route(h.src_node, h.dst, h.channel, h.priority);
  if (slot < 0) [[unlikely]]
    return refuse(it.m, wire::Refusal::kNoRoute);
  const Link& l = r_.links[static_cast<std::size_t>(slot)];
  if (!wire::rewrite_for_hop(rte_pktmbuf_mtod(it.m, std::byte*), l.port_mac, l.peer_mac, 0)) [[unlikely]]
    return refuse(it.m, wire::Refusal::kTtlExpired);
  record_transit(h.priority, h.timestamp_ns, now_ns);
  tx_.forward(it.m, static_cast<std::size_t>(slot), h.priority);
}

std::uint16_t ForwardStage::transit(std::size_t port, rte_mbuf** frames, std::uint16_t n,
                                    std::uint64_t now_ns) noexcept {
  namespace h = wire::layout::hdr;
  using wire::bytes::load_be;
  using wire::bytes::load_le;
  const wire::Mac& mac = port_macs_[port];
  std::uint16_t k = 0;
  std::uint32_t taken = 0;
  std::array<std::uint64_t, wire::kPriorities> lane_bytes{};
  // A burst is mostly one flow's frames: consecutive frames of a flow share one route lookup,
  // and a run of frames for one link and lane is handed to the TX stage at once.
  std::uint64_t flow = ~std::uint64_t{0};
  int slot = -1;
  rte_mbuf* run[kBurst];
  std::uint16_t run_n = 0;
  int run_slot = -1;
  std::uint8_t run_prio = 0;
  const auto hand_over = [&] {
    if (run_n != 0) tx_.forward(run, run_n, static_cast<std::size_t>(run_slot), run_prio);
    run_n = 0;
  };
  for (std::uint16_t i = 0; i < n; ++i) {
    rte_mbuf* m = frames[i];
    if (i + 1 < n) rte_prefetch0(rte_pktmbuf_mtod(frames[i + 1], void*));
    // A chain (a second path's copy, a header in front of a shared payload) is copied into its
    // first segment, as validation would; one that does not fit there goes on to be refused.
    if (m->nb_segs != 1 && rte_pktmbuf_linearize(m) != 0) [[unlikely]] {
      frames[k++] = m;
      continue;
    }
    std::byte* f = rte_pktmbuf_mtod(m, std::byte*);
    if (!wire::checks::transit(f, m->data_len, filter_, self_)) {
      frames[k++] = m;
      continue;
    }
    const std::byte* nh = f + wire::layout::kHdrOff;
    const auto src = load_le<std::uint16_t>(nh + h::kSrc);
    const auto dst = load_le<std::uint16_t>(nh + h::kDst);
    const std::uint32_t src_ip = r_.nodes.ip(src);
    // As the dispatch stage checks them: a cluster node, from its own address, to this port's
    // MAC and the destination's address; not a frame of this node's coming back.
    if (src_ip == 0 || src == self_ || src_ip != load_be<std::uint32_t>(f + wire::layout::kIpOff + 12) ||
        r_.nodes.ip(dst) != load_be<std::uint32_t>(f + wire::layout::kIpOff + 16) ||
        !wire::checks::same_mac(f, mac.data())) [[unlikely]] {
      frames[k++] = m;
      continue;
    }
    const auto prio = std::to_integer<std::uint8_t>(nh[h::kPriority]);
    const auto channel = load_le<std::uint16_t>(nh + h::kChannel);
    const std::uint64_t key = src | std::uint64_t{dst} << 16 | std::uint64_t{channel} << 32 | std::uint64_t{prio} << 48;
    if (key != flow) {
      flow = key;
      slot = route(src, dst, channel, prio);
    }
    if (slot < 0) [[unlikely]] {  // no route: the full path refuses it
      frames[k++] = m;
      continue;
    }
    const Link& l = r_.links[static_cast<std::size_t>(slot)];
    wire::rewrite_for_hop(f, l.port_mac, l.peer_mac, 0);  // the TTL was checked: it has a hop left
    record_transit(prio, load_le<std::uint64_t>(nh + h::kTimestamp), now_ns);
    ++taken;
    lane_bytes[prio] += m->pkt_len;
    if (slot != run_slot || prio != run_prio || run_n == kBurst) {
      hand_over();
      run_slot = slot;
      run_prio = prio;
    }
    run[run_n++] = m;
  }
  hand_over();
  if (taken != 0) {
    std::uint64_t bytes = 0;
    for (std::uint8_t p = 0; p < wire::kPriorities; ++p) {
      if (lane_bytes[p] != 0) st_.lane_rx_bytes[p].add(lane_bytes[p]);
      bytes += lane_bytes[p];
    }
    st_.rx_frames.add(taken);
    st_.rx_bytes.add(bytes);
  }
  return k;
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
  if (tx_.fan_out(it.m, si, group, h.priority) != 0) record_transit(h.priority, h.timestamp_ns, now_ns);
  const bool here = group < 0 || ((r_.agent.groups() >> group) & 1u) != 0;
  if (!here) rte_pktmbuf_free(it.m);  // the copies hold the payload by reference
  return here;
}

}  // namespace nerve::node
