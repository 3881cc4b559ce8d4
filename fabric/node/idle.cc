#include "idle.hpp"

#include <rte_cycles.h>
#include <sched.h>
#include <time.h>

#include <algorithm>

namespace nerve::node {

IdlePolicy::IdlePolicy(const config::Node& cfg) noexcept
    : busy_(cfg.idle == config::Idle::kBusy), sleep_max_us_(cfg.idle_sleep_max_us) {
  for (unsigned l : cfg.busy_lanes) busy_mask_ |= 1u << l;
  busy_window_ns_ = std::uint64_t{cfg.busy_window_ms} * 1'000'000u;
  const std::uint64_t hz = rte_get_tsc_hz();  // 0 before the EAL has started
  yield_long_cycles_ = (hz != 0 ? hz : 2'000'000'000u) / 50'000;  // 20 us
  spin_cycles_ = (hz != 0 ? hz : 2'000'000'000u) / (1'000'000'000u / kSpinNs);
}

void IdlePolicy::idle_step() noexcept {
  const std::uint64_t t0 = rte_rdtsc();
  if (idle_polls_++ == 0) spin_start_ = t0;
  if (idle_polls_ < kSpinPolls && t0 - spin_start_ < spin_cycles_) {
    sched_yield();
    if (rte_rdtsc() - t0 > yield_long_cycles_) slept_ = true;
    return;
  }
  // Back-off: sleep, doubling up to the node's limit, so idle dev nodes share cores.
  const timespec ts{0, static_cast<long>(sleep_us_) * 1000};
  nanosleep(&ts, nullptr);
  slept_ = true;
  sleep_us_ = std::min(sleep_us_ * 2, sleep_max_us_);
}

}  // namespace nerve::node
