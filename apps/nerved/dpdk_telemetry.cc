#include "dpdk_telemetry.hpp"

#include <rte_ethdev.h>
#include <rte_telemetry.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "nerve/telemetry.hpp"

namespace nerve::app {

namespace {

// The telemetry thread calls these while nerved runs; the node goes before the EAL does.
std::mutex g_mu;
const Node* g_node = nullptr;

int info(const char*, const char*, rte_tel_data* d) {
  std::lock_guard lk(g_mu);
  if (!g_node) return -EAGAIN;
  const config::Node& c = g_node->config();
  rte_tel_data_start_dict(d);
  rte_tel_data_add_dict_u64(d, "id", c.id);
  rte_tel_data_add_dict_string(d, "name", c.name.c_str());
  rte_tel_data_add_dict_string(d, "cluster", g_node->cluster().name.c_str());
  rte_tel_data_add_dict_string(d, "stats_region", c.stats_region.c_str());
  rte_tel_data_add_dict_u64(d, "ports", g_node->config().ports.size());
  rte_tel_data_add_dict_u64(d, "mbufs_available", g_node->mbufs_available());
  return 0;
}

int counters(const char*, const char*, rte_tel_data* d) {
  std::lock_guard lk(g_mu);
  if (!g_node) return -EAGAIN;
  const stats::Snapshot s = g_node->snapshot();
  rte_tel_data_start_dict(d);
  rte_tel_data_add_dict_u64(d, "rx_frames", s.rx_frames);
  rte_tel_data_add_dict_u64(d, "rx_bytes", s.rx_bytes);
  rte_tel_data_add_dict_u64(d, "tx_frames", s.tx_frames);
  rte_tel_data_add_dict_u64(d, "tx_bytes", s.tx_bytes);
  rte_tel_data_add_dict_u64(d, "delivered", s.delivered_total());
  rte_tel_data_add_dict_u64(d, "sent", s.sent_total());
  rte_tel_data_add_dict_u64(d, "refused", s.refused_total());
  for (std::size_t r = 1; r < wire::kRefusalCount; ++r) {
    const std::string key = "refused_" + std::string(wire::to_string(static_cast<wire::Refusal>(r)));
    rte_tel_data_add_dict_u64(d, key.c_str(), s.refused[r]);
  }
  rte_tel_data_add_dict_u64(d, "tx_backpressure", s.tx_backpressure);
  rte_tel_data_add_dict_u64(d, "tx_no_route", s.tx_no_route);
  rte_tel_data_add_dict_u64(d, "alloc_failed", s.alloc_failed);
  return 0;
}

// /nerve/lane,N: lane N's counters and latency percentiles (ns).
int lane(const char*, const char* params, rte_tel_data* d) {
  char* end = nullptr;
  const long l = params && *params ? std::strtol(params, &end, 10) : 0;
  if ((params && *params && *end != '\0') || l < 0 || l >= wire::kPriorities) return -EINVAL;
  std::lock_guard lk(g_mu);
  if (!g_node) return -EAGAIN;
  const stats::Snapshot s = g_node->snapshot();
  const auto p = static_cast<std::size_t>(l);
  const stats::LaneSummary& ls = s.lanes[p];
  std::uint64_t sent = 0, delivered = 0;
  for (std::size_t t = 0; t < s.sent.size(); ++t) {
    sent += s.sent[t][p];
    delivered += s.delivered[t][p];
  }
  rte_tel_data_start_dict(d);
  rte_tel_data_add_dict_u64(d, "lane", p);
  rte_tel_data_add_dict_u64(d, "budget_ns", ls.budget_ns);
  rte_tel_data_add_dict_u64(d, "sent", sent);
  rte_tel_data_add_dict_u64(d, "delivered", delivered);
  rte_tel_data_add_dict_u64(d, "deadline_miss", ls.deadline_miss);
  rte_tel_data_add_dict_u64(d, "shed", ls.shed);
  rte_tel_data_add_dict_u64(d, "backpressure", ls.backpressure);
  rte_tel_data_add_dict_u64(d, "latency_count", ls.count);
  rte_tel_data_add_dict_u64(d, "latency_p50_ns", ls.p50);
  rte_tel_data_add_dict_u64(d, "latency_p99_ns", ls.p99);
  rte_tel_data_add_dict_u64(d, "latency_p999_ns", ls.p999);
  rte_tel_data_add_dict_u64(d, "latency_max_ns", ls.max);
  rte_tel_data_add_dict_u64(d, "reliable_sent", s.rel[p].sent);
  rte_tel_data_add_dict_u64(d, "reliable_failed", s.rel[p].failed);
  rte_tel_data_add_dict_u64(d, "reliable_retransmits", s.rel[p].retransmits + s.rel[p].fast_retransmits);
  return 0;
}

int links(const char*, const char*, rte_tel_data* d) {
  std::lock_guard lk(g_mu);
  if (!g_node) return -EAGAIN;
  rte_tel_data_start_dict(d);
  for (const auto& l : g_node->links()) {
    const config::Node* peer = g_node->cluster().find(l.peer);
    const std::string name = fmt::format("{}_p{}", peer ? peer->name : std::to_string(l.peer), l.port);
    rte_tel_data_add_dict_u64(d, (name + "_up").c_str(), l.up ? 1 : 0);
    rte_tel_data_add_dict_u64(d, (name + "_rtt_ns").c_str(), l.rtt_ns);
    rte_tel_data_add_dict_u64(d, (name + "_downs").c_str(), l.downs);
  }
  return 0;
}

}  // namespace

void register_dpdk_telemetry(const Node& node) {
  {
    std::lock_guard lk(g_mu);
    g_node = &node;
  }
  static std::once_flag once;  // DPDK keeps commands until the process ends
  std::call_once(once, [] {
    rte_telemetry_register_cmd("/nerve/info", info, "The node: id, name, cluster, stats region. No parameters.");
    rte_telemetry_register_cmd("/nerve/counters", counters,
                               "Frames and bytes in and out, messages sent and delivered, refusals by reason. No parameters.");
    rte_telemetry_register_cmd("/nerve/lane", lane,
                               "A lane's counters and latency percentiles (ns). Parameters: int lane (0-4, default 0).");
    rte_telemetry_register_cmd("/nerve/links", links, "Per neighbour: up, heartbeat round trip, downs. No parameters.");
  });
}

void unregister_dpdk_telemetry() {
  std::lock_guard lk(g_mu);
  g_node = nullptr;
}

}  // namespace nerve::app
