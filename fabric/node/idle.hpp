// The node's idle policy: what the datapath thread does after a poll that found no work.
//
//   busy:    nothing; poll again at once (production latency).
//   backoff: up to kSpinPolls polls within kSpinNs, each followed by sched_yield (another
//            thread that waits for the core runs now, not at the end of a scheduler slice),
//            then sleeps of 1 us doubling up to idle_sleep_max_us, so many dev nodes share two
//            cores. A yield that took over 20 us counts as a sleep (take_slept). A frame of one
//            of the busy_lanes, sent or received, keeps the node polling for busy_window_ms.
//
// Owner thread only. The stages report lane traffic through note().
#pragma once

#include <cstdint>

#include "nerve/config.hpp"

namespace nerve::node {

class IdlePolicy {
 public:
  static constexpr unsigned kSpinPolls = 512;
  static constexpr std::uint64_t kSpinNs = 50'000;  // and no longer than this

  explicit IdlePolicy(const config::Node& cfg) noexcept;

  // A frame of lane `prio` moved at `now_ns`.
  void note(std::uint8_t prio, std::uint64_t now_ns) noexcept {
    if ((busy_mask_ >> prio) & 1u) busy_until_ns_ = now_ns + busy_window_ns_;
  }
  // Whether the policy slept (or yielded for long) since the last call: the poll after a sleep
  // runs the slow path (timers, control), whose every-64-polls cadence a sleeping node would
  // stretch.
  bool take_slept() noexcept {
    const bool s = slept_;
    slept_ = false;
    return s;
  }
  // After a poll that did `work`: returns at once, yields, or sleeps. `now_ns` is read only
  // when the node is idle and a busy window may be open.
  template <typename Now>
  void step(unsigned work, Now&& now_ns) noexcept {
    if (work != 0) {
      idle_polls_ = 0;
      sleep_us_ = 1;
      return;
    }
    if (busy_) return;
    if (busy_until_ns_ != 0 && now_ns() < busy_until_ns_) return;
    idle_step();
  }

 private:
  void idle_step() noexcept;

  bool busy_;
  std::uint32_t busy_mask_ = 0;
  std::uint64_t busy_window_ns_ = 0;
  std::uint64_t busy_until_ns_ = 0;
  std::uint32_t sleep_max_us_;
  unsigned idle_polls_ = 0;
  std::uint32_t sleep_us_ = 1;
  bool slept_ = false;
  std::uint64_t yield_long_cycles_ = 0;  // a yield this long let another thread run
  std::uint64_t spin_cycles_ = 0;        // kSpinNs
  std::uint64_t spin_start_ = 0;         // the first idle poll of this spin
};

}  // namespace nerve::node
