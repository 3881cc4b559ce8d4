// Batch updates: roll-ups of a node's figures kept on disk with bounded retention, read back
// in batches (GET /history, nerve-ctl query --history).
//
// At each historical tick (every 10 s) the sidecar appends one JSON line to an hourly file
// <history_dir>/<node>-YYYYMMDD-HH.jsonl (UTC):
//
//   {"t": <unix ns>, "node": "alpha", "window_s": 10.0,
//    "latency": [{"lane": 0, "count": .., "p50_ns": .., "p99_ns": .., "max_ns": ..}, ...],
//    "metrics": {"nerve_lane_delivered_total{lane=\"P0\"}": 1234, ...}}
//
// "metrics" holds the newest value of every series the sidecar serves (node label dropped);
// "latency" the lanes' delivery latency over the window. Files older than the retention, and
// the oldest files while the total exceeds the size bound, are removed after each write.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "collect.hpp"
#include "nerve/config.hpp"

namespace nerve::sidecar {

class History {
 public:
  History(const config::Telemetry& t, const config::Node& self);
  bool enabled() const noexcept { return !dir_.empty(); }
  const std::string& dir() const noexcept { return dir_; }

  // Appends a roll-up: `texts` are the groups' newest Prometheus text, `region` gives the lanes'
  // histograms. False (and an error in `err`) if the file cannot be written.
  bool roll(std::uint64_t unix_ns, const std::array<std::string, kGroups>& texts, const telemetry::Reader& region,
            std::string& err);
  // The newest roll-up, as the JSON line written (empty before the first).
  const std::string& last_record() const noexcept { return last_record_; }
  // At attach: the lanes' histograms now are the next window's baseline (a restarted node's
  // histograms start again from zero).
  void prime(const telemetry::Reader& region);
  // Records with t >= since_ns, oldest first, at most `limit` and about kMaxRead bytes, as JSON lines.
  static constexpr std::size_t kMaxRead = 16u << 20;
  std::string read(std::uint64_t since_ns, std::size_t limit) const;

  std::uint64_t records() const noexcept { return records_; }
  std::uint64_t files_removed() const noexcept { return removed_; }

 private:
  std::string file_for(std::uint64_t unix_ns) const;
  void enforce_bounds(const std::string& current);
  std::vector<std::string> files() const;  // ours, oldest first

  std::string dir_, prefix_, node_label_, node_name_;
  std::uint64_t retention_ns_, max_bytes_;
  std::uint64_t last_ns_ = 0;
  std::array<std::vector<std::uint64_t>, wire::kPriorities> prev_;
  std::uint64_t records_ = 0, removed_ = 0;
  std::string last_record_;
};

}  // namespace nerve::sidecar
