#include "validate_stage.hpp"

#include <rte_prefetch.h>

namespace nerve::node {

std::uint16_t ValidateStage::run(rte_mbuf* const* in, std::uint16_t n, RxItem* out) noexcept {
  std::uint16_t k = 0;
  std::uint64_t bytes = 0;
  for (std::uint16_t i = 0; i < n; ++i) {
    rte_mbuf* m = in[i];
    if (i + 1 < n) rte_prefetch0(rte_pktmbuf_mtod(in[i + 1], void*));
    bytes += m->pkt_len;
    // A chain (a header in front of a shared payload: a multicast copy that crossed a ring
    // port in this process, or a NIC's scattered jumbo frame) is copied into its first
    // segment; one that does not fit there is refused.
    if (m->nb_segs != 1 && rte_pktmbuf_linearize(m) != 0) [[unlikely]] {
      st_.rx_multi_segment.add();
      rte_pktmbuf_free(m);
      continue;
    }
    const auto frame = std::span<const std::byte>(rte_pktmbuf_mtod(m, const std::byte*), m->data_len);
    RxItem& it = out[k];
    if (const wire::Refusal r = wire::decode(frame, filter_, it.d); r != wire::Refusal::kNone) [[unlikely]] {
      st_.refused[static_cast<std::size_t>(r)].add();
      rte_pktmbuf_free(m);
      continue;
    }
    it.m = m;
    st_.lane_rx_bytes[it.d.hdr.priority].add(m->pkt_len);
    ++k;
  }
  st_.rx_frames.add(n);
  st_.rx_bytes.add(bytes);
  return k;
}

}  // namespace nerve::node
