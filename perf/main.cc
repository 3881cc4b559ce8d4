// nerve-perf: the latency harness. See docs/benchmarks.md for the method.
//
//   nerve-perf pingpong   --transport memif --priority 0 --size 64 --count 100000 [--rate R]
//   nerve-perf oneway     --transport memif --rate 100000 --seconds 2
//   nerve-perf throughput --transport memif --size 64,1024,8192 [--sweep 0.1,0.5,0.9,1]
//   nerve-perf isolation  --transport memif --background 4 --background 1
//   ... [--compare kernel-udp] [--json F] [--hgrm F] [--plot F.svg]
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <csignal>
#include <fstream>

#include "../apps/common/cli.hpp"
#include "harness.hpp"
#include "nerve/config.hpp"

using namespace nerve::perf;

int main(int argc, char** argv) {
  CLI::App cli{"nerve-perf: the nerve latency harness."};
  cli.require_subcommand(1);
  Options o;
  const std::vector<std::string> transports = {"ring", "memif", "af_packet", "af_xdp", "pci", "kernel-udp"};
  std::vector<std::string> background;

  auto common = [&](CLI::App* sc) {
    sc->add_option("--transport", o.transport, "ring, memif, af_packet, af_xdp, pci or kernel-udp (default memif)")
        ->check(CLI::IsMember(transports));
    sc->add_option("--compare", o.compare, "run the same scenario over these transports too (e.g. kernel-udp)")
        ->delimiter(',')
        ->check(CLI::IsMember(transports));
    sc->add_option("--priority", o.priorities, "lane(s) 0..4, comma-separated (default 0)")
        ->delimiter(',')
        ->check(CLI::Range(0, 4));
    sc->add_option("--size", o.sizes, "payload bytes, comma-separated (default 64)")->delimiter(',');
    sc->add_option("--count", o.count, "measured messages")->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1'000'000'000'000}));
    sc->add_option("--seconds", o.seconds, "measured time (instead of --count)")->check(CLI::Range(0.01, 86400.0));
    sc->add_option("--warmup", o.warmup, "messages before measuring (default 1000)")
        ->check(CLI::Range(std::uint64_t{0}, std::uint64_t{1'000'000'000}));
    sc->add_option("--rate", o.rate, "offered messages/s, open loop (default: closed loop / max)")
        ->check(CLI::Range(0.0, 1e9));
    sc->add_option("--json", o.json_path, "write results as JSON");
    sc->add_option("--hgrm", o.hgrm_path, "write HdrHistogram percentile distributions");
    sc->add_option("--plot", o.plot_path, "write an SVG of latency by percentile");
    sc->add_option("--pci-a", o.pci_a, "pci transport: this side's port address");
    sc->add_option("--pci-b", o.pci_b, "pci transport: the peer's port address");
    sc->add_flag("!--no-progress", o.progress, "no progress bar");
    sc->add_option("--peer-idle", o.peer_idle,
                   "the far end's idle policy: busy (default), backoff, or backoff-p0-busy (backs off, but stays "
                   "busy for 100 ms after P0 traffic); kernel-udp: backoff blocks in poll(2)")
        ->check(CLI::IsMember({"busy", "backoff", "backoff-p0-busy"}));
    sc->add_option("--gap-us", o.gap_us, "pingpong/isolation: idle gap between round trips (default 0)")
        ->check(CLI::Range(0.0, 1e7));
    sc->add_option("--sidecar-hz", o.sidecar_hz,
                   "runs without (0) and with (100) a nerve-telemetry sidecar sampling the measured node "
                   "(its cluster tiers: 100 Hz at the top), in the order given, e.g. 0,100,0,100")
        ->delimiter(',')
        ->check(CLI::IsMember({0u, 100u}));
    sc->add_flag("--reliable", o.reliable, "send with reliable delivery (nerve transports; rows say \"reliable\": true)");
    sc->add_flag("--floor", o.floor,
                 "repeat every row with the same port driven by a bare DPDK loop (no nerve layer), interleaved, "
                 "rows tagged \"stack\": \"nerve\" or \"raw\" (memif, af_packet, af_xdp, pci)");
  };
  auto* pp = cli.add_subcommand("pingpong", "round-trip time per lane between two nodes");
  auto* ow = cli.add_subcommand("oneway", "one-way latency between two nodes sharing a clock (same host)");
  auto* tp = cli.add_subcommand("throughput", "messages/s and Gbit/s by size, with an offered-load sweep to the knee");
  auto* is = cli.add_subcommand("isolation", "P0 pingpong, idle and while other lanes flood");
  for (auto* sc : {pp, ow, tp, is}) common(sc);
  auto* rt = cli.add_subcommand("route", "forwarding-table build time and advertisement traffic by cluster size");
  rt->add_option("--nodes", o.node_counts, "cluster sizes (default 16,64,256,1024,4096)")
      ->delimiter(',')
      ->check(CLI::Range(2u, 4096u));
  rt->add_option("--topology", o.topologies, "leaf-spine, random, ring, chain (default leaf-spine,random)")
      ->delimiter(',')
      ->check(CLI::IsMember({"leaf-spine", "random", "ring", "chain"}));
  rt->add_option("--count", o.count, "builds per size (default 101 .. 7)");
  rt->add_option("--json", o.json_path, "write results as JSON");
  auto* fw = cli.add_subcommand("forward", "a node forwarding between two memif links, beside dpdk-testpmd io and macswap");
  fw->add_option("--seconds", o.seconds, "measured time per round and forwarder (default 2)")->check(CLI::Range(0.05, 600.0));
  fw->add_option("--rounds", o.rounds, "rounds of the three forwarders, interleaved (default 3)")->check(CLI::Range(1u, 100u));
  fw->add_option("--json", o.json_path, "write results as JSON");
  auto* fo = cli.add_subcommand("failover", "a P0 stream across a diamond whose forwarding node is killed (af_packet)");
  std::string fo_transport = "af_packet";
  fo->add_option("--transport", fo_transport, "the diamond's links: af_packet (veth pairs, default) or memif")
      ->check(CLI::IsMember({"af_packet", "memif"}));
  fo->add_option("--rate", o.rate, "messages/s (default 10000)")->check(CLI::Range(100.0, 1e6));
  fo->add_option("--seconds", o.seconds, "stream length; the kill comes a third of the way in (default 3)")
      ->check(CLI::Range(0.3, 600.0));
  fo->add_option("--heartbeat-miss", o.heartbeat_miss, "heartbeats missed before a link is down (default: 3)")
      ->check(CLI::Range(1u, 1000u));
  fo->add_option("--json", o.json_path, "write results as JSON");
  auto* mc = cli.add_subcommand("multicast", "fan-out to a group: sender msgs/s, every member's count (in-process)");
  mc->add_option("--members", o.members, "group members (default 8)")->check(CLI::Range(1u, 60u));
  mc->add_option("--count", o.count, "messages (default 200000)")->check(CLI::Range(std::uint64_t{1}, std::uint64_t{100'000'000}));
  mc->add_option("--json", o.json_path, "write results as JSON");
  auto* sv = cli.add_subcommand("service", "service spread (chi-square) and the tail with a slow instance (in-process)");
  sv->add_option("--count", o.count, "requests per spread test (default 100000)")
      ->check(CLI::Range(std::uint64_t{100}, std::uint64_t{100'000'000}));
  sv->add_option("--rate", o.rate, "requests/s in the tail test (default 10000)")->check(CLI::Range(100.0, 1e6));
  sv->add_option("--seconds", o.seconds, "tail test length per policy (default 1)")->check(CLI::Range(0.05, 600.0));
  sv->add_option("--json", o.json_path, "write results as JSON");
  auto* rl = cli.add_subcommand("reliability", "reliable delivery through a link that drops, duplicates, reorders (in-process)");
  rl->add_option("--transport", o.transport, "memif (default) or ring")->check(CLI::IsMember({"memif", "ring"}));
  rl->add_option("--priority", o.priorities, "lane(s) 0..4, comma-separated (default 0)")->delimiter(',')->check(CLI::Range(0, 4));
  rl->add_option("--count", o.count, "messages per lane (default 100000; --overhead: round trips per block, 20000)")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1'000'000'000}));
  rl->add_option("--rate", o.rate, "messages/s (default: unpaced, as fast as the window allows)")->check(CLI::Range(0.0, 1e9));
  rl->add_option("--fault", o.fault, "faults each port injects into what it receives (default drop=0.01,dup=0.005,reorder=0.01)")
      ->check([](const std::string& s) {
        try {
          nerve::config::parse_fault(s, "--fault");
          return std::string();
        } catch (const std::exception& e) {
          return std::string(e.what());
        }
      });
  rl->add_option("--size", o.sizes, "message bytes, comma-separated (default 64; above one frame: fragments, up to 1 MiB)")
      ->delimiter(',')
      ->check(CLI::Range(std::size_t{16}, std::size_t{16} << 20));
  rl->add_option("--paths", o.paths,
                 "1 and/or 2, comma-separated: each message over one link or over two at once (the first copy "
                 "wins); with 2 the nodes are joined by two links, each faulted on its own (default 1)")
      ->delimiter(',')
      ->check(CLI::Range(1u, 2u));
  rl->add_flag("--unreliable", o.unreliable,
               "send without reliable delivery: what is lost stays lost (with --paths 2: what both paths lose)");
  rl->add_flag("--overhead", o.overhead, "P0 round trips with and without reliable delivery on a loss-free link");
  rl->add_option("--rounds", o.rounds, "--overhead: blocks of each, interleaved (default 3)")->check(CLI::Range(1u, 100u));
  rl->add_option("--json", o.json_path, "write results as JSON");
  pp->add_option("--hops", o.hops,
                 "path lengths in links, comma-separated (default 1): 2 puts a forwarding node between the ends "
                 "(memif; the forwarders run in the harness process, polled by its thread, joined by net_ring)")
      ->delimiter(',')
      ->check(CLI::Range(1, 6));
  tp->add_option("--sweep", o.sweep, "offered loads as fractions of the maximum (default 0.01,0.1,0.25,0.5,0.75,0.9)")
      ->delimiter(',')
      ->check(CLI::Range(0.001, 1.0));
  tp->add_option("--p99-limit-us", o.p99_limit_us, "p99 the knee must hold (default: the lane's budget)")
      ->check(CLI::Range(0.001, 1e9));
  is->add_option("--background", background, "lanes that flood, comma-separated; repeat for separate runs (default 4)");
  is->add_option("--background-rate", o.background_rate, "flood messages/s (default: as fast as the sender can)")
      ->check(CLI::Range(0.0, 1e9));

  std::string peer_transport, peer_role, peer_config, peer_stack = "nerve";
  int peer_node = 0, peer_port = 0, peer_cpu = -1;
  auto* peer = cli.add_subcommand("peer", "(internal) the far end of a scenario");
  peer->group("");
  peer->add_option("--transport", peer_transport)->required();
  peer->add_option("--role", peer_role);
  peer->add_option("--stack", peer_stack);
  peer->add_option("--config", peer_config);
  peer->add_option("--node", peer_node);
  peer->add_option("--udp-port", peer_port);
  peer->add_option("--cpu", peer_cpu);

  if (const auto rc = nerve::app::parse_cli(cli, argc, argv, "nerve-perf")) return *rc;
  harness_cpus();  // before anything pins this thread
  try {
    if (*peer) return peer_main(peer_transport, peer_stack, peer_role, peer_config, peer_node, peer_port, peer_cpu);
    if (*rt || *fw || *fo || *mc || *sv || *rl) {
      o.scenario = fw->parsed() ? "forward" : fo->parsed() ? "failover" : mc->parsed() ? "multicast"
                 : sv->parsed() ? "service" : rl->parsed() ? "reliability" : "route";
      if (!*rt) install_interrupt_handlers();
      if (*fo) o.transport = fo_transport;
      if (*fo && reap_stale_runs()) fmt::print(stderr, "nerve-perf: removed leftovers of earlier runs that were killed\n");
      const auto rows = *fw ? forward_bench(o) : *fo ? failover_bench(o) : *mc ? multicast_bench(o)
                      : *sv ? service_bench(o) : *rl ? reliability_bench(o) : route_bench(o);
      print_table(rows);
      if (!o.json_path.empty()) std::ofstream(o.json_path) << to_json(o, rows);
      return 0;
    }
    for (auto* sc : {pp, ow, tp, is})
      if (*sc) o.scenario = sc->get_name();
    if (!background.empty()) {
      o.background.clear();
      for (const auto& b : background) o.background.push_back(std::stoi(b));
    }
    for (int b : o.background)
      if (b < 1 || b > 4) throw std::invalid_argument("--background lanes are 1..4");
    if ((o.hops.size() > 1 || o.hops.front() > 1) && (o.transport != "memif" || o.floor || !o.compare.empty()))
      throw std::invalid_argument("--hops: memif only, without --floor or --compare");
    if (o.transport == "pci" && (o.pci_a.empty() || o.pci_b.empty()))
      throw std::invalid_argument("--transport pci needs --pci-a and --pci-b");
    std::signal(SIGPIPE, SIG_IGN);
    install_interrupt_handlers();
    if (const unsigned n = reap_stale_runs())
      fmt::print(stderr, "nerve-perf: removed {} leftover(s) of earlier runs that were killed\n", n);

    if (o.reliable && (o.transport == "kernel-udp" || !o.compare.empty()))
      throw std::invalid_argument("--reliable: nerve transports only, without --compare");
    if (!o.sidecar_hz.empty() && (o.transport == "kernel-udp" || !o.compare.empty() || o.floor))
      throw std::invalid_argument("--sidecar-hz: nerve transports only, without --compare or --floor");
    std::vector<Row> rows;
    for (const unsigned hz : o.sidecar_hz.empty() ? std::vector<unsigned>{0} : o.sidecar_hz) {
      o.sidecar = hz;
      auto more = run_scenario(o, o.transport);
      for (auto& r : more) r.sidecar_hz = o.sidecar_hz.empty() ? -1 : static_cast<int>(hz);
      rows.insert(rows.end(), more.begin(), more.end());
    }
    for (const auto& t : o.compare) {
      auto more = run_scenario(o, t);
      rows.insert(rows.end(), more.begin(), more.end());
    }
    for (auto& r : rows) r.reliable = o.reliable && r.stack == "nerve";
    print_table(rows);
    if (!o.json_path.empty()) std::ofstream(o.json_path) << to_json(o, rows);
    if (!o.hgrm_path.empty()) std::ofstream(o.hgrm_path) << to_hgrm(rows);
    if (!o.plot_path.empty()) std::ofstream(o.plot_path) << to_svg(rows);
    return 0;
  } catch (const std::invalid_argument& e) {
    fmt::print(stderr, "nerve-perf: {}\n", e.what());
    return 2;
  } catch (const Interrupted& e) {
    fmt::print(stderr, "nerve-perf: {}; peer, namespaces and files removed, no results written\n", e.what());
    return 130;
  } catch (const std::exception& e) {
    fmt::print(stderr, "nerve-perf: {}\n", e.what());
    return 1;
  }
}
