#include "nerve/config.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <map>
#include <set>
#include <toml++/toml.h>

namespace nerve::config {
namespace {

// Reads one table strictly: every key read is ticked off; leftovers are unknown keys.
class Reader {
 public:
  Reader(const toml::table& t, std::string where) : t_(t), where_(std::move(where)) {}

  std::string key(std::string_view k) const {
    return where_.empty() ? std::string(k) : fmt::format("{}.{}", where_, k);
  }

  template <typename T>
  T integer(std::string_view k, T def, std::int64_t lo, std::int64_t hi, bool required = false) {
    const toml::node* n = get(k, required);
    if (!n) return def;
    const auto* v = n->as_integer();
    if (!v) throw type_error(k, "an integer", *n);
    const std::int64_t x = v->get();
    if (x < lo || x > hi) throw ConfigError(fmt::format("{}: {} is out of range [{}, {}]", key(k), x, lo, hi));
    return static_cast<T>(x);
  }

  double number(std::string_view k, double def, double lo, double hi) {
    const toml::node* n = get(k, false);
    if (!n) return def;
    double x = 0;
    if (const auto* f = n->as_floating_point()) x = f->get();
    else if (const auto* i = n->as_integer()) x = static_cast<double>(i->get());
    else throw type_error(k, "a number", *n);
    if (x < lo || x > hi) throw ConfigError(fmt::format("{}: {} is out of range [{}, {}]", key(k), x, lo, hi));
    return x;
  }

  // An array of exactly N integers.
  template <std::size_t N>
  std::array<std::uint32_t, N> fixed_array(std::string_view k, std::array<std::uint32_t, N> def, std::int64_t lo,
                                           std::int64_t hi) {
    if (!t_.get(k)) {
      seen_.insert(std::string(k));
      return def;
    }
    const auto v = int_array<std::uint32_t>(k, lo, hi);
    if (v.size() != N) throw ConfigError(fmt::format("{}: expected {} values (one per lane), got {}", key(k), N, v.size()));
    std::array<std::uint32_t, N> out{};
    std::copy(v.begin(), v.end(), out.begin());
    return out;
  }

  std::string string(std::string_view k, std::string def, bool required = false) {
    const toml::node* n = get(k, required);
    if (!n) return def;
    const auto* v = n->as_string();
    if (!v) throw type_error(k, "a string", *n);
    return v->get();
  }

  template <typename T>
  std::vector<T> int_array(std::string_view k, std::int64_t lo, std::int64_t hi, bool required = false) {
    const toml::node* n = get(k, required);
    std::vector<T> out;
    if (!n) return out;
    const auto* a = n->as_array();
    if (!a) throw type_error(k, "an array of integers", *n);
    for (std::size_t i = 0; i < a->size(); ++i) {
      const auto* v = (*a)[i].as_integer();
      if (!v) throw ConfigError(fmt::format("{}[{}]: expected an integer", key(k), i));
      if (v->get() < lo || v->get() > hi)
        throw ConfigError(fmt::format("{}[{}]: {} is out of range [{}, {}]", key(k), i, v->get(), lo, hi));
      out.push_back(static_cast<T>(v->get()));
    }
    return out;
  }

  std::vector<std::string> string_array(std::string_view k) {
    const toml::node* n = get(k, false);
    std::vector<std::string> out;
    if (!n) return out;
    const auto* a = n->as_array();
    if (!a) throw type_error(k, "an array of strings", *n);
    for (std::size_t i = 0; i < a->size(); ++i) {
      const auto* v = (*a)[i].as_string();
      if (!v) throw ConfigError(fmt::format("{}[{}]: expected a string", key(k), i));
      out.push_back(v->get());
    }
    return out;
  }

  const toml::array* table_array(std::string_view k) {
    const toml::node* n = get(k, false);
    if (!n) return nullptr;
    const auto* a = n->as_array();
    if (!a || !a->is_array_of_tables()) throw type_error(k, "an array of tables ([[...]])", *n);
    return a;
  }

  const toml::table* table(std::string_view k) {
    const toml::node* n = get(k, false);
    if (!n) return nullptr;
    const auto* t = n->as_table();
    if (!t) throw type_error(k, "a table", *n);
    return t;
  }

  // The node at `k` as it is (the caller checks its type), or nullptr.
  const toml::node* raw(std::string_view k) { return get(k, false); }

  // After reading: anything not read is a typo or a key from another version.
  void finish() const {
    for (const auto& [k, v] : t_) {
      if (!seen_.count(std::string(k.str())))
        throw ConfigError(fmt::format("{}: unknown key", key(k.str())));
    }
  }

 private:
  const toml::node* get(std::string_view k, bool required) {
    seen_.insert(std::string(k));
    const toml::node* n = t_.get(k);
    if (!n && required) throw ConfigError(fmt::format("{}: missing key", key(k)));
    return n;
  }
  ConfigError type_error(std::string_view k, std::string_view want, const toml::node& got) const {
    return ConfigError(fmt::format("{}: expected {}, got {}", key(k), want, toml_type(got)));
  }
  static std::string_view toml_type(const toml::node& n) {
    switch (n.type()) {
      case toml::node_type::string: return "a string";
      case toml::node_type::integer: return "an integer";
      case toml::node_type::floating_point: return "a float";
      case toml::node_type::boolean: return "a boolean";
      case toml::node_type::array: return "an array";
      case toml::node_type::table: return "a table";
      default: return "a date or time";
    }
  }

  const toml::table& t_;
  std::string where_;
  std::set<std::string> seen_;
};

PortKind parse_kind(const std::string& s, const std::string& key) {
  static constexpr PortKind kAll[] = {PortKind::kRing, PortKind::kMemif, PortKind::kAfPacket, PortKind::kAfXdp,
                                      PortKind::kTap,  PortKind::kNull,  PortKind::kPci};
  for (auto k : kAll)
    if (s == to_string(k)) return k;
  throw ConfigError(fmt::format("{}: unknown port kind '{}' (ring, memif, af_packet, af_xdp, tap, null, pci)", key, s));
}

}  // namespace

FaultSpec parse_fault(std::string_view s, const std::string& key) {
  FaultSpec f;
  bool delay_given = false;
  std::size_t at = 0;
  while (at < s.size()) {
    std::size_t end = s.find(',', at);
    if (end == std::string_view::npos) end = s.size();
    const std::string_view item = s.substr(at, end - at);
    at = end + 1;
    if (item.empty()) continue;
    const std::size_t eq = item.find('=');
    if (eq == std::string_view::npos)
      throw ConfigError(fmt::format("{}: '{}' is not name=value", key, item));
    const std::string name(item.substr(0, eq));
    const std::string value(item.substr(eq + 1));
    const auto bad = [&](std::string_view why) {
      return ConfigError(fmt::format("{}: {}='{}': {}", key, name, value, why));
    };
    const auto probability = [&] {
      char* e = nullptr;
      const double v = std::strtod(value.c_str(), &e);
      if (value.empty() || *e != '\0' || !(v >= 0.0 && v <= 1.0)) throw bad("a probability in [0, 1]");
      return v;
    };
    const auto integer = [&](std::uint64_t max) {
      char* e = nullptr;
      const unsigned long long v = std::strtoull(value.c_str(), &e, 10);
      if (value.empty() || value[0] == '-' || *e != '\0' || v > max) throw bad(fmt::format("an integer in [0, {}]", max));
      return static_cast<std::uint64_t>(v);
    };
    if (name == "drop") f.drop = probability();
    else if (name == "dup") f.dup = probability();
    else if (name == "reorder") f.reorder = probability();
    else if (name == "corrupt") f.corrupt = probability();
    else if (name == "delay") f.delay = probability(), delay_given = true;
    else if (name == "delay_us") f.delay_us = static_cast<std::uint32_t>(integer(1'000'000));
    else if (name == "seed") f.seed = integer(~std::uint64_t{0});
    else if (name == "lanes") {
      // "0-4", "0,1" is not possible inside the comma list: lanes take a range or one lane.
      const std::size_t dash = value.find('-');
      const std::string lo = value.substr(0, dash), hi = dash == std::string::npos ? lo : value.substr(dash + 1);
      if (lo.size() != 1 || hi.size() != 1 || lo[0] < '0' || lo[0] > '4' || hi[0] < lo[0] || hi[0] > '4')
        throw bad("a lane (0-4) or a range of lanes (e.g. 0-2)");
      f.lanes = 0;
      for (char c = lo[0]; c <= hi[0]; ++c) f.lanes |= static_cast<std::uint8_t>(1u << (c - '0'));
    } else {
      throw ConfigError(fmt::format("{}: unknown fault '{}' (drop, dup, reorder, delay, delay_us, corrupt, lanes, seed)",
                                    key, name));
    }
  }
  if (f.delay_us > 0 && !delay_given) f.delay = 1.0;
  if (f.delay > 0 && f.delay_us == 0) throw ConfigError(fmt::format("{}: delay needs delay_us", key));
  return f;
}

std::string format_fault(const FaultSpec& f) {
  std::string s;
  const auto add = [&](std::string_view name, double v) {
    if (v > 0) s += fmt::format("{}{}={}", s.empty() ? "" : ",", name, v);
  };
  add("drop", f.drop);
  add("dup", f.dup);
  add("reorder", f.reorder);
  add("corrupt", f.corrupt);
  if (f.delay > 0 && f.delay_us > 0) s += fmt::format("{}delay={},delay_us={}", s.empty() ? "" : ",", f.delay, f.delay_us);
  if (f.lanes != 0x1f) {
    int lo = 0, hi = 4;
    while (!((f.lanes >> lo) & 1)) ++lo;
    while (!((f.lanes >> hi) & 1)) --hi;
    s += fmt::format(",lanes={}-{}", lo, hi);
  }
  if (!s.empty()) s += fmt::format(",seed={}", f.seed);
  return s.empty() ? "none" : s;
}

namespace {

Port read_port(const toml::table& t, const std::string& where) {
  Reader r(t, where);
  Port p;
  p.kind = parse_kind(r.string("kind", "", true), r.key("kind"));
  p.peers = r.int_array<std::uint16_t>("peers", 1, 65534);
  p.rx_desc = r.integer<std::uint16_t>("rx_desc", p.rx_desc, 64, 4096);
  p.tx_desc = r.integer<std::uint16_t>("tx_desc", p.tx_desc, 64, 4096);
  const std::string lanes = r.string("lanes", "auto");
  if (lanes == "auto") p.lanes = LaneMode::kAuto;
  else if (lanes == "software") p.lanes = LaneMode::kSoftware;
  else throw ConfigError(fmt::format("{}: must be \"auto\" or \"software\", got '{}'", r.key("lanes"), lanes));
  switch (p.kind) {
    case PortKind::kRing: p.pair = r.string("pair", "", true); break;
    case PortKind::kMemif:
      p.socket = r.string("socket", "", true);
      p.role = r.string("role", "", true);
      if (p.role != "server" && p.role != "client")
        throw ConfigError(fmt::format("{}: must be \"server\" or \"client\", got '{}'", r.key("role"), p.role));
      break;
    case PortKind::kAfPacket:
    case PortKind::kAfXdp:
    case PortKind::kTap: p.iface = r.string("iface", "", true); break;
    case PortKind::kPci: p.address = r.string("address", "", true); break;
    case PortKind::kNull: break;
  }
  if (t.get("fault")) p.fault = parse_fault(r.string("fault", ""), r.key("fault"));
  if (p.kind == PortKind::kRing && (p.pair.empty() || p.pair.size() > 12))
    throw ConfigError(fmt::format("{}: ring pair names are 1 to 12 characters", r.key("pair")));
  r.finish();
  return p;
}

Node read_node(const toml::table& t, const std::string& where) {
  Reader r(t, where);
  Node n;
  n.id = r.integer<std::uint16_t>("id", 0, 1, 65534, true);
  n.name = r.string("name", fmt::format("node{}", n.id));
  const std::string mac = r.string("mac", "", true);
  if (!parse_mac(mac, n.mac)) throw ConfigError(fmt::format("{}: '{}' is not a MAC address", r.key("mac"), mac));
  if ((n.mac[0] & 1) != 0 || n.mac == wire::Mac{})
    throw ConfigError(fmt::format("{}: {} is not a unicast address", r.key("mac"), mac));
  const std::string ip = r.string("ip", "", true);
  if (!parse_ipv4(ip, n.ip)) throw ConfigError(fmt::format("{}: '{}' is not an IPv4 address", r.key("ip"), ip));
  if (n.ip == 0 || n.ip == 0xffffffff || (n.ip >> 28) == 0xe)
    throw ConfigError(fmt::format("{}: {} is not a unicast address", r.key("ip"), ip));
  n.control_socket = r.string("control_socket", "", true);
  n.stats_region = r.string("stats_region", default_stats_region(n.control_socket));
  if (n.stats_region == "off") n.stats_region.clear();
  else if (n.stats_region.empty() || n.stats_region.back() == '/')
    throw ConfigError(fmt::format("{}: a file path or \"off\", got '{}'", r.key("stats_region"), n.stats_region));
  n.metrics_listen = r.string("metrics_listen", "");
  if (!n.metrics_listen.empty()) {
    const auto colon = n.metrics_listen.rfind(':');
    std::uint32_t addr = 0;
    const std::string port = colon == std::string::npos ? "" : n.metrics_listen.substr(colon + 1);
    char* end = nullptr;
    const long pn = port.empty() ? 0 : std::strtol(port.c_str(), &end, 10);
    if (colon == std::string::npos || !parse_ipv4(n.metrics_listen.substr(0, colon), addr) || *end != '\0' || pn < 1 ||
        pn > 65535)
      throw ConfigError(fmt::format("{}: expected \"IPv4:port\" (e.g. \"127.0.0.1:9464\"), got '{}'",
                                    r.key("metrics_listen"), n.metrics_listen));
  }
  const std::string profile = r.string("profile", "dev");
  if (profile == "dev") n.profile = Profile::kDev;
  else if (profile == "production") n.profile = Profile::kProduction;
  else throw ConfigError(fmt::format("{}: must be \"dev\" or \"production\", got '{}'", r.key("profile"), profile));
  n.huge_dir = r.string("huge_dir", "");
  if (!n.huge_dir.empty() && n.profile != Profile::kProduction)
    throw ConfigError(fmt::format("{}: only with profile = \"production\" (dev nodes use no hugepages)", r.key("huge_dir")));
  // Production nodes busy-poll unless told otherwise: backing off costs a P0 frame that arrives
  // after an idle gap the sleep it finds the node in plus a wake-up (docs/benchmarks.md).
  const std::string idle = r.string("idle", n.profile == Profile::kProduction ? "busy" : "backoff");
  if (idle == "busy") n.idle = Idle::kBusy;
  else if (idle == "backoff") n.idle = Idle::kBackoff;
  else throw ConfigError(fmt::format("{}: must be \"busy\" or \"backoff\", got '{}'", r.key("idle"), idle));
  n.idle_sleep_max_us = r.integer<std::uint32_t>("idle_sleep_max_us", n.idle_sleep_max_us, 1, 100000);
  n.cores = r.int_array<unsigned>("cores", 0, 1023);
  n.memory_mb = r.integer<std::uint32_t>("memory_mb", n.memory_mb, 64, 65536);
  n.mbufs = r.integer<std::uint32_t>("mbufs", n.mbufs, 1023, 1048575);
  n.lane_budget_us = r.fixed_array<wire::kPriorities>("lane_budget_us", n.lane_budget_us, 1, 600'000'000);
  n.lane_depth = r.fixed_array<wire::kPriorities>("lane_depth", n.lane_depth, 32, 65536);
  n.lane_min_share = r.number("lane_min_share", n.lane_min_share, 0.0, 0.2);
  const auto busy = r.int_array<unsigned>("busy_lanes", 0, wire::kPriorities - 1);
  if (t.get("busy_lanes")) n.busy_lanes = busy;  // an explicit [] means: always back off
  n.busy_window_ms = r.integer<std::uint32_t>("busy_window_ms", n.busy_window_ms, 0, 3'600'000);
  if (const auto* ports = r.table_array("port")) {
    for (std::size_t i = 0; i < ports->size(); ++i)
      n.ports.push_back(read_port(*(*ports)[i].as_table(), fmt::format("{}.port[{}]", where, i)));
  }
  if (const auto* routes = r.table_array("route")) {
    for (std::size_t i = 0; i < routes->size(); ++i) {
      Reader rr(*(*routes)[i].as_table(), fmt::format("{}.route[{}]", where, i));
      StaticRoute sr;
      sr.to = rr.integer<std::uint16_t>("to", 0, 1, 65534, true);
      sr.via = rr.integer<std::uint16_t>("via", 0, 1, 65534, true);
      rr.finish();
      n.routes.push_back(sr);
    }
  }
  if (n.ports.empty()) throw ConfigError(fmt::format("{}.port: a node needs at least one [[node.port]]", where));
  if (n.ports.size() > 64) throw ConfigError(fmt::format("{}.port: at most 64 ports per node, got {}", where, n.ports.size()));
  r.finish();
  return n;
}

RouteMetric parse_metric(const toml::node& n, const std::string& key) {
  const auto* v = n.as_string();
  if (v && v->get() == "delay") return RouteMetric::kDelay;
  if (v && v->get() == "load") return RouteMetric::kLoad;
  throw ConfigError(fmt::format("{}: must be \"delay\" or \"load\"", key));
}

Group read_group(const toml::table& t, const std::string& where) {
  Reader r(t, where);
  Group g;
  g.name = r.string("name", "", true);
  if (g.name.empty() || g.name.size() > 64)
    throw ConfigError(fmt::format("{}: a group name is 1 to 64 characters", r.key("name")));
  g.id = r.integer<std::uint16_t>("id", 0, 1, 65534, true);
  g.members = r.int_array<std::uint16_t>("members", 1, 65534);
  r.finish();
  return g;
}

Service read_service(const toml::table& t, const std::string& where) {
  Reader r(t, where);
  Service s;
  s.name = r.string("name", "", true);
  if (s.name.empty() || s.name.size() > 64)
    throw ConfigError(fmt::format("{}: a service name is 1 to 64 characters", r.key("name")));
  s.id = r.integer<std::uint16_t>("id", 0, 1, 65534, true);
  s.instances = r.int_array<std::uint16_t>("instances", 1, 65534, true);
  if (s.instances.empty()) throw ConfigError(fmt::format("{}: a service needs at least one instance", r.key("instances")));
  if (s.instances.size() > kMaxInstances)
    throw ConfigError(fmt::format("{}: at most {} instances, got {}", r.key("instances"), kMaxInstances, s.instances.size()));
  const std::string policy = r.string("policy", "round_robin");
  if (policy == "round_robin") s.policy = Balance::kRoundRobin;
  else if (policy == "least_outstanding") s.policy = Balance::kLeastOutstanding;
  else if (policy == "hash") s.policy = Balance::kHash;
  else
    throw ConfigError(fmt::format("{}: must be \"round_robin\", \"least_outstanding\" or \"hash\", got '{}'",
                                  r.key("policy"), policy));
  s.timeout_ms = r.integer<std::uint32_t>("timeout_ms", s.timeout_ms, 1, 3'600'000);
  r.finish();
  return s;
}

// Follows the static routes toward `to` from every node: a chain that comes back to a node it
// passed is a loop (frames would circle until their TTL runs out).
void check_static_loops(const Cluster& c) {
  std::map<std::pair<std::uint16_t, std::uint16_t>, std::uint16_t> via;  // (node, to) -> next hop
  for (const Node& n : c.nodes)
    for (const StaticRoute& r : n.routes) via[{n.id, r.to}] = r.via;
  for (const auto& [key, first] : via) {
    const auto [start, to] = key;
    std::vector<std::uint16_t> path{start};
    std::uint16_t at = first;
    while (at != to) {
      if (std::find(path.begin(), path.end(), at) != path.end()) {
        std::string chain;
        for (const auto id : path) chain += fmt::format("{} -> ", id);
        throw ConfigError(fmt::format("route: static routes to node {} loop: {}{}", to, chain, at));
      }
      path.push_back(at);
      const auto it = via.find({at, to});
      if (it == via.end()) break;  // computed routes take it from here
      at = it->second;
    }
  }
}

Telemetry read_telemetry(const toml::table& t) {
  Reader r(t, "telemetry");
  Telemetry tm;
  for (std::size_t k = 0; k < kTiers; ++k) {
    const std::string_view tier = kTierNames[k];
    if (!t.get(tier)) continue;
    tm.tiers[k] = r.string_array(tier);
    for (std::size_t i = 0; i < tm.tiers[k].size(); ++i) {
      const std::string& g = tm.tiers[k][i];
      if (std::find(kMetricGroups.begin(), kMetricGroups.end(), g) == kMetricGroups.end())
        throw ConfigError(fmt::format("telemetry.{}[{}]: unknown metric group '{}' ({})", tier, i, g,
                                      fmt::join(kMetricGroups, ", ")));
    }
  }
  // A group moved to another tier leaves its default one.
  for (std::size_t k = 0; k < kTiers; ++k) {
    if (!t.get(kTierNames[k])) continue;
    for (const auto& g : tm.tiers[k]) {
      for (std::size_t o = 0; o < kTiers; ++o)
        if (o != k && !t.get(kTierNames[o])) std::erase(tm.tiers[o], g);
    }
  }
  std::map<std::string, std::string_view> placed;  // group -> tier
  for (std::size_t k = 0; k < kTiers; ++k)
    for (const auto& g : tm.tiers[k])
      if (const auto [it, fresh] = placed.emplace(g, kTierNames[k]); !fresh)
        throw ConfigError(fmt::format("telemetry.{}: metric group '{}' is also in telemetry.{} (one tier per group)",
                                      kTierNames[k], g, it->second));
  if (t.get("storage_paths")) tm.storage_paths = r.string_array("storage_paths");
  tm.push_to = r.int_array<std::uint16_t>("push_to", 1, 65534);
  tm.history_dir = r.string("history_dir", "");
  if (!tm.history_dir.empty() && tm.history_dir[0] != '/')
    throw ConfigError(fmt::format("telemetry.history_dir: an absolute path, got '{}'", tm.history_dir));
  tm.history_retention_s = r.integer<std::uint32_t>("history_retention_s", tm.history_retention_s, 60, 31'536'000);
  tm.history_max_mb = r.integer<std::uint32_t>("history_max_mb", tm.history_max_mb, 1, 1'048'576);
  if (t.get("push_tiers")) tm.push_tiers = r.string_array("push_tiers");
  for (std::size_t i = 0; i < tm.push_tiers.size(); ++i)
    if (std::find(kTierNames.begin(), kTierNames.end(), tm.push_tiers[i]) == kTierNames.end())
      throw ConfigError(fmt::format("telemetry.push_tiers[{}]: unknown tier '{}' ({})", i, tm.push_tiers[i],
                                    fmt::join(kTierNames, ", ")));
  for (std::size_t i = 0; i < tm.storage_paths.size(); ++i)
    if (tm.storage_paths[i].empty() || tm.storage_paths[i][0] != '/')
      throw ConfigError(fmt::format("telemetry.storage_paths[{}]: an absolute path, got '{}'", i, tm.storage_paths[i]));
  r.finish();
  return tm;
}

Cluster read_cluster(const toml::table& root, const std::filesystem::path& source) {
  Reader r(root, "");
  Cluster c;
  c.source = source;
  const toml::table* cl = r.table("cluster");
  if (!cl) throw ConfigError("cluster: missing key");
  Reader cr(*cl, "cluster");
  c.name = cr.string("name", "", true);
  c.udp_port = cr.integer<std::uint16_t>("udp_port", c.udp_port, 1, 65535);
  c.mtu = cr.integer<std::uint16_t>("mtu", c.mtu, 576, 9000);
  c.reliable_give_up_ms = cr.integer<std::uint32_t>("reliable_give_up_ms", c.reliable_give_up_ms, 1, 3'600'000);
  c.reliable_peers = cr.integer<std::uint32_t>("reliable_peers", c.reliable_peers, 0, 65534);
  c.max_message = cr.integer<std::uint32_t>("max_message", c.max_message, 0, 16u << 20);
  c.message_buffers = cr.integer<std::uint32_t>("message_buffers", c.message_buffers, 1, 1024);
  c.timestamp_window_ms = cr.integer<std::uint32_t>("timestamp_window_ms", c.timestamp_window_ms, 1, 86'400'000);
  c.heartbeat_hz = cr.integer<std::uint32_t>("heartbeat_hz", c.heartbeat_hz, 0, 100'000);
  c.heartbeat_miss = cr.integer<std::uint32_t>("heartbeat_miss", c.heartbeat_miss, 1, 1000);
  c.lsa_refresh_ms = cr.integer<std::uint32_t>("lsa_refresh_ms", c.lsa_refresh_ms, 100, 3'600'000);
  c.ttl = cr.integer<std::uint8_t>("ttl", c.ttl, 1, 255);
  if (const toml::node* m = cr.raw("route_metric")) {
    const auto* a = m->as_array();
    if (!a || a->size() != wire::kPriorities)
      throw ConfigError(fmt::format("cluster.route_metric: expected {} values (one per lane), \"delay\" or \"load\"",
                                    wire::kPriorities));
    for (std::size_t l = 0; l < wire::kPriorities; ++l)
      c.route_metric[l] = parse_metric((*a)[l], fmt::format("cluster.route_metric[{}]", l));
  }
  cr.finish();
  const toml::array* nodes = r.table_array("node");
  if (!nodes || nodes->empty()) throw ConfigError("node: missing key (at least one [[node]])");
  for (std::size_t i = 0; i < nodes->size(); ++i)
    c.nodes.push_back(read_node(*(*nodes)[i].as_table(), fmt::format("node[{}]", i)));
  if (const auto* groups = r.table_array("group"))
    for (std::size_t i = 0; i < groups->size(); ++i)
      c.groups.push_back(read_group(*(*groups)[i].as_table(), fmt::format("group[{}]", i)));
  if (const auto* services = r.table_array("service"))
    for (std::size_t i = 0; i < services->size(); ++i)
      c.services.push_back(read_service(*(*services)[i].as_table(), fmt::format("service[{}]", i)));
  if (const toml::table* tt = r.table("telemetry")) c.telemetry = read_telemetry(*tt);
  r.finish();
  if (c.nodes.size() > kMaxNodes)
    throw ConfigError(fmt::format("node: at most {} nodes in a cluster, got {}", kMaxNodes, c.nodes.size()));
  if (c.groups.size() > kMaxGroups)
    throw ConfigError(fmt::format("group: at most {} groups, got {}", kMaxGroups, c.groups.size()));

  for (std::size_t i = 0; i < c.telemetry.push_to.size(); ++i)
    if (!c.find(c.telemetry.push_to[i]))
      throw ConfigError(fmt::format("telemetry.push_to[{}]: node {} is not in the cluster", i, c.telemetry.push_to[i]));
  // Cross-field checks, once. Two nodes with one address would take each other's frames.
  std::map<std::uint16_t, std::size_t> ids;
  std::map<std::string, std::size_t> sockets, regions;
  std::map<wire::Mac, std::size_t> macs;
  std::map<std::uint32_t, std::size_t> ips;
  for (std::size_t i = 0; i < c.nodes.size(); ++i) {
    const Node& n = c.nodes[i];
    if (const auto [it, fresh] = ids.emplace(n.id, i); !fresh)
      throw ConfigError(fmt::format("node[{}].id: {} is also node[{}]'s", i, n.id, it->second));
    if (const auto [it, fresh] = sockets.emplace(n.control_socket, i); !fresh)
      throw ConfigError(fmt::format("node[{}].control_socket: '{}' is also node[{}]'s", i, n.control_socket, it->second));
    if (!n.stats_region.empty())
      if (const auto [it, fresh] = regions.emplace(n.stats_region, i); !fresh)
        throw ConfigError(fmt::format("node[{}].stats_region: '{}' is also node[{}]'s (set stats_region for one)", i,
                                      n.stats_region, it->second));
    if (const auto [it, fresh] = macs.emplace(n.mac, i); !fresh)
      throw ConfigError(fmt::format("node[{}].mac: {} is also node[{}]'s", i, format_mac(n.mac), it->second));
    if (const auto [it, fresh] = ips.emplace(n.ip, i); !fresh)
      throw ConfigError(fmt::format("node[{}].ip: {} is also node[{}]'s", i, format_ipv4(n.ip), it->second));
  }
  for (std::size_t i = 0; i < c.nodes.size(); ++i) {
    for (std::size_t j = 0; j < c.nodes[i].ports.size(); ++j) {
      for (std::size_t k = 0; k < c.nodes[i].ports[j].peers.size(); ++k) {
        const auto peer = c.nodes[i].ports[j].peers[k];
        if (!ids.count(peer))
          throw ConfigError(fmt::format("node[{}].port[{}].peers[{}]: node {} is not in the cluster", i, j, k, peer));
        if (peer == c.nodes[i].id)
          throw ConfigError(fmt::format("node[{}].port[{}].peers[{}]: a node is not its own peer", i, j, k));
      }
    }
  }
  // A link is declared at both ends: routes are computed over links both ends know.
  auto lists = [](const Node& n, std::uint16_t peer) {
    for (const Port& p : n.ports)
      if (std::find(p.peers.begin(), p.peers.end(), peer) != p.peers.end()) return true;
    return false;
  };
  for (std::size_t i = 0; i < c.nodes.size(); ++i)
    for (std::size_t j = 0; j < c.nodes[i].ports.size(); ++j)
      for (std::size_t k = 0; k < c.nodes[i].ports[j].peers.size(); ++k) {
        const Node& peer = c.node(c.nodes[i].ports[j].peers[k]);
        if (!lists(peer, c.nodes[i].id))
          throw ConfigError(fmt::format("node[{}].port[{}].peers[{}]: node {} lists no port with node {} as a peer "
                                        "(a link is declared at both ends)",
                                        i, j, k, peer.id, c.nodes[i].id));
      }
  for (std::size_t i = 0; i < c.nodes.size(); ++i)
    for (std::size_t k = 0; k < c.nodes[i].routes.size(); ++k) {
      const StaticRoute& sr = c.nodes[i].routes[k];
      if (!ids.count(sr.to))
        throw ConfigError(fmt::format("node[{}].route[{}].to: node {} is not in the cluster", i, k, sr.to));
      if (sr.to == c.nodes[i].id)
        throw ConfigError(fmt::format("node[{}].route[{}].to: a node needs no route to itself", i, k));
      if (!lists(c.nodes[i], sr.via))
        throw ConfigError(fmt::format("node[{}].route[{}].via: node {} is not a peer of node {}", i, k, sr.via,
                                      c.nodes[i].id));
    }
  check_static_loops(c);
  std::map<std::string, std::size_t> group_names, service_names;
  std::map<std::uint16_t, std::size_t> group_ids, service_ids;
  for (std::size_t i = 0; i < c.groups.size(); ++i) {
    const Group& g = c.groups[i];
    if (const auto [it, fresh] = group_names.emplace(g.name, i); !fresh)
      throw ConfigError(fmt::format("group[{}].name: '{}' is also group[{}]'s", i, g.name, it->second));
    if (const auto [it, fresh] = group_ids.emplace(g.id, i); !fresh)
      throw ConfigError(fmt::format("group[{}].id: {} is also group[{}]'s", i, g.id, it->second));
    for (std::size_t k = 0; k < g.members.size(); ++k)
      if (!ids.count(g.members[k]))
        throw ConfigError(fmt::format("group[{}].members[{}]: node {} is not in the cluster", i, k, g.members[k]));
  }
  for (std::size_t i = 0; i < c.services.size(); ++i) {
    const Service& sv = c.services[i];
    if (const auto [it, fresh] = service_names.emplace(sv.name, i); !fresh)
      throw ConfigError(fmt::format("service[{}].name: '{}' is also service[{}]'s", i, sv.name, it->second));
    if (const auto [it, fresh] = service_ids.emplace(sv.id, i); !fresh)
      throw ConfigError(fmt::format("service[{}].id: {} is also service[{}]'s", i, sv.id, it->second));
    std::set<std::uint16_t> seen;
    for (std::size_t k = 0; k < sv.instances.size(); ++k) {
      if (!ids.count(sv.instances[k]))
        throw ConfigError(fmt::format("service[{}].instances[{}]: node {} is not in the cluster", i, k, sv.instances[k]));
      if (!seen.insert(sv.instances[k]).second)
        throw ConfigError(fmt::format("service[{}].instances[{}]: node {} is listed twice", i, k, sv.instances[k]));
    }
  }
  return c;
}

}  // namespace

const Node* Cluster::find(std::uint16_t id) const noexcept {
  for (const auto& n : nodes)
    if (n.id == id) return &n;
  return nullptr;
}

const Group* Cluster::find_group(std::string_view group_name) const noexcept {
  for (const auto& g : groups)
    if (g.name == group_name) return &g;
  return nullptr;
}
const Group* Cluster::find_group(std::uint16_t id) const noexcept {
  for (const auto& g : groups)
    if (g.id == id) return &g;
  return nullptr;
}
int Cluster::group_index(std::uint16_t id) const noexcept {
  for (std::size_t i = 0; i < groups.size(); ++i)
    if (groups[i].id == id) return static_cast<int>(i);
  return -1;
}
const Service* Cluster::find_service(std::string_view service_name) const noexcept {
  for (const auto& s : services)
    if (s.name == service_name) return &s;
  return nullptr;
}
const Service* Cluster::find_service(std::uint16_t id) const noexcept {
  for (const auto& s : services)
    if (s.id == id) return &s;
  return nullptr;
}

const Node& Cluster::node(std::uint16_t id) const {
  if (const Node* n = find(id)) return *n;
  throw ConfigError(fmt::format("node {} is not in {}", id, source.string()));
}

std::string default_stats_region(const std::string& control_socket) {
  std::string name;
  for (const char c : control_socket) {
    if (c == '/') {
      if (!name.empty() && name.back() != '-') name += '-';
    } else {
      name += c;
    }
  }
  if (name.size() > 200) name = name.substr(name.size() - 200);
  return "/dev/shm/nerve-" + name + ".stats";
}

Cluster load_string(std::string_view text, const std::filesystem::path& source) {
  try {
    return read_cluster(toml::parse(text, source.string()), source);
  } catch (const toml::parse_error& e) {
    throw ConfigError(fmt::format("{}:{}:{}: {}", source.string(), e.source().begin.line, e.source().begin.column,
                                  e.description()));
  }
}

Cluster load_file(const std::filesystem::path& path) {
  try {
    return read_cluster(toml::parse_file(path.string()), path);
  } catch (const toml::parse_error& e) {
    throw ConfigError(fmt::format("{}:{}:{}: {}", path.string(), e.source().begin.line, e.source().begin.column,
                                  e.description()));
  }
}

bool parse_mac(std::string_view s, wire::Mac& out) noexcept {
  if (s.size() != 17) return false;
  for (std::size_t i = 0; i < 6; ++i) {
    const char* b = s.data() + i * 3;
    if (i < 5 && b[2] != ':') return false;
    unsigned v = 0;
    const auto [p, ec] = std::from_chars(b, b + 2, v, 16);
    if (ec != std::errc() || p != b + 2) return false;
    out[i] = static_cast<std::uint8_t>(v);
  }
  return true;
}

bool parse_ipv4(std::string_view s, std::uint32_t& out) noexcept {
  in_addr a{};
  const std::string z(s);
  if (inet_pton(AF_INET, z.c_str(), &a) != 1) return false;
  out = ntohl(a.s_addr);
  return true;
}

std::string format_mac(const wire::Mac& m) {
  return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5]);
}

std::string format_ipv4(std::uint32_t ip) {
  return fmt::format("{}.{}.{}.{}", ip >> 24, (ip >> 16) & 0xff, (ip >> 8) & 0xff, ip & 0xff);
}

std::string_view to_string(PortKind k) noexcept {
  switch (k) {
    case PortKind::kRing: return "ring";
    case PortKind::kMemif: return "memif";
    case PortKind::kAfPacket: return "af_packet";
    case PortKind::kAfXdp: return "af_xdp";
    case PortKind::kTap: return "tap";
    case PortKind::kNull: return "null";
    case PortKind::kPci: return "pci";
  }
  return "unknown";
}
std::string_view to_string(LaneMode m) noexcept {
  switch (m) {
    case LaneMode::kAuto: return "auto";
    case LaneMode::kPaired: return "paired-queues";
    case LaneMode::kFlow: return "rte_flow";
    case LaneMode::kSoftware: return "software";
  }
  return "unknown";
}
std::string_view to_string(RouteMetric m) noexcept { return m == RouteMetric::kDelay ? "delay" : "load"; }
std::string_view to_string(Balance b) noexcept {
  switch (b) {
    case Balance::kRoundRobin: return "round_robin";
    case Balance::kLeastOutstanding: return "least_outstanding";
    case Balance::kHash: return "hash";
  }
  return "unknown";
}
std::string_view to_string(Profile p) noexcept { return p == Profile::kDev ? "dev" : "production"; }
std::string_view to_string(Idle i) noexcept { return i == Idle::kBusy ? "busy" : "backoff"; }

}  // namespace nerve::config
