// Per-priority TX lanes and their scheduler, for one port.
//
// Each lane is a bounded FIFO. The scheduler is strict priority (P0 first) with a minimum
// share for each lower lane, so a sustained P0-P3 load cannot starve P4 forever: every frame
// the scheduler hands out earns lane l a credit of min_share[l]; a backlogged lane holding a
// whole credit is served next, ahead of strict order. With the default share (1 % per lane) a
// P0 frame waits behind at most one guard frame per lane in a hundred.
//
// Overflow: P0-P2 never drop: push() refuses (back-pressure) and the caller keeps the frame.
// P3 and P4 shed their oldest frame to take the new one, handing it back to be freed and
// counted.
//
// Owner thread only, except size()/total(), which any thread may read (the indices are relaxed
// atomics: plain loads and stores on x86). No allocation after construction. T is the frame
// type (rte_mbuf in the node, anything in tests).
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "nerve/wire.hpp"

namespace nerve::lane {

inline constexpr unsigned kLanes = wire::kPriorities;

struct LaneConfig {
  std::array<std::uint32_t, kLanes> depth{512, 512, 512, 1024, 1024};  // frames per lane
  std::array<double, kLanes> min_share{0, 0.01, 0.01, 0.01, 0.01};      // of TX slots, lanes 1..4
};

// P3 and P4 shed the oldest frame when full; P0-P2 push back.
constexpr bool sheds(unsigned lane) noexcept { return lane >= 3; }

enum class Push : std::uint8_t { kQueued, kShed, kBackpressure };

template <typename T>
class TxLanes {
 public:
  explicit TxLanes(const LaneConfig& cfg = {}) : cfg_(cfg) {
    for (unsigned l = 0; l < kLanes; ++l) {
      std::size_t cap = 1;
      while (cap < cfg.depth[l]) cap <<= 1;
      q_[l].slots.assign(cap, nullptr);
      q_[l].mask = cap - 1;
    }
  }

  // Queues `item` on `lane`. kShed: the lane was full, its oldest frame is in *evicted (the
  // caller frees it). kBackpressure: full P0-P2 lane, nothing taken.
  Push push(unsigned lane, T* item, T** evicted) noexcept {
    Q& q = q_[lane];
    if (size(lane) >= cfg_.depth[lane]) {
      if (!sheds(lane)) return Push::kBackpressure;
      *evicted = q.slots[bump(q.head, 1) & q.mask];
      q.slots[bump(q.tail, 1) & q.mask] = item;
      return Push::kShed;
    }
    q.slots[bump(q.tail, 1) & q.mask] = item;
    return Push::kQueued;
  }

  // Up to n frames in scheduling order; lanes[i] says where out[i] came from.
  unsigned pull(T** out, std::uint8_t* lanes, unsigned n) noexcept {
    unsigned k = 0;
    while (k < n) {
      const int l = next_lane();
      if (l < 0) break;
      out[k] = pop(static_cast<unsigned>(l));
      lanes[k] = static_cast<std::uint8_t>(l);
      ++k;
    }
    return k;
  }

  // Up to n frames of one lane, oldest first. With `scheduled` (a queue the lanes share) the
  // frames earn the lower lanes their shares as pull() would; without (paired-queue ports,
  // where each lane drains to a queue of its own and no lane waits for another), they don't.
  unsigned pull_lane(unsigned lane, T** out, unsigned n, bool scheduled = true) noexcept {
    Q& q = q_[lane];
    const std::uint32_t avail = size(lane);
    const unsigned k = n < avail ? n : avail;
    if (scheduled) {
      for (unsigned i = 0; i < k; ++i) out[i] = pop(lane);
      return k;
    }
    const std::uint32_t head = q.head.load(std::memory_order_relaxed);
    for (unsigned i = 0; i < k; ++i) out[i] = q.slots[(head + i) & q.mask];
    q.head.store(head + k, std::memory_order_relaxed);
    return k;
  }

  // Puts frames a port did not take back at the head of their lanes, in their original order.
  void unpull(T* const* items, const std::uint8_t* lanes, unsigned n) noexcept {
    for (unsigned i = n; i-- > 0;) {
      Q& q = q_[lanes[i]];
      q.slots[(bump(q.head, -1u) - 1) & q.mask] = items[i];
    }
  }
  void unpull_lane(unsigned lane, T* const* items, unsigned n) noexcept {
    Q& q = q_[lane];
    for (unsigned i = n; i-- > 0;) q.slots[(bump(q.head, -1u) - 1) & q.mask] = items[i];
  }

  std::uint32_t size(unsigned lane) const noexcept {
    return q_[lane].tail.load(std::memory_order_relaxed) - q_[lane].head.load(std::memory_order_relaxed);
  }
  std::uint32_t total() const noexcept {
    std::uint32_t n = 0;
    for (unsigned l = 0; l < kLanes; ++l) n += size(l);
    return n;
  }
  bool full(unsigned lane) const noexcept { return size(lane) >= cfg_.depth[lane]; }

 private:
  struct Q {
    std::vector<T*> slots;
    std::atomic<std::uint32_t> head{0}, tail{0};
    std::uint32_t mask = 0;
  };

  // Single writer: add `by` (wrapping) and return the old value.
  static std::uint32_t bump(std::atomic<std::uint32_t>& v, std::uint32_t by) noexcept {
    const std::uint32_t old = v.load(std::memory_order_relaxed);
    v.store(old + by, std::memory_order_relaxed);
    return old;
  }

  T* pop(unsigned lane) noexcept {
    Q& q = q_[lane];
    // Every frame handed out earns the lower lanes their share; an idle lane banks at most one
    // credit, so it cannot come back with a burst that jumps P0.
    for (unsigned l = 1; l < kLanes; ++l) {
      credit_[l] += cfg_.min_share[l];
      if (size(l) == 0 && credit_[l] > 1.0) credit_[l] = 1.0;
    }
    if (lane > 0 && credit_[lane] >= 1.0) credit_[lane] -= 1.0;
    return q.slots[bump(q.head, 1) & q.mask];
  }

  int next_lane() const noexcept {
    // A backlogged lower lane with a whole credit goes first (the starvation guard)...
    for (unsigned l = kLanes; l-- > 1;)
      if (credit_[l] >= 1.0 && size(l) > 0) return static_cast<int>(l);
    // ...otherwise strict priority.
    for (unsigned l = 0; l < kLanes; ++l)
      if (size(l) > 0) return static_cast<int>(l);
    return -1;
  }

  LaneConfig cfg_;
  std::array<Q, kLanes> q_;
  std::array<double, kLanes> credit_{};
};

}  // namespace nerve::lane
