// nerved's figures as DPDK telemetry commands (/nerve/info, /nerve/counters, /nerve/lane,N,
// /nerve/links), beside DPDK's own (/ethdev/stats,N ...): dpdk-telemetry.py -f <file prefix>
// shows them. The commands read the node from DPDK's telemetry thread, through the node's
// any-thread accessors.
#pragma once

#include "nerve/node.hpp"
#include "nerve/telemetry.hpp"

namespace nerve::app {

// From now until unregister_dpdk_telemetry(), the commands answer for `node`.
void register_dpdk_telemetry(const Node& node);
// Before the node goes: the commands then answer -EAGAIN.
void unregister_dpdk_telemetry();

}  // namespace nerve::app
