// Node and route tables built from a cluster file: every peer reached through the first port
// that lists it, with the route's headers; the node table knows every node's address.
#include <catch2/catch.hpp>

#include <cstring>

#include "nerve/config.hpp"
#include "route/route_table.hpp"

using namespace nerve;

namespace {

const char* kCluster = R"(
[cluster]
name = "r"
[[node]]
id = 1
mac = "02:00:00:00:00:01"
ip = "198.18.0.1"
control_socket = "/tmp/r1.sock"
  [[node.port]]
  kind = "null"
  peers = [2, 3]
  [[node.port]]
  kind = "null"
  peers = [3, 4]
[[node]]
id = 2
mac = "02:00:00:00:00:02"
ip = "198.18.0.2"
control_socket = "/tmp/r2.sock"
  [[node.port]]
  kind = "null"
  peers = [1]
[[node]]
id = 3
mac = "02:00:00:00:00:03"
ip = "198.18.0.3"
control_socket = "/tmp/r3.sock"
  [[node.port]]
  kind = "null"
  peers = [1]
[[node]]
id = 4
mac = "02:00:00:00:00:04"
ip = "198.18.0.4"
control_socket = "/tmp/r4.sock"
  [[node.port]]
  kind = "null"
  peers = [1]
[[node]]
id = 5
mac = "02:00:00:00:00:05"
ip = "198.18.0.5"
control_socket = "/tmp/r5.sock"
  [[node.port]]
  kind = "null"
)";

}  // namespace

TEST_CASE("each peer is reached through the first port listing it", "[route]") {
  const auto c = config::load_string(kCluster);
  const std::vector<wire::Mac> macs = {{2, 0, 0, 0, 0, 0x11}, {2, 0, 0, 0, 0, 0x12}};
  const route::RouteTable t(c, c.node(1), macs);
  REQUIRE(t.routes().size() == 3);
  REQUIRE(t.find(2) != nullptr);
  CHECK(t.find(2)->port == 0);
  CHECK(t.find(3)->port == 0);  // listed by both ports: the first wins
  CHECK(t.find(4)->port == 1);
  CHECK(t.find(5) == nullptr);  // no link to it
  CHECK(t.find(1) == nullptr);
  CHECK(t.find(wire::kBroadcast) == nullptr);
  // The route's headers: from the port's MAC and the node's IP, to the peer's.
  const auto& b = t.find(4)->headers.bytes();
  CHECK(std::memcmp(b.data(), c.node(4).mac.data(), 6) == 0);
  CHECK(std::memcmp(b.data() + 6, macs[1].data(), 6) == 0);
  CHECK(t.find(4)->headers.dst() == 4);
}

TEST_CASE("the node table knows every node's address", "[route]") {
  const auto c = config::load_string(kCluster);
  const route::NodeTable n(c);
  for (std::uint16_t id = 1; id <= 5; ++id) {
    CHECK(n.known(id));
    CHECK(n.ip(id) == c.node(id).ip);
  }
  CHECK_FALSE(n.known(0));
  CHECK_FALSE(n.known(6));
  CHECK_FALSE(n.known(wire::kBroadcast));
}
