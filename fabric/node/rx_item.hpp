// A received frame on its way through the RX stages: its mbuf and what the codec decoded.
#pragma once

#include <rte_mbuf.h>

#include "nerve/wire.hpp"

namespace nerve::node {

struct RxItem {
  rte_mbuf* m;
  wire::Decoded d;  // views into m's data
};

}  // namespace nerve::node
