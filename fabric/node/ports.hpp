// The node's ports as the stages see them: the device and how it keeps the lanes apart.
// Owned by the node; the RX and TX stages read them on the datapath thread.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "nerve/config.hpp"
#include "port.hpp"

namespace nerve::node {

inline constexpr std::uint16_t kBurst = 32;  // RX and TX burst size (DESIGN.md: up to 32)

struct NodePort {
  std::unique_ptr<drivers::Port> dev;
  config::LaneMode lanes = config::LaneMode::kSoftware;  // kPaired, kFlow or kSoftware
};
using NodePorts = std::vector<NodePort>;

// Whether P0 traffic flows: while it does, lower lanes move in short bursts (kShortBurst), so
// a P0 frame never waits behind more than that many lower-lane frames being read or sent, at a
// small cost in lower-lane throughput; when P0 is quiet, full bursts. Set by the RX stage (P0
// frames received) and the TX stage (P0 frames sent); poll() ages it. Owner thread only.
inline constexpr std::uint16_t kShortBurst = 8;

class P0Watch {
 public:
  static constexpr std::uint32_t kWindowPolls = 4096;  // P0 "flows" for this many polls after a frame
  bool flowing() const noexcept { return polls_left_ != 0; }
  void seen() noexcept { polls_left_ = kWindowPolls; }
  void tick() noexcept { polls_left_ -= polls_left_ != 0; }
  // The burst lower lanes move in now.
  std::uint16_t lower_burst() const noexcept { return flowing() ? kShortBurst : kBurst; }

 private:
  std::uint32_t polls_left_ = 0;
};

}  // namespace nerve::node
