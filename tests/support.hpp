// Shared by the tests that start an EAL: one per test process, with a prefix of its own so
// parallel test processes never meet.
#pragma once

#include <fmt/format.h>
#include <unistd.h>

#include <string>

#include "eal.hpp"
#include "nerve/config.hpp"

namespace nerve::test {

inline drivers::Eal& eal() {
  static drivers::Eal e([] {
    drivers::EalOptions o;
    o.file_prefix = fmt::format("nerve-test-{}", getpid());
    o.memory_mb = 512;
    o.cores = {drivers::cpus_on_node(-1).front()};
    o.log_level = "error";
    return o;
  }());
  return e;
}

// Polls the nodes, one thread stepping them, until a whole rotation of the RX stage's idle
// lower-lane queues moves nothing: everything sent has arrived and been handled.
template <typename... Nodes>
void settle(Nodes&... n) {
  for (unsigned idle = 0; idle < 20;) idle = (... + n.poll()) == 0 ? idle + 1 : 0;
}

// Two nodes joined by a net_ring pair inside this process. These tests step nodes at will (one
// polled rarely, none while a loop sends, everything slower under a sanitizer): a link is
// declared down after 100 missed heartbeats (100 ms), not the default 3.
inline config::Cluster ring_pair_cluster(const std::string& pair, std::uint32_t mbufs = 8191,
                                         const std::string& node_keys = "", const std::string& port_keys = "") {
  return config::load_string(fmt::format(R"(
[cluster]
name = "t{0}"
heartbeat_miss = 100

[[node]]
id = 1
mac = "02:00:00:00:01:01"
ip = "198.18.1.1"
control_socket = "/tmp/nerve-test-{0}-1.sock"
mbufs = {1}
{2}
  [[node.port]]
  kind = "ring"
  pair = "{0}"
  peers = [2]
  {3}

[[node]]
id = 2
mac = "02:00:00:00:01:02"
ip = "198.18.1.2"
control_socket = "/tmp/nerve-test-{0}-2.sock"
mbufs = {1}
{2}
  [[node.port]]
  kind = "ring"
  pair = "{0}"
  peers = [1]
  {3}
)", pair, mbufs, node_keys, port_keys));
}

}  // namespace nerve::test
