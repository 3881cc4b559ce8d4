#include "history.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <time.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

namespace nerve::sidecar {

namespace fs = std::filesystem;
using json = nlohmann::json;

History::History(const config::Telemetry& t, const config::Node& self)
    : dir_(t.history_dir),
      prefix_(self.name + "-"),
      node_label_(fmt::format("node=\"{}\"", label_value(self.name))),
      node_name_(self.name),
      retention_ns_(std::uint64_t{t.history_retention_s} * 1'000'000'000u),
      max_bytes_(std::uint64_t{t.history_max_mb} << 20) {}

std::string History::file_for(std::uint64_t unix_ns) const {
  const time_t secs = static_cast<time_t>(unix_ns / 1'000'000'000u);
  tm utc{};
  ::gmtime_r(&secs, &utc);
  return fmt::format("{}/{}{:04}{:02}{:02}-{:02}.jsonl", dir_, prefix_, utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday,
                     utc.tm_hour);
}

std::vector<std::string> History::files() const {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    const std::string name = e.path().filename().string();
    // <node>-YYYYMMDD-HH.jsonl: the name sorts by time.
    if (name.size() == prefix_.size() + 17 && name.rfind(prefix_, 0) == 0 && name.ends_with(".jsonl"))
      out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

void History::enforce_bounds(const std::string& current) {
  std::error_code ec;
  auto all = files();
  // By age: a file last written before the retention began.
  for (const auto& f : all) {
    if (f == current) continue;
    const auto t = fs::last_write_time(f, ec);
    if (ec) continue;
    const auto age = fs::file_time_type::clock::now() - t;
    if (static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(age).count()) > retention_ns_ &&
        fs::remove(f, ec))
      ++removed_;
  }
  // By size: the oldest first, never the file being written.
  all = files();
  std::uint64_t total = 0;
  for (const auto& f : all) total += fs::file_size(f, ec);
  for (const auto& f : all) {
    if (total <= max_bytes_ || f == current) break;
    const std::uint64_t sz = fs::file_size(f, ec);
    if (fs::remove(f, ec)) {
      total -= sz;
      ++removed_;
    }
  }
}

void History::prime(const telemetry::Reader& region) {
  for (std::size_t l = 0; l < wire::kPriorities; ++l) interval_since(region.lcore().latency_ns[l], prev_[l]);
  last_ns_ = 0;
}

bool History::roll(std::uint64_t unix_ns, const std::array<std::string, kGroups>& texts,
                   const telemetry::Reader& region, std::string& err) {
  json rec;
  rec["t"] = unix_ns;
  rec["node"] = node_name_;
  rec["window_s"] = last_ns_ ? static_cast<double>(unix_ns - last_ns_) / 1e9 : 0.0;
  json lat = json::array();
  for (std::size_t l = 0; l < wire::kPriorities; ++l) {
    const Interval iv = interval_since(region.lcore().latency_ns[l], prev_[l]);
    lat.push_back({{"lane", l}, {"count", iv.count}, {"p50_ns", iv.p50}, {"p99_ns", iv.p99}, {"max_ns", iv.max}});
  }
  rec["latency"] = lat;
  json metrics = json::object();
  for (const auto& text : texts)
    for (const auto& l : series_lines(text, node_label_)) {
      const auto sp = l.rfind(' ');
      if (sp != std::string::npos) metrics[l.substr(0, sp)] = std::strtod(l.c_str() + sp + 1, nullptr);
    }
  rec["metrics"] = std::move(metrics);
  last_ns_ = unix_ns;
  const std::string path = file_for(unix_ns);
  last_record_ = rec.dump();
  std::ofstream out(path, std::ios::app);
  out << last_record_ << '\n';
  out.flush();
  if (!out) {
    err = fmt::format("cannot write {}", path);
    return false;
  }
  ++records_;
  enforce_bounds(path);
  return true;
}

std::string History::read(std::uint64_t since_ns, std::size_t limit) const {
  std::string out;
  std::size_t n = 0;
  const std::string first = file_for(since_ns);
  for (const auto& f : files()) {
    if (f < first) continue;  // an hour before the one asked for
    std::ifstream in(f);
    std::string line;
    while (n < limit && out.size() < kMaxRead && std::getline(in, line)) {
      const json j = json::parse(line, nullptr, false);
      if (j.is_discarded() || j.value("t", std::uint64_t{0}) < since_ns) continue;
      out += line;
      out += '\n';
      ++n;
    }
    if (n >= limit || out.size() >= kMaxRead) break;
  }
  return out;
}

}  // namespace nerve::sidecar
