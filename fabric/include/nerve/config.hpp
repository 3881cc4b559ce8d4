// The cluster file: one TOML file describes every node, its ports and the links between them.
// A node is started with that file and its node id. Parsing is strict: a missing key, a wrong
// type, an out-of-range value or an unknown key throws ConfigError naming the key.
// docs/operations.md ("The cluster file") documents every key with its default and bounds.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "nerve/wire.hpp"

namespace nerve::config {

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class Profile { kDev, kProduction };
enum class Idle { kBusy, kBackoff };
enum class PortKind { kRing, kMemif, kAfPacket, kAfXdp, kTap, kNull, kPci };
// How a port keeps the lanes apart on receive. The cluster file says "auto" (the default) or
// "software"; a running port is always one of the other three (docs/architecture.md, "Lanes"):
enum class LaneMode : std::uint8_t {
  kAuto,      // config only: paired for ring/memif, flow for pci (if the NIC accepts the rules), else software
  kPaired,    // one queue per lane at both ends (ring, memif): lane i on queue i
  kFlow,      // the NIC steers each DSCP to its own RX queue (rte_flow)
  kSoftware,  // one shared RX queue, classified right after rx_burst, P0 delivered first
};

// What a lane's routes minimise where several paths exist (docs/architecture.md, "Routing").
enum class RouteMetric : std::uint8_t {
  kDelay,  // the lowest measured delay (heartbeat round trips): P0-P2 by default
  kLoad,   // the least loaded path, spread over equal-cost paths by flow: P3/P4 by default
};
// How a service picks one of its instances for a message.
enum class Balance : std::uint8_t {
  kRoundRobin,        // each live instance in turn
  kLeastOutstanding,  // the fewer requests awaiting a response of two random live instances
  kHash,              // by the message's key (rendezvous hashing): one key, one instance while it lives
};

std::string_view to_string(PortKind k) noexcept;
std::string_view to_string(RouteMetric m) noexcept;
std::string_view to_string(Balance b) noexcept;
std::string_view to_string(LaneMode m) noexcept;
std::string_view to_string(Profile p) noexcept;
std::string_view to_string(Idle i) noexcept;

// Faults a port injects into the frames it receives (drivers/fault.hpp): each frame of the
// chosen lanes is dropped, corrupted (one bit flipped past the Ethernet header), duplicated,
// reordered (held until the next frame has passed) or delayed with the given probabilities,
// drawn from a generator seeded with `seed`: one seed, one sequence of faults. Written
// "drop=0.01,dup=0.005,reorder=0.01,delay=0.1,delay_us=50,corrupt=0.001,lanes=0-2,seed=7"
// (parse_fault); delay_us without delay delays every frame.
struct FaultSpec {
  double drop = 0, dup = 0, reorder = 0, delay = 0, corrupt = 0;
  std::uint32_t delay_us = 0;      // [0, 1000000]
  std::uint8_t lanes = 0x1f;       // bit p: frames of priority p are subject to faults
  std::uint64_t seed = 1;
  bool any() const noexcept { return drop > 0 || dup > 0 || reorder > 0 || (delay > 0 && delay_us > 0) || corrupt > 0; }
};
// Parses a fault profile; throws ConfigError naming `key` and the bad item.
FaultSpec parse_fault(std::string_view s, const std::string& key);
std::string format_fault(const FaultSpec& f);

struct Port {
  PortKind kind = PortKind::kNull;
  std::vector<std::uint16_t> peers;   // nodes reached through this port
  std::string pair;                   // ring: name shared by both ends (in one process)
  std::string socket;                 // memif: control socket path
  std::string role;                   // memif: "server" or "client"
  std::string iface;                  // af_packet, af_xdp, tap: kernel interface
  std::string address;                // pci: bus address, e.g. 0000:3b:00.0
  std::uint16_t rx_desc = 512;        // descriptors per RX queue, [64, 4096]
  std::uint16_t tx_desc = 512;        // descriptors per TX queue, [64, 4096]
  LaneMode lanes = LaneMode::kAuto;
  // Faults injected into what this port receives (the direction from its peers to this node);
  // none by default. The other direction is its peer's port's.
  FaultSpec fault;
};

// A route fixed in the cluster file: frames for `to` leave through neighbour `via` (while it is
// up), whatever the routing protocol computes.
struct StaticRoute {
  std::uint16_t to = 0;
  std::uint16_t via = 0;              // a peer of one of the node's ports
};

struct Node {
  std::uint16_t id = 0;               // 1 .. 65534
  std::string name;
  wire::Mac mac{};
  std::uint32_t ip = 0;               // host order
  std::string control_socket;         // unix socket nerved serves and nerve-ctl uses
  // The stats region nerved publishes its figures in (nerve/telemetry.hpp); "" with
  // stats_region = "off". Default: default_stats_region(control_socket).
  std::string stats_region;
  // Where the node's telemetry sidecar serves Prometheus' /metrics ("address:port"); "": not.
  std::string metrics_listen;
  Profile profile = Profile::kDev;
  Idle idle = Idle::kBackoff;         // default: busy in the production profile, backoff in dev
  std::string huge_dir;               // production: the hugetlbfs mount to use (default: EAL's choice)
  std::uint32_t idle_sleep_max_us = 200;  // back-off: longest sleep when idle, [1, 100000]
  std::vector<unsigned> cores;        // empty: chosen on the ports' NUMA socket
  std::uint32_t memory_mb = 256;      // dev profile: EAL memory without hugepages, [64, 65536]
  std::uint32_t mbufs = 8191;         // mbufs in the node's pool, [1023, 1048575]
  // Lanes (SPEC.md "Message Priority"): delivery budget, TX queue depth and the share of TX
  // slots each lower lane keeps under load.
  std::array<std::uint32_t, wire::kPriorities> lane_budget_us{100, 500, 1000, 2000, 5000};
  std::array<std::uint32_t, wire::kPriorities> lane_depth{512, 512, 512, 1024, 1024};
  double lane_min_share = 0.01;       // each of P1..P4, [0, 0.2]
  // Back-off: while a frame of one of these lanes was sent or received in the last
  // busy_window_ms, the node busy-polls instead of sleeping.
  std::vector<unsigned> busy_lanes{0};
  std::uint32_t busy_window_ms = 100; // [0, 3600000]
  std::vector<Port> ports;
  std::vector<StaticRoute> routes;    // [[node.route]]
};

// A multicast group: a message to it reaches every member once. Members listed here join at
// start; nodes join and leave at run time (Node::join/leave, nerve-ctl).
struct Group {
  std::string name;                   // unique
  std::uint16_t id = 0;               // 1 .. 65534, unique among groups (the frame's dst with kMulticast)
  std::vector<std::uint16_t> members;
};

// A load-balanced service: a message to it goes to one live instance, by the policy.
struct Service {
  std::string name;                   // unique
  std::uint16_t id = 0;               // 1 .. 65534, unique among services
  std::vector<std::uint16_t> instances;  // at least one
  Balance policy = Balance::kRoundRobin;
  // A request to an instance unanswered this long is reported failed to its sender.
  std::uint32_t timeout_ms = 1000;    // [1, 3600000]
};

inline constexpr std::size_t kMaxNodes = 4096;     // per cluster (routes are computed over all of them)
inline constexpr std::size_t kMaxGroups = 64;      // a group is a bit in the routes' subtree masks
inline constexpr std::size_t kMaxInstances = 64;   // per service

// The telemetry sidecar's sampling tiers (SPEC.md "Reporting Frequency"): which metric groups
// are sampled how often. A group sits in at most one tier; a group in none is not sampled.
inline constexpr std::size_t kTiers = 5;
inline constexpr std::array<std::string_view, kTiers> kTierNames = {"critical", "high", "standard", "background",
                                                                    "historical"};
inline constexpr std::array<std::uint64_t, kTiers> kTierPeriodNs = {10'000'000, 20'000'000, 100'000'000,
                                                                    1'000'000'000, 10'000'000'000};
inline constexpr std::array<std::string_view, 9> kMetricGroups = {"lanes", "errors", "links", "ports", "datapath",
                                                                  "reliable", "cpu", "memory", "storage"};
struct Telemetry {
  std::array<std::vector<std::string>, kTiers> tiers{{{"lanes"},
                                                      {"errors", "links"},
                                                      {"ports", "datapath", "reliable"},
                                                      {"cpu", "memory", "storage"},
                                                      {}}};
  std::vector<std::string> storage_paths{"/"};  // file systems the storage group reports (statvfs)
  // Push: every node's sidecar sends the samples of push_tiers to these nodes over the fabric
  // (tier k on lane Pk; errors and links as status messages, the rest as metric messages).
  std::vector<std::uint16_t> push_to;
  std::vector<std::string> push_tiers{"critical", "high", "standard", "background", "historical"};
  // History: at each historical tick (0.1 Hz) the sidecar appends a roll-up of every group's
  // newest figures and the lanes' latency over the window to an hourly file in history_dir
  // (an existing directory; "": no history), keeping history_retention_s of them and at most
  // history_max_mb.
  std::string history_dir;
  std::uint32_t history_retention_s = 21'600;  // [60, 31536000]
  std::uint32_t history_max_mb = 256;          // [1, 1048576]
};

// /dev/shm (memory, never written back to a disk), named after the control socket, which is
// unique on the host: /run/nerve/n1.sock -> /dev/shm/nerve-run-nerve-n1.sock.stats
std::string default_stats_region(const std::string& control_socket);

struct Cluster {
  std::string name;
  std::uint16_t udp_port = wire::kDefaultUdpPort;
  std::uint16_t mtu = 1500;           // IP MTU of every link, [576, 9000]; > 1500 means jumbo frames
  // A received frame whose send timestamp is further than this from the receiver's clock is
  // refused (bad_timestamp): clocks of the cluster's hosts must agree this well. [1, 86400000]
  std::uint32_t timestamp_window_ms = 10'000;
  // Routing (docs/architecture.md, "Routing"). Neighbours exchange heartbeats on P0 at
  // heartbeat_hz (0: none, every configured neighbour counts as up, and ports' link states are
  // not read either); one not heard for heartbeat_miss periods and a half is down. Each node
  // re-advertises its links every lsa_refresh_ms even when nothing changed.
  std::uint32_t heartbeat_hz = 1000;  // [0, 100000]
  std::uint32_t heartbeat_miss = 3;   // [1, 1000]
  std::uint32_t lsa_refresh_ms = 5000;  // [100, 3600000]
  std::uint8_t ttl = 8;               // hops a frame may take, [1, 255]
  // Reliable delivery: a message unacknowledged this long is given up and reported to its
  // sender (Node::on_delivery_failure). [1, 3600000]
  std::uint32_t reliable_give_up_ms = 1000;
  // Peers a node keeps reliable sessions with at once: their state (~200 kB each) is allocated
  // when the node starts, never on the datapath. [0, 65534]; fewer when the cluster is smaller.
  std::uint32_t reliable_peers = 64;
  // Messages larger than one frame (docs/architecture.md, "Large messages"): up to max_message
  // bytes, sent reliably as fragments and reassembled. Each node allocates message_buffers
  // buffers of max_message bytes for sending and as many for reassembly when it starts.
  // max_message [0, 16 MiB] (0: one frame at most, no buffers); message_buffers [1, 1024].
  std::uint32_t max_message = 1u << 20;
  std::uint32_t message_buffers = 4;
  std::array<RouteMetric, wire::kPriorities> route_metric{RouteMetric::kDelay, RouteMetric::kDelay,
                                                          RouteMetric::kDelay, RouteMetric::kLoad, RouteMetric::kLoad};
  std::filesystem::path source;       // the file it was read from
  std::vector<Node> nodes;
  std::vector<Group> groups;          // [[group]]
  std::vector<Service> services;      // [[service]]
  Telemetry telemetry;                // [telemetry]

  const Node& node(std::uint16_t id) const;  // throws ConfigError "node N is not in <file>"
  const Node* find(std::uint16_t id) const noexcept;
  const Group* find_group(std::string_view name) const noexcept;
  const Group* find_group(std::uint16_t id) const noexcept;
  const Service* find_service(std::string_view name) const noexcept;
  const Service* find_service(std::uint16_t id) const noexcept;
  // Index of group `id` in `groups` (its bit in group masks), or -1.
  int group_index(std::uint16_t id) const noexcept;
};

// Largest payload one frame carries at `mtu`.
constexpr std::size_t max_payload(std::uint16_t mtu) noexcept {
  return mtu - wire::kIpv4Len - wire::kUdpLen - wire::kHeaderLen;
}

Cluster load_file(const std::filesystem::path& path);
Cluster load_string(std::string_view toml, const std::filesystem::path& source = "<string>");

bool parse_mac(std::string_view s, wire::Mac& out) noexcept;
bool parse_ipv4(std::string_view s, std::uint32_t& out) noexcept;
std::string format_mac(const wire::Mac& m);
std::string format_ipv4(std::uint32_t ip);

}  // namespace nerve::config
