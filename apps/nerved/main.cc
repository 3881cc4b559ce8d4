// nerved: the node daemon. Starts one node of the cluster file, runs its datapath on a pinned
// lcore until SIGINT/SIGTERM, and serves the local control socket for nerve-ctl.
//
//   nerved --config cluster.toml --node 1 [--digest] [--log-level info] [--dpdk-log pmd.net.memif:debug]
//   nerved --config cluster.toml --node 1 --check      # the cluster file only, then exit
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
#include <charconv>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <optional>
#include <regex>
#include <string_view>
#include <thread>

#include "../common/cli.hpp"
#include "../common/cluster.hpp"
#include "../common/control.hpp"
#include "../common/digest.hpp"
#include "../common/log.hpp"
#include "eal.hpp"
#include "nerve/node.hpp"
#include "nerve/telemetry.hpp"
#include "dpdk_telemetry.hpp"
#include "queries.hpp"

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
  stats::Counter replies_deferred;  // pushed back by a full lane, sent later
  stats::Counter replies_failed;    // not sent: the pool was empty, or the deferred queue full
  // Control requests refused (bad JSON, bad fields, limits); several connection threads add.
  mutable std::atomic<std::uint64_t> control_refused{0};
};

// A message's payload as text.
std::string_view text_of(const RxMessage& m) noexcept {
  return {reinterpret_cast<const char*>(m.payload().data()), m.payload().size()};
}
// A command's verb: its first word.
std::string_view verb_of(std::string_view body) noexcept { return body.substr(0, body.find(' ')); }

// What nerved answers to a command or a resource request, written into `out` (the response's
// payload); returns its length. Runs on the datapath: no allocation.
std::size_t answer(const Node& node, const RxMessage& m, std::span<std::byte> out) {
  auto* o = reinterpret_cast<char*>(out.data());
  const std::string_view body = text_of(m);
  auto put = [&](std::string_view text) {
    const std::size_t n = std::min(text.size(), out.size());
    std::memcpy(o, text.data(), n);
    return n;
  };
  if (m.type() == MsgType::kResourceRequest)
    return fmt::format_to_n(o, out.size(), "received resource request ({} bytes)", body.size()).size;
  const std::string_view verb = verb_of(body);
  if (verb == "ping") return put("pong");
  if (verb == "echo") return put(body.substr(std::min(body.size(), verb.size() + 1)));
  if (verb == "hostname") return put(node.config().name);
  return fmt::format_to_n(o, out.size(), "unknown command '{}' (ping, echo TEXT, hostname, query ...)", verb.substr(0, 64))
      .size;
}

// Responses a full lane pushed back: kept, with their requests, and sent in order as soon as the
// lane has room (a response is owed; it is never dropped). Datapath thread only.
class PendingResponses {
 public:
  static constexpr std::size_t kCapacity = 4096;
  // At most `limit` kept (each holds one mbuf of the node's pool, which the ports need too).
  explicit PendingResponses(std::size_t limit) noexcept : limit_(std::min(limit, kCapacity)) {}
  bool empty() const noexcept { return head_ == tail_; }
  bool full() const noexcept { return tail_ - head_ >= limit_; }
  // Keeps the request's header only: its frame goes back to the pool now.
  void push(Node& node, RxMessage req, TxFrame resp) noexcept {
    Entry& e = ring_[tail_++ % kCapacity];
    e.req = std::move(req);
    (void)node.take_frame(e.req);  // the header stays readable; the frame is freed
    e.resp = std::move(resp);
  }
  // Sends what the lanes take now, oldest first; returns the number sent. One that cannot go
  // at all any more (its asker unreachable now) is dropped and counted, not waited for.
  unsigned retry(Node& node, stats::Counter& sent, stats::Counter& failed) noexcept {
    unsigned n = 0;
    while (!empty()) {
      Entry& e = ring_[head_ % kCapacity];
      const SendStatus s = node.respond(e.req, e.resp);
      if (s == SendStatus::kBackpressure) break;
      (s == SendStatus::kOk ? sent : failed).add();
      e.req = RxMessage{};
      e.resp = TxFrame{};  // (unsent: its frame back to the pool)
      ++head_;
      ++n;
    }
    return n;
  }

 private:
  struct Entry {
    RxMessage req;
    TxFrame resp;
  };
  std::size_t limit_;
  std::array<Entry, kCapacity> ring_{};
  std::size_t head_ = 0, tail_ = 0;
};

json lane_json(const stats::LaneSummary& l, std::size_t prio) {
  return {{"priority", prio}, {"count", l.count}, {"budget_ns", l.budget_ns}, {"deadline_miss", l.deadline_miss},
          {"shed", l.shed},   {"backpressure", l.backpressure},
          {"min_ns", l.min},  {"mean_ns", l.mean}, {"p50_ns", l.p50},       {"p90_ns", l.p90},
          {"p99_ns", l.p99},  {"p999_ns", l.p999}, {"max_ns", l.max}};
}

json groups_json(const Node& node) {
  json out = json::array();
  const auto mine = node.groups();
  for (const auto& g : node.cluster().groups)
    out.push_back({{"id", g.id}, {"name", g.name},
                   {"member", std::find(mine.begin(), mine.end(), g.id) != mine.end()},
                   {"members", node.members(g.id)}});
  return {{"node", node.id()}, {"groups", out}};
}

json services_json(const Node& node) {
  json out = json::array();
  for (const auto& sv : node.services()) {
    json inst = json::array();
    for (const auto& i : sv.instances)
      inst.push_back({{"node", i.node}, {"live", i.live}, {"sent", i.sent}, {"requests", i.requests},
                      {"answered", i.answered}, {"timed_out", i.timed_out}, {"failed_down", i.failed_down},
                      {"outstanding", i.outstanding}});
    out.push_back({{"id", sv.id}, {"name", sv.name}, {"policy", sv.policy}, {"timeout_ms", sv.timeout_ms},
                   {"instances", inst}});
  }
  return out;
}

json status_json(const Node& node, const Received& rx, const app::QueryDesk& desk, bool digest, unsigned lcore) {
  const auto& c = node.config();
  const auto s = node.snapshot();
  json j;
  j["node"] = {{"id", c.id},
               {"name", c.name},
               {"ip", config::format_ipv4(c.ip)},
               {"mac", config::format_mac(c.mac)},
               {"profile", config::to_string(c.profile)},
               {"idle", config::to_string(c.idle)},
               // Backing off, a P0 frame after an idle gap waits for the sleep the node is in
               // (up to this long) plus a wake-up; busy_lanes keep it polling while P0 flows.
               {"idle_max_sleep_us", c.idle == config::Idle::kBusy ? 0u : c.idle_sleep_max_us},
               {"lcore", lcore},
               {"stats_region", c.stats_region},
               {"mbufs_available", node.mbufs_available()}};
  j["ports"] = json::array();
  for (const auto& p : node.ports())
    j["ports"].push_back({{"name", p.name},         {"kind", config::to_string(p.kind)},
                          {"lane_mode", config::to_string(p.lane_mode)}, {"tx_queued", p.tx_queued},
                          {"ip_checksum_offload", p.ip_checksum_offload}, {"ip_fragments", p.ip_fragments},
                          {"dpdk_port", p.dpdk_port}, {"socket", p.socket},
                          {"mac", config::format_mac(p.mac)}, {"link", p.link_up ? "up" : "down"},
                          {"ipackets", p.ipackets}, {"opackets", p.opackets},
                          {"ibytes", p.ibytes},     {"obytes", p.obytes},
                          {"imissed", p.imissed},   {"ierrors", p.ierrors},
                          {"oerrors", p.oerrors},   {"rx_nombuf", p.rx_nombuf},
                          {"peers", p.peers},       {"redials", p.redials},
                          {"fault", {{"profile", p.fault}, {"seen", p.fault_seen}, {"dropped", p.fault_dropped},
                                     {"corrupted", p.fault_corrupted}, {"duplicated", p.fault_duplicated},
                                     {"reordered", p.fault_reordered}, {"delayed", p.fault_delayed}}}});
  j["peers"] = json::array();
  for (const auto& p : node.peers())
    j["peers"].push_back({{"id", p.id}, {"name", p.name}, {"ip", config::format_ipv4(p.ip)},
                          {"mac", config::format_mac(p.mac)}, {"port", p.port}});
  json refused = json::object();
  for (std::size_t r = 1; r < wire::kRefusalCount; ++r)
    refused[std::string(wire::to_string(static_cast<wire::Refusal>(r)))] = s.refused[r];
  refused["multi_segment"] = s.rx_multi_segment;
  // IPv4 fragments the kernel kept from the node (af_packet): refused too, before the node.
  std::uint64_t kernel_fragments = 0;
  for (const auto& p : node.ports()) kernel_fragments += p.ip_fragments;
  refused["ip_fragment"] = refused["ip_fragment"].get<std::uint64_t>() + kernel_fragments;
  j["counters"] = {{"rx_frames", s.rx_frames},
                   {"rx_bytes", s.rx_bytes},
                   {"tx_frames", s.tx_frames},
                   {"tx_bytes", s.tx_bytes},
                   {"refused_total", s.refused_total() + kernel_fragments},
                   {"refused", refused},
                   {"tx_backpressure", s.tx_backpressure},
                   {"tx_no_route", s.tx_no_route},
                   {"alloc_failed", s.alloc_failed},
                   {"rx_deferred", s.rx_deferred}, {"rx_lane_full", s.rx_lane_full},
                   {"replies_sent", rx.replies_sent.get()},
                   {"replies_deferred", rx.replies_deferred.get()},
                   {"replies_failed", rx.replies_failed.get()},
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
  // Routing: links as the heartbeats see them, frames forwarded, the routing agent.
  j["links"] = json::array();
  for (const auto& l : node.links())
    j["links"].push_back({{"peer", l.peer}, {"port", l.port}, {"up", l.up}, {"rtt_ns", l.rtt_ns},
                          {"heartbeats_rx", l.heartbeats_rx}, {"heartbeats_tx", l.heartbeats_tx}, {"downs", l.downs}});
  json fwd = {{"lanes", json::array()}, {"ports", json::array()}, {"dropped", json::array()}, {"transit", json::array()}};
  for (std::size_t p = 0; p < wire::kPriorities; ++p) {
    fwd["lanes"].push_back(s.forwarded[p]);
    fwd["dropped"].push_back(s.forward_dropped[p]);
    fwd["transit"].push_back(lane_json(s.transit[p], p));
  }
  for (std::size_t p = 0; p < node.ports().size(); ++p) fwd["ports"].push_back(s.forwarded_port[p]);
  j["forwarded"] = fwd;
  // Reliable delivery, per lane (docs/architecture.md, "Reliable delivery").
  j["reliable"] = json::array();
  for (std::size_t p = 0; p < wire::kPriorities; ++p) {
    const auto& r = s.rel[p];
    j["reliable"].push_back({{"lane", p}, {"sent", r.sent}, {"acked", r.acked}, {"failed", r.failed},
                             {"retransmits", r.retransmits}, {"fast_retransmits", r.fast_retransmits},
                             {"window_full", r.window_full}, {"in_order", r.in_order}, {"reordered", r.reordered},
                             {"duplicates", r.duplicates}, {"skipped", r.skipped}, {"beyond_window", r.beyond_window},
                             {"stale", r.stale}, {"acks_tx", r.acks_tx}, {"acks_rx", r.acks_rx},
                             {"acks_dropped", r.acks_dropped}, {"no_session", r.no_session},
                             {"split", r.split}, {"joined", r.joined}, {"join_aborted", r.join_aborted},
                             {"join_waits", r.join_waits}, {"senders", r.senders}, {"credit", r.credit},
                             {"held", r.held}, {"over_credit", r.over_credit}});
  }
  // Two paths (docs/architecture.md, "Two paths"): sent, per lane; received, per (source, channel).
  json paths = {{"sent_two", json::array()}, {"sent_one", json::array()}, {"channels", json::array()}};
  for (std::size_t p = 0; p < wire::kPriorities; ++p) {
    paths["sent_two"].push_back(s.paths_two[p]);
    paths["sent_one"].push_back(s.paths_one[p]);
  }
  for (const auto& pc : s.paths)
    paths["channels"].push_back({{"src", pc.other ? json("other") : json(pc.src)},
                                 {"channel", pc.other ? json(nullptr) : json(pc.channel)},
                                 {"won", {pc.won1, pc.won2}}, {"discarded", pc.discarded}});
  j["paths"] = paths;
  const RoutingInfo ri = node.routing();
  j["routing"] = {{"table_version", ri.table_version}, {"table_in_use", ri.table_in_use}, {"build_ns", ri.build_ns}, {"lsa_received", ri.lsa_received},
                  {"lsa_sent", ri.lsa_sent}, {"lsa_originated", ri.lsa_originated}, {"lsa_refused", ri.lsa_refused},
                  {"db_size", ri.db_size}, {"db_syncs", ri.db_syncs}, {"mailbox_dropped", ri.mailbox_dropped},
                  {"fabric_rx", s.fabric_rx}, {"fabric_tx", s.fabric_tx}};
  j["services"] = services_json(node);
  j["groups"] = groups_json(node)["groups"];
  const auto q = desk.counts();
  j["queries"] = {{"serving", desk.serving()}, {"handed", q.handed}, {"answered", q.answered},
                  {"no_server", q.no_server}, {"busy", q.busy}, {"timed_out", q.timed_out}};
  return j;
}

json routes_json(const Node& node) {
  json out = json::array();
  for (const auto& r : node.routes()) {
    json lanes = json::array();
    for (std::size_t l = 0; l < wire::kPriorities; ++l) {
      const auto& h = r.lanes[l];
      lanes.push_back({{"lane", l}, {"next_hop", h.next_hop}, {"port", h.port}, {"metric", h.metric},
                       {"cost", h.cost == ~0ull ? json(nullptr) : json(h.cost)}, {"paths", h.paths}});
    }
    json two = nullptr;  // where the copies of a message sent over two paths leave
    if (r.two_paths[1].next_hop != 0)
      two = json::array({{{"next_hop", r.two_paths[0].next_hop}, {"port", r.two_paths[0].port}},
                         {{"next_hop", r.two_paths[1].next_hop}, {"port", r.two_paths[1].port}}});
    out.push_back({{"dst", r.dst}, {"lanes", lanes}, {"two_paths", two}});
  }
  return {{"node", node.id()}, {"routes", out}};
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

// A send request: what the proxy carries out, and the payload its messages are made of.
struct SendRequest {
  ProxySend send;
  std::string payload;
  bool number = false;  // message i carries payload + "#" + i
  std::size_t size = 0;  // each message this long, the payload repeated after the text (0: the text)

  // Message i's payload, into `out`; returns its length. Runs on the datapath: no allocation.
  std::size_t fill(std::uint32_t i, std::span<std::byte> out) const noexcept {
    auto* o = reinterpret_cast<char*>(out.data());
    std::size_t n = std::min(payload.size(), out.size());
    std::memcpy(o, payload.data(), n);
    if (number && n + 1 < out.size()) {
      o[n] = '#';
      n = static_cast<std::size_t>(std::to_chars(o + n + 1, o + out.size(), i).ptr - o);
    }
    if (size == 0 || payload.empty()) return n;
    const std::size_t want = std::min(size, out.size());
    for (std::size_t k = 0; n < want; ++n, ++k) o[n] = payload[k % payload.size()];
    return n;
  }
  // The digest of messages 0..sent-1, as the receivers compute it.
  std::uint64_t digest(std::uint32_t sent) const {
    std::vector<std::byte> buf(std::max(size, payload.size() + 16));
    std::uint64_t sum = 0;
    for (std::uint32_t i = 0; i < sent; ++i) sum += app::fnv1a64(std::span(buf).first(fill(i, buf)));
    return sum;
  }
};

// A send request, or an error naming the field that is wrong.
std::optional<SendRequest> parse_send(const Node& node, const json& req, std::string& err) {
  Fields f(req);
  std::string type;
  std::int64_t prio = -1, to = 0, group = 0, service = 0, count = 1, timeout_ms = 2000, size = 0, paths = 1;
  bool broadcast = false;
  std::string key;
  SendRequest sr;
  ProxySend& ps = sr.send;
  if (!f.string("type", type) || !f.integer("priority", 0, wire::kPriorities - 1, prio) ||
      !f.integer("to", 1, wire::kBroadcast - 1, to) || !f.integer("group", 1, wire::kBroadcast - 1, group) ||
      !f.integer("service", 1, wire::kBroadcast - 1, service) || !f.boolean("broadcast", broadcast) ||
      !f.string("key", key) || !f.string("payload", sr.payload) ||
      !f.integer("count", 1, kMaxCount, count) || !f.boolean("number", sr.number) ||
      !f.integer("size", 1, 16 << 20, size) || !f.integer("paths", 1, 2, paths) ||
      !f.boolean("await_reply", ps.await_reply) || !f.boolean("reliable", ps.reliable) ||
      !f.number("rate", 0, 1e9, ps.rate_mps) ||
      !f.integer("timeout_ms", 1, kMaxTimeoutMs, timeout_ms)) {
    err = f.error();
    return std::nullopt;
  }
  if (!wire::parse_msg_type(type, ps.type)) {
    err = fmt::format("type: unknown message type '{}'", type.substr(0, 64));
    return std::nullopt;
  }
  if (prio < 0) {
    err = "priority: required, 0..4";
    return std::nullopt;
  }
  if ((to != 0) + (group != 0) + (service != 0) + broadcast != 1) {
    err = "one of to (a node id), group (a group id), service (a service id) or broadcast (true) is required";
    return std::nullopt;
  }
  const auto& cluster = node.cluster();
  if (group != 0 && cluster.group_index(static_cast<std::uint16_t>(group)) < 0) {
    err = fmt::format("group: no group {} in the cluster file", group);
    return std::nullopt;
  }
  if (service != 0 && !cluster.find_service(static_cast<std::uint16_t>(service))) {
    err = fmt::format("service: no service {} in the cluster file", service);
    return std::nullopt;
  }
  if ((group != 0 || broadcast) && ps.await_reply) {
    err = "await_reply: replies are awaited from a node or a service, not a group or every node";
    return std::nullopt;
  }
  if (paths == 2 && to == 0) {
    err = "paths: two paths are to a node (to), not a group, a service or every node";
    return std::nullopt;
  }
  ps.paths = static_cast<std::uint8_t>(paths);
  using Target = ProxySend::Target;
  ps.target = to != 0 ? Target::kNode : group != 0 ? Target::kGroup : service != 0 ? Target::kService : Target::kBroadcast;
  // The hash policy's affinity key: the text's FNV-1a (the same text, the same instance).
  if (!key.empty()) ps.key = app::fnv1a64(std::as_bytes(std::span(key)));
  // Numbered payloads grow by "#" and the digits of the last index.
  const std::size_t longest = sr.payload.size() + (sr.number ? 1 + std::to_string(count - 1).size() : 0);
  if (size != 0 && static_cast<std::size_t>(size) < longest) {
    err = fmt::format("size: {} bytes is less than the payload's {}", size, longest);
    return std::nullopt;
  }
  sr.size = static_cast<std::size_t>(size);
  const std::size_t bytes = std::max(longest, sr.size);
  if (bytes > node.max_message()) {
    err = fmt::format("payload of {} bytes exceeds the cluster's max_message ({} bytes)", bytes, node.max_message());
    return std::nullopt;
  }
  if (bytes > node.max_payload()) {
    if (to == 0) {
      err = fmt::format("payload of {} bytes exceeds one frame ({} bytes at this MTU): a message that large goes "
                        "as fragments, to a node (to) only", bytes, node.max_payload());
      return std::nullopt;
    }
    ps.size = bytes;  // a large message: reliably, in fragments
    ps.reliable = true;
  }
  ps.dst = static_cast<NodeId>(to != 0 ? to : group != 0 ? group : service);
  ps.priority = static_cast<std::uint8_t>(prio);
  ps.count = static_cast<std::uint32_t>(count);
  ps.timeout = std::chrono::milliseconds(timeout_ms);
  return sr;
}

// Every refused control request goes through here: counted, and answered with the reason.
json refusal(const Received& rx, std::string why) {
  rx.control_refused.fetch_add(1, std::memory_order_relaxed);
  return json{{"error", std::move(why)}};
}

// What the control threads work with.
struct Daemon {
  Node& node;
  const Received& rx;
  app::QueryDesk& desk;
  telemetry::Region* region;  // null with stats_region = "off"
  bool digest;
  unsigned lcore;
};

// One request line: the reply, or a refusal. `serve` is set when the connection becomes the
// app's that answers fabric queries (op serve_queries).
json handle(const Daemon& d, const std::string& line, bool& serve) {
  Node& node = d.node;
  auto refuse = [&](std::string why) { return refusal(d.rx, std::move(why)); };
  const json req = json::parse(line, nullptr, false);
  if (req.is_discarded()) return refuse("request is not JSON");
  if (!req.is_object()) return refuse("request must be a JSON object");
  std::string op;
  if (Fields f(req); !f.string("op", op)) return refuse(f.error());
  if (op == "status") return status_json(node, d.rx, d.desk, d.digest, d.lcore);
  if (op == "routes") return routes_json(node);
  if (op == "send") {
    std::string err;
    auto sr = parse_send(node, req, err);
    if (!sr) return refuse(err);
    const SendRequest& request = *sr;
    sr->send.fill = [&request](std::uint32_t i, std::span<std::byte> out) { return request.fill(i, out); };
    const ProxyResult r = node.proxy().send(sr->send);
    json out = {{"status", to_string(r.status)}, {"sent", r.sent},   {"replies", r.replies},
                {"rtt_ns", r.rtt_ns},            {"digest", request.digest(r.sent)}, {"failed", r.failed}};
    if (r.replies) out["reply"] = r.reply;
    if (sr->send.target == ProxySend::Target::kService) {
      json spread = json::object();
      for (const auto& [inst, n] : r.spread) spread[std::to_string(inst)] = n;
      out["spread"] = spread;
    }
    return out;
  }
  if (op == "groups") return groups_json(node);
  if (op == "join" || op == "leave") {
    std::int64_t group = 0;
    if (Fields f(req); !f.integer("group", 1, wire::kBroadcast - 1, group)) return refuse(f.error());
    const auto g = static_cast<std::uint16_t>(group);
    if (group == 0 || !(op == "join" ? node.join(g) : node.leave(g)))
      return refuse(fmt::format("group: no group {} in the cluster file", group));
    return groups_json(node);
  }
  if (op == "serve_queries") {
    if (!d.desk.attach()) return refuse("another app (a telemetry sidecar) already serves this node's queries");
    serve = true;
    return {{"serving", true}, {"node", node.id()}, {"max_payload", node.max_payload()}};
  }
  return refuse(fmt::format("unknown op '{}' (status, routes, groups, join, leave, send, serve_queries)",
                            op.substr(0, 64)));
}

// The connection of the app that answers fabric queries: queries go out as
// {"query":ID,"from":NODE,"text":"..."} lines; {"op":"answer","query":ID,"text":"..."} lines come
// back. Polls every millisecond while queries flow, backing off to 16 ms when quiet (the datapath
// only flips a slot's state; it wakes no one). Ends when the app goes or nerved stops.
void serve_queries(int fd, app::LineReader& reader, const Daemon& d) {
  struct Detach {  // whatever ends the connection, what the app held is answered
    app::QueryDesk& desk;
    ~Detach() { desk.detach(); }
  } detach{d.desk};
  // An app that stops reading must not hold this thread (and a shutdown) in a write: a second.
  const timeval limit{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
  std::string line;
  int wait_ms = 1;
  while (!g_stop.load(std::memory_order_relaxed)) {
    bool active = false;
    std::string out;
    d.desk.take([&](std::uint32_t id, std::uint16_t from, std::string_view text) {
      out += json{{"query", id}, {"from", from}, {"text", text}}.dump(-1, ' ', false, json::error_handler_t::replace);
      out += '\n';
    });
    if (!out.empty()) {
      active = true;
      if (!app::write_all(fd, out)) break;
    }
    d.desk.expire_taken();
    // The app's answers: what came within the wait, then whatever else is there already.
    app::Line got;
    for (int wait = wait_ms; (got = reader.poll_line(line, kMaxRequestBytes, wait)) == app::Line::kLine; wait = 0) {
      active = true;
      const json a = json::parse(line, nullptr, false);
      const bool well_formed = a.is_object() && a.contains("op") && a["op"].is_string() && a["op"] == "answer" &&
                               a.contains("query") && a["query"].is_number_unsigned() && a.contains("text") &&
                               a["text"].is_string();
      // A late answer (the query timed out) or a malformed line: counted, the stream goes on.
      if (!well_formed || !d.desk.answer(a["query"].get<std::uint32_t>(), a["text"].get<std::string>()))
        d.rx.control_refused.fetch_add(1, std::memory_order_relaxed);
    }
    if (got != app::Line::kNone) break;  // the app went, or sent a line too long
    wait_ms = active ? 1 : std::min(wait_ms * 2, 16);
  }
}

// One control connection: request lines until it closes or nerved stops; a connection that
// asks to serve queries becomes the query desk's (serve_queries).
void serve_connection(int fd, const Daemon& d) {
  std::string line;
  app::LineReader reader(fd);
  while (true) {
    const app::Line got = reader.read(line, kMaxRequestBytes, &g_stop);
    if (got == app::Line::kClosed) break;
    if (got == app::Line::kTooLong) {
      app::write_all(fd, refusal(d.rx, fmt::format("request longer than {} bytes", kMaxRequestBytes)).dump() + "\n");
      break;
    }
    bool serve = false;
    // dump() with replace: a payload echoed back may hold bytes that are not UTF-8.
    const std::string rep = handle(d, line, serve).dump(-1, ' ', false, json::error_handler_t::replace);
    if (!app::write_all(fd, rep + "\n")) {
      if (serve) d.desk.detach();
      break;
    }
    if (serve) {
      serve_queries(fd, reader, d);
      break;
    }
  }
}

// Serves the control socket until g_stop; each connection gets a thread of its own, since a
// request may block for its whole timeout, and returns only when all of them have ended.
void serve_control(int listen_fd, const Daemon& d) {
  std::atomic<int> open{0};
  while (!g_stop.load(std::memory_order_relaxed)) {
    pollfd p{listen_fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    if (open.load() >= kMaxConnections) {
      app::write_all(fd, refusal(d.rx, fmt::format("busy: {} control connections open", kMaxConnections)).dump() + "\n");
      ::close(fd);
      continue;
    }
    open.fetch_add(1);
    std::thread([fd, &d, &open] {
      try {
        serve_connection(fd, d);
      } catch (const std::exception& e) {  // a bug, not bad input (that is refused): the connection goes
        log(Level::kError, "control connection: {}", e.what());
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
  bool check_only = false;
  cli.add_flag("--check", check_only, "check the cluster file and this node's entry, then exit (0: good, 2: not)");
  cli.add_option("--log-level", level, "debug, info, warn or error")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}));
  std::vector<std::string> dpdk_logs;
  cli.add_option("--dpdk-log", dpdk_logs,
                 "a DPDK log level, as its --log-level takes it (repeatable): COMPONENT:LEVEL, e.g. "
                 "pmd.net.memif:debug to see a memif link's handshake, or LEVEL for every component; "
                 "LEVEL is emerg, alert, crit, err, warning, notice, info or debug")
      ->check(CLI::Validator(
          [](std::string& s) -> std::string {
            static const std::regex spec(
                R"(^([A-Za-z0-9_.*?\[\]-]+:)?(emerg|alert|crit|err|warning|notice|info|debug)$)");
            return std::regex_match(s, spec) ? std::string() : "expected COMPONENT:LEVEL or LEVEL, got '" + s + "'";
          },
          "COMPONENT:LEVEL"));
  if (const auto rc = nerve::app::parse_cli(cli, argc, argv, "nerved")) return *rc;
  app::g_log_level = app::level_named(level);

  config::Cluster cluster;
  const config::Node* self = nullptr;
  if (const auto rc = app::load_node(config_path, node_id, "nerved", cluster, self)) return *rc;
  app::g_program = fmt::format("nerved[{}]", self->name);
  if (check_only) {
    fmt::print("{}: node {} ({}) of cluster {}: {} nodes, {} groups, {} services\n", config_path, self->id, self->name,
               cluster.name, cluster.nodes.size(), cluster.groups.size(), cluster.services.size());
    return 0;
  }

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  // Files the node makes go in directories that must exist: nerved creates none (and so leaves
  // none behind).
  auto dir_of = [](const std::string& path) {
    const auto d = std::filesystem::path(path).parent_path();
    return d.empty() ? std::filesystem::path(".") : d;
  };
  const std::size_t self_index = static_cast<std::size_t>(self - cluster.nodes.data());
  std::vector<std::pair<std::string, std::string>> paths = {
      {fmt::format("node[{}].control_socket", self_index), self->control_socket}};
  if (!self->stats_region.empty())
    paths.emplace_back(fmt::format("node[{}].stats_region", self_index), self->stats_region);
  for (std::size_t j = 0; j < self->ports.size(); ++j)
    if (self->ports[j].kind == config::PortKind::kMemif)
      paths.emplace_back(fmt::format("node[{}].port[{}].socket", self_index, j), self->ports[j].socket);
  for (const auto& [key, path] : paths) {
    std::error_code ec;
    if (!std::filesystem::is_directory(dir_of(path), ec)) {
      fmt::print(stderr, "nerved: config error: {}: directory {} does not exist (nerved creates no directories)\n",
                 key, dir_of(path).string());
      return 2;
    }
  }

  std::string err;
  const int listen_fd = app::control_listen(self->control_socket, err);
  if (listen_fd < 0) {
    log(Level::kError, "{}", err);
    return 1;
  }
  int rc = 0;
  try {
    // The stats region before the EAL: the node keeps its counters in it, it outlives the node, and
    // a node already running is refused before anything else is touched.
    std::unique_ptr<telemetry::Region> region;
    if (!self->stats_region.empty()) {
      telemetry::Region::Identity ident{self->id, self->name, cluster.name, {}, {}};
      for (unsigned l = 0; l < wire::kPriorities; ++l) ident.lane_budget_ns[l] = std::uint64_t{self->lane_budget_us[l]} * 1000u;
      for (std::size_t j = 0; j < self->ports.size(); ++j)
        ident.ports.push_back(fmt::format("{}:{}", j, config::to_string(self->ports[j].kind)));
      region = std::make_unique<telemetry::Region>(self->stats_region, ident);
    }
    auto eal_opts = drivers::eal_options_for(cluster, *self);
    eal_opts.log_levels = dpdk_logs;
    drivers::Eal eal(eal_opts);
    log(Level::kInfo, "EAL up: profile {}, lcore {} (socket {}), prefix {}", config::to_string(self->profile),
        eal.main_lcore(), eal.socket(), eal_opts.file_prefix);
    // The stats region was first touched before the EAL pinned this thread: its datapath pages
    // go to the datapath's NUMA node.
    if (region && !eal.place_near_datapath(region->datapath_pages().data(), region->datapath_pages().size()))
      log(Level::kWarn, "stats region: cannot move its pages to NUMA node {}", eal.socket());
    // Packet capture by DPDK's own tools, attached as secondary processes (hugepages only).
    if (!eal.enable_capture())
      log(Level::kWarn, "packet capture unavailable: rte_pdump_init failed");
    else if (self->profile == config::Profile::kProduction)
      log(Level::kInfo, "capture with: dpdk-dumpcap --file-prefix={} -i PORT", eal_opts.file_prefix);
    {
      NodeOptions node_opts;
      node_opts.region = region.get();
      Node node(cluster, self->id, eal, node_opts);
      if (region) region->set_running();
      app::register_dpdk_telemetry(node);  // /nerve/... beside /ethdev/... (dpdk-telemetry.py)
      struct Unregister {
        ~Unregister() { app::unregister_dpdk_telemetry(); }
      } unregister;  // before the node goes
      for (const auto& p : node.ports())
        log(Level::kInfo, "port {} ({}) mac {} socket {} lanes {} link {}", p.name, config::to_string(p.kind),
            config::format_mac(p.mac), p.socket, config::to_string(p.lane_mode),
            p.link_up ? "up" : "down (waiting for peer)");
      for (const auto& p : node.peers())
        log(Level::kInfo, "peer {} ({}) at {} via port {}", p.id, p.name, config::format_ipv4(p.ip), p.port);

      Received rx;
      // Up to 4096 entries (not on the stack), and no more than a quarter of the pool: the
      // ports must still receive the acknowledgements that let the responses go.
      auto pending_store = std::make_unique<PendingResponses>(self->mbufs / 4);
      PendingResponses& pending = *pending_store;
      // Fabric queries ("query ..." commands) for this node's telemetry sidecar.
      auto desk_store = std::make_unique<app::QueryDesk>();
      app::QueryDesk& desk = *desk_store;
      // Sends a response now, or keeps it until its lane has room (answers stay in order).
      auto reply = [&](RxMessage& req, TxFrame f) {
        const SendStatus s = pending.empty() ? node.respond(req, f) : SendStatus::kBackpressure;
        if (s == SendStatus::kOk) {
          rx.replies_sent.add();
        } else if (s == SendStatus::kBackpressure && !pending.full()) {
          rx.replies_deferred.add();  // the lane is full: kept, and sent when it has room
          pending.push(node, std::move(req), std::move(f));
        } else {
          rx.replies_failed.add();
        }
      };
      node.on_message([&](RxMessage& m) {
        const auto t = static_cast<std::size_t>(m.type());
        if (digest) rx.digest[t][m.priority()].add(app::fnv1a64(m.payload()));
        if (m.type() != MsgType::kCommand && m.type() != MsgType::kResourceRequest) return;
        pending.retry(node, rx.replies_sent, rx.replies_failed);  // answers stay in order
        const bool query = m.type() == MsgType::kCommand && verb_of(text_of(m)) == "query";
        std::string_view refused;
        if (query) {
          const auto h = desk.hand_over(node, m);
          if (h == app::QueryDesk::Handed::kOk) return;  // answered when the sidecar has
          refused = h == app::QueryDesk::Handed::kBusy
                        ? "error busy: too many queries outstanding on this node"
                        : "error no telemetry sidecar serves queries on this node";
        }
        TxFrame f = node.alloc(node.max_payload());
        if (!f) {
          rx.replies_failed.add();  // pool exhausted (alloc_failed too); the requester times out
          return;
        }
        if (query) {
          std::memcpy(f.payload().data(), refused.data(), refused.size());
          f.truncate(refused.size());
        } else {
          f.truncate(answer(node, m, f.payload()));
        }
        reply(m, std::move(f));
      });

      const unsigned lcore = eal.main_lcore();
      std::atomic<bool> control_done{false};
      std::thread control([&] {
        eal.pin_control_thread();  // off the datapath's core where the host has another
        serve_control(listen_fd, Daemon{node, rx, desk, region.get(), digest, lcore});
        control_done.store(true);
      });
      log(Level::kInfo, "node {} running; control socket {}", self->id, self->control_socket);

      // The datapath, on this (pinned) thread: the node's loop, plus the responses it owes.
      while (!g_stop.load(std::memory_order_relaxed)) {
        unsigned work = node.poll();
        if (!pending.empty()) work += pending.retry(node, rx.replies_sent, rx.replies_failed);
        work += desk.collect(node, reply);
        node.idle_step(work);
      }
      node.flush();

      log(Level::kInfo, "stopping");
      // Requests in flight on the control socket end now with "shutdown" (a paced send may have
      // hours to go); the datapath stays live until every control thread has answered.
      while (!control_done.load()) {
        node.cancel_requests();
        node.poll();
        pending.retry(node, rx.replies_sent, rx.replies_failed);
        desk.collect(node, reply);
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
