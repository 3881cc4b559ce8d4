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

}  // namespace nerve::node
