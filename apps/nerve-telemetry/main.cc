// nerve-telemetry: a node's telemetry sidecar. Attaches to the node's stats region, samples
// the metric groups of each tier at the tier's rate (100, 50, 10, 1 and 0.1 Hz), and serves
// the newest sample of every group as Prometheus text on /metrics.
//
// Timing: each tick sleeps (clock_nanosleep, absolute) until it is due; a wake-up costs tens of
// microseconds, which the sample is late by. On a core of its own (--cpu) the sidecar can spin
// the last --spin-us before each tick instead, and be late by about a microsecond: that costs
// the spin's CPU time per tick (100 Hz x 200 us: 2 % of a core). On a core a datapath polls,
// spinning takes that time from the datapath: leave --spin-us at 0 there.
#include <malloc.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include "../common/cli.hpp"
#include "../common/cluster.hpp"
#include "../common/log.hpp"
#include "../common/query.hpp"
#include "collect.hpp"
#include "history.hpp"
#include "push.hpp"
#include "queries.hpp"
#include "nerve/config.hpp"
#include "nerve/histogram.hpp"
#include "nerve/telemetry.hpp"

using namespace nerve;
using app::Level;
using app::log;
using json = nlohmann::json;

namespace {

std::atomic<bool> g_stop{false};
extern "C" void on_signal(int) { g_stop.store(true, std::memory_order_relaxed); }

std::uint64_t now_ns() noexcept { return sidecar::clock_ns(CLOCK_MONOTONIC); }

// Datapath events (a lane's deadline miss) to the first sample that carries them, and to that
// sample handed to the fabric (Pusher::event_to_push).
struct EventTiming {
  std::array<std::uint64_t, wire::kPriorities> seen{};    // each lane's newest miss already counted
  std::array<std::uint64_t, wire::kPriorities> before{};  // read before the sample was asked for
  stats::Histogram to_sample;                             // event to the sample taken (ns)
  // Before ringing for a sample: the misses so far, which the sample is sure to show (one that
  // happens between this read and the sample counts at the next sample: timed late, never early).
  void look(const stats::LcoreStats& live) {
    for (std::size_t p = 0; p < wire::kPriorities; ++p) before[p] = live.last_deadline_miss_ns[p].get();
  }
  // The wall time of the newest event this sample is the first to show, or 0; records its delay
  // to the sample (taken_ns: CLOCK_MONOTONIC).
  std::uint64_t take(std::uint64_t taken_ns) {
    std::uint64_t newest = 0;
    for (std::size_t p = 0; p < wire::kPriorities; ++p)
      if (before[p] != seen[p]) newest = std::max(newest, seen[p] = before[p]);
    if (newest == 0) return 0;
    // The event's wall time on the monotonic clock (nerve::Clock is the TSC read as wall time).
    const std::uint64_t offset = sidecar::clock_ns(CLOCK_REALTIME) - now_ns();
    const std::uint64_t at = newest > offset ? newest - offset : 0;
    to_sample.record(taken_ns > at ? taken_ns - at : 0);
    return newest;
  }
};

void sleep_until(std::uint64_t t) noexcept {
  timespec ts{static_cast<time_t>(t / 1'000'000'000u), static_cast<long>(t % 1'000'000'000u)};
  while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR && !g_stop.load()) {
  }
}

struct Tier {
  std::string_view name;
  std::uint64_t period_ns;
  std::vector<sidecar::Group> groups;
  bool needs_sample = false;
  std::uint64_t next_ns = 0;
  std::uint64_t ticks = 0, skipped = 0;
  stats::Histogram late_ns;  // tick deadline to the sample taken
};

// What /metrics serves: the newest text of every group, and the sidecar's own figures.
struct Exposition {
  std::mutex mu;
  std::array<std::string, sidecar::kGroups> group;
  bool up = false;
  std::string self;  // nerve_telemetry_* families
};

// What /metrics serves now (and fabric queries for current values read).
std::string metrics_body(Exposition& expo, const std::string& node_label) {
  std::string body;
  std::lock_guard lk(expo.mu);
  fmt::format_to(std::back_inserter(body),
                 "# HELP nerve_up 1 while the node runs and answers its sidecar.\n# TYPE nerve_up gauge\n"
                 "nerve_up{{{}}} {}\n",
                 node_label, expo.up ? 1 : 0);
  if (expo.up)
    for (const auto& g : expo.group) body += g;
  body += expo.self;
  return body;
}

std::string self_metrics(const std::vector<std::unique_ptr<Tier>>& tiers, const std::string& node,
                         std::uint64_t timeouts, std::uint64_t attaches, std::uint64_t watch_missed,
                         const sidecar::Pusher& push, const sidecar::QueryServer& queries, const EventTiming& events) {
  std::string out;
  auto fam = [&](std::string_view name, std::string_view type, std::string_view help) {
    fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  };
  fam("nerve_telemetry_samples_total", "counter", "Ticks sampled, by tier.");
  for (const auto& t : tiers)
    fmt::format_to(std::back_inserter(out), "nerve_telemetry_samples_total{{{},tier=\"{}\"}} {}\n", node, t->name, t->ticks);
  fam("nerve_telemetry_ticks_skipped_total", "counter", "Ticks skipped because the sidecar fell a whole period behind.");
  for (const auto& t : tiers)
    fmt::format_to(std::back_inserter(out), "nerve_telemetry_ticks_skipped_total{{{},tier=\"{}\"}} {}\n", node, t->name,
                   t->skipped);
  fam("nerve_telemetry_sample_lateness_seconds", "summary", "From a tick's deadline to its sample, by tier.");
  for (const auto& t : tiers) {
    for (const auto& [q, p] : {std::pair{"0.5", 50.0}, {"0.99", 99.0}, {"1", 100.0}})
      fmt::format_to(std::back_inserter(out), "nerve_telemetry_sample_lateness_seconds{{{},tier=\"{}\",quantile=\"{}\"}} {}\n",
                     node, t->name, q, static_cast<double>(t->late_ns.percentile(p)) / 1e9);
    fmt::format_to(std::back_inserter(out), "nerve_telemetry_sample_lateness_seconds_sum{{{},tier=\"{}\"}} {}\n", node,
                   t->name, static_cast<double>(t->late_ns.sum()) / 1e9);
    fmt::format_to(std::back_inserter(out), "nerve_telemetry_sample_lateness_seconds_count{{{},tier=\"{}\"}} {}\n", node,
                   t->name, t->late_ns.count());
  }
  fam("nerve_telemetry_sample_timeouts_total", "counter", "Samples the datapath did not answer in time.");
  fmt::format_to(std::back_inserter(out), "nerve_telemetry_sample_timeouts_total{{{}}} {}\n", node, timeouts);
  fam("nerve_telemetry_watch_missed_total", "counter", "Samples /watch subscribers missed by falling behind.");
  fmt::format_to(std::back_inserter(out), "nerve_telemetry_watch_missed_total{{{}}} {}\n", node, watch_missed);
  fam("nerve_telemetry_pushed_total", "counter", "Messages pushed over the fabric (telemetry.push_to), by tier.");
  for (std::size_t k = 0; k < tiers.size(); ++k)
    fmt::format_to(std::back_inserter(out), "nerve_telemetry_pushed_total{{{},tier=\"{}\"}} {}\n", node,
                   tiers[k]->name, push.pushed(k));
  fam("nerve_telemetry_push_dropped_total", "counter", "Push messages dropped: the queue to nerved was full.");
  fmt::format_to(std::back_inserter(out), "nerve_telemetry_push_dropped_total{{{}}} {}\n", node, push.dropped());
  fam("nerve_telemetry_push_failed_total", "counter", "Push messages nerved did not send (no route, back-pressure, down).");
  fmt::format_to(std::back_inserter(out), "nerve_telemetry_push_failed_total{{{}}} {}\n", node, push.failed());
  fam("nerve_telemetry_queries_answered_total", "counter", "Queries from other nodes answered over the fabric.");
  fmt::format_to(std::back_inserter(out), "nerve_telemetry_queries_answered_total{{{}}} {}\n", node, queries.answered());
  fam("nerve_telemetry_queries_refused_total", "counter", "Queries over the fabric refused (malformed, no history).");
  fmt::format_to(std::back_inserter(out), "nerve_telemetry_queries_refused_total{{{}}} {}\n", node, queries.refused());
  auto summary = [&](std::string_view name, const stats::Histogram& h) {
    for (const auto& [q, p] : {std::pair{"0.5", 50.0}, {"0.99", 99.0}, {"1", 100.0}})
      fmt::format_to(std::back_inserter(out), "{}{{{},quantile=\"{}\"}} {}\n", name, node, q,
                     static_cast<double>(h.percentile(p)) / 1e9);
    fmt::format_to(std::back_inserter(out), "{}_sum{{{}}} {}\n{}_count{{{}}} {}\n", name, node,
                   static_cast<double>(h.sum()) / 1e9, name, node, h.count());
  };
  fam("nerve_telemetry_event_to_sample_seconds", "summary",
      "From a datapath event (a lane's deadline miss) to the first sample carrying it.");
  summary("nerve_telemetry_event_to_sample_seconds", events.to_sample);
  fam("nerve_telemetry_event_to_push_seconds", "summary",
      "From a datapath event to the sample carrying it handed to the fabric (telemetry.push_to).");
  summary("nerve_telemetry_event_to_push_seconds", push.event_to_push());
  fam("nerve_telemetry_attaches_total", "counter", "Times the sidecar attached to the node's stats region.");
  fmt::format_to(std::back_inserter(out), "nerve_telemetry_attaches_total{{{}}} {}\n", node, attaches);
  return out;
}

// Event streaming: every tier's sample as it is taken, to each /watch subscriber of that tier.
// The newest kKeep samples are kept; a subscriber that falls further behind is told how many it
// missed (and they are counted).
class Stream {
 public:
  static constexpr std::size_t kKeep = 1024;
  struct Event {
    std::uint64_t id;
    std::size_t tier;
    std::string text;
  };
  void publish(std::size_t tier, std::string text) {
    {
      std::lock_guard lk(mu_);
      events_.push_back(Event{++last_, tier, std::move(text)});
      if (events_.size() > kKeep) events_.pop_front();
    }
    cv_.notify_all();
  }
  // Events after `after` of the tiers in `mask`, waiting up to `wait` for one; `missed` counts
  // those that fell out of the window.
  std::vector<Event> take(std::uint64_t& after, std::uint32_t mask, std::chrono::milliseconds wait,
                          std::uint64_t& missed) {
    std::unique_lock lk(mu_);
    cv_.wait_for(lk, wait, [&] { return stopping_ || last_ > after; });
    std::vector<Event> out;
    if (!events_.empty() && events_.front().id > after + 1) {
      const std::uint64_t gone = events_.front().id - after - 1;
      missed += gone;
      dropped_ += gone;
      after = events_.front().id - 1;
    }
    for (const Event& e : events_)
      if (e.id > after && ((mask >> e.tier) & 1u)) out.push_back(e);
    after = last_;
    return out;
  }
  std::uint64_t last() {
    std::lock_guard lk(mu_);
    return last_;
  }
  std::uint64_t dropped() {
    std::lock_guard lk(mu_);
    return dropped_;
  }
  void stop() {
    {
      std::lock_guard lk(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
  }
  bool stopping() {
    std::lock_guard lk(mu_);
    return stopping_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Event> events_;
  std::uint64_t last_ = 0, dropped_ = 0;
  bool stopping_ = false;
};

// The sidecar's own cost: its CPU time (all its threads, user and system) over its running time.
json cpu_report(std::chrono::steady_clock::time_point started) {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  auto secs = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
  const double cpu = secs(ru.ru_utime) + secs(ru.ru_stime);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return {{"cpu_seconds", cpu}, {"user_seconds", secs(ru.ru_utime)}, {"system_seconds", secs(ru.ru_stime)},
          {"wall_seconds", wall}, {"share_of_a_core", wall > 0 ? cpu / wall : 0.0},
          {"voluntary_switches", ru.ru_nvcsw}, {"involuntary_switches", ru.ru_nivcsw}};
}

json tier_report(const std::vector<std::unique_ptr<Tier>>& tiers, std::uint64_t timeouts, const EventTiming& events,
                 const sidecar::Pusher& push, std::chrono::steady_clock::time_point started) {
  json j = json::object();
  for (const auto& t : tiers) {
    j[std::string(t->name)] = {{"hz", 1e9 / static_cast<double>(t->period_ns)},
                               {"groups", json::array()},
                               {"ticks", t->ticks},
                               {"skipped", t->skipped},
                               {"late_p50_us", static_cast<double>(t->late_ns.percentile(50)) / 1e3},
                               {"late_p99_us", static_cast<double>(t->late_ns.percentile(99)) / 1e3},
                               {"late_p999_us", static_cast<double>(t->late_ns.percentile(99.9)) / 1e3},
                               {"late_max_us", static_cast<double>(t->late_ns.max()) / 1e3}};
    for (const auto g : t->groups) j[std::string(t->name)]["groups"].push_back(config::kMetricGroups[static_cast<std::size_t>(g)]);
  }
  auto timing = [](const stats::Histogram& h) {
    return json{{"count", h.count()},
                {"p50_us", static_cast<double>(h.percentile(50)) / 1e3},
                {"p99_us", static_cast<double>(h.percentile(99)) / 1e3},
                {"max_us", static_cast<double>(h.max()) / 1e3}};
  };
  return {{"tiers", j},
          {"sample_timeouts", timeouts},
          {"event_to_sample", timing(events.to_sample)},
          {"event_to_push", timing(push.event_to_push())},
          {"process", cpu_report(started)}};
}

}  // namespace

int main(int argc, char** argv) {
  app::g_program = "nerve-telemetry";
  const auto started = std::chrono::steady_clock::now();
  // Each tick builds and frees text: keep the freed heap rather than giving it back to the
  // kernel and faulting it in again at the next tick.
  ::mallopt(M_TRIM_THRESHOLD, 64 << 20);
  ::mallopt(M_TOP_PAD, 16 << 20);
  CLI::App cli{"nerve-telemetry: a node's telemetry sidecar. Samples the node's stats region in five tiers "
               "(100, 50, 10, 1, 0.1 Hz) and serves Prometheus text on /metrics."};
  std::string config_path, listen, region_path, report_path, level = "info";
  int node_id = 0;
  unsigned spin_us = 0;
  int cpu = -1;
  double duration_s = 0;
  cli.add_option("--config", config_path, "cluster file (TOML)")->required()->check(CLI::ExistingFile);
  cli.add_option("--node", node_id, "id of the node to sample")->required()->check(CLI::Range(1, 65534));
  cli.add_option("--listen", listen, "serve /metrics at address:port (default: the node's metrics_listen)");
  cli.add_option("--region", region_path, "the node's stats region (default: the node's stats_region)");
  cli.add_option("--spin-us", spin_us, "spin this long before each tick instead of sleeping (precision)")
      ->check(CLI::Range(0u, 5000u));
  cli.add_option("--cpu", cpu, "run on this CPU (a housekeeping core, not a datapath's)")->check(CLI::Range(0, 1023));
  cli.add_option("--duration", duration_s, "stop after this many seconds (0: at SIGINT/SIGTERM)")->check(CLI::Range(0.0, 1e7));
  cli.add_option("--report", report_path,
                 "at exit, write each tier's tick counts and lateness, event timing and the sidecar's own CPU time "
                 "as JSON to this file");
  cli.add_option("--log-level", level, "debug, info, warn or error")->check(CLI::IsMember({"debug", "info", "warn", "error"}));
  if (const auto rc = app::parse_cli(cli, argc, argv, "nerve-telemetry")) return *rc;
  app::g_log_level = app::level_named(level);

  config::Cluster cluster;
  const config::Node* self = nullptr;
  if (const auto rc = app::load_node(config_path, node_id, "nerve-telemetry", cluster, self)) return *rc;
  app::g_program = fmt::format("nerve-telemetry[{}]", self->name);
  if (region_path.empty()) region_path = self->stats_region;
  if (region_path.empty()) {
    fmt::print(stderr, "nerve-telemetry: node {} has stats_region = \"off\": nothing to sample\n", self->id);
    return 2;
  }
  if (listen.empty()) listen = self->metrics_listen;
  std::string host;
  int port = 0;
  if (!listen.empty()) {
    const auto colon = listen.rfind(':');
    char* end = nullptr;
    port = colon == std::string::npos ? 0 : static_cast<int>(std::strtol(listen.c_str() + colon + 1, &end, 10));
    if (colon == std::string::npos || port < 1 || port > 65535 || *end != '\0') {
      fmt::print(stderr, "nerve-telemetry: --listen: expected address:port, got '{}'\n", listen);
      return 2;
    }
    host = listen.substr(0, colon);
  }

  std::vector<std::unique_ptr<Tier>> tiers;
  for (std::size_t k = 0; k < config::kTiers; ++k) {
    auto t = std::make_unique<Tier>();
    t->name = config::kTierNames[k];
    t->period_ns = config::kTierPeriodNs[k];
    for (const auto& g : cluster.telemetry.tiers[k]) {
      t->groups.push_back(sidecar::group_of(g));
      t->needs_sample |= sidecar::needs_sample(t->groups.back());
    }
    tiers.push_back(std::move(t));
  }

  if (cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(static_cast<unsigned>(cpu), &set);
    if (::sched_setaffinity(0, sizeof set, &set) != 0) {
      fmt::print(stderr, "nerve-telemetry: --cpu {}: not a CPU this process may use\n", cpu);
      return 2;
    }
  }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  const std::string node_label = fmt::format("node=\"{}\"", sidecar::label_value(self->name));
  Stream stream;
  constexpr int kMaxWatchers = 4;  // httplib serves with at least 8 threads
  std::atomic<int> watchers{0};
  sidecar::Pusher pusher(cluster, *self);
  sidecar::History history(cluster.telemetry, *self);
  if (history.enabled() && !std::filesystem::is_directory(history.dir())) {
    fmt::print(stderr, "nerve-telemetry: config error: telemetry.history_dir: {} is not a directory (nerve-telemetry "
                       "creates none)\n", history.dir());
    return 2;
  }
  constexpr std::size_t kHistorical = config::kTiers - 1;
  // A tier runs if it samples groups; the historical one also when it keeps history.
  auto active = [&](std::size_t k) { return !tiers[k]->groups.empty() || (k == kHistorical && history.enabled()); };
  Exposition expo;
  std::uint64_t timeouts = 0, attaches = 0;
  // Other nodes' queries, through nerved (current values as /metrics serves them, history).
  sidecar::QueryServer queries(self->control_socket, [&] { return metrics_body(expo, node_label); }, history);
  EventTiming event_timing;
  {
    std::lock_guard lk(expo.mu);
    expo.self = self_metrics(tiers, node_label, timeouts, attaches, stream.dropped(), pusher, queries, event_timing);
  }
  httplib::Server http;
  std::thread http_thread;
  if (!listen.empty()) {
    http.Get("/metrics", [&](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics_body(expo, node_label), "text/plain; version=0.0.4; charset=utf-8");
    });
    // /watch?tier=critical,high: every sample of those tiers (default: all), as it is taken,
    // each block opened by "# sample tier=T seq=N taken_ns=T"; chunked, until the client goes.
    http.Get("/watch", [&](const httplib::Request& req, httplib::Response& res) {
      std::uint32_t mask = 0;
      const std::string want = req.has_param("tier") ? req.get_param_value("tier") : "";
      std::size_t at = 0;
      while (at <= want.size() && !want.empty()) {
        const std::size_t comma = std::min(want.find(',', at), want.size());
        const std::string name = want.substr(at, comma - at);
        const auto it = std::find(config::kTierNames.begin(), config::kTierNames.end(), name);
        if (it == config::kTierNames.end()) {
          res.status = 400;
          res.set_content(fmt::format("unknown tier '{}' (critical, high, standard, background, historical)\n",
                                      name.substr(0, 64)),
                          "text/plain");
          return;
        }
        mask |= 1u << static_cast<unsigned>(it - config::kTierNames.begin());
        at = comma + 1;
      }
      if (mask == 0) mask = (1u << config::kTiers) - 1;
      // A subscriber holds one of the server's threads: at most kMaxWatchers, so scrapes always
      // find one.
      if (watchers.fetch_add(1) >= kMaxWatchers) {
        watchers.fetch_sub(1);
        res.status = 503;
        res.set_content(fmt::format("{} subscribers already watch this sidecar\n", kMaxWatchers), "text/plain");
        return;
      }
      auto after = std::make_shared<std::uint64_t>(stream.last());
      auto quiet = std::make_shared<unsigned>(0);
      res.set_chunked_content_provider("text/plain; charset=utf-8", [&stream, mask, after, quiet](std::size_t,
                                                                                                   httplib::DataSink& sink) {
        std::uint64_t missed = 0;
        const auto events = stream.take(*after, mask, std::chrono::milliseconds(200), missed);
        if (stream.stopping()) {
          sink.done();
          return true;
        }
        // A line at least every second, so a client can tell a quiet tier from a dead sidecar.
        if (events.empty() && missed == 0 && ++*quiet >= 5) {
          *quiet = 0;
          static constexpr std::string_view kKeepalive = "# keepalive\n";
          return sink.write(kKeepalive.data(), kKeepalive.size()) && sink.is_writable();
        }
        if (!events.empty()) *quiet = 0;
        if (missed != 0) {
          const std::string note = fmt::format("# missed {} samples (this subscriber fell behind)\n", missed);
          if (!sink.write(note.data(), note.size())) return false;
        }
        for (const auto& e : events)
          if (!sink.write(e.text.data(), e.text.size())) return false;
        return sink.is_writable();
      }, [&watchers](bool) { watchers.fetch_sub(1); });
    });
    // /history?since=<unix seconds>&limit=<n>: roll-ups since then, oldest first (JSON lines).
    http.Get("/history", [&](const httplib::Request& req, httplib::Response& res) {
      if (!history.enabled()) {
        res.status = 404;
        res.set_content("no history: telemetry.history_dir is not set\n", "text/plain");
        return;
      }
      char* end = nullptr;
      const std::string since_s = req.has_param("since") ? req.get_param_value("since") : "0";
      const std::string limit_s = req.has_param("limit") ? req.get_param_value("limit") : "360";
      const double since = std::strtod(since_s.c_str(), &end);
      const bool since_ok = *end == '\0' && since >= 0;
      const unsigned long limit = std::strtoul(limit_s.c_str(), &end, 10);
      if (!since_ok || *end != '\0' || limit == 0 || limit > 100'000) {
        res.status = 400;
        res.set_content("since: unix seconds >= 0; limit: 1..100000\n", "text/plain");
        return;
      }
      res.set_content(history.read(static_cast<std::uint64_t>(since * 1e9), limit), "application/x-ndjson");
    });
    http.Get("/", [&](const httplib::Request&, httplib::Response& res) {
      res.set_content(fmt::format("nerve-telemetry for node {} ({}): see /metrics\n", self->id, self->name), "text/plain");
    });
    // SO_REUSEADDR only: httplib's default adds SO_REUSEPORT, with which a second sidecar on
    // the same address would bind and share the scrapes.
    http.set_socket_options([](socket_t sock) {
      int yes = 1;
      ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    });
    if (!http.bind_to_port(host, port)) {
      log(Level::kError, "cannot serve /metrics on {}: the address is in use or not this host's", listen);
      return 1;
    }
    http_thread = std::thread([&] { http.listen_after_bind(); });
    log(Level::kInfo, "serving /metrics on http://{}/metrics", listen);
  }
  queries.start();
  auto stop_http = [&] {
    queries.stop();
    stream.stop();
    if (http_thread.joinable()) {
      http.stop();
      http_thread.join();
    }
  };

  const std::uint64_t end_ns = duration_s > 0 ? now_ns() + static_cast<std::uint64_t>(duration_s * 1e9) : 0;
  auto done = [&] { return g_stop.load(std::memory_order_relaxed) || (end_ns != 0 && now_ns() >= end_ns); };
  int rc = 0;
  bool waiting_logged = false;
  while (!done()) {
    // Attach: the node may not be up yet, or may have restarted.
    std::unique_ptr<telemetry::Reader> region;
    try {
      region = std::make_unique<telemetry::Reader>(region_path);
    } catch (const telemetry::RegionError& e) {
      const std::string what = e.what();
      if (what.rfind("no stats region", 0) != 0) {  // another version, not a region: final
        log(Level::kError, "{}", what);
        rc = 1;
        break;
      }
      if (!waiting_logged) log(Level::kInfo, "waiting for node {}: {}", self->id, what);
      waiting_logged = true;
      sleep_until(now_ns() + 100'000'000);
      continue;
    }
    if (!region->node_running()) {
      if (!waiting_logged)
        log(Level::kInfo, "waiting for node {}: its region {} is not running yet (or any more)", self->id, region_path);
      waiting_logged = true;
      region.reset();
      sleep_until(now_ns() + 100'000'000);
      continue;
    }
    if (region->header().node_id != self->id) {
      log(Level::kError, "stats region {} belongs to node {} ({}), not node {}", region_path, region->header().node_id,
          region->header().node_name, self->id);
      rc = 1;
      break;
    }
    std::uint32_t holder = 0;
    if (!region->lock_sidecar(holder)) {
      log(Level::kError, "a sidecar already samples node {} (pid {}); one per node", self->id, holder);
      rc = 1;
      break;
    }
    ++attaches;
    waiting_logged = false;
    log(Level::kInfo, "attached to node {} ({}, pid {}) at {}", self->id, region->header().node_name,
        region->header().pid, region_path);
    sidecar::Collector collector(*region, cluster, *self);
    if (history.enabled()) history.prime(*region);
    for (std::size_t p = 0; p < wire::kPriorities; ++p)  // events before attach are not ours to time
      event_timing.seen[p] = region->lcore().last_deadline_miss_ns[p].get();
    unsigned silent = 0;  // samples in a row the datapath did not answer
    bool any_sampled = false;  // some tier's groups need the datapath's samples
    for (std::size_t k = 0; k < tiers.size(); ++k) any_sampled |= active(k) && tiers[k]->needs_sample;

    const std::uint64_t start = now_ns();
    for (auto& t : tiers) t->next_ns = start;
    telemetry::Sample sample{};
    std::array<std::string, sidecar::kGroups> text;
    std::uint64_t next_self_ns = 0;
    bool node_gone = false;
    while (!done() && !node_gone) {
      std::uint64_t due = UINT64_MAX;
      for (std::size_t k = 0; k < tiers.size(); ++k)
        if (active(k)) due = std::min(due, tiers[k]->next_ns);
      if (due == UINT64_MAX) due = now_ns() + 1'000'000'000;  // no groups: check on the node now and then
      if (spin_us * 1000u < due - std::min(due, now_ns())) sleep_until(due - spin_us * 1000u);
      while (now_ns() < due) {
#if defined(__x86_64__)
        __builtin_ia32_pause();
#endif
      }
      if (done()) break;
      // Every tier due now shares one sample.
      bool want_sample = false;
      for (std::size_t k = 0; k < tiers.size(); ++k)
        want_sample |= active(k) && tiers[k]->next_ns <= due && (tiers[k]->needs_sample || k == kHistorical);
      std::uint64_t taken = now_ns();
      std::uint64_t event_ns = 0;  // the newest deadline miss this sample is the first to show
      if (want_sample) {
        event_timing.look(region->lcore());
        if (region->fresh(sample, 5'000'000)) {
          taken = sample.taken_ns;
          silent = 0;
          event_ns = event_timing.take(taken);
        } else {
          ++timeouts;
          ++silent;
          if (!region->node_running()) {
            node_gone = true;
            break;
          }
        }
      } else if (!region->node_running()) {
        node_gone = true;
        break;
      }
      std::uint32_t rendered = 0;  // groups rendered this tick, a bit each
      bool roll = false;
      for (auto& t : tiers) {
        if (!active(static_cast<std::size_t>(&t - tiers.data())) || t->next_ns > due) continue;
        roll |= &t - tiers.data() == static_cast<std::ptrdiff_t>(kHistorical) && history.enabled();
        t->late_ns.record(taken > t->next_ns ? taken - t->next_ns : 0);
        ++t->ticks;
        // seq counts the tier's deadlines, sampled or skipped: a skipped tick shows as a gap.
        const std::uint64_t seq = t->ticks + t->skipped;
        // /watch subscribers get every sample from when they subscribe: with none, nothing to build.
        const bool streaming = watchers.load(std::memory_order_relaxed) > 0;
        std::string event =
            streaming ? fmt::format("# sample tier={} seq={} taken_ns={}\n", t->name, seq, taken) : std::string{};
        const auto k = static_cast<std::size_t>(&t - tiers.data());
        for (const auto g : t->groups) {
          const std::string& out = text[static_cast<std::size_t>(g)];
          collector.render(g, sample, text[static_cast<std::size_t>(g)]);
          rendered |= 1u << static_cast<unsigned>(g);
          if (streaming) event += out;
          if (pusher.wants(k)) {
            // The event rides with the first lanes group pushed; timed when it has left.
            const bool carries = g == sidecar::Group::kLanes && event_ns != 0;
            pusher.push(k, g, seq, taken, out, carries ? event_ns : 0);
            if (carries) event_ns = 0;
          }
        }
        if (streaming) stream.publish(k, std::move(event));
        t->next_ns += t->period_ns;
        const std::uint64_t now = now_ns();
        if (t->next_ns <= now) {  // a whole period behind: skip to the next one ahead
          const std::uint64_t behind = (now - t->next_ns) / t->period_ns + 1;
          t->skipped += behind;
          t->next_ns += behind * t->period_ns;
        }
      }
      std::array<std::string, sidecar::kGroups> rolled;
      // The sidecar's own figures (percentiles of every tier's lateness) ten times a second:
      // they are for scrapes, and building them each tick cost more than the samples.
      std::string self_text;
      if (const std::uint64_t now = now_ns(); now >= next_self_ns) {
        self_text = self_metrics(tiers, node_label, timeouts, attaches, stream.dropped(), pusher, queries, event_timing);
        next_self_ns = now + 100'000'000;
      }
      {
        std::lock_guard lk(expo.mu);
        for (std::size_t g = 0; g < sidecar::kGroups; ++g)
          if ((rendered >> g) & 1u) expo.group[g].swap(text[g]);
        if (!self_text.empty()) expo.self.swap(self_text);
        // Up once a sample came, and while the datapath answers; a datapath silent for three
        // samples in a row (stalled) is not up, and its figures are not served as if fresh.
        expo.up = silent < 3 && (sample.seq != 0 || !any_sampled);
        if (roll) rolled = expo.group;
      }
      if (roll) {  // file I/O outside the lock: a slow disk never holds up a scrape
        std::string err;
        const auto unix_ns = static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
                .count());
        if (!history.roll(unix_ns, rolled, *region, err)) log(Level::kWarn, "history: {}", err);
        // Batch updates: the roll-up, as kept, to the subscribers of the historical tier.
        if (pusher.wants(kHistorical) && !history.last_record().empty())
          pusher.push_rollup(unix_ns, app::query::history_lines(history.last_record(), ""));
      }
    }
    {
      std::lock_guard lk(expo.mu);
      expo.up = false;
      for (auto& g : expo.group) g.clear();
    }
    if (node_gone) log(Level::kWarn, "node {} stopped; waiting for it to start again", self->id);
  }
  stop_http();
  if (!report_path.empty()) {
    std::ofstream out(report_path);
    out << tier_report(tiers, timeouts, event_timing, pusher, started).dump(2) << "\n";
  }
  log(Level::kInfo, "stopped");
  return rc;
}
