// The sidecar's metric groups: each renders its figures as Prometheus text (exposition format
// 0.0.4), from a datapath sample, the live lane histograms, or the host's /proc and statvfs.
#pragma once

#include <time.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "nerve/config.hpp"
#include "nerve/telemetry.hpp"

namespace nerve::sidecar {

enum class Group : std::uint8_t { kLanes, kErrors, kLinks, kPorts, kDatapath, kReliable, kCpu, kMemory, kStorage };
inline constexpr std::size_t kGroups = config::kMetricGroups.size();
// Groups drawn from a datapath sample (the doorbell); the others read only the host.
constexpr bool needs_sample(Group g) noexcept { return g <= Group::kReliable || g == Group::kMemory; }
Group group_of(std::string_view name);  // a name of config::kMetricGroups

// Latency percentiles (ns) of what a live histogram recorded since `prev` (its buckets at the
// last call, updated here).
struct Interval {
  std::uint64_t count = 0, p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0;
};
Interval interval_since(const stats::Histogram& h, std::vector<std::uint64_t>& prev);

// What every group renders from; the Collector keeps what one group needs between samples
// (histogram buckets of the last interval, the previous busy/idle cycles).
class Collector {
 public:
  Collector(const telemetry::Reader& region, const config::Cluster& cluster, const config::Node& node);

  // Renders group `g` from `s` (the sample of this tick) into `out` (replaced).
  void render(Group g, const telemetry::Sample& s, std::string& out);

  // Interval latency percentiles of lane l since the previous render of kLanes (ns).
  const std::array<Interval, wire::kPriorities>& intervals() const noexcept { return interval_; }

 private:
  void lanes(const telemetry::Sample& s, std::string& out);
  void errors(const telemetry::Sample& s, std::string& out);
  void links(const telemetry::Sample& s, std::string& out);
  void ports(const telemetry::Sample& s, std::string& out);
  void datapath(const telemetry::Sample& s, std::string& out);
  void reliable(const telemetry::Sample& s, std::string& out);
  void cpu(std::string& out);
  void memory(const telemetry::Sample& s, std::string& out);
  void storage(std::string& out);

  const telemetry::Reader& region_;
  const config::Cluster& cluster_;
  const config::Node& node_;
  std::string node_label_;  // node="name"
  std::array<std::vector<std::uint64_t>, wire::kPriorities> prev_buckets_;
  std::array<Interval, wire::kPriorities> interval_{};
  std::uint64_t prev_busy_ = 0, prev_idle_ = 0;
  std::vector<telemetry::Xstat> xstats_;  // the newest consistent read
};

// The series lines of Prometheus text ("name{labels} value"), without comments and with the
// label `node_label` (e.g. node="alpha") taken out: for text that names its node elsewhere.
std::vector<std::string> series_lines(const std::string& text, const std::string& node_label);

// Prometheus text escaping of a label value.
std::string label_value(std::string_view v);

// Clock `id` (CLOCK_MONOTONIC, CLOCK_REALTIME) in nanoseconds.
inline std::uint64_t clock_ns(clockid_t id) noexcept {
  timespec ts{};
  ::clock_gettime(id, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

}  // namespace nerve::sidecar
