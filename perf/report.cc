// Output of nerve-perf: terminal table, JSON, HdrHistogram percentile text, SVG plot.
#include <algorithm>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <numa.h>
#include <rte_version.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "commit.hpp"
#include "eal.hpp"
#include "harness.hpp"

namespace nerve::perf {

namespace {
// [[from, to], ...] (rounded to 0.01).
nlohmann::json runs_json(const std::vector<std::array<double, 2>>& runs) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& x : runs) {
    nlohmann::json pair = nlohmann::json::array();
    for (const double v : x) pair.push_back(std::round(v * 100) / 100);
    out.push_back(std::move(pair));
  }
  return out;
}
}  // namespace
namespace {

using nlohmann::json;

double us(std::uint64_t ns) { return static_cast<double>(ns) / 1000.0; }

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown";
}

std::string iso_now() {
  const auto t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

std::string label(const Row& r) {
  std::string s = fmt::format("{}{} P{} {}B", r.transport, r.stack == "raw" ? " raw" : "", r.priority, r.size);
  if (r.has_background)
    s += r.background_priorities.empty() ? " idle" : fmt::format(" +flood P{}", fmt::join(r.background_priorities, ",P"));
  if (r.offered_mps > 0 && r.scenario != "isolation") s += fmt::format(" @{:.0f}/s", r.offered_mps);
  return s;
}

}  // namespace

void print_table(const std::vector<Row>& rows) {
  if (rows.empty()) return;
  if (rows.front().scenario == "route") {
    // Per link and second: the LSA refresh at the default 5 s, heartbeats at the default 1 kHz.
    fmt::print("{:<11} {:<8} {:<10} {:>7} {:>7} {:>10} {:>10} {:>10} {:>16} {:>12} {:>15} {:>14}\n", "topology", "nodes",
               "build", "links", "runs", "p50 us", "p99 us", "max us", "LSA frames/ref.", "LSA MB/ref.",
               "LSA kB/s/link", "hb kB/s/link");
    for (const auto& r : rows)
      fmt::print("{:<11} {:<8} {:<10} {:>7} {:>7} {:>10.1f} {:>10.1f} {:>10.1f} {:>16} {:>12.2f} {:>15.1f} {:>14.1f}\n",
                 r.transport, r.nodes, r.stack, r.links, r.sent, us(r.latency->percentile(50)),
                 us(r.latency->percentile(99)), us(r.latency->max()), r.lsa_frames_per_refresh,
                 static_cast<double>(r.lsa_bytes_per_refresh) / 1e6,
                 static_cast<double>(r.lsa_bytes_per_refresh) / static_cast<double>(r.links) / 5.0 / 1e3,
                 r.heartbeat_bytes_per_s / static_cast<double>(r.links) / 1e3);
    return;
  }
  if (rows.front().scenario == "multicast") {
    for (const auto& r : rows)
      fmt::print("multicast over {}: {} messages to {} members at {:.0f} msgs/s sent ({:.0f} deliveries/s); members got "
                 "{}; {} missing, {} twice\n",
                 r.transport, r.sent, r.member_counts.size(), r.rate_mps,
                 r.rate_mps * static_cast<double>(r.member_counts.size()), fmt::join(r.member_counts, " "), r.lost,
                 r.duplicates);
    return;
  }
  if (rows.front().scenario == "reliability") {
    fmt::print("{:<11} {:<6} {:>4} {:>5} {:>9} {:>7} {:>6} {:>9} {:>8} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8} {:>9} {:>6}  {}\n",
               "scenario", "trans.", "lane", "paths", "sent", "lost", "dup", "reordered", "retrans", "failed", "rate/s",
               "p50", "p99", "p99.9", "p99.99", "max", "miss", "(delivery latency in us; faults)");
    for (const auto& r : rows) {
      const auto& h = *r.latency;
      fmt::print("{:<11} {:<6} {:>4} {:>5} {:>9} {:>7} {:>6} {:>9} {:>8} {:>7} {:>10.0f} {:>8.2f} {:>8.2f} {:>8.2f} "
                 "{:>8.2f} {:>9.2f} {:>6}  {} ({} injected)\n",
                 r.scenario, r.transport, fmt::format("P{}", r.priority), r.paths, r.sent, r.lost, r.duplicates, r.reordered,
                 r.retransmits, r.failed, r.rate_mps, us(h.percentile(50)), us(h.percentile(99)),
                 us(h.percentile(99.9)), us(h.percentile(99.99)), us(h.max()), r.deadline_misses, r.fault,
                 r.faults_injected);
      if (r.recovery.count)
        fmt::print("{:>28} frames sent again: first send to ack p50 {:.2f} us, p90 {:.2f} us, p99 {:.2f} us, max {:.2f} us\n",
                   r.recovery.count, us(r.recovery.p50), us(r.recovery.p90), us(r.recovery.p99), us(r.recovery.max));
    }
    return;
  }
  if (rows.front().scenario == "reliability-rtt") {
    for (const auto& r : rows)
      fmt::print("P0 round trip over {}, {:<10}: {} round trips, p50 {:.2f} us, p90 {:.2f} us, p99 {:.2f} us, max {:.2f} us\n",
                 r.transport, r.stack, r.sent, us(r.latency->percentile(50)), us(r.latency->percentile(90)),
                 us(r.latency->percentile(99)), us(r.latency->max()));
    if (rows.size() == 2 && rows[0].latency->percentile(50) > 0)
      fmt::print("reliable / unreliable at p50: {:.3f}\n",
                 static_cast<double>(rows[1].latency->percentile(50)) / static_cast<double>(rows[0].latency->percentile(50)));
    return;
  }
  if (rows.front().scenario == "service") {
    for (const auto& r : rows) {
      if (r.metric == "spread")
        fmt::print("service {:<17} {} requests, per instance {}; chi-square {:.2f} (3 dof), p = {:.3f}; {} unanswered\n",
                   r.stack, r.sent, fmt::join(r.member_counts, " "), r.chi2, r.chi2_p, r.lost);
      else
        fmt::print("service {:<17} {:.0f}/s, one slow instance: per instance {}; response p50 {:.1f} us, p99 {:.1f} us, "
                   "p99.9 {:.1f} us, max {:.1f} us; {} unanswered\n",
                   r.stack, r.offered_mps, fmt::join(r.member_counts, " "), us(r.latency->percentile(50)),
                   us(r.latency->percentile(99)), us(r.latency->percentile(99.9)), us(r.latency->max()), r.lost);
    }
    return;
  }
  if (rows.front().scenario == "forward") {
    fmt::print("{:<9} {:<10} {:<16} {:>5} {:>6} {:>12} {:>12} {:>8} {:>11} {:>10}  {}\n", "scenario", "transport", "stack",
               "round", "frame", "offered/s", "rate/s", "Gbit/s", "cyc/frame", "capacity/s",
               "(forwarded, 64 B payload, one core)");
    for (const auto& r : rows)
      fmt::print("{:<9} {:<10} {:<16} {:>5} {:>6} {:>12.0f} {:>12.0f} {:>8.3f} {:>11.1f} {:>10.0f}\n", r.scenario,
                 r.transport, r.stack, r.round, r.frame_bytes, r.offered_mps, r.rate_mps, r.gbps, r.cycles_per_frame,
                 r.cycles_per_frame > 0 ? r.tsc_mhz * 1e6 / r.cycles_per_frame : 0.0);
    auto median = [&](const std::string& stack, auto field) {
      std::vector<double> v;
      for (const auto& r : rows)
        if (r.stack == stack) v.push_back(field(r));
      std::sort(v.begin(), v.end());
      return v.empty() ? 0.0 : v[v.size() / 2];
    };
    const auto rate = [](const Row& r) { return r.rate_mps; };
    const auto cycles = [](const Row& r) { return r.cycles_per_frame; };
    const double nv = median("nerve", rate), io = median("testpmd-io", rate), ms = median("testpmd-macswap", rate);
    fmt::print("median rate/s: nerve {:.0f}, testpmd io {:.0f}, testpmd macswap {:.0f}; nerve is {:.0f} % of macswap, "
               "{:.0f} % of io\n", nv, io, ms, ms > 0 ? 100 * nv / ms : 0.0, io > 0 ? 100 * nv / io : 0.0);
    const double nc = median("nerve", cycles), ioc = median("testpmd-io", cycles), msc = median("testpmd-macswap", cycles);
    if (nc > 0 && ioc > 0 && msc > 0)
      fmt::print("median busy cycles per frame: nerve {:.1f}, testpmd io {:.1f}, testpmd macswap {:.1f}; nerve forwards "
                 "at {:.0f} % of macswap's capacity, {:.0f} % of io's\n",
                 nc, ioc, msc, 100 * msc / nc, 100 * ioc / nc);
    return;
  }
  fmt::print("{:<11} {:<10} {:<6} {:>3} {:>6} {:>6} {:>9} {:>7} {:>11} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>6} {}\n",
             "scenario", "transport", "stack", "lane", "size", "frame", "count", "lost", "rate/s", "Gbit/s", "min", "p50", "p99",
             "p99.9", "p99.99", "max", "miss", "(latency in us)");
  for (const auto& r : rows) {
    const auto& h = *r.latency;
    std::string note;
    if (r.has_background)
      note = r.background_priorities.empty()
                 ? "idle"
                 : fmt::format("flood P{}: {:.0f}/s delivered of {:.0f}/s sent", fmt::join(r.background_priorities, ",P"),
                               r.background_rate_mps, r.background_sent_mps);
    if (r.scenario == "throughput") note = r.max_point ? "max (unpaced)" : fmt::format("offered {:.0f}/s", r.offered_mps);
    if (r.knee) note += "  <- knee";
    if (r.hops > 1) note += fmt::format(" {} hops", r.hops);
    if (r.reliable) note += " reliable";
    if (r.sidecar_hz >= 0) note += fmt::format(" sidecar {}Hz", r.sidecar_hz);
    if (r.scenario == "failover")
      note = fmt::format("gaps between deliveries; node {} killed, link down {:.2f} ms later (after {} missed "
                         "heartbeats); lost {} sent before the kill, {} after; {} duplicates; refused at the sender: {}; "
                         "{} path(s) to D at the kill",
                         r.killed, r.detect_ms, r.heartbeat_miss, r.lost_before_kill, r.lost_after_kill, r.duplicates,
                         json(r.refused).dump(), r.paths_at_kill);
    if (r.peer_idle != "busy" || r.gap_us > 0) note += fmt::format(" peer {} gap {:.0f}us", r.peer_idle, r.gap_us);
    fmt::print("{:<11} {:<10} {:<6} {:>3} {:>6} {:>6} {:>9} {:>7} {:>11.0f} {:>7.3f} {:>8.2f} {:>8.2f} {:>8.2f} {:>8.2f} "
               "{:>8.2f} {:>9.2f} {:>6} {}\n",
               r.scenario, r.transport, r.stack, fmt::format("P{}", r.priority), r.size, r.frame_bytes, h.count(), r.lost,
               r.rate_mps, r.gbps, us(h.min()), us(h.percentile(50)), us(h.percentile(99)), us(h.percentile(99.9)),
               us(h.percentile(99.99)), us(h.max()), r.deadline_misses, note);
  }
}

std::string to_json(const Options& opt, const std::vector<Row>& rows) {
  // The harness runs its two ends on the first two CPUs it may use (Session).
  auto cores = harness_cpus();
  if (cores.size() > 2) cores.resize(2);
  char host[256] = "unknown";
  gethostname(host, sizeof host);
  json j = {{"tool", "nerve-perf"},
            {"version", NERVE_VERSION},
            {"commit", NERVE_COMMIT},
            {"setup", {{"cpu", cpu_model()},
                       {"cores", cores},
                       {"numa_node", numa_available() >= 0 ? numa_node_of_cpu(static_cast<int>(cores.front())) : 0},
                       {"dpdk", rte_version()},
                       {"host", host},
                       {"date", iso_now()},
                       {"scenario", opt.scenario}}},
            {"results", json::array()}};
  for (const auto& r : rows) {
    const auto& h = *r.latency;
    json x = {{"scenario", r.scenario},
              {"transport", r.transport},
              {"stack", r.stack},
              {"hops", r.hops},
              {"priority", r.priority},
              {"size", r.size},
              {"frame_bytes", r.frame_bytes},
              {"count", h.count()},
              {"sent", r.sent},
              {"lost", r.lost},
              {"deadline_misses", r.deadline_misses},
              {"budget_ns", stats::kDefaultBudgetNs[static_cast<std::size_t>(r.priority)]},
              {"rate_mps", r.rate_mps},
              {"offered_mps", r.offered_mps},
              {"gbps", r.gbps},
              {"metric", r.metric},
              {"peer_idle", r.peer_idle},
              {"gap_us", r.gap_us},
              {"latency_ns",
               {{"min", h.min()},
                {"mean", h.mean()},
                {"p50", h.percentile(50)},
                {"p90", h.percentile(90)},
                {"p99", h.percentile(99)},
                {"p999", h.percentile(99.9)},
                {"p9999", h.percentile(99.99)},
                {"max", h.max()}}}};
    if (r.scenario == "forward") {
      x["round"] = r.round;
      if (r.cycles_per_frame > 0) {
        x["cycles_per_frame"] = r.cycles_per_frame;
        x["tsc_mhz"] = r.tsc_mhz;
      }
    }
    x["reliable"] = r.reliable;
    if (r.sidecar_hz >= 0) x["sidecar_hz"] = r.sidecar_hz;
    if (r.scenario == "reliability" || r.scenario == "reliability-rtt") {
      x["duplicates"] = r.duplicates;
      x["reordered"] = r.reordered;
      x["retransmits"] = r.retransmits;
      x["failed"] = r.failed;
      x["fault"] = r.fault;
      x["faults_injected"] = r.faults_injected;
      x["paths"] = r.paths;
      x["recovery_ns"] = {{"count", r.recovery.count}, {"p50", r.recovery.p50}, {"p90", r.recovery.p90},
                          {"p99", r.recovery.p99}, {"max", r.recovery.max}};
    }
    if (r.scenario == "multicast") x["multicast"] = {{"members", r.member_counts}, {"duplicates", r.duplicates}};
    if (r.scenario == "service") {
      x["service"] = {{"policy", r.stack}, {"test", r.metric}, {"per_instance", r.member_counts}};
      if (r.metric == "spread") x["service"]["chi2"] = r.chi2, x["service"]["chi2_p"] = r.chi2_p;
    }
    if (r.scenario == "failover")
      x["failover"] = {{"killed", r.killed}, {"heartbeat_miss", r.heartbeat_miss}, {"duplicates", r.duplicates},
                       {"refused", json(r.refused)}, {"paths_at_kill", r.paths_at_kill},
                       {"lost_before_kill", r.lost_before_kill}, {"lost_after_kill", r.lost_after_kill},
                       {"lost_runs_ms", runs_json(r.lost_runs_ms)}, {"refused_at_d", json(r.refused_at_d)},
                       {"refused_at_survivor", json(r.refused_at_survivor)},
                       {"detect_ms", r.detect_ms},
                       {"trace", r.trace}};
    if (r.scenario == "route")
      x["route"] = {{"nodes", r.nodes}, {"links", r.links}, {"lsa_frames_per_refresh", r.lsa_frames_per_refresh},
                    {"lsa_bytes_per_refresh", r.lsa_bytes_per_refresh}, {"heartbeat_bytes_per_s", r.heartbeat_bytes_per_s}};
    if (r.has_background)
      x["background"] = {{"priorities", r.background_priorities},
                         {"rate_mps", r.background_rate_mps},
                         {"sent_mps", r.background_sent_mps}};
    if (r.scenario == "throughput") {
      x["knee"] = r.knee;
      x["max"] = r.max_point;
    }
    j["results"].push_back(x);
  }
  return j.dump(2) + "\n";
}

// HdrHistogram's percentile-distribution text (values in microseconds), one block per row;
// each block opens with a "#" line naming the row.
std::string to_hgrm(const std::vector<Row>& rows) {
  std::ostringstream out;
  for (const auto& r : rows) {
    const auto& h = *r.latency;
    out << fmt::format("# {} {} ({})\n", r.scenario, label(r), r.metric);
    out << fmt::format("{:>12} {:>14} {:>10} {:>14}\n\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)");
    const std::uint64_t total = h.count();
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < stats::Histogram::kBuckets && total; ++i) {
      const std::uint64_t c = h.bucket_count(i);
      if (!c) continue;
      seen += c;
      const double p = static_cast<double>(seen) / static_cast<double>(total);
      const double v = us(std::min(stats::Histogram::upper_of(i), h.max()));
      if (p < 1.0)
        out << fmt::format("{:>12.3f} {:>14.12f} {:>10} {:>14.2f}\n", v, p, seen, 1.0 / (1.0 - p));
      else
        out << fmt::format("{:>12.3f} {:>14.12f} {:>10}\n", v, p, seen);
    }
    double var = 0;  // the standard deviation from bucket midpoints
    for (std::size_t i = 0; i < stats::Histogram::kBuckets && total; ++i)
      if (const auto c = h.bucket_count(i)) {
        const double d = us(stats::Histogram::upper_of(i)) - h.mean() / 1000.0;
        var += d * d * static_cast<double>(c);
      }
    out << fmt::format("#[Mean    = {:12.3f}, StdDeviation   = {:12.3f}]\n", h.mean() / 1000.0,
                       total ? std::sqrt(var / static_cast<double>(total)) : 0.0);
    out << fmt::format("#[Max     = {:12.3f}, Total count    = {:12}]\n", us(h.max()), total);
    out << fmt::format("#[Buckets = {:12}, SubBuckets     = {:12}]\n\n", stats::Histogram::kMaxExp,
                       stats::Histogram::kSub);
  }
  return out.str();
}

// Latency by percentile on a "nines" axis (x = -log10(1 - p)), log latency axis, one line per
// row (transport, lane, background).
std::string to_svg(const std::vector<Row>& rows) {
  constexpr double W = 900, H = 520, L = 80, R = 250, T = 40, B = 60;
  constexpr double kMaxNines = 5;  // up to 99.999 %
  double lo = 1e18, hi = 0;
  for (const auto& r : rows)
    if (r.latency->count()) {
      lo = std::min(lo, std::max(0.01, us(r.latency->min())));
      hi = std::max(hi, us(r.latency->max()));
    }
  if (hi <= 0) lo = 0.1, hi = 10;
  const double ylo = std::floor(std::log10(lo)), yhi = std::ceil(std::log10(hi)) + (std::log10(hi) == std::ceil(std::log10(hi)) ? 1 : 0);
  auto X = [&](double nines) { return L + (W - L - R) * std::min(nines, kMaxNines) / kMaxNines; };
  auto Y = [&](double v_us) {
    return H - B - (H - T - B) * (std::log10(std::max(v_us, std::pow(10.0, ylo))) - ylo) / (yhi - ylo);
  };
  static const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  std::ostringstream s;
  s << fmt::format("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" "
                   "font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
                   W, H);
  s << fmt::format("<text x=\"{}\" y=\"22\" font-size=\"15\">nerve-perf: latency by percentile{}</text>\n", L,
                   rows.empty() ? "" : " (" + rows.front().scenario + ", " + rows.front().metric + ")");
  for (int k = 0; k <= static_cast<int>(kMaxNines); ++k) {
    static const char* kNames[] = {"0%", "90%", "99%", "99.9%", "99.99%", "99.999%"};
    s << fmt::format("<line x1=\"{0}\" x2=\"{0}\" y1=\"{1}\" y2=\"{2}\" stroke=\"#ddd\"/>\n", X(k), T, H - B);
    s << fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", X(k), H - B + 18, kNames[k]);
  }
  for (double e = ylo; e <= yhi; ++e) {
    s << fmt::format("<line x1=\"{0}\" x2=\"{1}\" y1=\"{2}\" y2=\"{2}\" stroke=\"#ddd\"/>\n", L, W - R, Y(std::pow(10, e)));
    s << fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n", L - 6, Y(std::pow(10, e)) + 4,
                     std::pow(10, e) >= 1 ? fmt::format("{:.0f}", std::pow(10, e)) : fmt::format("{:g}", std::pow(10, e)));
  }
  s << fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">percentile</text>\n", (L + W - R) / 2, H - 18);
  s << fmt::format("<text x=\"24\" y=\"{0}\" transform=\"rotate(-90 24 {0})\" text-anchor=\"middle\">latency (us)</text>\n",
                   (T + H - B) / 2);
  std::size_t k = 0;
  for (const auto& r : rows) {
    if (!r.latency->count()) continue;
    const char* c = kColors[k % 10];
    std::string pts;
    for (double n = 0; n <= kMaxNines + 1e-9; n += 0.05) {
      const double p = 100.0 * (1.0 - std::pow(10.0, -n));
      pts += fmt::format("{:.1f},{:.1f} ", X(n), Y(us(r.latency->percentile(p))));
    }
    s << fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>\n", c, pts);
    const double ly = T + 10 + 18 * static_cast<double>(k);
    s << fmt::format("<line x1=\"{0}\" x2=\"{1}\" y1=\"{2}\" y2=\"{2}\" stroke=\"{3}\" stroke-width=\"3\"/>\n", W - R + 12,
                     W - R + 36, ly, c);
    s << fmt::format("<text x=\"{}\" y=\"{}\">{}</text>\n", W - R + 42, ly + 4, label(r));
    ++k;
  }
  s << "</svg>\n";
  return s.str();
}

}  // namespace nerve::perf
