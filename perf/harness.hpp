// The nerve-perf framework: a scenario runs over a Session (the local transport plus a peer:
// an echo or a sink, in a child process, on a second lcore, or a kernel UDP socket) and yields
// Rows, which report.cc prints and writes (table, JSON, hgrm, SVG).
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "nerve/histogram.hpp"
#include "nerve/stats.hpp"

namespace nerve::perf {

struct Options {
  std::string scenario;
  std::string transport = "memif";  // ring, memif, af_packet, af_xdp, pci, kernel-udp
  std::vector<std::string> compare; // more transports to run the same scenario over
  std::vector<int> priorities{0};
  std::vector<std::size_t> sizes{64};
  std::uint64_t count = 0;          // measured messages; 0: use seconds
  double seconds = 0;               // measured time; used when count is 0
  std::uint64_t warmup = 1000;
  double rate = 0;                  // offered msgs/s; 0: closed loop (pingpong) or max (others)
  std::vector<int> background{4};   // isolation: flooding lanes
  double background_rate = 0;       // isolation: flood msgs/s; 0: as fast as the sender can
  double p99_limit_us = 0;          // throughput knee: p99 that must hold; 0: the lane's budget
  std::vector<double> sweep{0.01, 0.1, 0.25, 0.5, 0.75, 0.9};  // throughput: fractions of max
  std::string peer_idle = "busy";    // busy | backoff | backoff-p0-busy (the far end's idle policy)
  double gap_us = 0;                 // pingpong/isolation: pause between round trips
  std::string pci_a, pci_b;         // pci transport: the two ports, cabled to each other
  std::string json_path, hgrm_path, plot_path;
  bool progress = true;
  bool floor = false;               // repeat each row on the same port driven by a bare DPDK loop
  std::vector<int> hops{1};         // pingpong: links between the two ends (memif); >1 adds forwarders
  int hop_count = 1;                // the path length of the session being set up
  std::vector<std::uint32_t> node_counts{16, 64, 256, 1024, 4096};  // route: cluster sizes
  std::vector<std::string> topologies;
  unsigned rounds = 3;
  std::uint32_t heartbeat_miss = 0;  // failover: the cluster's heartbeat_miss; 0: the default (3)
  std::string fault = "drop=0.01,dup=0.005,reorder=0.01";  // reliability: faults of each port
  bool overhead = false;
  std::vector<unsigned> paths{1};   // reliability: 1 and/or 2 (over two links at once), one run each
  bool unreliable = false;          // reliability: without reliable delivery (what is lost stays lost)
  std::vector<unsigned> sidecar_hz;  // pingpong/oneway/...: runs without (0) and with (100) the sidecar
  unsigned sidecar = 0;              // this run's: 100 = nerve-telemetry samples node 1, tiers as configured
  bool reliable = false;             // pingpong/oneway/throughput/isolation: reliable delivery             // reliability: P0 round trips with and without, no faults
  unsigned members = 8;              // multicast: group members              // forward: rounds of the three forwarders, interleaved  // route: generated shapes (default leaf-spine, random)
};

struct Row {
  std::string scenario, transport;
  std::string stack = "nerve";  // nerve, raw (the bare DPDK floor), kernel (kernel-udp)
  int priority = 0;
  int hops = 1;            // links between the two ends (forwarding nodes + 1)
  std::size_t size = 0, frame_bytes = 0;
  std::uint64_t sent = 0, lost = 0, deadline_misses = 0;
  double rate_mps = 0;     // achieved (delivered) messages per second
  double offered_mps = 0;  // scheduled rate; 0 for closed loop / max
  double gbps = 0;         // rate_mps * frame bits
  std::string metric = "rtt";  // "rtt" or "one-way"
  std::string peer_idle = "busy";
  double gap_us = 0;
  bool has_background = false;
  std::vector<int> background_priorities;
  double background_rate_mps = 0;   // delivered to the peer
  double background_sent_mps = 0;   // handed to the transport
  double background_seconds = 0;
  // route: the cluster and its advertisement traffic (latency holds the table build times).
  std::uint64_t nodes = 0, links = 0, lsa_frames_per_refresh = 0, lsa_bytes_per_refresh = 0;
  double heartbeat_bytes_per_s = 0;
  unsigned round = 0;      // forward: which round
  // forward: the forwarder's busy cycles (TSC) per forwarded frame, as it counts them itself
  // (nerve: its polls that found work; testpmd: --record-core-cycles, its bursts that brought
  // frames); 0 when the forwarder did not report them.
  double cycles_per_frame = 0;
  double tsc_mhz = 0;
  std::uint16_t killed = 0;          // failover: the forwarder killed
  unsigned paths_at_kill = 0;        // failover: candidate links A had toward D when it was killed
  // failover: the messages lost, by when A sent them: before the kill (queued in the forwarder
  // when it died) and after it (sent toward it until A's link to it went down).
  std::uint64_t lost_before_kill = 0, lost_after_kill = 0;
  // failover: where the lost messages were (at most 16 runs): [from, to) in ms of the stream
  // from the kill (sends refused inside a run are part of it).
  std::vector<std::array<double, 2>> lost_runs_ms;
  double detect_ms = 0;  // failover: from the kill until A's link to it was down (-1: never, in the stream)
  std::uint32_t heartbeat_miss = 0;  // failover: the detection setting it ran with
  std::vector<std::pair<std::string, std::uint64_t>> refused;  // failover: sends the node refused, by status
  std::vector<std::pair<std::string, std::uint64_t>> refused_at_d;  // failover: frames D refused, by reason
  // failover: frames the surviving forwarder refused (by reason) or could not forward
  // ("forward_dropped")
  std::vector<std::pair<std::string, std::uint64_t>> refused_at_survivor;
  // failover: what A's links and route to D were when it refused sends after the kill (the
  // first refusal, then at most one line per 100 ms of them) and at the end of the stream.
  std::vector<std::string> trace;
  std::uint64_t duplicates = 0;      // failover, multicast, reliability: messages delivered twice (none expected)
  // reliability: delivered out of order, frames sent again, messages given up (reported), the
  // faults the ports injected (both directions), the fault profile.
  std::uint64_t reordered = 0, retransmits = 0, failed = 0, faults_injected = 0;
  std::string fault;
  bool reliable = false;
  int paths = 1;                     // reliability: over how many paths each message went
  int sidecar_hz = -1;               // -1: not asked (no "sidecar_hz" in the JSON row)
  stats::LaneSummary recovery{};     // reliability: frames sent again, first send to acknowledgement
  std::vector<std::uint64_t> member_counts;  // multicast: per member; service: per instance
  double chi2 = 0, chi2_p = 0;       // service spread against uniform (3 degrees of freedom)
  bool knee = false;
  bool max_point = false;  // throughput: the unpaced run that measured the maximum       // throughput: the highest offered rate at which p99 held
  std::shared_ptr<stats::Histogram> latency = std::make_shared<stats::Histogram>();
};

// The CPUs the harness may use, as the process started (before the EAL pinned this thread).
// The two ends of every scenario run on the first two. Call once early in main().
const std::vector<unsigned>& harness_cpus();

// Runs opt.scenario over one transport; throws std::invalid_argument for bad options, and
// Interrupted once SIGINT, SIGTERM or SIGHUP arrived (after tearing the session down: the
// peer, the namespaces, the files).
std::vector<Row> run_scenario(const Options& opt, const std::string& transport);
// `nerve-perf route`: table build times and advertisement traffic by cluster size (no DPDK).
std::vector<Row> route_bench(const Options& opt);
// `nerve-perf forward`: a node forwarding between two memif links beside dpdk-testpmd (io,
// macswap) on the same links, interleaved rounds.
std::vector<Row> forward_bench(const Options& opt);
// `nerve-perf failover`: a P0 stream across a diamond (af_packet, namespaces) whose forwarder
// is killed; the delivery gap and the messages lost.
std::vector<Row> failover_bench(const Options& opt);
// `nerve-perf multicast` / `service`: fan-out and load balancing on in-process ring links.
std::vector<Row> multicast_bench(const Options& opt);
std::vector<Row> service_bench(const Options& opt);
std::vector<Row> reliability_bench(const Options& opt);

struct Interrupted : std::runtime_error {
  explicit Interrupted(int sig) : std::runtime_error(fmt::format("interrupted by signal {}", sig)) {}
};
// Makes SIGINT, SIGTERM and SIGHUP stop a scenario at its next step (see Interrupted).
void install_interrupt_handlers();

// Removes what earlier runs that were killed outright (SIGKILL, a crash) left behind: their
// network namespaces, /tmp directories and DPDK runtime directories. Only those whose process
// is gone. Returns how many were removed.
unsigned reap_stale_runs();

// `nerve-perf peer ...`: the far end, in its own process.
int peer_main(const std::string& transport, const std::string& stack, const std::string& role,
              const std::string& config, int node, int udp_port, int cpu);

// Output.
void print_table(const std::vector<Row>& rows);
std::string to_json(const Options& opt, const std::vector<Row>& rows);
std::string to_hgrm(const std::vector<Row>& rows);
std::string to_svg(const std::vector<Row>& rows);

}  // namespace nerve::perf
