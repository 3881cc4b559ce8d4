// The cluster file reader: a good file loads; every kind of bad file is refused with a message
// naming the key.
#include <catch2/catch.hpp>

#include <filesystem>
#include <string>

#include "nerve/config.hpp"

using namespace nerve::config;

namespace {

const std::string kGood = R"(
[cluster]
name = "c"
udp_port = 47801

[[node]]
id = 1
name = "alpha"
mac = "02:00:00:00:00:01"
ip = "198.18.0.1"
control_socket = "/tmp/a.sock"
idle = "busy"
cores = [1]
  [[node.port]]
  kind = "memif"
  socket = "/tmp/ab.sock"
  role = "server"
  peers = [2]

[[node]]
id = 2
mac = "02:00:00:00:00:02"
ip = "198.18.0.2"
control_socket = "/tmp/b.sock"
profile = "production"
  [[node.port]]
  kind = "pci"
  address = "0000:3b:00.0"
  peers = [1]
)";

std::string refusal(const std::string& text) {
  try {
    load_string(text);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "accepted";
}

std::string replace(std::string s, const std::string& from, const std::string& to) {
  const auto at = s.find(from);
  REQUIRE(at != std::string::npos);
  return s.replace(at, from.size(), to);
}

}  // namespace

TEST_CASE("a complete cluster file loads with its values", "[config]") {
  const Cluster c = load_string(kGood);
  CHECK(c.name == "c");
  CHECK(c.udp_port == 47801);
  REQUIRE(c.nodes.size() == 2);
  const Node& a = c.node(1);
  CHECK(a.name == "alpha");
  CHECK(a.ip == 0xc6120001);
  CHECK(a.mac == nerve::wire::Mac{2, 0, 0, 0, 0, 1});
  CHECK(a.idle == Idle::kBusy);
  CHECK(a.cores == std::vector<unsigned>{1});
  REQUIRE(a.ports.size() == 1);
  CHECK(a.ports[0].kind == PortKind::kMemif);
  CHECK(a.ports[0].peers == std::vector<std::uint16_t>{2});
  CHECK(c.node(2).name == "node2");
  CHECK(c.node(2).profile == Profile::kProduction);
  CHECK(c.node(2).idle == Idle::kBusy);  // production busy-polls unless told otherwise
  CHECK(c.timestamp_window_ms == 10'000);
  CHECK(c.node(2).ports[0].address == "0000:3b:00.0");
}

TEST_CASE("bad cluster files name the problem", "[config]") {
  CHECK(refusal(replace(kGood, "ip = \"198.18.0.1\"\n", "")) == "node[0].ip: missing key");
  CHECK(refusal(replace(kGood, "id = 1\n", "id = \"one\"\n")) == "node[0].id: expected an integer, got a string");
  CHECK(refusal(replace(kGood, "id = 1\n", "id = 0\n")) == "node[0].id: 0 is out of range [1, 65534]");
  CHECK(refusal(replace(kGood, "idle = \"busy\"", "idel = \"busy\"")) == "node[0].idel: unknown key");
  CHECK(refusal(replace(kGood, "role = \"server\"", "role = \"master\"")) ==
        "node[0].port[0].role: must be \"server\" or \"client\", got 'master'");
  CHECK(refusal(replace(kGood, "kind = \"pci\"", "kind = \"pcie\"")).starts_with("node[1].port[0].kind: unknown port kind 'pcie'"));
  CHECK(refusal(replace(kGood, "peers = [2]", "peers = [7]")) == "node[0].port[0].peers[0]: node 7 is not in the cluster");
  CHECK(refusal(replace(kGood, "id = 2\n", "id = 1\n")) == "node[1].id: 1 is also node[0]'s");
  // Two nodes with one address would take each other's frames.
  CHECK(refusal(replace(kGood, "02:00:00:00:00:02", "02:00:00:00:00:01")) ==
        "node[1].mac: 02:00:00:00:00:01 is also node[0]'s");
  CHECK(refusal(replace(kGood, "198.18.0.2", "198.18.0.1")) == "node[1].ip: 198.18.0.1 is also node[0]'s");
  CHECK(refusal(replace(kGood, "/tmp/b.sock", "/tmp/a.sock")) == "node[1].control_socket: '/tmp/a.sock' is also node[0]'s");
  CHECK(refusal(replace(kGood, "02:00:00:00:00:01", "03:00:00:00:00:01")) ==
        "node[0].mac: 03:00:00:00:00:01 is not a unicast address");
  CHECK(refusal(replace(kGood, "198.18.0.1", "224.0.0.1")) == "node[0].ip: 224.0.0.1 is not a unicast address");
  CHECK(refusal(replace(kGood, "198.18.0.1", "0.0.0.0")) == "node[0].ip: 0.0.0.0 is not a unicast address");
  CHECK(refusal(replace(kGood, "idle = \"busy\"", "huge_dir = \"/mnt/huge\"")) ==
        "node[0].huge_dir: only with profile = \"production\" (dev nodes use no hugepages)");
  CHECK(refusal(replace(kGood, "udp_port = 47801", "timestamp_window_ms = 0")) ==
        "cluster.timestamp_window_ms: 0 is out of range [1, 86400000]");
  CHECK(refusal(replace(kGood, "mac = \"02:00:00:00:00:01\"", "mac = \"02:00:00:00:00\"")) ==
        "node[0].mac: '02:00:00:00:00' is not a MAC address");
  CHECK(refusal(replace(kGood, "ip = \"198.18.0.1\"", "ip = \"198.18.0.300\"")) ==
        "node[0].ip: '198.18.0.300' is not an IPv4 address");
  CHECK(refusal(replace(kGood, "udp_port = 47801", "udp_port = 70000")) == "cluster.udp_port: 70000 is out of range [1, 65535]");
  CHECK(refusal(replace(kGood, "[cluster]\nname = \"c\"", "[cluster]")) == "cluster.name: missing key");
  CHECK(refusal("[cluster]\nname = \"x\"\n") == "node: missing key (at least one [[node]])");
  CHECK(refusal("[cluster\n").starts_with("<string>:1:"));  // TOML syntax errors carry line:column
  CHECK(refusal(replace(kGood, "cores = [1]", "cores = [\"a\"]")) == "node[0].cores[0]: expected an integer");
}

TEST_CASE("an unknown node id is named with the file", "[config]") {
  const Cluster c = load_string(kGood, "cluster.toml");
  CHECK_THROWS_WITH(c.node(9), "node 9 is not in cluster.toml");
  CHECK(c.find(9) == nullptr);
}

TEST_CASE("addresses parse and format", "[config]") {
  nerve::wire::Mac m{};
  CHECK(parse_mac("0a:1b:2c:3d:4e:5f", m));
  CHECK(format_mac(m) == "0a:1b:2c:3d:4e:5f");
  CHECK_FALSE(parse_mac("0a:1b:2c:3d:4e:5g", m));
  CHECK_FALSE(parse_mac("0a-1b-2c-3d-4e-5f", m));
  std::uint32_t ip = 0;
  CHECK(parse_ipv4("198.19.255.1", ip));
  CHECK(format_ipv4(ip) == "198.19.255.1");
  CHECK_FALSE(parse_ipv4("1.2.3", ip));
}

TEST_CASE("the example cluster files in docs/examples load", "[config]") {
  std::size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(NERVE_SOURCE_ROOT "/docs/examples")) {
    if (e.path().extension() != ".toml") continue;
    ++files;
    INFO(e.path().string());
    const Cluster c = load_file(e.path());
    CHECK(c.nodes.size() >= 2);
    for (const auto& n : c.nodes) CHECK(!n.ports.empty());
  }
  CHECK(files >= 2);
}

TEST_CASE("the idle policy defaults to the profile's: busy in production, backoff in dev", "[config]") {
  const Cluster c = load_string(replace(kGood, "idle = \"busy\"\n", ""));
  CHECK(c.node(1).profile == Profile::kDev);
  CHECK(c.node(1).idle == Idle::kBackoff);
  CHECK(c.node(2).idle == Idle::kBusy);
  const Cluster told = load_string(replace(kGood, "profile = \"production\"", "profile = \"production\"\nidle = \"backoff\""));
  CHECK(told.node(2).idle == Idle::kBackoff);
}

namespace {

// A chain 1 - 2 - 3 with a group and a service, for the routing keys.
const std::string kChain = R"(
[cluster]
name = "chain"
heartbeat_hz = 500
heartbeat_miss = 4
lsa_refresh_ms = 2000
ttl = 6
route_metric = ["delay", "load", "delay", "load", "load"]

[[node]]
id = 1
mac = "02:00:00:00:00:01"
ip = "198.18.0.1"
control_socket = "/tmp/c1.sock"
  [[node.port]]
  kind = "null"
  peers = [2]
  [[node.route]]
  to = 3
  via = 2

[[node]]
id = 2
mac = "02:00:00:00:00:02"
ip = "198.18.0.2"
control_socket = "/tmp/c2.sock"
  [[node.port]]
  kind = "null"
  peers = [1, 3]

[[node]]
id = 3
mac = "02:00:00:00:00:03"
ip = "198.18.0.3"
control_socket = "/tmp/c3.sock"
  [[node.port]]
  kind = "null"
  peers = [2]

[[group]]
name = "ops"
id = 7
members = [1, 3]

[[service]]
name = "db"
id = 4
instances = [2, 3]
policy = "hash"
timeout_ms = 250
)";

}  // namespace

TEST_CASE("routing keys: groups, services, static routes, heartbeats, metrics", "[config][route]") {
  const Cluster c = load_string(kChain);
  CHECK(c.heartbeat_hz == 500);
  CHECK(c.heartbeat_miss == 4);
  CHECK(c.lsa_refresh_ms == 2000);
  CHECK(c.ttl == 6);
  CHECK(c.route_metric[1] == RouteMetric::kLoad);
  CHECK(c.route_metric[2] == RouteMetric::kDelay);
  REQUIRE(c.groups.size() == 1);
  CHECK(c.find_group("ops")->id == 7);
  CHECK(c.find_group(std::uint16_t{7})->members == std::vector<std::uint16_t>{1, 3});
  CHECK(c.group_index(7) == 0);
  CHECK(c.group_index(8) == -1);
  REQUIRE(c.find_service("db"));
  CHECK(c.find_service("db")->policy == Balance::kHash);
  CHECK(c.find_service(std::uint16_t{4})->timeout_ms == 250);
  CHECK(c.find_service("nope") == nullptr);
  REQUIRE(c.node(1).routes.size() == 1);
  CHECK(c.node(1).routes[0].to == 3);
  // Defaults.
  const Cluster d = load_string(kGood);
  CHECK(d.heartbeat_hz == 1000);
  CHECK(d.heartbeat_miss == 3);
  CHECK(d.route_metric[0] == RouteMetric::kDelay);
  CHECK(d.route_metric[4] == RouteMetric::kLoad);
  CHECK(d.ttl == 8);
  CHECK(d.reliable_peers == 64);
  CHECK(load_string(replace(kChain, "heartbeat_miss = 4", "heartbeat_miss = 4\nreliable_peers = 2")).reliable_peers == 2);
  CHECK(d.max_message == 1u << 20);
  CHECK(d.message_buffers == 4);
  const auto big = load_string(replace(kChain, "ttl = 6", "ttl = 6\nmax_message = 4000000\nmessage_buffers = 2"));
  CHECK(big.max_message == 4'000'000);
  CHECK(big.message_buffers == 2);
}

TEST_CASE("routing keys: bad groups, services and routes are named", "[config][route]") {
  CHECK(refusal(replace(kChain, "peers = [1, 3]", "peers = [3]")) ==
        "node[0].port[0].peers[0]: node 2 lists no port with node 1 as a peer (a link is declared at both ends)");
  CHECK(refusal(replace(kChain, "ttl = 6", "ttl = 0")) == "cluster.ttl: 0 is out of range [1, 255]");
  CHECK(refusal(replace(kChain, "ttl = 6", "ttl = 6\nreliable_peers = 70000")) ==
        "cluster.reliable_peers: 70000 is out of range [0, 65534]");
  CHECK(refusal(replace(kChain, "ttl = 6", "ttl = 6\nmax_message = 16777217")) ==
        "cluster.max_message: 16777217 is out of range [0, 16777216]");
  CHECK(refusal(replace(kChain, "ttl = 6", "ttl = 6\nmessage_buffers = 0")) ==
        "cluster.message_buffers: 0 is out of range [1, 1024]");
  CHECK(refusal(replace(kChain, "heartbeat_miss = 4", "heartbeat_miss = 0")) ==
        "cluster.heartbeat_miss: 0 is out of range [1, 1000]");
  CHECK(refusal(replace(kChain, "[\"delay\", \"load\", \"delay\", \"load\", \"load\"]", "[\"delay\"]")) ==
        "cluster.route_metric: expected 5 values (one per lane), \"delay\" or \"load\"");
  CHECK(refusal(replace(kChain, "\"load\", \"delay\", \"load\", \"load\"]", "\"fast\", \"delay\", \"load\", \"load\"]")) ==
        "cluster.route_metric[1]: must be \"delay\" or \"load\"");
  CHECK(refusal(replace(kChain, "members = [1, 3]", "members = [1, 9]")) ==
        "group[0].members[1]: node 9 is not in the cluster");
  CHECK(refusal(kChain + "[[group]]\nname = \"ops\"\nid = 8\n") == "group[1].name: 'ops' is also group[0]'s");
  CHECK(refusal(kChain + "[[group]]\nname = \"dev\"\nid = 7\n") == "group[1].id: 7 is also group[0]'s");
  CHECK(refusal(replace(kChain, "instances = [2, 3]", "instances = []")) ==
        "service[0].instances: a service needs at least one instance");
  CHECK(refusal(replace(kChain, "instances = [2, 3]", "instances = [2, 2]")) ==
        "service[0].instances[1]: node 2 is listed twice");
  CHECK(refusal(replace(kChain, "instances = [2, 3]", "instances = [2, 5]")) ==
        "service[0].instances[1]: node 5 is not in the cluster");
  CHECK(refusal(replace(kChain, "policy = \"hash\"", "policy = \"random\"")) ==
        "service[0].policy: must be \"round_robin\", \"least_outstanding\" or \"hash\", got 'random'");
  CHECK(refusal(kChain + "[[service]]\nname = \"db\"\nid = 5\ninstances = [1]\n") ==
        "service[1].name: 'db' is also service[0]'s");
  CHECK(refusal(replace(kChain, "to = 3\n  via = 2", "to = 3\n  via = 3")) ==
        "node[0].route[0].via: node 3 is not a peer of node 1");
  CHECK(refusal(replace(kChain, "to = 3\n  via = 2", "to = 8\n  via = 2")) ==
        "node[0].route[0].to: node 8 is not in the cluster");
  CHECK(refusal(replace(kChain, "to = 3\n  via = 2", "to = 1\n  via = 2")) ==
        "node[0].route[0].to: a node needs no route to itself");
  // 1 sends frames for 3 to 2, and 2 sends them back to 1: a loop.
  const std::string loop = replace(kChain, "  peers = [1, 3]\n", "  peers = [1, 3]\n  [[node.route]]\n  to = 3\n  via = 1\n");
  CHECK(refusal(loop) == "route: static routes to node 3 loop: 1 -> 2 -> 1");
}

TEST_CASE("telemetry keys: tiers, stats region, metrics address", "[config][telemetry]") {
  const Cluster d = load_string(kGood);
  CHECK(d.nodes[0].stats_region == "/dev/shm/nerve-tmp-a.sock.stats");
  CHECK(d.nodes[0].metrics_listen.empty());
  CHECK(d.telemetry.tiers[0] == std::vector<std::string>{"lanes"});
  CHECK(d.telemetry.tiers[3] == std::vector<std::string>{"cpu", "memory", "storage"});
  CHECK(d.telemetry.storage_paths == std::vector<std::string>{"/"});

  // Moving a group to another tier takes it out of its default one.
  const Cluster c = load_string(
      replace(kGood, "idle = \"busy\"", "idle = \"busy\"\nstats_region = \"off\"\nmetrics_listen = \"127.0.0.1:9464\"") +
      "[telemetry]\ncritical = [\"lanes\", \"errors\"]\nhistorical = [\"storage\"]\nstorage_paths = [\"/\", \"/tmp\"]\n");
  CHECK(c.nodes[0].stats_region.empty());
  CHECK(c.nodes[0].metrics_listen == "127.0.0.1:9464");
  CHECK(c.nodes[1].stats_region == "/dev/shm/nerve-tmp-b.sock.stats");
  CHECK(c.telemetry.tiers[0] == std::vector<std::string>{"lanes", "errors"});
  CHECK(c.telemetry.tiers[1] == std::vector<std::string>{"links"});
  CHECK(c.telemetry.tiers[3] == std::vector<std::string>{"cpu", "memory"});
  CHECK(c.telemetry.tiers[4] == std::vector<std::string>{"storage"});
  CHECK(c.telemetry.storage_paths.size() == 2);
}

TEST_CASE("telemetry keys: bad tiers and addresses are named", "[config][telemetry]") {
  CHECK_THAT(refusal(kGood + "[telemetry]\ncritical = [\"lanes\", \"bogus\"]\n"),
             Catch::Contains("telemetry.critical[1]: unknown metric group 'bogus'"));
  CHECK_THAT(refusal(kGood + "[telemetry]\ncritical = [\"lanes\"]\nhigh = [\"lanes\"]\n"),
             Catch::Contains("metric group 'lanes' is also in telemetry.critical"));
  CHECK_THAT(refusal(kGood + "[telemetry]\ncritical = \"lanes\"\n"),
             Catch::Contains("telemetry.critical: expected an array of strings"));
  CHECK_THAT(refusal(kGood + "[telemetry]\nstorage_paths = [\"tmp\"]\n"),
             Catch::Contains("telemetry.storage_paths[0]: an absolute path"));
  CHECK_THAT(refusal(kGood + "[telemetry]\nhourly = []\n"), Catch::Contains("telemetry.hourly: unknown key"));
  CHECK_THAT(refusal(replace(replace(kGood, "idle = \"busy\"", "idle = \"busy\"\nstats_region = \"/dev/shm/x\""),
                             "profile = \"production\"", "profile = \"production\"\nstats_region = \"/dev/shm/x\"")),
             Catch::Contains("node[1].stats_region: '/dev/shm/x' is also node[0]'s"));
  CHECK_THAT(refusal(kGood + "[telemetry]\nhistory_dir = \"rel\"\n"),
             Catch::Contains("telemetry.history_dir: an absolute path"));
  CHECK_THAT(refusal(kGood + "[telemetry]\nhistory_retention_s = 5\n"),
             Catch::Contains("telemetry.history_retention_s"));
  CHECK_THAT(refusal(kGood + "[telemetry]\npush_to = [9]\n"), Catch::Contains("telemetry.push_to[0]: node 9 is not in"));
  CHECK_THAT(refusal(kGood + "[telemetry]\npush_to = [2]\npush_tiers = [\"hourly\"]\n"),
             Catch::Contains("telemetry.push_tiers[0]: unknown tier 'hourly'"));
  CHECK(load_string(kGood + "[telemetry]\npush_to = [2]\npush_tiers = [\"critical\"]\n").telemetry.push_to ==
        std::vector<std::uint16_t>{2});
  CHECK_THAT(refusal(replace(kGood, "idle = \"busy\"", "idle = \"busy\"\nmetrics_listen = \"localhost:80\"")),
             Catch::Contains("node[0].metrics_listen: expected \"IPv4:port\""));
  CHECK_THAT(refusal(replace(kGood, "idle = \"busy\"", "idle = \"busy\"\nmetrics_listen = \"127.0.0.1:70000\"")),
             Catch::Contains("node[0].metrics_listen"));
  CHECK_THAT(refusal(replace(kGood, "idle = \"busy\"", "idle = \"busy\"\nstats_region = \"/dev/shm/\"")),
             Catch::Contains("node[0].stats_region: a file path or \"off\""));
}
