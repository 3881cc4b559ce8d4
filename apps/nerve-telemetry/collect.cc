#include "collect.hpp"

#include <sys/statvfs.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "../common/query.hpp"

namespace nerve::sidecar {

namespace {

// One metric family: its HELP and TYPE lines, then samples.
struct Family {
  std::string& out;
  Family(std::string& o, std::string_view name, std::string_view type, std::string_view help) : out(o) {
    fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  }
};

template <typename V>
void line(std::string& out, std::string_view name, std::string_view labels, V v) {
  fmt::format_to(std::back_inserter(out), "{}{{{}}} {}\n", name, labels, v);
}

double seconds(std::uint64_t ns) { return static_cast<double>(ns) / 1e9; }

std::string lane_label(const std::string& node, std::size_t l) { return fmt::format("{},lane=\"P{}\"", node, l); }

// "key: value kB" lines of /proc/meminfo or /proc/PID/status, in bytes (or the plain count).
std::uint64_t proc_field(const std::string& file, std::string_view key) {
  std::ifstream in(file);
  std::string l;
  while (std::getline(in, l)) {
    if (l.size() > key.size() && l.compare(0, key.size(), key) == 0 && l[key.size()] == ':') {
      std::istringstream is(l.substr(key.size() + 1));
      std::uint64_t v = 0;
      std::string unit;
      is >> v >> unit;
      return unit == "kB" ? v * 1024 : v;
    }
  }
  return 0;
}

}  // namespace

std::string label_value(std::string_view v) {
  std::string out;
  for (const char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

Interval interval_since(const stats::Histogram& h, std::vector<std::uint64_t>& prev) {
  Interval iv;
  if (prev.size() != stats::Histogram::kBuckets) prev.assign(stats::Histogram::kBuckets, 0);
  if (h.count() == 0) return iv;
  const std::size_t lo = stats::Histogram::index_of(h.min());
  const std::size_t hi = stats::Histogram::index_of(std::min(h.max(), stats::Histogram::kMaxValue));
  std::vector<std::pair<std::size_t, std::uint64_t>> diff;
  for (std::size_t i = lo; i <= hi; ++i) {
    const std::uint64_t c = h.bucket_count(i);
    if (c != prev[i]) {
      const std::uint64_t d = c > prev[i] ? c - prev[i] : c;  // fewer than before: a new histogram
      diff.emplace_back(i, d);
      iv.count += d;
      prev[i] = c;
    }
  }
  if (iv.count == 0 || diff.empty()) return iv;
  const std::size_t last = diff[diff.size() - 1].first;
  auto pct = [&](double p) -> std::uint64_t {
    const auto rank = std::max<std::uint64_t>(
        1, static_cast<std::uint64_t>(p / 100.0 * static_cast<double>(iv.count) + 0.999999));
    std::uint64_t seen = 0;
    for (const auto& [i, c] : diff) {
      seen += c;
      if (seen >= rank) return stats::Histogram::upper_of(i);
    }
    return stats::Histogram::upper_of(last);
  };
  iv.p50 = pct(50);
  iv.p90 = pct(90);
  iv.p99 = pct(99);
  iv.p999 = pct(99.9);
  iv.max = stats::Histogram::upper_of(last);
  return iv;
}

std::vector<std::string> series_lines(const std::string& text, const std::string& node_label) {
  std::vector<std::string> lines = app::query::current_lines(text, "");
  for (std::string& l : lines)
    if (const auto p = l.find(node_label); p != std::string::npos) {
      const bool alone = l.compare(p + node_label.size(), 1, "}") == 0;
      l.erase(p, node_label.size() + (alone ? 0 : 1));
      if (alone && p > 0 && l[p - 1] == '{') l.erase(p - 1, 2);  // name{} -> name
    }
  return lines;
}

Group group_of(std::string_view name) {
  for (std::size_t i = 0; i < config::kMetricGroups.size(); ++i)
    if (config::kMetricGroups[i] == name) return static_cast<Group>(i);
  throw std::invalid_argument(fmt::format("unknown metric group '{}'", name));
}

Collector::Collector(const telemetry::Reader& region, const config::Cluster& cluster, const config::Node& node)
    : region_(region), cluster_(cluster), node_(node), node_label_(fmt::format("node=\"{}\"", label_value(node.name))) {
  // The baselines: what the histograms hold at attach, so the first interval is an interval.
  for (std::size_t l = 0; l < wire::kPriorities; ++l) interval_since(region.lcore().latency_ns[l], prev_buckets_[l]);
}

void Collector::render(Group g, const telemetry::Sample& s, std::string& out) {
  out.clear();
  switch (g) {
    case Group::kLanes: lanes(s, out); break;
    case Group::kErrors: errors(s, out); break;
    case Group::kLinks: links(s, out); break;
    case Group::kPorts: ports(s, out); break;
    case Group::kDatapath: datapath(s, out); break;
    case Group::kReliable: reliable(s, out); break;
    case Group::kCpu: cpu(out); break;
    case Group::kMemory: memory(s, out); break;
    case Group::kStorage: storage(out); break;
  }
}

void Collector::lanes(const telemetry::Sample& s, std::string& out) {
  const std::string& n = node_label_;
  struct Counter {
    std::string_view name, help;
    std::uint64_t telemetry::LaneSample::*field;
  };
  static constexpr Counter kCounters[] = {
      {"nerve_lane_sent_total", "Messages sent, by lane.", &telemetry::LaneSample::sent},
      {"nerve_lane_delivered_total", "Messages delivered to this node's receivers, by lane.",
       &telemetry::LaneSample::delivered},
      {"nerve_lane_deadline_misses_total", "Messages delivered later than their lane's budget.",
       &telemetry::LaneSample::deadline_miss},
      {"nerve_lane_shed_total", "P3/P4 frames dropped, oldest first, from a full lane.", &telemetry::LaneSample::shed},
      {"nerve_lane_backpressure_total", "Sends refused on a full P0-P2 lane.", &telemetry::LaneSample::backpressure},
      {"nerve_lane_forwarded_total", "Transit frames sent on, by lane.", &telemetry::LaneSample::forwarded},
      {"nerve_lane_forward_dropped_total", "Transit frames dropped on a full lane.",
       &telemetry::LaneSample::forward_dropped},
  };
  for (const Counter& c : kCounters) {
    Family f(out, c.name, "counter", c.help);
    for (std::size_t l = 0; l < wire::kPriorities; ++l) line(out, c.name, lane_label(n, l), s.lane[l].*c.field);
  }
  // Bandwidth by lane, read live (a running total each; a rate is its difference over time).
  for (const auto& [name, help, live] :
       {std::tuple{"nerve_lane_tx_bytes_total", "Frame bytes handed to the lane for sending (own and forwarded).",
                   &stats::LcoreStats::lane_tx_bytes},
        std::tuple{"nerve_lane_rx_bytes_total", "Bytes of valid frames received on the lane.",
                   &stats::LcoreStats::lane_rx_bytes}}) {
    Family f(out, name, "counter", help);
    for (std::size_t l = 0; l < wire::kPriorities; ++l) line(out, name, lane_label(n, l), (region_.lcore().*live)[l].get());
  }
  {
    Family f(out, "nerve_lane_tx_queued", "gauge", "Frames waiting in the lane's TX queues.");
    for (std::size_t l = 0; l < wire::kPriorities; ++l) line(out, "nerve_lane_tx_queued", lane_label(n, l), s.lane[l].tx_queued);
  }
  {
    Family f(out, "nerve_lane_budget_seconds", "gauge", "The lane's delivery budget.");
    for (std::size_t l = 0; l < wire::kPriorities; ++l)
      line(out, "nerve_lane_budget_seconds", lane_label(n, l), seconds(region_.header().lane_budget_ns[l]));
  }
  // Percentiles of the messages delivered since the previous sample of this group (the live
  // histogram's buckets, diffed), with the running count and sum.
  Family f(out, "nerve_lane_latency_seconds", "summary",
           "One-way delivery latency (sender timestamp to delivery); quantiles over the last sample interval.");
  for (std::size_t l = 0; l < wire::kPriorities; ++l) {
    const Interval iv = interval_since(region_.lcore().latency_ns[l], prev_buckets_[l]);
    interval_[l] = iv;
    const std::string lb = lane_label(n, l);
    for (const auto& [q, v] : {std::pair{"0.5", iv.p50}, {"0.9", iv.p90}, {"0.99", iv.p99}, {"0.999", iv.p999},
                               {"1", iv.max}})
      line(out, "nerve_lane_latency_seconds", fmt::format("{},quantile=\"{}\"", lb, q), seconds(v));
    line(out, "nerve_lane_latency_seconds_sum", lb, seconds(s.lane[l].latency_sum_ns));
    line(out, "nerve_lane_latency_seconds_count", lb, s.lane[l].latency_count);
  }
}

void Collector::errors(const telemetry::Sample& s, std::string& out) {
  const std::string& n = node_label_;
  {
    Family f(out, "nerve_refused_total", "counter", "Received frames refused, by reason.");
    for (std::size_t r = 1; r < wire::kRefusalCount; ++r)
      line(out, "nerve_refused_total",
           fmt::format("{},reason=\"{}\"", n, wire::to_string(static_cast<wire::Refusal>(r))), s.refused[r]);
    line(out, "nerve_refused_total", fmt::format("{},reason=\"multi_segment\"", n), s.rx_multi_segment);
  }
  struct One {
    std::string_view name, help;
    std::uint64_t v;
  };
  const One ones[] = {
      {"nerve_tx_backpressure_total", "Sends refused: the TX buffer was full.", s.tx_backpressure},
      {"nerve_tx_no_route_total", "Sends refused: no route to the destination.", s.tx_no_route},
      {"nerve_alloc_failed_total", "Frame allocations that found the pool empty.", s.alloc_failed},
      {"nerve_rx_deferred_total", "Receive bursts shortened: a lane's receive queue was full.", s.rx_deferred},
      {"nerve_rx_lane_full_total", "Messages dropped: their lane's receive queue was full (read with another lane).",
       region_.lcore().rx_lane_full.get()},
  };
  for (const One& o : ones) {
    Family f(out, o.name, "counter", o.help);
    line(out, o.name, n, o.v);
  }
  // Warnings: conditions an operator should look at before they become errors.
  std::uint64_t links_down = 0;
  for (std::size_t k = 0; k < s.links; ++k) links_down += s.link[k].up == 0;
  Family f(out, "nerve_warning", "gauge", "1 while the condition holds: links down, the pool under 10 % free.");
  line(out, "nerve_warning", fmt::format("{},condition=\"link_down\"", n), links_down != 0 ? 1 : 0);
  line(out, "nerve_warning", fmt::format("{},condition=\"mbufs_low\"", n),
       s.mbufs_total != 0 && s.mbufs_available * 10 < s.mbufs_total ? 1 : 0);
}

void Collector::links(const telemetry::Sample& s, std::string& out) {
  const std::string& n = node_label_;
  auto peer = [&](std::size_t k) {
    const config::Node* p = cluster_.find(static_cast<std::uint16_t>(s.link[k].peer));
    return fmt::format("{},peer=\"{}\",port=\"{}\"", n, p ? label_value(p->name) : std::to_string(s.link[k].peer),
                       s.link[k].port);
  };
  {
    Family f(out, "nerve_link_up", "gauge", "1 while the link to the neighbour is up (heartbeats arrive).");
    for (std::size_t k = 0; k < s.links; ++k) line(out, "nerve_link_up", peer(k), s.link[k].up);
  }
  {
    Family f(out, "nerve_link_rtt_seconds", "gauge", "Heartbeat round trip to the neighbour.");
    for (std::size_t k = 0; k < s.links; ++k) line(out, "nerve_link_rtt_seconds", peer(k), seconds(s.link[k].rtt_ns));
  }
  {
    Family f(out, "nerve_link_downs_total", "counter", "Times the link went down.");
    for (std::size_t k = 0; k < s.links; ++k) line(out, "nerve_link_downs_total", peer(k), s.link[k].downs);
  }
  Family f(out, "nerve_link_heartbeats_received_total", "counter", "Heartbeats received from the neighbour.");
  for (std::size_t k = 0; k < s.links; ++k) line(out, "nerve_link_heartbeats_received_total", peer(k), s.link[k].heartbeats_rx);
}

void Collector::ports(const telemetry::Sample& s, std::string& out) {
  const std::string& n = node_label_;
  struct Counter {
    std::string_view name, type, help;
    std::uint64_t telemetry::PortSample::*field;
  };
  static constexpr Counter kCounters[] = {
      {"nerve_port_rx_packets_total", "counter", "Packets the port received.", &telemetry::PortSample::ipackets},
      {"nerve_port_tx_packets_total", "counter", "Packets the port sent.", &telemetry::PortSample::opackets},
      {"nerve_port_rx_bytes_total", "counter", "Bytes the port received.", &telemetry::PortSample::ibytes},
      {"nerve_port_tx_bytes_total", "counter", "Bytes the port sent.", &telemetry::PortSample::obytes},
      {"nerve_port_rx_missed_total", "counter", "Packets the port dropped: its receive ring was full.",
       &telemetry::PortSample::imissed},
      {"nerve_port_rx_errors_total", "counter", "Receive errors.", &telemetry::PortSample::ierrors},
      {"nerve_port_tx_errors_total", "counter", "Transmit errors.", &telemetry::PortSample::oerrors},
      {"nerve_port_rx_nombuf_total", "counter", "Receive buffer allocation failures.", &telemetry::PortSample::rx_nombuf},
      {"nerve_port_frames_handed_total", "counter", "Frames the node handed to the port.",
       &telemetry::PortSample::tx_frames},
      {"nerve_port_link_up", "gauge", "1 while the port's link is up.", &telemetry::PortSample::link_up},
  };
  const auto& h = region_.header();
  for (const Counter& c : kCounters) {
    Family f(out, c.name, c.type, c.help);
    for (std::size_t j = 0; j < s.ports; ++j)
      line(out, c.name, fmt::format("{},port=\"{}\"", n, label_value(h.port_name[j])), s.port[j].*c.field);
  }
  // The drivers' extended statistics, under DPDK's names (nerved reads them once a second). Kept
  // from the last consistent read while nerved is writing.
  std::vector<telemetry::Xstat> xs;
  if (region_.xstats(xs)) xstats_ = std::move(xs);
  Family f(out, "nerve_port_xstat", "untyped", "A port's extended statistic (rte_eth_xstats_get), by DPDK's name.");
  for (const auto& x : xstats_)
    if (x.port < h.port_count)
      line(out, "nerve_port_xstat",
           fmt::format("{},port=\"{}\",name=\"{}\"", n, label_value(h.port_name[x.port]), label_value(x.name)), x.value);
}

void Collector::datapath(const telemetry::Sample& s, std::string& out) {
  const std::string& n = node_label_;
  const double hz = s.tsc_hz ? static_cast<double>(s.tsc_hz) : 1.0;
  {
    Family f(out, "nerve_datapath_seconds_total", "counter",
             "Datapath lcore time in polls that found work (busy) and in polls that found none (idle).");
    line(out, "nerve_datapath_seconds_total", n + ",state=\"busy\"", static_cast<double>(s.tsc_busy) / hz);
    line(out, "nerve_datapath_seconds_total", n + ",state=\"idle\"", static_cast<double>(s.tsc_idle) / hz);
  }
  {
    Family f(out, "nerve_datapath_polls_total", "counter", "Datapath polls that found work (busy) and none (idle).");
    line(out, "nerve_datapath_polls_total", n + ",state=\"busy\"", s.polls_busy);
    line(out, "nerve_datapath_polls_total", n + ",state=\"idle\"", s.polls_idle);
  }
  const std::uint64_t db = s.tsc_busy - prev_busy_, di = s.tsc_idle - prev_idle_;
  prev_busy_ = s.tsc_busy;
  prev_idle_ = s.tsc_idle;
  Family f(out, "nerve_datapath_busy_ratio", "gauge", "Share of the datapath's time spent busy since the last sample.");
  line(out, "nerve_datapath_busy_ratio", n, db + di ? static_cast<double>(db) / static_cast<double>(db + di) : 0.0);
}

void Collector::reliable(const telemetry::Sample& s, std::string& out) {
  const std::string& n = node_label_;
  struct Counter {
    std::string_view name, help;
    std::uint64_t telemetry::LaneSample::*field;
  };
  static constexpr Counter kCounters[] = {
      {"nerve_reliable_sent_total", "Reliable messages sent (first transmissions).", &telemetry::LaneSample::rel_sent},
      {"nerve_reliable_acked_total", "Reliable messages acknowledged by their receiver.", &telemetry::LaneSample::rel_acked},
      {"nerve_reliable_failed_total", "Reliable messages given up and reported to their sender.",
       &telemetry::LaneSample::rel_failed},
      {"nerve_reliable_retransmits_total", "Reliable frames sent again.", &telemetry::LaneSample::rel_retransmits},
      {"nerve_reliable_duplicates_total", "Reliable frames received again and dropped.",
       &telemetry::LaneSample::rel_duplicates},
      {"nerve_reliable_reordered_total", "Reliable frames received ahead of a gap and held.",
       &telemetry::LaneSample::rel_reordered},
  };
  for (const Counter& c : kCounters) {
    Family f(out, c.name, "counter", c.help);
    for (std::size_t l = 0; l < wire::kPriorities; ++l) line(out, c.name, lane_label(n, l), s.lane[l].*c.field);
  }
  // Read from the live counters (not in the sample's layout). Credit: docs/architecture.md,
  // "Reliable delivery" (flow control); its first three are gauges.
  struct Live {
    std::string_view name, type, help;
    stats::Counter stats::LcoreStats::Reliable::*field;
  };
  static constexpr Live kLive[] = {
      {"nerve_reliable_no_session_total", "counter",
       "Reliable sends refused and frames dropped: sessions with reliable_peers peers in use.",
       &stats::LcoreStats::Reliable::no_session},
      {"nerve_large_messages_split_total", "counter", "Large messages sent as fragments.",
       &stats::LcoreStats::Reliable::split},
      {"nerve_large_messages_joined_total", "counter", "Large messages reassembled and delivered.",
       &stats::LcoreStats::Reliable::joined},
      {"nerve_large_messages_aborted_total", "counter",
       "Reassemblies abandoned: given up by their sender, or fragments that disagree.",
       &stats::LcoreStats::Reliable::join_aborted},
      {"nerve_large_messages_buffer_waits_total", "counter", "First fragments that waited for a free reassembly buffer.",
       &stats::LcoreStats::Reliable::join_waits},
      {"nerve_reliable_senders", "gauge", "Sessions sending reliably to this node on the lane (as last counted).",
       &stats::LcoreStats::Reliable::senders},
      {"nerve_reliable_credit_frames", "gauge", "Frames each of them may have unacknowledged: the lane's budget shared.",
       &stats::LcoreStats::Reliable::credit},
      {"nerve_reliable_held_frames", "gauge", "Reliable frames held in the lane's receive windows (at most its budget).",
       &stats::LcoreStats::Reliable::held},
      {"nerve_reliable_over_credit_total", "counter",
       "Reliable frames dropped beyond the lane's budget (sent again by their senders).",
       &stats::LcoreStats::Reliable::over_credit},
  };
  for (const Live& c : kLive) {
    Family f(out, c.name, c.type, c.help);
    for (std::size_t l = 0; l < wire::kPriorities; ++l)
      line(out, c.name, lane_label(n, l), (region_.lcore().rel[l].*c.field).get());
  }
  // Two paths (read live, as above): sends per lane; receptions per (source, channel) and path.
  const stats::LcoreStats& lc = region_.lcore();
  {
    Family f(out, "nerve_two_paths_sent_total", "counter",
             "Messages asked to go over two paths, by how many they went over (one: no second path up).");
    for (std::size_t l = 0; l < wire::kPriorities; ++l) {
      line(out, "nerve_two_paths_sent_total", lane_label(n, l) + ",paths=\"2\"", lc.paths_two[l].get());
      line(out, "nerve_two_paths_sent_total", lane_label(n, l) + ",paths=\"1\"", lc.paths_one[l].get());
    }
  }
  auto channels = [&](auto&& value) {
    for (const stats::LcoreStats::PathChannel& c : lc.paths) {
      const std::uint64_t key = c.key.get();
      if (key == 0) break;
      value(fmt::format("{},src=\"{}\",channel=\"{}\"", n, (key - 1) >> 16, (key - 1) & 0xffff), c);
    }
    value(n + ",src=\"other\",channel=\"other\"", lc.paths_other);
  };
  {
    Family f(out, "nerve_two_paths_won_total", "counter",
             "Messages received over two paths, by the path whose copy arrived first.");
    channels([&](const std::string& lb, const stats::LcoreStats::PathChannel& c) {
      line(out, "nerve_two_paths_won_total", lb + ",path=\"1\"", c.won[0].get());
      line(out, "nerve_two_paths_won_total", lb + ",path=\"2\"", c.won[1].get());
    });
  }
  {
    Family f(out, "nerve_two_paths_discarded_total", "counter",
             "Copies of messages sent over two paths that arrived after the first and were dropped.");
    channels([&](const std::string& lb, const stats::LcoreStats::PathChannel& c) {
      line(out, "nerve_two_paths_discarded_total", lb, c.discarded.get());
    });
  }
}

void Collector::cpu(std::string& out) {
  const std::string& n = node_label_;
  const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  std::ifstream st("/proc/stat");
  std::string name;
  std::uint64_t v[8] = {};
  st >> name >> v[0] >> v[1] >> v[2] >> v[3] >> v[4] >> v[5] >> v[6] >> v[7];
  {
    Family f(out, "nerve_host_cpu_seconds_total", "counter", "Host CPU time by mode, all CPUs (/proc/stat).");
    static constexpr std::string_view kModes[] = {"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"};
    for (std::size_t i = 0; i < 8; ++i)
      line(out, "nerve_host_cpu_seconds_total", fmt::format("{},mode=\"{}\"", n, kModes[i]), static_cast<double>(v[i]) / tick);
  }
  // nerved's own CPU time: fields 14 and 15 of /proc/PID/stat, after the ')' that ends comm.
  std::string all;
  std::getline(std::ifstream(fmt::format("/proc/{}/stat", region_.header().pid)), all);
  const auto close = all.rfind(')');
  if (close != std::string::npos) {
    std::istringstream is(all.substr(close + 2));
    std::string field;
    std::uint64_t utime = 0, stime = 0;
    for (int i = 3; i <= 15 && is >> field; ++i) {
      if (i == 14) utime = std::stoull(field);
      if (i == 15) stime = std::stoull(field);
    }
    Family f(out, "nerve_process_cpu_seconds_total", "counter", "nerved's CPU time (user and system).");
    line(out, "nerve_process_cpu_seconds_total", n, static_cast<double>(utime + stime) / tick);
  }
}

void Collector::memory(const telemetry::Sample& s, std::string& out) {
  const std::string& n = node_label_;
  {
    Family f(out, "nerve_mempool_mbufs", "gauge", "The node's packet buffers: free and in use.");
    line(out, "nerve_mempool_mbufs", n + ",state=\"free\"", s.mbufs_available);
    line(out, "nerve_mempool_mbufs", n + ",state=\"in_use\"",
         s.mbufs_total > s.mbufs_available ? s.mbufs_total - s.mbufs_available : 0);
  }
  {
    Family f(out, "nerve_process_resident_memory_bytes", "gauge", "nerved's resident set size.");
    line(out, "nerve_process_resident_memory_bytes", n, proc_field(fmt::format("/proc/{}/status", region_.header().pid), "VmRSS"));
  }
  {
    Family f(out, "nerve_host_memory_bytes", "gauge", "Host memory (/proc/meminfo).");
    line(out, "nerve_host_memory_bytes", n + ",state=\"total\"", proc_field("/proc/meminfo", "MemTotal"));
    line(out, "nerve_host_memory_bytes", n + ",state=\"available\"", proc_field("/proc/meminfo", "MemAvailable"));
  }
  Family f(out, "nerve_host_hugepages", "gauge", "Host hugepages of the default size (/proc/meminfo).");
  line(out, "nerve_host_hugepages", n + ",state=\"total\"", proc_field("/proc/meminfo", "HugePages_Total"));
  line(out, "nerve_host_hugepages", n + ",state=\"free\"", proc_field("/proc/meminfo", "HugePages_Free"));
}

void Collector::storage(std::string& out) {
  const std::string& n = node_label_;
  {
    Family f(out, "nerve_filesystem_bytes", "gauge", "File systems of telemetry.storage_paths (statvfs).");
    for (const auto& p : cluster_.telemetry.storage_paths) {
      struct statvfs v {};
      if (::statvfs(p.c_str(), &v) != 0) continue;
      const std::string lb = fmt::format("{},path=\"{}\"", n, label_value(p));
      line(out, "nerve_filesystem_bytes", lb + ",state=\"size\"", std::uint64_t{v.f_blocks} * v.f_frsize);
      line(out, "nerve_filesystem_bytes", lb + ",state=\"avail\"", std::uint64_t{v.f_bavail} * v.f_frsize);
    }
  }
  // /proc/diskstats: major minor name reads merged sectors_read ms writes merged sectors_written ...
  std::ifstream ds("/proc/diskstats");
  std::string l;
  std::string reads, writes;
  while (std::getline(ds, l)) {
    std::istringstream is(l);
    std::string maj, min, dev;
    std::uint64_t f[7] = {};
    is >> maj >> min >> dev >> f[0] >> f[1] >> f[2] >> f[3] >> f[4] >> f[5] >> f[6];
    if (!is || dev.starts_with("loop") || dev.starts_with("ram") || (f[0] == 0 && f[4] == 0)) continue;
    const std::string lb = fmt::format("{},device=\"{}\"", n, label_value(dev));
    fmt::format_to(std::back_inserter(reads), "nerve_disk_read_bytes_total{{{}}} {}\n", lb, f[2] * 512);
    fmt::format_to(std::back_inserter(writes), "nerve_disk_written_bytes_total{{{}}} {}\n", lb, f[6] * 512);
  }
  { Family f(out, "nerve_disk_read_bytes_total", "counter", "Bytes read from the host's block devices."); }
  out += reads;
  { Family f(out, "nerve_disk_written_bytes_total", "counter", "Bytes written to the host's block devices."); }
  out += writes;
}

}  // namespace nerve::sidecar
