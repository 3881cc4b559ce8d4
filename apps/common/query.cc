#include "query.hpp"

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <charconv>
#include <ctime>

namespace nerve::app::query {
namespace {

// The next space-separated word of `s` (advanced past it).
std::string_view word(std::string_view& s) {
  const auto b = s.find_first_not_of(' ');
  if (b == std::string_view::npos) {
    s = {};
    return {};
  }
  s.remove_prefix(b);
  const auto e = std::min(s.find(' '), s.size());
  const auto w = s.substr(0, e);
  s.remove_prefix(e);
  return w;
}

// Calls f(line) for each '\n'-separated line of `text` (a last line without one included).
template <typename F>
void each_line(std::string_view text, F&& f) {
  while (!text.empty()) {
    const auto e = std::min(text.find('\n'), text.size());
    f(text.substr(0, e));
    text.remove_prefix(std::min(e + 1, text.size()));
  }
}

template <typename T>
bool number(std::string_view w, T& out) {
  const auto r = std::from_chars(w.data(), w.data() + w.size(), out);
  return !w.empty() && r.ec == std::errc() && r.ptr == w.data() + w.size();
}

}  // namespace

std::string format(const Request& r) {
  std::string out = r.history ? fmt::format("query history {} {} {}", r.since_ns, r.limit, r.offset)
                              : fmt::format("query current {}", r.offset);
  if (!r.prefix.empty()) out += " " + r.prefix;
  return out;
}

std::optional<Request> parse(std::string_view text, std::string& err) {
  static constexpr std::string_view kUsage =
      "expected 'query current OFFSET [PREFIX]' or 'query history SINCE_NS LIMIT OFFSET [PREFIX]'";
  Request r;
  if (word(text) != "query") {
    err = std::string(kUsage);
    return std::nullopt;
  }
  const auto what = word(text);
  r.history = what == "history";
  bool ok = r.history || what == "current";
  if (ok && r.history) ok = number(word(text), r.since_ns) && number(word(text), r.limit) && r.limit >= 1 && r.limit <= 100'000;
  if (ok) ok = number(word(text), r.offset);
  r.prefix = std::string(word(text));
  if (!ok || !word(text).empty() || r.prefix.size() > 200) {
    err = std::string(kUsage);
    return std::nullopt;
  }
  return r;
}

std::string page(const std::vector<std::string>& lines, std::size_t offset, std::size_t max_bytes) {
  const std::size_t first = std::min(offset, lines.size());
  // The head's length with the widest count it could carry.
  const std::size_t head = fmt::formatted_size("ok {} {} {}\n", lines.size(), first, lines.size());
  std::size_t used = head, n = 0;
  std::string body;
  for (std::size_t i = first; i < lines.size(); ++i) {
    const std::size_t need = lines[i].size() + 1;
    if (used + need > max_bytes) {
      if (n == 0 && max_bytes > used + 1) {  // one line longer than a page: cut to fit
        body.append(lines[i], 0, max_bytes - used - 1);
        body += '\n';
        ++n;
      }
      break;
    }
    body += lines[i];
    body += '\n';
    used += need;
    ++n;
  }
  return fmt::format("ok {} {} {}\n", lines.size(), first, n) + body;
}

std::optional<Page> parse_page(std::string_view text, std::string& err) {
  if (text.substr(0, 6) == "error ") {
    err = std::string(text.substr(6));
    return std::nullopt;
  }
  const auto nl = text.find('\n');
  std::string_view head = text.substr(0, nl);
  Page p;
  std::size_t count = 0;
  if (word(head) != "ok" || !number(word(head), p.total) || !number(word(head), p.offset) ||
      !number(word(head), count) || !head.empty() || nl == std::string_view::npos) {
    err = fmt::format("malformed answer: '{}'", text.substr(0, 80));
    return std::nullopt;
  }
  each_line(text.substr(nl + 1), [&](std::string_view l) { p.lines.emplace_back(l); });
  if (p.lines.size() != count || p.offset + count > p.total) {
    err = fmt::format("malformed answer: {} lines, the head says {} of {} from {}", p.lines.size(), count, p.total,
                      p.offset);
    return std::nullopt;
  }
  return p;
}

std::vector<std::string> current_lines(std::string_view metrics, std::string_view prefix) {
  std::vector<std::string> out;
  each_line(metrics, [&](std::string_view line) {
    if (!line.empty() && line[0] != '#' && line.substr(0, prefix.size()) == prefix) out.emplace_back(line);
  });
  return out;
}

std::vector<std::string> history_lines(std::string_view jsonl, std::string_view prefix) {
  std::vector<std::string> out;
  auto wanted = [&](std::string_view series) { return series.substr(0, prefix.size()) == prefix; };
  each_line(jsonl, [&](std::string_view line) {
    const auto rec = nlohmann::json::parse(line, nullptr, false);
    if (!rec.is_object() || !rec.contains("t") || !rec["t"].is_number_unsigned()) return;  // a line being written
    const std::string when =
        fmt::format("{:%Y-%m-%dT%H:%M:%SZ}", fmt::gmtime(static_cast<std::time_t>(rec["t"].get<std::uint64_t>() / 1'000'000'000u)));
    if (wanted("nerve_window_seconds") && rec.contains("window_s"))
      out.push_back(fmt::format("{} nerve_window_seconds {}", when, rec["window_s"].dump()));
    if (rec.contains("latency") && rec["latency"].is_array())
      for (const auto& l : rec["latency"]) {
        if (!l.is_object()) continue;
        const int lane = l.value("lane", 0);
        for (const char* f : {"count", "p50_ns", "p99_ns", "max_ns"}) {
          const std::string series = fmt::format("nerve_window_latency_{}{{lane=\"P{}\"}}", f, lane);
          if (wanted(series)) out.push_back(fmt::format("{} {} {}", when, series, l.value(f, std::uint64_t{0})));
        }
      }
    if (rec.contains("metrics") && rec["metrics"].is_object())
      for (const auto& [k, v] : rec["metrics"].items())
        if (wanted(k)) out.push_back(fmt::format("{} {} {}", when, k, v.dump()));
  });
  return out;
}

}  // namespace nerve::app::query
