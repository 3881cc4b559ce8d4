// The RX stage: bursts from every port, in lane order, handed to the pipeline.
//
// Paired queues and rte_flow (one RX queue per lane): queue 0 (P0) first, then the lower
// lanes' queues, one burst each, and queue 0 again after every lower burst that brought
// anything: a P0 frame waits behind at most one burst of lower-lane work. A lower queue is read
// every poll while it has traffic, and in turn with the other idle ones when it has none.
// One shared queue (software classification): up to kSoftwareBursts bursts are read (reading
// is cheap next to delivering), sorted into lanes by the header's priority byte, and handed on
// lane by lane, P0 first. Frames too short to carry a priority go with the lowest lane, where
// validation refuses them.
//
// The pipeline is any callable `void(std::size_t port, rte_mbuf** frames, std::uint16_t n)`
// that takes the frames (validate, dispatch, deliver), with `std::uint16_t room(int lane,
// std::uint32_t held)`: how many frames the next burst of `lane` (-1: a queue of every lane)
// may bring (that lane's recv() queue may be full).
//
// Owner thread only.
#pragma once

#include <rte_mbuf.h>

#include <algorithm>
#include <array>
#include <cstdint>

#include "../lane/tx_lanes.hpp"
#include "../wire/layout.hpp"
#include "datapath_guard.hpp"
#include "ports.hpp"

namespace nerve::node {

class RxStage {
 public:
  static constexpr unsigned kSoftwareBursts = 4;
  static constexpr unsigned kLowerBursts = 4;  // per lower-lane queue per poll, P0 read between
  static constexpr unsigned kIdleEvery = 4;    // polls between two reads of an idle lower queue

  // `guard`: this node's section of the datapath guard, held around every burst.
  RxStage(NodePorts& ports, drivers::DatapathGuard::Section& guard, P0Watch& p0) noexcept
      : ports_(ports), guard_(guard), p0_(p0) {}

  // Reads every port once; returns the frames read.
  template <typename Pipeline>
  unsigned poll(Pipeline& pipeline) noexcept {
    unsigned work = 0;
    for (std::size_t p = 0; p < ports_.size(); ++p)
      work += ports_[p].lanes == config::LaneMode::kSoftware ? poll_shared(p, pipeline) : poll_paired(p, pipeline);
    return work;
  }

 private:
  template <typename Pipeline>
  unsigned poll_paired(std::size_t p, Pipeline& pipeline) noexcept {
    drivers::Port& port = *ports_[p].dev;
    rte_mbuf* bufs[kBurst];
    unsigned work = 0;
    auto drain = [&](std::uint16_t q, std::uint16_t burst) -> std::uint16_t {
      const std::uint16_t want = std::min(pipeline.room(q, 0), burst);
      if (want == 0) return 0;
      guard_.enter();
      const std::uint16_t n = port.rx_burst(q, bufs, want);
      guard_.exit();
      if (n != 0) pipeline(p, bufs, n);
      work += n;
      return n;
    };
    auto drain_p0 = [&] {
      if (drain(0, kBurst) != 0) p0_.seen();
    };
    drain_p0();
    // Lower lanes: each queue that brought frames last time, every poll; the idle ones one at a
    // time, every kIdleEvery polls, so the first frame on an idle lower lane waits at most
    // (kLanes - 1) * kIdleEvery polls (a few microseconds, against budgets of 500 us and
    // more), and an idle poll mostly reads queue 0 alone.
    std::uint8_t& active = active_[p];
    std::uint8_t& turn = turn_[p];
    std::uint8_t& tick = tick_[p];
    std::uint8_t idle_q = 0;
    if (++tick >= kIdleEvery) {
      tick = 0;
      turn = static_cast<std::uint8_t>(turn % (lane::kLanes - 1) + 1);
      idle_q = turn;
    }
    if (active == 0 && idle_q == 0) return work;
    const std::uint16_t burst = p0_.lower_burst();
    for (std::uint16_t q = 1; q < lane::kLanes; ++q) {
      if (!((active >> q) & 1u) && q != idle_q) continue;
      std::uint16_t n = drain(q, burst);
      if (n == 0) {
        active = static_cast<std::uint8_t>(active & ~(1u << q));
        continue;
      }
      active = static_cast<std::uint8_t>(active | (1u << q));
      // A backlogged lane takes up to kLowerBursts * kBurst frames, in bursts of `burst`, with
      // queue 0 read between every two.
      for (unsigned b = 1; b < kLowerBursts * kBurst / burst && n == burst; ++b) {
        drain_p0();
        n = drain(q, burst);
      }
      drain_p0();
    }
    return work;
  }

  template <typename Pipeline>
  unsigned poll_shared(std::size_t p, Pipeline& pipeline) noexcept {
    drivers::Port& port = *ports_[p].dev;
    std::array<std::uint16_t, lane::kLanes> held{};
    unsigned total = 0;
    for (unsigned b = 0; b < kSoftwareBursts; ++b) {
      const std::uint16_t want = pipeline.room(-1, total);
      if (want == 0) break;
      rte_mbuf* bufs[kBurst];
      guard_.enter();
      const std::uint16_t n = port.rx_burst(0, bufs, want);
      guard_.exit();
      for (std::uint16_t i = 0; i < n; ++i) {
        const unsigned l = lane_of(bufs[i]);
        stash_[l][held[l]++] = bufs[i];
      }
      total += n;
      if (n < want) break;
    }
    if (held[0] != 0) p0_.seen();
    for (unsigned l = 0; l < lane::kLanes; ++l)
      for (std::uint16_t k = 0; k < held[l]; k += kBurst)
        pipeline(p, &stash_[l][k], static_cast<std::uint16_t>(std::min<unsigned>(kBurst, held[l] - k)));
    return total;
  }

  static unsigned lane_of(const rte_mbuf* m) noexcept {
    constexpr std::size_t kAt = wire::layout::kHdrOff + wire::layout::hdr::kPriority;
    if (m->data_len <= kAt) return lane::kLanes - 1;
    const auto prio = rte_pktmbuf_mtod_offset(m, const std::uint8_t*, kAt)[0];
    return prio < lane::kLanes ? prio : lane::kLanes - 1;
  }

  NodePorts& ports_;
  drivers::DatapathGuard::Section& guard_;
  P0Watch& p0_;
  std::array<std::uint8_t, 64> active_{};  // per port: lower-lane queues that had frames
  std::array<std::uint8_t, 64> turn_{};    // per port: the idle lower-lane queue read last
  std::array<std::uint8_t, 64> tick_{};    // per port: polls since an idle queue was read
  std::array<std::array<rte_mbuf*, kSoftwareBursts * kBurst>, lane::kLanes> stash_{};
};

}  // namespace nerve::node
