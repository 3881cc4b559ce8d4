// The fault-injecting port: a wrapper around any real port that drops, corrupts, duplicates,
// reorders and delays the frames it receives, with given probabilities, seeded and so
// reproducible (config::FaultSpec). The same tests run over ring, memif and af_packet with
// loss, duplication and reordering that the link itself would never produce.
//
// Faults act on receive: a link's direction from A to B is faulted at B's port, the other at
// A's. Frames of lanes outside FaultSpec::lanes (and frames too short to carry a nerve header)
// pass untouched. Each RX queue has its own state: frames held back (reordered: until the next
// frame of the queue has passed, or 100 us; delayed: until their time) leave at a later rx_burst of that
// queue, in front of the frames read then. A frame to hold that finds the holding ring full
// passes at once (and is not counted as delayed or reordered).
//
// Thread ownership: like the port's queues, queue q only from the lcore that owns it.
#pragma once

#include <rte_mbuf.h>

#include <array>
#include <cstdint>
#include <vector>

#include "nerve/config.hpp"

namespace nerve::drivers {

struct FaultCounts {
  std::uint64_t seen = 0;       // frames subject to faults
  std::uint64_t dropped = 0, corrupted = 0, duplicated = 0, reordered = 0, delayed = 0;
};

class FaultInjector {
 public:
  FaultInjector(const config::FaultSpec& spec, std::uint16_t queues);
  ~FaultInjector();
  FaultInjector(const FaultInjector&) = delete;
  FaultInjector& operator=(const FaultInjector&) = delete;

  // Receives through `read` (the device's rx_burst for queue q) and applies the faults:
  // returns up to n frames in pkts.
  template <class Read>
  std::uint16_t rx(std::uint16_t q, rte_mbuf** pkts, std::uint16_t n, Read&& read) noexcept {
    Queue& s = queues_[q];
    std::uint16_t out = release(s, pkts, n);
    if (out == n) return out;
    std::array<rte_mbuf*, 64> got;
    const unsigned room = static_cast<unsigned>(n - out);
    const auto want = static_cast<std::uint16_t>(room < got.size() ? room : got.size());
    const std::uint16_t k = read(got.data(), want);
    for (std::uint16_t i = 0; i < k; ++i) out = apply(s, got[i], pkts, out, n);
    return out;
  }

  FaultCounts counts() const noexcept;  // any thread (relaxed reads)
  const config::FaultSpec& spec() const noexcept { return spec_; }

 private:
  static constexpr std::size_t kHeld = 4096;  // frames held per queue (power of two)
  struct Held {
    rte_mbuf* m;
    std::uint64_t due_tsc;   // when it may go at the latest (0: at the next burst)
    std::uint64_t after;     // reordered: as soon as more than this many frames have passed (~0: not)
  };
  struct alignas(64) Queue {
    std::uint64_t rng;
    std::array<Held, kHeld> held{};
    std::uint32_t head = 0, tail = 0;  // held[head..tail) in arrival order
    std::uint64_t passed = 0;          // frames given out straight from the device
    FaultCounts c;
  };

  double uniform(Queue& s) noexcept;  // [0, 1)
  // Frames whose time has come, in front of this burst's.
  std::uint16_t release(Queue& s, rte_mbuf** pkts, std::uint16_t n) noexcept;
  // One frame read from the device: faulted, then into pkts[out] (or held, or gone).
  std::uint16_t apply(Queue& s, rte_mbuf* m, rte_mbuf** pkts, std::uint16_t out, std::uint16_t n) noexcept;
  bool hold(Queue& s, rte_mbuf* m, std::uint64_t due_tsc, std::uint64_t after) noexcept;
  // Into pkts[out] while there is room; past it, held for the next burst.
  std::uint16_t pass(Queue& s, rte_mbuf* m, rte_mbuf** pkts, std::uint16_t out, std::uint16_t n) noexcept;

  config::FaultSpec spec_;
  std::uint64_t delay_tsc_;
  std::uint64_t reorder_tsc_;  // a reordered frame with no frame behind it leaves after 100 us
  std::vector<Queue> queues_;
};

}  // namespace nerve::drivers
