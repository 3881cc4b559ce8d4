// The validate stage: every received frame through the codec (wire::decode, strict, one
// counted reason per refusal). Frames that pass go on with their decoded header; the others
// are freed here. A chained mbuf is copied into its first segment, or refused (multi_segment)
// when it does not fit there.
//
// Owner thread only.
#pragma once

#include <cstdint>

#include "nerve/stats.hpp"
#include "nerve/wire.hpp"
#include "rx_item.hpp"

namespace nerve::node {

class ValidateStage {
 public:
  ValidateStage(const wire::RxFilter& filter, stats::LcoreStats& st) noexcept : filter_(filter), st_(st) {}

  // Decodes in[0..n); the accepted go to out[] in order. Returns how many were accepted.
  std::uint16_t run(rte_mbuf* const* in, std::uint16_t n, RxItem* out) noexcept;

  const wire::RxFilter& filter() const noexcept { return filter_; }

 private:
  wire::RxFilter filter_;
  stats::LcoreStats& st_;
};

}  // namespace nerve::node
