#include "dispatch_stage.hpp"

#include "../wire/checks.hpp"

namespace nerve::node {

std::uint16_t DispatchStage::run(std::size_t port, RxItem* items, std::uint16_t n, std::uint64_t now_ns) noexcept {
  const wire::Mac& mac = port_macs_[port];
  std::uint16_t k = 0;
  for (std::uint16_t i = 0; i < n; ++i) {
    RxItem& it = items[i];
    const wire::Header& h = it.d.hdr;
    wire::Refusal r = wire::Refusal::kNone;
    if (!nodes_.known(h.src_node)) [[unlikely]]
      r = wire::Refusal::kUnknownSource;
    else if (nodes_.ip(h.src_node) != it.d.ep.src_ip) [[unlikely]]
      r = wire::Refusal::kSourceMismatch;
    else if (!wire::checks::same_mac(it.d.ep.dst_mac.data(), mac.data())) [[unlikely]]
      r = wire::Refusal::kWrongDstMac;
    else if ((h.flags & (wire::flag::kBroadcast | wire::flag::kMulticast)) != 0) [[unlikely]] {
      if (it.d.ep.dst_ip != self_ip_) {
        r = wire::Refusal::kWrongDstIp;
      } else {
        if (forward_.tree(it, now_ns)) {
          if (k != i) items[k] = it;
          ++k;
        }
        continue;
      }
    } else if (h.dst != self_) [[unlikely]] {
      if (it.d.ep.dst_ip != nodes_.ip(h.dst)) {
        r = wire::Refusal::kWrongDstIp;
      } else {
        forward_.unicast(it, now_ns);
        continue;
      }
    } else if (it.d.ep.dst_ip != self_ip_) [[unlikely]] {
      r = wire::Refusal::kWrongDstIp;
    } else if (h.type == MsgType::kFabric) [[unlikely]] {
      link_.receive(port, it.d, it.m, now_ns);
      continue;
    }
    if (r != wire::Refusal::kNone) [[unlikely]] {
      st_.refused[static_cast<std::size_t>(r)].add();
      rte_pktmbuf_free(it.m);
      continue;
    }
    if ((h.flags & wire::flag::kTwoPaths) != 0 && !paths_.take(it)) [[unlikely]]
      continue;  // a later copy of a message sent over two paths
    if (k != i) items[k] = it;
    ++k;
  }
  return k;
}

}  // namespace nerve::node
