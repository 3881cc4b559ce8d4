#include "idle.hpp"

#include <rte_pause.h>
#include <time.h>

#include <algorithm>

namespace nerve::node {

IdlePolicy::IdlePolicy(const config::Node& cfg) noexcept
    : busy_(cfg.idle == config::Idle::kBusy), sleep_max_us_(cfg.idle_sleep_max_us) {
  for (unsigned l : cfg.busy_lanes) busy_mask_ |= 1u << l;
  busy_window_ns_ = std::uint64_t{cfg.busy_window_ms} * 1'000'000u;
}

void IdlePolicy::idle_step() noexcept {
  if (++idle_polls_ < kSpinPolls) {
    rte_pause();
    return;
  }
  // Back-off: sleep, doubling up to the node's limit, so idle dev nodes share cores.
  const timespec ts{0, static_cast<long>(sleep_us_) * 1000};
  nanosleep(&ts, nullptr);
  slept_ = true;
  sleep_us_ = std::min(sleep_us_ * 2, sleep_max_us_);
}

}  // namespace nerve::node
