// EAL command lines per profile, and ports of the kinds the other suites do not start
// (tap, null), brought up and torn down for real.
#include <catch2/catch.hpp>

#include <net/if.h>
#include <numa.h>
#include <numaif.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstring>

#include "eal.hpp"
#include "nerve/node.hpp"
#include "support.hpp"

using namespace nerve;

namespace {
bool has(const std::vector<std::string>& v, const std::string& s) { return std::find(v.begin(), v.end(), s) != v.end(); }
}  // namespace

TEST_CASE("dev profile: no hugepages, no PCI, own file prefix, pinned core", "[drivers]") {
  const auto c = config::load_string(R"(
[cluster]
name = "lab"
[[node]]
id = 3
mac = "02:00:00:00:00:03"
ip = "198.18.0.3"
control_socket = "/tmp/x.sock"
memory_mb = 300
cores = [1]
  [[node.port]]
  kind = "null"
)");
  const auto o = drivers::eal_options_for(c, c.node(3));
  const auto a = drivers::eal_args(o);
  CHECK(has(a, "--no-huge"));
  CHECK(has(a, "--no-pci"));
  CHECK(has(a, "300"));
  CHECK(has(a, "--file-prefix=nerve-lab-3"));
  CHECK(has(a, "-l"));
  CHECK(has(a, "1"));
}

TEST_CASE("production profile: hugepages and a PCI allow-list", "[drivers]") {
  const auto c = config::load_string(R"(
[cluster]
name = "prod"
[[node]]
id = 1
mac = "02:00:00:00:00:01"
ip = "198.18.0.1"
control_socket = "/tmp/y.sock"
profile = "production"
  [[node.port]]
  kind = "pci"
  address = "0000:3b:00.0"
  [[node.port]]
  kind = "pci"
  address = "0000:3b:00.1"
)");
  const auto o = drivers::eal_options_for(c, c.node(1));
  const auto a = drivers::eal_args(o);
  CHECK_FALSE(has(a, "--no-huge"));
  CHECK_FALSE(has(a, "--no-pci"));
  CHECK(has(a, "0000:3b:00.0"));
  CHECK(has(a, "0000:3b:00.1"));
  REQUIRE(o.cores.size() == 1);  // chosen automatically, on an allowed CPU
  const auto cpus = drivers::cpus_on_node(-1);
  CHECK(std::find(cpus.begin(), cpus.end(), o.cores[0]) != cpus.end());
}

TEST_CASE("tap and null ports come up, carry traffic out, and go away", "[drivers]") {
  const std::string tap = fmt::format("nvtap{}", getpid() % 100000);
  const auto c = config::load_string(fmt::format(R"(
[cluster]
name = "kinds"
[[node]]
id = 1
mac = "02:00:00:00:00:01"
ip = "198.18.5.1"
control_socket = "/tmp/kinds-1.sock"
  [[node.port]]
  kind = "tap"
  iface = "{}"
  peers = [2]
  [[node.port]]
  kind = "null"
  peers = [3]
[[node]]
id = 2
mac = "02:00:00:00:00:02"
ip = "198.18.5.2"
control_socket = "/tmp/kinds-2.sock"
  [[node.port]]
  kind = "null"
  peers = [1]
[[node]]
id = 3
mac = "02:00:00:00:00:03"
ip = "198.18.5.3"
control_socket = "/tmp/kinds-3.sock"
  [[node.port]]
  kind = "null"
  peers = [1]
)", tap));
  {
    NodeOptions o;
    o.link_wait = std::chrono::milliseconds(500);
    Node n(c, 1, test::eal(), o);
    const auto ports = n.ports();
    REQUIRE(ports.size() == 2);
    CHECK(ports[0].kind == config::PortKind::kTap);
    CHECK(ports[1].kind == config::PortKind::kNull);
    CHECK(if_nametoindex(tap.c_str()) != 0);  // the kernel sees the TAP interface
    const std::string msg = "to the sink";
    CHECK(n.send_copy(3, MsgType::kMetric, 4, std::as_bytes(std::span(msg))) == SendStatus::kOk);
    CHECK(n.send_copy(9, MsgType::kMetric, 4, std::as_bytes(std::span(msg))) == SendStatus::kNoRoute);
    n.poll();
    CHECK(n.snapshot().tx_frames == 1);
    CHECK(n.ports()[1].opackets == 1);
    CHECK(n.snapshot().tx_no_route == 1);
  }
  CHECK(if_nametoindex(tap.c_str()) == 0);  // removed with the port
}

TEST_CASE("datapath memory touched before pinning is placed on the datapath's NUMA node", "[drivers]") {
  const std::size_t len = 16 * 4096;
  void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  REQUIRE(p != MAP_FAILED);
  std::memset(p, 1, len);  // faulted in wherever this thread ran
  CHECK(test::eal().place_near_datapath(p, len));
  int node = -1;
  if (numa_available() >= 0 && ::get_mempolicy(&node, nullptr, 0, p, MPOL_F_NODE | MPOL_F_ADDR) == 0)
    CHECK(node == std::max(0, test::eal().socket()));
  ::munmap(p, len);
}
