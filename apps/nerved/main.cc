// nerved: the node daemon. Starts one node of the cluster file, runs its datapath on a pinned
// lcore until SIGINT/SIGTERM, and serves the local control socket for nerve-ctl.
//
//   nerved --config cluster.toml --node 1 [--digest] [--log-level info]
//
// Exit codes: 0 clean shutdown, 1 start-up failure (devices, EAL), 2 bad arguments or config.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <csignal>
#include <cstring>
#include <optional>
#include <thread>

#include "../common/cli.hpp"
#include "../common/control.hpp"
#include "../common/log.hpp"
#include "eal.hpp"
#include "nerve/node.hpp"

using namespace nerve;
using app::Level;
using app::log;
using nlohmann::json;

namespace {

std::atomic<bool> g_stop{false};

extern "C" void on_signal(int) { g_stop.store(true, std::memory_order_relaxed); }

// Application-level view of what arrived: per type and priority, count and payload digest
// (sum of FNV-1a-64), so tests and the demo can prove every payload arrived byte-exact.
struct Received {
  std::array<std::array<stats::Counter, wire::kPriorities>, wire::kMsgTypes + 1> digest;
  stats::Counter replies_sent;
  // Control requests refused (bad JSON, bad fields, limits); several connection threads add.
  mutable std::atomic<std::uint64_t> control_refused{0};
};

std::string text(std::span<const std::byte> b) { return std::string(reinterpret_cast<const char*>(b.data()), b.size()); }

// What nerved answers to a command or a resource request.
std::string answer(const Node& node, const RxMessage& m) {
  const std::string body = text(m.payload());
  if (m.type() == MsgType::kResourceRequest) return fmt::format("received resource request ({} bytes)", body.size());
  const auto sp = body.find(' ');
  const std::string verb = body.substr(0, sp);
  if (verb == "ping") return "pong";
  if (verb == "echo") return sp == std::string::npos ? "" : body.substr(sp + 1);
  if (verb == "hostname") return node.config().name;
  return fmt::format("unknown command '{}' (ping, echo TEXT, hostname)", verb.substr(0, 64));
}

json lane_json(const stats::LaneSummary& l, std::size_t prio) {
  return {{"priority", prio}, {"count", l.count}, {"budget_ns", l.budget_ns}, {"deadline_miss", l.deadline_miss},
          {"shed", l.shed},   {"backpressure", l.backpressure},
          {"min_ns", l.min},  {"mean_ns", l.mean}, {"p50_ns", l.p50},       {"p90_ns", l.p90},
          {"p99_ns", l.p99},  {"p999_ns", l.p999}, {"max_ns", l.max}};
}

json status_json(const Node& node, const Received& rx, bool digest, unsigned lcore) {
  const auto& c = node.config();
  const auto s = node.snapshot();
  json j;
  j["node"] = {{"id", c.id},
               {"name", c.name},
               {"ip", config::format_ipv4(c.ip)},
               {"mac", config::format_mac(c.mac)},
               {"profile", config::to_string(c.profile)},
               {"idle", config::to_string(c.idle)},
               {"lcore", lcore},
               {"mbufs_available", node.mbufs_available()}};
  j["ports"] = json::array();
  for (const auto& p : node.ports())
    j["ports"].push_back({{"name", p.name},         {"kind", config::to_string(p.kind)},
                          {"lane_mode", to_string(p.lane_mode)}, {"tx_queued", p.tx_queued},
                          {"dpdk_port", p.dpdk_port}, {"socket", p.socket},
                          {"mac", config::format_mac(p.mac)}, {"link", p.link_up ? "up" : "down"},
                          {"ipackets", p.ipackets}, {"opackets", p.opackets},
                          {"ibytes", p.ibytes},     {"obytes", p.obytes},
                          {"imissed", p.imissed},   {"ierrors", p.ierrors},
                          {"oerrors", p.oerrors},   {"rx_nombuf", p.rx_nombuf},
                          {"peers", p.peers}});
  j["peers"] = json::array();
  for (const auto& p : node.peers())
    j["peers"].push_back({{"id", p.id}, {"name", p.name}, {"ip", config::format_ipv4(p.ip)},
                          {"mac", config::format_mac(p.mac)}, {"port", p.port}});
  json refused = json::object();
  for (std::size_t r = 1; r < wire::kRefusalCount; ++r)
    refused[std::string(wire::to_string(static_cast<wire::Refusal>(r)))] = s.refused[r];
  refused["multi_segment"] = s.rx_multi_segment;
  j["counters"] = {{"rx_frames", s.rx_frames},
                   {"rx_bytes", s.rx_bytes},
                   {"tx_frames", s.tx_frames},
                   {"tx_bytes", s.tx_bytes},
                   {"refused_total", s.refused_total()},
                   {"refused", refused},
                   {"tx_backpressure", s.tx_backpressure},
                   {"tx_no_route", s.tx_no_route},
                   {"alloc_failed", s.alloc_failed},
                   {"rx_deferred", s.rx_deferred},
                   {"replies_sent", rx.replies_sent.get()},
                   {"control_refused", rx.control_refused.load(std::memory_order_relaxed)}};
  json delivered = json::object(), sent = json::object(), dig = json::object();
  for (std::uint8_t t = wire::kMsgTypeFirst; t <= wire::kMsgTypeLast; ++t) {
    const std::string name(wire::to_string(static_cast<MsgType>(t)));
    delivered[name] = s.delivered[t];
    sent[name] = s.sent[t];
    if (digest) {
      json d = json::array();
      for (const auto& v : rx.digest[t]) d.push_back(v.get());
      dig[name] = d;
    }
  }
  j["delivered"] = delivered;
  j["sent"] = sent;
  if (digest) j["digest"] = dig;
  j["lanes"] = json::array();
  for (std::size_t p = 0; p < wire::kPriorities; ++p) j["lanes"].push_back(lane_json(s.lanes[p], p));
  return j;
}

// Reads the optional fields of a control request: an absent field keeps its default; a present
// one must have the right type and range, or the request is refused naming it.
class Fields {
 public:
  explicit Fields(const json& req) : req_(req) {}
  const std::string& error() const noexcept { return err_; }

  bool integer(const char* key, std::int64_t lo, std::int64_t hi, std::int64_t& out) {
    const auto it = req_.find(key);
    if (it == req_.end()) return true;
    if (!it->is_number_integer() || it->get<std::int64_t>() < lo || it->get<std::int64_t>() > hi ||
        (it->is_number_unsigned() && it->get<std::uint64_t>() > static_cast<std::uint64_t>(hi)))
      return fail(fmt::format("{}: expected an integer in {}..{}", key, lo, hi));
    out = it->get<std::int64_t>();
    return true;
  }
  bool number(const char* key, double lo, double hi, double& out) {
    const auto it = req_.find(key);
    if (it == req_.end()) return true;
    if (!it->is_number() || !(it->get<double>() >= lo && it->get<double>() <= hi))
      return fail(fmt::format("{}: expected a number in {}..{}", key, lo, hi));
    out = it->get<double>();
    return true;
  }
  bool boolean(const char* key, bool& out) {
    const auto it = req_.find(key);
    if (it == req_.end()) return true;
    if (!it->is_boolean()) return fail(fmt::format("{}: expected true or false", key));
    out = it->get<bool>();
    return true;
  }
  bool string(const char* key, std::string& out) {
    const auto it = req_.find(key);
    if (it == req_.end()) return true;
    if (!it->is_string()) return fail(fmt::format("{}: expected a string", key));
    out = it->get<std::string>();
    return true;
  }

 private:
  bool fail(std::string e) {
    err_ = std::move(e);
    return false;
  }
  const json& req_;
  std::string err_;
};

constexpr std::int64_t kMaxCount = 100'000'000;     // messages in one send request
constexpr std::int64_t kMaxTimeoutMs = 3'600'000;   // one hour
constexpr int kMaxConnections = 64;                 // control connections served at once
constexpr std::size_t kMaxRequestBytes = 1 << 20;   // one request line

// A send request, or an error naming the field that is wrong.
std::optional<ControlSend> parse_send(const Node& node, const json& req, std::string& err) {
  Fields f(req);
  std::string type, payload;
  std::int64_t prio = -1, to = 0, count = 1, timeout_ms = 2000;
  ControlSend cs;
  if (!f.string("type", type) || !f.integer("priority", 0, wire::kPriorities - 1, prio) ||
      !f.integer("to", 1, wire::kBroadcast - 1, to) || !f.string("payload", payload) ||
      !f.integer("count", 1, kMaxCount, count) || !f.boolean("number", cs.number_payloads) ||
      !f.boolean("await_reply", cs.await_reply) || !f.number("rate", 0, 1e9, cs.rate_mps) ||
      !f.integer("timeout_ms", 1, kMaxTimeoutMs, timeout_ms)) {
    err = f.error();
    return std::nullopt;
  }
  MsgType t{};
  if (!wire::parse_msg_type(type, t)) {
    err = fmt::format("type: unknown message type '{}'", type.substr(0, 64));
    return std::nullopt;
  }
  if (prio < 0) {
    err = "priority: required, 0..4";
    return std::nullopt;
  }
  if (to == 0) {
    err = "to: required, a node id 1..65534";
    return std::nullopt;
  }
  if (payload.size() > node.max_payload()) {
    err = fmt::format("payload of {} bytes exceeds one frame ({} bytes at this MTU)", payload.size(),
                      node.max_payload());
    return std::nullopt;
  }
  cs.dst = static_cast<NodeId>(to);
  cs.type = t;
  cs.priority = static_cast<std::uint8_t>(prio);
  cs.payload = std::move(payload);
  cs.count = static_cast<std::uint32_t>(count);
  cs.timeout = std::chrono::milliseconds(timeout_ms);
  return cs;
}

// Every refused control request goes through here: counted, and answered with the reason.
json refusal(const Received& rx, std::string why) {
  rx.control_refused.fetch_add(1, std::memory_order_relaxed);
  return json{{"error", std::move(why)}};
}

// One request line: the reply, or a refusal.
json handle(Node& node, const Received& rx, bool digest, unsigned lcore, const std::string& line) {
  auto refuse = [&](std::string why) { return refusal(rx, std::move(why)); };
  const json req = json::parse(line, nullptr, false);
  if (req.is_discarded()) return refuse("request is not JSON");
  if (!req.is_object()) return refuse("request must be a JSON object");
  std::string op;
  if (Fields f(req); !f.string("op", op)) return refuse(f.error());
  if (op == "status") return status_json(node, rx, digest, lcore);
  if (op == "send") {
    std::string err;
    const auto cs = parse_send(node, req, err);
    if (!cs) return refuse(err);
    const ControlResult r = node.proxy().send(*cs);
    json out = {{"status", to_string(r.status)}, {"sent", r.sent},   {"replies", r.replies},
                {"rtt_ns", r.rtt_ns},            {"digest", r.digest}};
    if (r.replies) out["reply"] = r.reply;
    return out;
  }
  return refuse(fmt::format("unknown op '{}' (status, send)", op.substr(0, 64)));
}

// Serves the control socket until g_stop; each connection gets a thread of its own, since a
// request may block for its whole timeout, and returns only when all of them have ended.
void serve_control(int listen_fd, Node& node, const Received& rx, bool digest, unsigned lcore) {
  std::atomic<int> open{0};
  while (!g_stop.load(std::memory_order_relaxed)) {
    pollfd p{listen_fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    if (open.load() >= kMaxConnections) {
      app::write_all(fd, refusal(rx, fmt::format("busy: {} control connections open", kMaxConnections)).dump() + "\n");
      ::close(fd);
      continue;
    }
    open.fetch_add(1);
    std::thread([fd, &node, &rx, digest, lcore, &open] {
      std::string line;
      while (true) {
        const app::Line got = app::read_line(fd, line, kMaxRequestBytes, &g_stop);
        if (got == app::Line::kClosed) break;
        if (got == app::Line::kTooLong) {
          app::write_all(fd, refusal(rx, fmt::format("request longer than {} bytes", kMaxRequestBytes)).dump() + "\n");
          break;
        }
        // dump() with replace: a payload echoed back may hold bytes that are not UTF-8.
        const std::string rep = handle(node, rx, digest, lcore, line).dump(-1, ' ', false, json::error_handler_t::replace);
        if (!app::write_all(fd, rep + "\n")) break;
      }
      ::close(fd);
      open.fetch_sub(1);
    }).detach();
  }
  while (open.load() != 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
}

}  // namespace

int main(int argc, char** argv) {
  app::g_program = "nerved";
  CLI::App cli{"nerved: the nerve node daemon. Runs one node of a cluster file until SIGINT/SIGTERM."};
  std::string config_path, level = "info";
  int node_id = 0;
  bool digest = false;
  cli.add_option("--config", config_path, "cluster file (TOML)")->required()->check(CLI::ExistingFile);
  cli.add_option("--node", node_id, "id of the node to run")->required()->check(CLI::Range(1, 65534));
  cli.add_flag("--digest", digest, "keep a digest of every received payload per type and priority (tests, demo)");
  cli.add_option("--log-level", level, "debug, info, warn or error")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}));
  if (const auto rc = nerve::app::parse_cli(cli, argc, argv, "nerved")) return *rc;
  app::g_log_level = level == "debug" ? Level::kDebug : level == "warn" ? Level::kWarn
                   : level == "error" ? Level::kError : Level::kInfo;

  config::Cluster cluster;
  const config::Node* self = nullptr;
  try {
    cluster = config::load_file(config_path);
    self = &cluster.node(static_cast<NodeId>(node_id));
  } catch (const config::ConfigError& e) {
    fmt::print(stderr, "nerved: config error: {}\n", e.what());
    return 2;
  }
  app::g_program = fmt::format("nerved[{}]", self->name);

  // The control thread must not share the datapath's core: keep the affinity we started with.
  cpu_set_t start_affinity;
  sched_getaffinity(0, sizeof start_affinity, &start_affinity);

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  std::string err;
  const int listen_fd = app::control_listen(self->control_socket, err);
  if (listen_fd < 0) {
    log(Level::kError, "{}", err);
    return 1;
  }
  int rc = 0;
  try {
    const auto eal_opts = drivers::eal_options_for(cluster, *self);
    drivers::Eal eal(eal_opts);
    log(Level::kInfo, "EAL up: profile {}, lcore {} (socket {}), prefix {}", config::to_string(self->profile),
        eal.main_lcore(), eal.socket(), eal_opts.file_prefix);
    {
      Node node(cluster, self->id, eal);
      for (const auto& p : node.ports())
        log(Level::kInfo, "port {} ({}) mac {} socket {} lanes {} link {}", p.name, config::to_string(p.kind),
            config::format_mac(p.mac), p.socket, to_string(p.lane_mode), p.link_up ? "up" : "down (waiting for peer)");
      for (const auto& p : node.peers())
        log(Level::kInfo, "peer {} ({}) at {} via port {}", p.id, p.name, config::format_ipv4(p.ip), p.port);

      Received rx;
      node.on_message([&](const RxMessage& m) {
        const auto t = static_cast<std::size_t>(m.type());
        if (digest) rx.digest[t][m.priority()].add(fnv1a64(m.payload()));
        if (m.type() == MsgType::kCommand || m.type() == MsgType::kResourceRequest) {
          const std::string a = answer(node, m);
          TxFrame f = node.alloc(a.size());
          if (!f) return;  // pool exhausted: counted in alloc_failed; the requester times out
          std::memcpy(f.payload().data(), a.data(), a.size());
          if (node.respond(m, f) == SendStatus::kOk) rx.replies_sent.add();
        }
      });

      const unsigned lcore = eal.main_lcore();
      std::atomic<bool> control_done{false};
      std::thread control([&] {
        pthread_setaffinity_np(pthread_self(), sizeof start_affinity, &start_affinity);
        serve_control(listen_fd, node, rx, digest, lcore);
        control_done.store(true);
      });
      log(Level::kInfo, "node {} running; control socket {}", self->id, self->control_socket);

      node.run(g_stop);  // the datapath, on this (pinned) thread

      log(Level::kInfo, "stopping");
      // Requests in flight on the control socket end now with "shutdown" (a paced send may have
      // hours to go); the datapath stays live until every control thread has answered.
      while (!control_done.load()) {
        node.cancel_requests();
        node.poll();
      }
      control.join();
      const auto s = node.snapshot();
      log(Level::kInfo, "final: rx {} tx {} delivered {} refused {}", s.rx_frames, s.tx_frames, s.delivered_total(),
          s.refused_total());
    }
  } catch (const std::exception& e) {
    log(Level::kError, "{}", e.what());
    rc = 1;
  }
  ::close(listen_fd);
  ::unlink(self->control_socket.c_str());
  if (rc == 0) log(Level::kInfo, "stopped cleanly");
  return rc;
}
