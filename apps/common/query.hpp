// Telemetry queries: what `nerve-ctl query` asks a node's sidecar, and the text it gets back,
// whether over HTTP (/metrics, /history) or over the fabric (a command to the node, answered
// by its sidecar through nerved; docs/operations.md "Queries over the fabric").
//
// Over the fabric a query and its answer each fit one frame, so an answer comes in pages:
//
//   request:  query current OFFSET [PREFIX]
//             query history SINCE_NS LIMIT OFFSET [PREFIX]
//   answer:   ok TOTAL OFFSET COUNT\n  then COUNT lines
//             error WHY
//
// The asker asks again with OFFSET + COUNT until it has TOTAL lines; the sidecar answers the
// later pages of one query from the result it computed for the first (one consistent view).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nerve::app::query {

struct Request {
  bool history = false;
  std::uint64_t since_ns = 0;  // history: roll-ups at or after this (unix ns)
  unsigned limit = 360;        // history: at most this many roll-ups
  std::size_t offset = 0;      // the first line wanted
  std::string prefix;          // only series whose name starts with this
};

std::string format(const Request& r);
// The request in a command's text, or nullopt with `err` saying what is wrong.
std::optional<Request> parse(std::string_view text, std::string& err);

struct Page {
  std::size_t total = 0, offset = 0;
  std::vector<std::string> lines;
};
// lines[offset..] that fit in `max_bytes` with the "ok" line (at least one line, cut to fit).
std::string page(const std::vector<std::string>& lines, std::size_t offset, std::size_t max_bytes);
// An answer: a page, or nullopt with `err` holding the sidecar's error or what is malformed.
std::optional<Page> parse_page(std::string_view text, std::string& err);

// The series lines of Prometheus text ("name{labels} value") whose name starts with `prefix`.
std::vector<std::string> current_lines(std::string_view metrics, std::string_view prefix);
// History roll-ups (JSON lines, see apps/nerve-telemetry/history.hpp) as text lines, one series
// each: the window's length, its delivery latency per lane, and every series kept:
//   2026-11-30T10:00:00Z nerve_window_seconds 10.0
//   2026-11-30T10:00:00Z nerve_window_latency_p99_ns{lane="P0"} 9100
//   2026-11-30T10:00:00Z nerve_lane_delivered_total{lane="P0"} 1234
std::vector<std::string> history_lines(std::string_view jsonl, std::string_view prefix);

}  // namespace nerve::app::query
