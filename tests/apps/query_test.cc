// The telemetry query protocol (apps/common/query.hpp): requests round-trip, pages cover every
// line exactly once within the byte bound, and malformed requests or answers are refused.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "common/query.hpp"

using namespace nerve::app::query;

TEST_CASE("query requests round-trip through their text") {
  Request h;
  h.history = true;
  h.since_ns = 1'700'000'000'000'000'000ull;
  h.limit = 42;
  h.offset = 17;
  h.prefix = "nerve_lane_delivered";
  std::string err;
  const auto back = parse(format(h), err);
  REQUIRE(back);
  CHECK(back->history);
  CHECK(back->since_ns == h.since_ns);
  CHECK(back->limit == 42);
  CHECK(back->offset == 17);
  CHECK(back->prefix == h.prefix);

  const auto cur = parse("query current 0", err);
  REQUIRE(cur);
  CHECK(!cur->history);
  CHECK(cur->prefix.empty());
}

TEST_CASE("malformed query requests are refused with the expected form") {
  std::string err;
  for (const char* bad : {"", "query", "query now 0", "query current", "query current x", "query current 0 a b",
                          "query history 1 0 0", "query history 1 100001 0", "query history -1 5 0", "ping"}) {
    INFO(bad);
    err.clear();
    CHECK(!parse(bad, err));
    CHECK(err.find("query current OFFSET") != std::string::npos);
  }
}

TEST_CASE("pages cover every line once, each within the byte bound") {
  std::vector<std::string> lines;
  for (int i = 0; i < 500; ++i) lines.push_back("nerve_series_" + std::to_string(i) + "{lane=\"P1\"} " + std::to_string(i * 7));
  for (const std::size_t bound : {64u, 200u, 1400u, 9000u}) {
    std::vector<std::string> got;
    std::string err;
    while (true) {
      const std::string text = page(lines, got.size(), bound);
      CHECK(text.size() <= bound);
      const auto p = parse_page(text, err);
      REQUIRE(p);
      CHECK(p->total == lines.size());
      CHECK(p->offset == got.size());
      REQUIRE(!p->lines.empty());
      got.insert(got.end(), p->lines.begin(), p->lines.end());
      if (got.size() >= p->total) break;
    }
    CHECK(got == lines);
  }
}

TEST_CASE("a line longer than a page is cut, and paging still advances") {
  const std::vector<std::string> lines = {std::string(500, 'x'), "short 1"};
  std::string err;
  const auto first = parse_page(page(lines, 0, 100), err);
  REQUIRE(first);
  REQUIRE(first->lines.size() == 1);
  CHECK(first->lines[0].size() < 100);
  const auto second = parse_page(page(lines, 1, 100), err);
  REQUIRE(second);
  CHECK(second->lines == std::vector<std::string>{"short 1"});
  const auto past = parse_page(page(lines, 9, 100), err);
  REQUIRE(past);
  CHECK(past->lines.empty());
}

TEST_CASE("answers that are errors or malformed are refused") {
  std::string err;
  CHECK(!parse_page("error no history on this node", err));
  CHECK(err == "no history on this node");
  for (const char* bad : {"", "ok", "ok 1 0 1", "ok 1 0 2\na\nb\n", "ok 1 1 1\na\n", "ok x 0 0\n", "pong"}) {
    INFO(bad);
    CHECK(!parse_page(bad, err));
  }
}

TEST_CASE("current lines: series only, filtered by name prefix") {
  const std::string text =
      "# HELP nerve_up up\n# TYPE nerve_up gauge\nnerve_up{node=\"a\"} 1\n"
      "nerve_lane_delivered_total{node=\"a\",lane=\"P0\"} 5\n\nnerve_lane_shed_total{node=\"a\",lane=\"P0\"} 0\n";
  CHECK(current_lines(text, "").size() == 3);
  CHECK(current_lines(text, "nerve_lane_d") == std::vector<std::string>{"nerve_lane_delivered_total{node=\"a\",lane=\"P0\"} 5"});
}

TEST_CASE("history lines: one series per line, latency and window included, partial lines skipped") {
  const std::string jsonl =
      R"({"t": 1764496800000000000, "node": "a", "window_s": 10.0, "latency": [{"lane": 1, "count": 3, "p50_ns": 100, "p99_ns": 200, "max_ns": 300}], "metrics": {"nerve_lane_delivered_total{lane=\"P1\"}": 3}})"
      "\n{\"t\": 17644968";
  const auto all = history_lines(jsonl, "");
  REQUIRE(all.size() == 6);
  CHECK(all[0] == "2025-11-30T10:00:00Z nerve_window_seconds 10.0");
  CHECK(all[2] == "2025-11-30T10:00:00Z nerve_window_latency_p50_ns{lane=\"P1\"} 100");
  CHECK(all[5] == "2025-11-30T10:00:00Z nerve_lane_delivered_total{lane=\"P1\"} 3");
  CHECK(history_lines(jsonl, "nerve_window_latency_max") ==
        std::vector<std::string>{"2025-11-30T10:00:00Z nerve_window_latency_max_ns{lane=\"P1\"} 300"});
}
