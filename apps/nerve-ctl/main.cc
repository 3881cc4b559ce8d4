// nerve-ctl: the operator CLI. Talks to the local nerved of a node over its control socket.
//
//   nerve-ctl --config FILE --node ID send (--to ID | --group G | --service S | --broadcast)
//             --type TYPE --priority P [--count N] [--key K] PAYLOAD
//   nerve-ctl --config FILE --node ID status [--json]
//   nerve-ctl --config FILE --node ID routes [--json]
//   nerve-ctl --config FILE --node ID groups [--json]
//   nerve-ctl --config FILE --node ID join GROUP | leave GROUP
//   nerve-ctl --config FILE --node ID watch | query [--from N] | top
//
// Groups and services are named by name or id. Exit codes: 0 done, 1 the fabric did not
// deliver (no route, timeout, back-pressure, failed, shutdown), 2 bad arguments or config
// (an unknown node, group or service), 3 nerved not reachable.
#include <CLI/CLI.hpp>
#include <httplib.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <sstream>
#include <string>

#include "../common/cli.hpp"
#include "../common/cluster.hpp"
#include "../common/control.hpp"
#include "../common/query.hpp"
#include "top.hpp"
#include "nerve/config.hpp"
#include "nerve/wire.hpp"

using namespace nerve;
using nlohmann::json;

namespace {

void print_groups(const json& groups);
void print_services(const json& services);

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
  fmt::print("\nlinks\n");
  for (const auto& l : j["links"])
    fmt::print("  peer {:>5} port {:>2} {:<5} rtt {:>8} us  heartbeats rx {:>9} tx {:>9}  downs {}\n",
               l["peer"].get<int>(), l["port"].get<int>(), l["up"].get<bool>() ? "up" : "DOWN",
               us(l["rtt_ns"].get<std::uint64_t>()), l["heartbeats_rx"].get<std::uint64_t>(),
               l["heartbeats_tx"].get<std::uint64_t>(), l["downs"].get<std::uint64_t>());
  const auto& f = j["forwarded"];
  fmt::print("\nforwarded           P0        P1        P2        P3        P4\n  {:<10}", "frames");
  for (const auto& v : f["lanes"]) fmt::print(" {:>9}", v.get<std::uint64_t>());
  fmt::print("\n  {:<10}", "dropped");
  for (const auto& v : f["dropped"]) fmt::print(" {:>9}", v.get<std::uint64_t>());
  fmt::print("\n  {:<10}", "p50 us");
  for (const auto& v : f["transit"]) fmt::print(" {:>9}", us(v["p50_ns"].get<std::uint64_t>()));
  fmt::print("\n  per port:");
  for (const auto& v : f["ports"]) fmt::print(" {}", v.get<std::uint64_t>());
  fmt::print("\n");
  const auto& pa = j["paths"];
  std::uint64_t two = 0, one = 0;
  for (const auto& v : pa["sent_two"]) two += v.get<std::uint64_t>();
  for (const auto& v : pa["sent_one"]) one += v.get<std::uint64_t>();
  if (two + one != 0 || !pa["channels"].empty()) {
    fmt::print("\ntwo paths           P0        P1        P2        P3        P4\n  {:<10}", "sent two");
    for (const auto& v : pa["sent_two"]) fmt::print(" {:>9}", v.get<std::uint64_t>());
    fmt::print("\n  {:<10}", "sent one");
    for (const auto& v : pa["sent_one"]) fmt::print(" {:>9}", v.get<std::uint64_t>());
    fmt::print("\n  received   {:>6} {:>8} {:>12} {:>12} {:>12}\n", "from", "channel", "path 1 won", "path 2 won",
               "discarded");
    for (const auto& ch : pa["channels"])
      fmt::print("             {:>6} {:>8} {:>12} {:>12} {:>12}\n",
                 ch["src"].is_string() ? ch["src"].get<std::string>() : std::to_string(ch["src"].get<int>()),
                 ch["channel"].is_null() ? std::string("-") : std::to_string(ch["channel"].get<int>()),
                 ch["won"][0].get<std::uint64_t>(), ch["won"][1].get<std::uint64_t>(),
                 ch["discarded"].get<std::uint64_t>());
  }
  if (!j["groups"].empty()) {
    fmt::print("\ngroups\n");
    print_groups(j["groups"]);
  }
  if (!j["services"].empty()) {
    fmt::print("\nservices\n");
    print_services(j["services"]);
  }
}

void print_routes(const json& j) {
  fmt::print("routes of node {} (next hop / port / cost per lane; - : no route up)\n", j["node"].get<int>());
  fmt::print("  {:>5}  {:<22} {:<22} {:<22} {:<22} {:<22}\n", "dst", "P0", "P1", "P2", "P3", "P4");
  for (const auto& r : j["routes"]) {
    fmt::print("  {:>5} ", r["dst"].get<int>());
    for (const auto& l : r["lanes"]) {
      const std::string cost = l["cost"].is_null() ? "-" : std::to_string(l["cost"].get<std::uint64_t>());
      const std::string cell = l["next_hop"].get<int>() == 0
                                   ? std::string("-")
                                   : fmt::format("{} p{} {}{}", l["next_hop"].get<int>(), l["port"].get<int>(),
                                                 l["metric"].get<std::string>() == "delay" ? "d=" : "l=", cost);
      fmt::print(" {:<22}", cell);
    }
    if (!r["two_paths"].is_null())
      fmt::print("  two paths: {} p{} + {} p{}", r["two_paths"][0]["next_hop"].get<int>(),
                 r["two_paths"][0]["port"].get<int>(), r["two_paths"][1]["next_hop"].get<int>(),
                 r["two_paths"][1]["port"].get<int>());
    fmt::print("\n");
  }
}

void print_groups(const json& groups) {
  for (const auto& g : groups) {
    std::string members;
    for (const auto& m : g["members"]) members += fmt::format(" {}", m.get<int>());
    fmt::print("  group {:>5} {:<16} {:<10} members:{}\n", g["id"].get<int>(), g["name"].get<std::string>(),
               g["member"].get<bool>() ? "(joined)" : "", members.empty() ? " none" : members);
  }
}

void print_services(const json& services) {
  for (const auto& sv : services) {
    fmt::print("  service {} {} ({}, timeout {} ms)\n", sv["id"].get<int>(), sv["name"].get<std::string>(),
               sv["policy"].get<std::string>(), sv["timeout_ms"].get<unsigned>());
    for (const auto& i : sv["instances"])
      fmt::print("    node {:>5} {:<5} sent {:>9} requests {:>9} answered {:>9} timed out {:>6} failed (down) {:>6} "
                 "outstanding {:>6}\n",
                 i["node"].get<int>(), i["live"].get<bool>() ? "live" : "down", i["sent"].get<std::uint64_t>(),
                 i["requests"].get<std::uint64_t>(), i["answered"].get<std::uint64_t>(),
                 i["timed_out"].get<std::uint64_t>(), i["failed_down"].get<std::uint64_t>(),
                 i["outstanding"].get<std::uint64_t>());
  }
}

// A group or service named by name or id; nullptr when the cluster file has none such.
template <typename T>
const T* resolve(const std::vector<T>& all, const std::string& name_or_id) {
  for (const auto& x : all)
    if (x.name == name_or_id || std::to_string(x.id) == name_or_id) return &x;
  return nullptr;
}

// `watch`: the node's sidecar's /watch stream, printed as it comes.
int watch_sidecar(const config::Node& self, const std::string& config_path, const std::vector<std::string>& tiers,
                  unsigned count, double seconds) {
  if (self.metrics_listen.empty()) {
    fmt::print(stderr, "nerve-ctl: node {} has no metrics_listen in {}: its sidecar serves no stream\n", self.id,
               config_path);
    return 2;
  }
  const auto colon = self.metrics_listen.rfind(':');
  const std::string host = self.metrics_listen.substr(0, colon);
  const int port = std::stoi(self.metrics_listen.substr(colon + 1));
  httplib::Client http(host, port);
  http.set_connection_timeout(2);
  http.set_read_timeout(5);  // the sidecar writes at least every second while it runs
  std::string path = "/watch";
  if (!tiers.empty()) path += "?tier=" + fmt::format("{}", fmt::join(tiers, ","));
  const auto until = seconds > 0 ? std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds)
                                 : std::chrono::steady_clock::time_point::max();
  unsigned seen = 0;
  bool enough = false;
  std::string line;
  auto res = http.Get(path, [&](const char* data, std::size_t len) {
    for (std::size_t i = 0; i < len && !enough; ++i) {
      line += data[i];
      if (data[i] != '\n') continue;
      if (line.rfind("# sample ", 0) == 0 && count != 0 && seen++ == count) {
        enough = true;
        break;
      }
      if (line != "# keepalive\n") std::fwrite(line.data(), 1, line.size(), stdout);
      line.clear();
    }
    std::fflush(stdout);
    return !enough && std::chrono::steady_clock::now() < until;
  });
  if (enough || std::chrono::steady_clock::now() >= until) return 0;
  if (!res) {
    fmt::print(stderr, "nerve-ctl: cannot stream from node {}'s sidecar at {}: {}\n", self.id, self.metrics_listen,
               httplib::to_string(res.error()));
    return 3;
  }
  if (res->status != 200) {
    fmt::print(stderr, "nerve-ctl: the sidecar refused: {} {}", res->status, res->body);
    return 2;
  }
  return 0;  // the sidecar stopped
}

// nerved's reply to `req`, or nullopt once stderr says why, with the exit code in `rc`: 3 when
// nerved cannot be reached or does not answer, 2 when it refuses the request.
std::optional<json> ask_nerved(app::ControlClient& nerved, const json& req, int wait_ms, int& rc) {
  std::string err;
  auto rep = nerved.call(req, err, wait_ms);
  if (!rep) {
    fmt::print(stderr, "nerve-ctl: {}\n", err);
    rc = 3;
  } else if (rep->contains("error")) {
    fmt::print(stderr, "nerve-ctl: nerved refused the request: {}\n", (*rep)["error"].get<std::string>());
    rc = 2;
    rep.reset();
  }
  return rep;
}

// Prints query result lines: as they are, or with --json current values as one object
// {"series": value} and history as [{"t": .., "series": .., "value": ..}].
void print_query(const std::vector<std::string>& lines, bool history, bool as_json) {
  if (!as_json) {
    for (const auto& l : lines) fmt::print("{}\n", l);
    return;
  }
  json out = history ? json::array() : json::object();
  for (const auto& l : lines) {
    const auto sp = l.rfind(' ');
    const double v = std::strtod(l.c_str() + sp + 1, nullptr);
    if (!history) {
      out[l.substr(0, sp)] = v;
      continue;
    }
    const auto first = l.find(' ');
    out.push_back({{"t", l.substr(0, first)}, {"series", l.substr(first + 1, sp - first - 1)}, {"value", v}});
  }
  fmt::print("{}\n", out.dump(2));
}

// `query`: the sidecar's /metrics (current) or /history (roll-ups), filtered by series name.
int query_sidecar(const config::Node& self, const std::string& config_path, const app::query::Request& q,
                  bool as_json) {
  if (self.metrics_listen.empty()) {
    fmt::print(stderr, "nerve-ctl: node {} has no metrics_listen in {}: no sidecar to ask (try --from {} through "
                       "another node)\n", self.id, config_path, self.id);
    return 2;
  }
  const auto colon = self.metrics_listen.rfind(':');
  httplib::Client http(self.metrics_listen.substr(0, colon), std::stoi(self.metrics_listen.substr(colon + 1)));
  http.set_connection_timeout(2);
  http.set_read_timeout(10);
  const std::string path = q.history ? fmt::format("/history?since={:.3f}&limit={}", static_cast<double>(q.since_ns) / 1e9, q.limit)
                                     : std::string("/metrics");
  const auto res = http.Get(path);
  if (!res) {
    fmt::print(stderr, "nerve-ctl: cannot reach node {}'s sidecar at {}: {}\n", self.id, self.metrics_listen,
               httplib::to_string(res.error()));
    return 3;
  }
  if (res->status != 200) {
    fmt::print(stderr, "nerve-ctl: the sidecar answered {}: {}", res->status, res->body);
    return res->status == 404 ? 2 : 1;
  }
  print_query(q.history ? app::query::history_lines(res->body, q.prefix) : app::query::current_lines(res->body, q.prefix),
              q.history, as_json);
  return 0;
}

// `query --from N`: node N's sidecar asked over the fabric, through the local nerved: a command
// "query ..." to N per page of the answer (apps/common/query.hpp).
int query_fabric(const config::Node& self, std::uint16_t from, app::query::Request q, int timeout_ms, bool as_json) {
  app::ControlClient ctl(self.control_socket);
  std::vector<std::string> lines;
  std::size_t total = 0;
  int restarts = 0;
  do {
    q.offset = lines.size();
    const json req = {{"op", "send"},        {"type", "command"}, {"priority", 3},          {"to", from},
                      {"payload", app::query::format(q)}, {"count", 1}, {"await_reply", true}, {"timeout_ms", timeout_ms}};
    int rc = 0;
    const auto rep = ask_nerved(ctl, req, timeout_ms + 5000, rc);
    if (!rep) return rc;
    if ((*rep)["status"] != "ok" || (*rep)["replies"].get<unsigned>() == 0) {
      fmt::print(stderr, "nerve-ctl: no answer from node {}: {}\n", from, (*rep)["status"].get<std::string>());
      return 1;
    }
    std::string err;
    const auto page = app::query::parse_page((*rep)["reply"].get<std::string>(), err);
    if (!page) {
      fmt::print(stderr, "nerve-ctl: node {} answered: {}\n", from, err);
      return 1;
    }
    if (page->offset != q.offset || (page->lines.empty() && page->offset < page->total)) {
      fmt::print(stderr, "nerve-ctl: node {} answered page {} of a query for page {}\n", from, page->offset, q.offset);
      return 1;
    }
    // A later page of a result that changed meanwhile (another asker's query replaced it):
    // start again, a few times, rather than print a mix.
    if (q.offset != 0 && page->total != total) {
      if (++restarts > 3) {
        fmt::print(stderr, "nerve-ctl: node {}'s answer kept changing while it was read\n", from);
        return 1;
      }
      lines.clear();
      total = 1;  // ask again from the start
      continue;
    }
    total = page->total;
    lines.insert(lines.end(), page->lines.begin(), page->lines.end());
  } while (lines.size() < total);
  print_query(lines, q.history, as_json);
  return 0;
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
  unsigned count = 1, size = 0, paths = 1;
  std::string type, payload;
  bool number = false, no_wait = false, wait = false, reliable = false;
  double rate = 0;
  std::string to_group, to_service, key;
  bool to_all = false;
  auto* to_opt = send->add_option("--to", to, "destination node id")->check(CLI::Range(1, 65534));
  auto* group_opt = send->add_option("--group", to_group, "every member of this group (name or id)");
  auto* service_opt = send->add_option("--service", to_service, "one instance of this service (name or id)");
  auto* all_opt = send->add_flag("--broadcast", to_all, "every other node");
  to_opt->excludes(group_opt, service_opt, all_opt);
  group_opt->excludes(service_opt, all_opt);
  service_opt->excludes(all_opt);
  send->add_option("--key", key, "a hash-policy service: the affinity key (default: each message its own)");
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
  send->add_flag("--reliable", reliable,
                 "deliver reliably: acknowledged, retransmitted, once and in order (to a node, to the instance a "
                 "service picks, or to each member of a group or of all, one reliable copy each)");
  send->add_option("--size", size,
                   "make each message N bytes, the payload repeated; above one frame it goes reliably, as "
                   "fragments (to a node only; up to the cluster's max_message)")
      ->check(CLI::Range(1u, 16u << 20))
      ->excludes(group_opt, service_opt, all_opt);
  send->add_option("--paths", paths,
                   "2: send each message over two disjoint paths at once; the first copy to arrive is delivered "
                   "(to a node only; one path where no second is up)")
      ->check(CLI::Range(1u, 2u))
      ->excludes(group_opt, service_opt, all_opt);
  send->add_option("payload", payload, "message payload (text)")->required();

  auto* status = cli.add_subcommand("status", "print the node's ports, peers, counters and lanes");
  auto* routes = cli.add_subcommand("routes", "print the node's routes: next hop, port and metric per lane");
  auto* groups = cli.add_subcommand("groups", "print the cluster's groups, their members and this node's");
  std::string group_arg;
  auto* join = cli.add_subcommand("join", "join a group (name or id)");
  join->add_option("group", group_arg, "group name or id")->required();
  auto* leave = cli.add_subcommand("leave", "leave a group (name or id)");
  leave->add_option("group", group_arg, "group name or id")->required();

  auto* watch = cli.add_subcommand("watch", "stream every sample the node's telemetry sidecar takes, as Prometheus "
                                             "text, each opened by '# sample tier=T seq=N taken_ns=T'");
  std::vector<std::string> watch_tiers;
  unsigned watch_count = 0;
  double watch_seconds = 0;
  watch->add_option("--tier", watch_tiers, "tiers to stream, comma-separated (default: all)")
      ->delimiter(',')
      ->check(CLI::IsMember({"critical", "high", "standard", "background", "historical"}));
  watch->add_option("--count", watch_count, "stop after N samples")->check(CLI::Range(1u, 1'000'000'000u));
  watch->add_option("--seconds", watch_seconds, "stop after this long")->check(CLI::Range(0.001, 1e7));

  auto* query = cli.add_subcommand("query", "the node's figures from its telemetry sidecar: current values, or its "
                                             "roll-ups of the last S seconds (--history S)");
  std::string q_metric;
  double q_history = 0;
  unsigned q_limit = 360;
  query->add_option("--metric", q_metric, "only series whose name starts with this (e.g. nerve_lane_delivered)");
  query->add_option("--history", q_history, "roll-ups (one per 10 s) of the last S seconds")->check(CLI::Range(1.0, 1e9));
  query->add_option("--limit", q_limit, "at most N roll-ups (default 360)")->check(CLI::Range(1u, 100'000u));
  int q_from = 0;
  query->add_option("--from", q_from, "ask node N's sidecar over the fabric, through this node's nerved")
      ->check(CLI::Range(1, 65534));

  auto* topc = cli.add_subcommand("top", "a live view of every node of the cluster, from their telemetry sidecars");
  double top_interval = 1.0;
  unsigned top_frames = 0;
  bool top_plain = false;
  topc->add_option("--interval", top_interval, "seconds between refreshes (default 1)")->check(CLI::Range(0.1, 3600.0));
  topc->add_option("--frames", top_frames, "stop after N refreshes (default: at q or Ctrl-C)");
  topc->add_flag("--plain", top_plain, "print text frames instead of a full-screen view");

  if (const auto rc = nerve::app::parse_cli(cli, argc, argv, "nerve-ctl")) return *rc;

  config::Cluster cluster;
  const config::Node* self = nullptr;
  if (const auto rc = app::load_node(config_path, node_id, "nerve-ctl", cluster, self)) return *rc;

  if (*query) {
    if (q_metric.find_first_of(" \t\n") != std::string::npos) {
      fmt::print(stderr, "nerve-ctl: --metric: a series name prefix has no spaces\n");
      return 2;
    }
    app::query::Request q;
    q.prefix = q_metric;
    q.limit = q_limit;
    if (q_history > 0) {
      q.history = true;
      const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
      q.since_ns = static_cast<std::uint64_t>(std::max(0.0, now - q_history) * 1e9);
    }
    if (q_from == 0) return query_sidecar(*self, config_path, q, as_json);
    if (!cluster.find(static_cast<std::uint16_t>(q_from))) {
      fmt::print(stderr, "nerve-ctl: --from: node {} is not in {}\n", q_from, config_path);
      return 2;
    }
    return query_fabric(*self, static_cast<std::uint16_t>(q_from), q, timeout_ms, as_json);
  }
  if (*topc) return app::top(cluster, top_interval, top_plain && top_frames == 0 ? 1 : top_frames, top_plain);
  if (*watch) return watch_sidecar(*self, config_path, watch_tiers, watch_count, watch_seconds);

  json req;
  const config::Group* group = nullptr;
  const config::Service* service = nullptr;
  if (*status) {
    req = {{"op", "status"}};
  } else if (*routes) {
    req = {{"op", "routes"}};
  } else if (*groups) {
    req = {{"op", "groups"}};
  } else if (*join || *leave) {
    group = resolve(cluster.groups, group_arg);
    if (!group) {
      fmt::print(stderr, "nerve-ctl: no group '{}' in {}\n", group_arg, config_path);
      return 2;
    }
    req = {{"op", *join ? "join" : "leave"}, {"group", group->id}};
  } else {
    const bool is_request = type == "command" || type == "request";
    req = {{"op", "send"}, {"type", type}, {"priority", priority}, {"payload", payload}, {"count", count},
           {"number", number}, {"rate", rate}, {"timeout_ms", timeout_ms}};
    if (reliable) req["reliable"] = true;
    if (size != 0) req["size"] = size;
    if (paths != 1) req["paths"] = paths;
    if (!to_group.empty()) {
      group = resolve(cluster.groups, to_group);
      if (!group) {
        fmt::print(stderr, "nerve-ctl: --group: no group '{}' in {}\n", to_group, config_path);
        return 2;
      }
      req["group"] = group->id;
    } else if (!to_service.empty()) {
      service = resolve(cluster.services, to_service);
      if (!service) {
        fmt::print(stderr, "nerve-ctl: --service: no service '{}' in {}\n", to_service, config_path);
        return 2;
      }
      req["service"] = service->id;
      if (!key.empty()) req["key"] = key;
    } else if (to_all) {
      req["broadcast"] = true;
    } else if (to != 0) {
      if (!cluster.find(static_cast<std::uint16_t>(to))) {
        fmt::print(stderr, "nerve-ctl: --to: node {} is not in {}\n", to, config_path);
        return 2;
      }
      req["to"] = to;
    } else {
      fmt::print(stderr, "nerve-ctl: send: one of --to, --group, --service or --broadcast is required\n");
      return 2;
    }
    // Replies come from one node: a node or a service's instance, not a group or everyone.
    const bool one = group == nullptr && !to_all;
    req["await_reply"] = one && (wait || (is_request && !no_wait));
  }
  // The fabric's own timeout runs inside nerved; give the socket a margin over it, plus the
  // time a paced send takes by its schedule.
  const double paced_ms = rate > 0 ? 1000.0 * count / rate : 0.0;
  const auto wait_ms = static_cast<int>(std::min(2e9, timeout_ms + 5000 + count / 100.0 + paced_ms));
  app::ControlClient nerved(self->control_socket);
  int rc = 0;
  const auto rep = ask_nerved(nerved, req, wait_ms, rc);
  if (!rep) return rc;
  if (as_json) {
    fmt::print("{}\n", rep->dump(2));
  } else if (*status) {
    print_status(*rep);
  } else if (*routes) {
    print_routes(*rep);
  } else if (*groups || *join || *leave) {
    print_groups((*rep)["groups"]);
  } else {
    const auto& r = *rep;
    const std::string st = r["status"].get<std::string>();
    std::string whom;
    if (group) whom = fmt::format("group {} ({})", group->id, group->name);
    else if (service) whom = fmt::format("service {} ({})", service->id, service->name);
    else if (to_all) whom = "every node";
    else whom = fmt::format("node {} ({})", to, cluster.node(static_cast<std::uint16_t>(to)).name);
    fmt::print("{}: sent {} of {} {} message(s) to {} on P{}", st, r["sent"].get<unsigned>(), count, type, whom,
               priority);
    if (r.contains("spread")) {
      std::string spread;
      for (const auto& [inst, n] : r["spread"].items()) spread += fmt::format(" {}:{}", inst, n.get<unsigned>());
      fmt::print(" (per instance{})", spread);
    }
    if (r["failed"].get<unsigned>() > 0) fmt::print("; {} failed", r["failed"].get<unsigned>());
    if (r["replies"].get<unsigned>() > 0)
      fmt::print("; {} repl{}, first in {} us: {}\n", r["replies"].get<unsigned>(),
                 r["replies"].get<unsigned>() == 1 ? "y" : "ies", us(r["rtt_ns"].get<std::uint64_t>()),
                 r["reply"].get<std::string>());
    else
      fmt::print("\n");
  }
  return !send->parsed() || (*rep)["status"] == "ok" ? 0 : 1;
}
