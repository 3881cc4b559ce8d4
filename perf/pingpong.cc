// nerve-perf: the latency harness. First scenario: pingpong, P-lane round trips between two
// nodes over a chosen transport, timed with the TSC.
//
//   nerve-perf pingpong --transport ring|memif|af_packet [--size 64] [--count 100000]
//                       [--warmup 1000] [--priority 0] [--json FILE]
//
// ring: both nodes in this process, the echo node on a second lcore. memif: the echo node is a
// child process (`nerve-perf echo`) with its own EAL. af_packet: the two nodes run in two
// network namespaces joined by a veth pair that the harness creates and removes. Both ends
// busy-poll on their own core.
#include <CLI/CLI.hpp>
#include <fcntl.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <rte_cycles.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>

#include "eal.hpp"
#include "nerve/histogram.hpp"
#include "nerve/node.hpp"

using namespace nerve;
using nlohmann::json;

namespace {

std::atomic<bool> g_stop{false};
extern "C" void on_signal(int) { g_stop.store(true); }

struct Options {
  std::string transport = "memif";
  std::size_t size = 64;
  std::uint64_t count = 100000;
  std::uint64_t warmup = 1000;
  int priority = 0;
  std::string json_path;
};

std::string cluster_toml(const std::string& transport, const std::string& dir, const std::string& tag) {
  auto port = [&](int self) -> std::string {
    const int peer = 3 - self;
    if (transport == "ring") return fmt::format("kind = \"ring\"\npair = \"pp{}\"\npeers = [{}]", tag, peer);
    if (transport == "memif")
      return fmt::format("kind = \"memif\"\nsocket = \"{}/pp.memif\"\nrole = \"{}\"\npeers = [{}]", dir,
                         self == 1 ? "server" : "client", peer);
    return fmt::format("kind = \"af_packet\"\niface = \"nvp{}{}\"\nrx_desc = 4096\npeers = [{}]", self, tag, peer);
  };
  std::string out = fmt::format("[cluster]\nname = \"perf{}\"\n", tag);
  for (int id = 1; id <= 2; ++id)
    out += fmt::format(
        "\n[[node]]\nid = {0}\nmac = \"02:00:00:00:0a:0{0}\"\nip = \"198.18.10.{0}\"\ncontrol_socket = "
        "\"{1}/n{0}.sock\"\nidle = \"busy\"\nmemory_mb = 256\n  [[node.port]]\n  {2}\n",
        id, dir, port(id));
  return out;
}

int run_sh(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()); }

// The echo side: answers every message with its own payload, at its priority.
void echo_loop(Node& node, const std::atomic<bool>& stop) {
  node.on_message([&](const RxMessage& m) {
    TxFrame f = node.alloc(m.payload().size());
    if (!f) return;
    std::memcpy(f.payload().data(), m.payload().data(), m.payload().size());
    while (node.respond(m, f) == SendStatus::kBackpressure) node.poll();
  });
  node.run(stop);
}

int echo_main(const std::string& config_path, int node_id) {
  const auto cluster = config::load_file(config_path);
  const auto& self = cluster.node(static_cast<NodeId>(node_id));
  drivers::Eal eal(drivers::eal_options_for(cluster, self));
  Node node(cluster, self.id, eal);
  echo_loop(node, g_stop);
  return 0;
}

struct Result {
  std::unique_ptr<stats::Histogram> rtt = std::make_unique<stats::Histogram>();
  std::uint64_t lost = 0;
  double seconds = 0;
};

Result ping(Node& node, const Options& o) {
  Result res;
  std::uint64_t got_seq = ~0ull;
  node.on_message([&](const RxMessage& m) {
    if (m.type() == MsgType::kResponse && m.payload().size() >= 8) std::memcpy(&got_seq, m.payload().data(), 8);
  });
  const double ns_per_cycle = 1e9 / static_cast<double>(rte_get_tsc_hz());
  const std::uint64_t timeout_cycles = rte_get_tsc_hz() / 10;  // 100 ms: a lost ping
  const std::uint64_t total = o.warmup + o.count;
  const auto t0 = std::chrono::steady_clock::now();
  for (std::uint64_t i = 0; i < total && !g_stop.load(std::memory_order_relaxed); ++i) {
    TxFrame f = node.alloc(o.size);
    while (!f) {
      node.poll();
      f = node.alloc(o.size);
    }
    std::memset(f.payload().data(), 0xa5, o.size);
    std::memcpy(f.payload().data(), &i, std::min<std::size_t>(8, o.size));
    const std::uint64_t start = rte_rdtsc();
    while (node.send(f, 2, MsgType::kCommand, static_cast<std::uint8_t>(o.priority)) == SendStatus::kBackpressure)
      node.poll();
    while (got_seq != i) {
      node.poll();
      if (rte_rdtsc() - start > timeout_cycles) break;
    }
    const std::uint64_t end = rte_rdtsc();
    if (got_seq != i) {
      if (i >= o.warmup) ++res.lost;
      continue;
    }
    if (i >= o.warmup) res.rtt->record(static_cast<std::uint64_t>(static_cast<double>(end - start) * ns_per_cycle));
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

// af_packet: enter a namespace before the EAL opens its sockets.
void enter_netns(const std::string& name) {
  const int fd = ::open(fmt::format("/var/run/netns/{}", name).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) throw std::runtime_error(fmt::format("cannot enter netns {}", name));
  ::close(fd);
}

int pingpong_main(const Options& o) {
  if (o.size < 8 || o.size > 1400) throw std::invalid_argument("--size must be 8 .. 1400 bytes");
  const std::string tag = std::to_string(getpid() % 100000);
  const std::string dir = fmt::format("/tmp/nerve-perf-{}", tag);
  std::filesystem::create_directories(dir);
  const std::string cfg_path = dir + "/cluster.toml";
  { std::ofstream(cfg_path) << cluster_toml(o.transport, dir, tag); }
  auto cluster = config::load_file(cfg_path);
  const auto cpus = drivers::cpus_on_node(-1);
  const unsigned cpu_a = cpus.front(), cpu_b = cpus.size() > 1 ? cpus[1] : cpus.front();

  const std::string ns_a = "nvperf-a-" + tag, ns_b = "nvperf-b-" + tag;
  pid_t child = -1;
  auto cleanup = [&] {
    if (child > 0) {
      ::kill(child, SIGTERM);
      ::waitpid(child, nullptr, 0);
    }
    if (o.transport == "af_packet") {
      run_sh("ip netns del " + ns_a);
      run_sh("ip netns del " + ns_b);
    }
    std::filesystem::remove_all(dir);
  };

  Result res;
  try {
    if (o.transport == "af_packet") {
      for (const auto& ns : {ns_a, ns_b})
        if (run_sh("ip netns add " + ns) != 0) throw std::runtime_error("ip netns add failed (root needed)");
      run_sh(fmt::format("ip link add nvp1{} netns {} type veth peer name nvp2{} netns {}", tag, ns_a, tag, ns_b));
      run_sh(fmt::format("ip -n {} link set nvp1{} up", ns_a, tag));
      run_sh(fmt::format("ip -n {} link set nvp2{} up", ns_b, tag));
    }
    if (o.transport != "ring") {
      child = ::fork();
      if (child == 0) {
        ::signal(SIGTERM, on_signal);
        std::vector<std::string> args;
        if (o.transport == "af_packet") args = {"ip", "netns", "exec", ns_b};
        for (auto s : {std::string("/proc/self/exe"), std::string("echo"), std::string("--config"), cfg_path,
                       std::string("--node"), std::string("2")})
          args.push_back(s);
        if (o.transport == "af_packet") args[4] = std::filesystem::read_symlink("/proc/self/exe").string();
        std::vector<char*> argv;
        for (auto& s : args) argv.push_back(s.data());
        argv.push_back(nullptr);
        ::execvp(argv[0], argv.data());
        _exit(127);
      }
      if (o.transport == "af_packet") enter_netns(ns_a);
    }
    // The pinging node's EAL: its own core, plus a second one for the ring transport's echo node.
    drivers::EalOptions eo;
    eo.file_prefix = fmt::format("nerve-perf{}-1", tag);
    eo.memory_mb = 512;
    eo.cores = {cpu_a};
    if (o.transport == "ring") eo.cores.push_back(cpu_b);
    eo.log_level = "error";
    cluster.nodes[0].cores = {cpu_a};
    cluster.nodes[1].cores = {cpu_b};
    {
      drivers::Eal eal(eo);
      std::unique_ptr<Node> echo;
      std::atomic<bool> echo_stop{false};
      if (o.transport == "ring") {
        echo = std::make_unique<Node>(cluster, 2, eal);
        struct Arg { Node* n; std::atomic<bool>* stop; } arg{echo.get(), &echo_stop};
        rte_eal_remote_launch([](void* p) -> int {
          auto* a = static_cast<Arg*>(p);
          echo_loop(*a->n, *a->stop);
          return 0;
        }, &arg, rte_get_next_lcore(rte_get_main_lcore(), 1, 0));
        Node node(cluster, 1, eal);
        res = ping(node, o);
        echo_stop = true;
        rte_eal_mp_wait_lcore();
      } else {
        NodeOptions no;
        no.link_wait = std::chrono::milliseconds(15000);
        Node node(cluster, 1, eal, no);
        res = ping(node, o);
      }
    }
  } catch (...) {
    cleanup();
    throw;
  }
  cleanup();

  const auto& h = *res.rtt;
  auto us = [](std::uint64_t ns) { return static_cast<double>(ns) / 1000.0; };
  fmt::print("pingpong  transport {}  priority P{}  payload {} B  frame {} B  round trips {}  lost {}  ({:.1f} s)\n",
             o.transport, o.priority, o.size, wire::frame_len(o.size), h.count(), res.lost, res.seconds);
  fmt::print("  RTT us   min {:.2f}  p50 {:.2f}  p90 {:.2f}  p99 {:.2f}  p99.9 {:.2f}  max {:.2f}  mean {:.2f}\n",
             us(h.min()), us(h.percentile(50)), us(h.percentile(90)), us(h.percentile(99)), us(h.percentile(99.9)),
             us(h.max()), h.mean() / 1000.0);
  if (!o.json_path.empty()) {
    json j = {{"tool", "nerve-perf"}, {"version", NERVE_VERSION}, {"commit", NERVE_COMMIT},
              {"setup", {{"cores", {cpu_a, cpu_b}}, {"dpdk", "22.11"}}},
              {"results", json::array({json{{"scenario", "pingpong"}, {"transport", o.transport},
                                            {"priority", o.priority}, {"size", o.size},
                                            {"frame_bytes", wire::frame_len(o.size)}, {"count", h.count()},
                                            {"lost", res.lost},
                                            {"latency_ns", {{"min", h.min()}, {"mean", h.mean()},
                                                            {"p50", h.percentile(50)}, {"p90", h.percentile(90)},
                                                            {"p99", h.percentile(99)}, {"p999", h.percentile(99.9)},
                                                            {"p9999", h.percentile(99.99)}, {"max", h.max()}}}}})}};
    std::ofstream(o.json_path) << j.dump(2) << "\n";
  }
  return res.lost == 0 && h.count() == o.count ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App cli{"nerve-perf: the nerve latency harness."};
  cli.require_subcommand(1);
  Options o;
  auto* pp = cli.add_subcommand("pingpong", "round trips between two nodes on one lane");
  pp->add_option("--transport", o.transport, "ring, memif or af_packet")
      ->check(CLI::IsMember({"ring", "memif", "af_packet"}));
  pp->add_option("--size", o.size, "payload bytes (8 .. 1400, default 64)");
  pp->add_option("--count", o.count, "measured round trips (default 100000)")->check(CLI::Range(1ull, 100'000'000ull));
  pp->add_option("--warmup", o.warmup, "round trips before measuring (default 1000)");
  pp->add_option("--priority", o.priority, "lane 0..4 (default 0)")->check(CLI::Range(0, 4));
  pp->add_option("--json", o.json_path, "write results as JSON to this file");
  std::string echo_cfg;
  int echo_node = 0;
  auto* echo = cli.add_subcommand("echo", "(internal) run the echo node of a pingpong");
  echo->group("");
  echo->add_option("--config", echo_cfg)->required();
  echo->add_option("--node", echo_node)->required();
  try {
    cli.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return cli.exit(e);
  } catch (const CLI::ParseError& e) {
    fmt::print(stderr, "nerve-perf: {}\nRun with --help for usage.\n", e.what());
    return 2;
  }
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  try {
    if (*echo) return echo_main(echo_cfg, echo_node);
    return pingpong_main(o);
  } catch (const std::invalid_argument& e) {
    fmt::print(stderr, "nerve-perf: {}\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "nerve-perf: {}\n", e.what());
    return 1;
  }
}
