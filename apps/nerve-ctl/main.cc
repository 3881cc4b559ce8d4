// nerve-ctl: the operator CLI. Talks to the local nerved of a node over its control socket.
//
//   nerve-ctl --config FILE --node ID send --to ID --type TYPE --priority P [--count N] PAYLOAD
//   nerve-ctl --config FILE --node ID status [--json]
//
// Exit codes: 0 done, 1 the fabric did not deliver (no route, timeout, back-pressure, shutdown),
// 2 bad arguments or config, 3 nerved not reachable.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <string>

#include "../common/cli.hpp"
#include "../common/control.hpp"
#include "nerve/config.hpp"
#include "nerve/wire.hpp"

using namespace nerve;
using nlohmann::json;

namespace {

std::string us(std::uint64_t ns) { return fmt::format("{:.1f}", static_cast<double>(ns) / 1000.0); }

void print_status(const json& j) {
  const auto& n = j["node"];
  fmt::print("node {} ({})  ip {}  mac {}  profile {}  idle {}  lcore {}  mbufs free {}\n", n["id"].get<int>(),
             n["name"].get<std::string>(), n["ip"].get<std::string>(), n["mac"].get<std::string>(),
             n["profile"].get<std::string>(), n["idle"].get<std::string>(), n["lcore"].get<int>(),
             n["mbufs_available"].get<unsigned>());
  if (n["idle"] == "backoff")
    fmt::print("  backoff: a P0 frame after an idle gap waits up to {} us plus a wake-up (~50-100 us); busy_lanes "
               "keep the node polling while they carry traffic\n",
               n["idle_max_sleep_us"].get<unsigned>());
  fmt::print("\nports\n  {:<10} {:<10} {:<14} {:<5} {:<18} {:>10} {:>10} {:>8} {:>8}\n", "name", "kind", "lanes",
             "link", "mac", "rx", "tx", "missed", "errors");
  for (const auto& p : j["ports"])
    fmt::print("  {:<10} {:<10} {:<14} {:<5} {:<18} {:>10} {:>10} {:>8} {:>8}\n", p["name"].get<std::string>(),
               p["kind"].get<std::string>(), p["lane_mode"].get<std::string>(), p["link"].get<std::string>(),
               p["mac"].get<std::string>(),
               p["ipackets"].get<std::uint64_t>(), p["opackets"].get<std::uint64_t>(),
               p["imissed"].get<std::uint64_t>(), p["ierrors"].get<std::uint64_t>() + p["oerrors"].get<std::uint64_t>());
  fmt::print("\npeers\n");
  for (const auto& p : j["peers"])
    fmt::print("  {:>5} {:<12} {:<16} {}  via port {}\n", p["id"].get<int>(), p["name"].get<std::string>(),
               p["ip"].get<std::string>(), p["mac"].get<std::string>(), p["port"].get<int>());
  const auto& c = j["counters"];
  fmt::print("\ncounters\n  rx {} frames / {} B   tx {} frames / {} B\n", c["rx_frames"].get<std::uint64_t>(),
             c["rx_bytes"].get<std::uint64_t>(), c["tx_frames"].get<std::uint64_t>(), c["tx_bytes"].get<std::uint64_t>());
  fmt::print("  refused {}   backpressure {}   no route {}   alloc failed {}   control refused {}\n",
             c["refused_total"].get<std::uint64_t>(), c["tx_backpressure"].get<std::uint64_t>(),
             c["tx_no_route"].get<std::uint64_t>(), c["alloc_failed"].get<std::uint64_t>(),
             c["control_refused"].get<std::uint64_t>());
  fmt::print("  replies sent {}   deferred (full lane, sent later) {}   failed {}\n", c["replies_sent"].get<std::uint64_t>(),
             c["replies_deferred"].get<std::uint64_t>(), c["replies_failed"].get<std::uint64_t>());
  for (const auto& [reason, v] : c["refused"].items())
    if (v.get<std::uint64_t>() != 0) fmt::print("    refused {:<16} {}\n", reason, v.get<std::uint64_t>());
  fmt::print("\ndelivered           P0        P1        P2        P3        P4\n");
  for (const auto& [type, v] : j["delivered"].items())
    fmt::print("  {:<10} {:>9} {:>9} {:>9} {:>9} {:>9}\n", type, v[0].get<std::uint64_t>(), v[1].get<std::uint64_t>(),
               v[2].get<std::uint64_t>(), v[3].get<std::uint64_t>(), v[4].get<std::uint64_t>());
  fmt::print("\nlanes (one-way latency, us)\n  {:<4} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>7} {:>7} {:>7}\n",
             "lane", "count", "p50", "p90", "p99", "p99.9", "max", "budget", "missed", "shed", "pushbk");
  for (const auto& l : j["lanes"])
    fmt::print("  P{:<3} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>7} {:>7} {:>7}\n", l["priority"].get<int>(),
               l["count"].get<std::uint64_t>(), us(l["p50_ns"]), us(l["p90_ns"]), us(l["p99_ns"]), us(l["p999_ns"]),
               us(l["max_ns"]), us(l["budget_ns"]), l["deadline_miss"].get<std::uint64_t>(),
               l["shed"].get<std::uint64_t>(), l["backpressure"].get<std::uint64_t>());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App cli{"nerve-ctl: operate a nerve node through its local nerved."};
  cli.require_subcommand(1);
  std::string config_path;
  int node_id = 0, timeout_ms = 2000;
  bool as_json = false;
  cli.add_option("--config", config_path, "cluster file (TOML)")->required()->check(CLI::ExistingFile);
  cli.add_option("--node", node_id, "id of the local node whose nerved to talk to")->required()->check(CLI::Range(1, 65534));
  cli.add_flag("--json", as_json, "machine-readable output");
  cli.add_option("--timeout-ms", timeout_ms, "how long to wait for a reply (default 2000)")->check(CLI::Range(1, 600000));

  auto* send = cli.add_subcommand("send", "send a message through the fabric and print the reply or delivery result");
  int to = 0, priority = 0;
  unsigned count = 1;
  std::string type, payload;
  bool number = false, no_wait = false, wait = false;
  double rate = 0;
  send->add_option("--to", to, "destination node id")->required()->check(CLI::Range(1, 65534));
  send->add_option("--type", type, "command, status, metric, alert, request or response")
      ->required()
      ->check(CLI::IsMember({"command", "status", "metric", "alert", "request", "response"}));
  send->add_option("--priority", priority, "lane 0 (critical) .. 4 (background)")->required()->check(CLI::Range(0, 4));
  send->add_option("--count", count, "send N messages (default 1)")->check(CLI::Range(1u, 10'000'000u));
  send->add_flag("--number", number, "append #i to the payload of message i");
  send->add_option("--rate", rate, "pace the messages at this many per second (default: as fast as the port takes them)")
      ->check(CLI::Range(0.0, 1e9));
  send->add_flag("--no-wait", no_wait, "do not wait for replies to commands and requests");
  send->add_flag("--wait", wait, "wait for a reply whatever the type");
  send->add_option("payload", payload, "message payload (text)")->required();

  auto* status = cli.add_subcommand("status", "print the node's ports, peers, counters and lanes");

  if (const auto rc = nerve::app::parse_cli(cli, argc, argv, "nerve-ctl")) return *rc;

  config::Cluster cluster;
  const config::Node* self = nullptr;
  try {
    cluster = config::load_file(config_path);
    self = &cluster.node(static_cast<std::uint16_t>(node_id));
  } catch (const config::ConfigError& e) {
    fmt::print(stderr, "nerve-ctl: config error: {}\n", e.what());
    return 2;
  }

  json req;
  if (*status) {
    req = {{"op", "status"}};
  } else {
    if (!cluster.find(static_cast<std::uint16_t>(to))) {
      fmt::print(stderr, "nerve-ctl: --to: node {} is not in {}\n", to, config_path);
      return 2;
    }
    const bool is_request = type == "command" || type == "request";
    req = {{"op", "send"},   {"to", to},         {"type", type},
           {"priority", priority}, {"payload", payload}, {"count", count},
           {"number", number},     {"await_reply", wait || (is_request && !no_wait)}, {"rate", rate},
           {"timeout_ms", timeout_ms}};
  }
  std::string err;
  // The fabric's own timeout runs inside nerved; give the socket a margin over it, plus the
  // time a paced send takes by its schedule.
  const double paced_ms = rate > 0 ? 1000.0 * count / rate : 0.0;
  const auto wait_ms = static_cast<int>(std::min(2e9, timeout_ms + 5000 + count / 100.0 + paced_ms));
  const auto rep = app::control_call(self->control_socket, req, err, wait_ms);
  if (!rep) {
    fmt::print(stderr, "nerve-ctl: {}\n", err);
    return 3;
  }
  if (rep->contains("error")) {
    fmt::print(stderr, "nerve-ctl: nerved refused the request: {}\n", (*rep)["error"].get<std::string>());
    return 2;
  }
  if (as_json) {
    fmt::print("{}\n", rep->dump(2));
  } else if (*status) {
    print_status(*rep);
  } else {
    const auto& r = *rep;
    const std::string st = r["status"].get<std::string>();
    const auto& peer = cluster.node(static_cast<std::uint16_t>(to));
    fmt::print("{}: sent {} of {} {} message(s) to node {} ({}) on P{}", st, r["sent"].get<unsigned>(), count, type, to,
               peer.name, priority);
    if (r["replies"].get<unsigned>() > 0)
      fmt::print("; {} repl{}, first in {} us: {}\n", r["replies"].get<unsigned>(),
                 r["replies"].get<unsigned>() == 1 ? "y" : "ies", us(r["rtt_ns"].get<std::uint64_t>()),
                 r["reply"].get<std::string>());
    else
      fmt::print("\n");
  }
  return (*rep)["status"] == "ok" || *status ? 0 : 1;
}
