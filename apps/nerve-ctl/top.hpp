// `nerve-ctl top`: a live view of every node of the cluster from its telemetry sidecar's
// /metrics (lanes with rates, latency percentiles and deadline misses; ports; links; warnings)
// and, for nodes whose nerved runs on this host, their routes (its control socket), like htop
// for the fabric. Rates are over the refresh interval.
#pragma once

#include "nerve/config.hpp"

namespace nerve::app {

// Refreshes every `interval_s` until q or SIGINT (or `frames` frames, 0: no limit). `plain`:
// no terminal control, a text frame per interval on stdout (scripts, tests).
int top(const config::Cluster& cluster, double interval_s, unsigned frames, bool plain);

}  // namespace nerve::app
