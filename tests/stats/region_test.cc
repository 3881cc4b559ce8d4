// The stats region: identity, locks, refusals, and consistent samples taken while the writer
// publishes from another thread.
#include <catch2/catch.hpp>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "nerve/telemetry.hpp"

using namespace nerve;
using telemetry::Reader;
using telemetry::Region;
using telemetry::RegionError;

namespace {

struct TempDir {
  std::filesystem::path dir;
  TempDir() {
    char tmpl[] = "/tmp/nerve-region-test-XXXXXX";
    dir = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(dir); }
  std::string path(const char* name) const { return (dir / name).string(); }
};

Region::Identity identity() {
  return Region::Identity{7, "gamma", "test", {100'000, 500'000, 1'000'000, 2'000'000, 5'000'000}, {"0:memif", "1:af_xdp"}};
}

// Every word of the sample after seq and taken_ns is `v`: a torn copy would mix two values.
void fill(telemetry::Sample& s, std::uint64_t v) {
  auto* w = reinterpret_cast<std::uint64_t*>(&s);
  for (std::size_t i = 2; i < sizeof s / 8; ++i) w[i] = v;
}
bool uniform(const telemetry::Sample& s) {
  const auto* w = reinterpret_cast<const std::uint64_t*>(&s);
  for (std::size_t i = 3; i < sizeof s / 8; ++i)
    if (w[i] != w[2]) return false;
  return true;
}

}  // namespace

TEST_CASE("region: a reader sees the writer's identity, running lock and live counters") {
  TempDir t;
  const std::string p = t.path("n7.stats");
  {
    Region region(p, identity());
    region.set_running();
    region.lcore().rx_frames.add(42);
    region.lcore().latency_ns[2].record(1234);
    Reader r(p);
    CHECK(std::string(r.header().node_name) == "gamma");
    CHECK(std::string(r.header().cluster) == "test");
    CHECK(r.header().node_id == 7);
    CHECK(r.header().pid == static_cast<std::uint32_t>(::getpid()));
    CHECK(r.header().port_count == 2);
    CHECK(std::string(r.header().port_name[1]) == "1:af_xdp");
    CHECK(r.header().lane_budget_ns[0] == 100'000);
    CHECK(r.node_running());
    CHECK(r.lcore().rx_frames.get() == 42);
    CHECK(r.lcore().latency_ns[2].count() == 1);
    telemetry::Sample s{};
    CHECK_FALSE(r.latest(s));  // nothing published yet
  }
  CHECK_FALSE(std::filesystem::exists(p));  // the writer removes its region
}

TEST_CASE("region: a second writer for a held region is refused; a region left behind is replaced") {
  TempDir t;
  const std::string p = t.path("n7.stats");
  {
    Region first(p, identity());
    try {
      Region second(p, identity());
      FAIL("a second writer was let in");
    } catch (const RegionError& e) {
      CHECK(std::string(e.what()).find("held by a running node") != std::string::npos);
    }
  }
  // A file no writer holds (a crashed node's): the new node takes the path over.
  { std::ofstream(p) << "left behind"; }
  Region again(p, identity());
  Reader r(p);
  CHECK(r.header().node_id == 7);
}

TEST_CASE("region: writers starting for one region at the same instant: exactly one gets it") {
  TempDir t;
  const std::string p = t.path("n7.stats");
  for (int round = 0; round < 50; ++round) {
    { std::ofstream(p) << "left behind"; }  // a stale one to replace, the harder case
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::atomic<int> won{0}, refused{0}, other{0};
    std::atomic<bool> done{false};
    std::vector<std::thread> writers;
    for (int k = 0; k < 3; ++k)
      writers.emplace_back([&] {
        ready.fetch_add(1);
        while (!go.load()) {
        }
        try {
          Region r(p, identity());
          won.fetch_add(1);
          while (!done.load()) std::this_thread::yield();  // held while the others try
        } catch (const RegionError& e) {
          (std::string(e.what()).find("held by a running node") != std::string::npos ? refused : other).fetch_add(1);
        }
      });
    while (ready.load() < 3) std::this_thread::yield();
    go = true;
    while (won.load() + refused.load() + other.load() < 3) std::this_thread::yield();
    CHECK(won.load() == 1);
    CHECK(refused.load() == 2);
    CHECK(other.load() == 0);
    Reader r(p);  // the one in place is the winner's, live
    CHECK(r.header().node_id == 7);
    done = true;
    for (auto& w : writers) w.join();
  }
}

TEST_CASE("region: readers refuse what is not a region of their version") {
  TempDir t;
  const std::string p = t.path("n7.stats");
  SECTION("missing") {
    try {
      Reader r(p);
      FAIL("attached to nothing");
    } catch (const RegionError& e) {
      CHECK(std::string(e.what()).find("no stats region at") != std::string::npos);
    }
  }
  SECTION("not a region") {
    {
      std::ofstream f(p);
      f << std::string(8192, 'x');
    }
    CHECK_THROWS_WITH(Reader(p), Catch::Contains("is not a nerve stats region"));
  }
  SECTION("another version") {
    Region region(p, identity());
    region.header().version = telemetry::kVersion + 1;
    CHECK_THROWS_WITH(Reader(p), Catch::Contains("has layout version " + std::to_string(telemetry::kVersion + 1)) &&
                                     Catch::Contains("reads version " + std::to_string(telemetry::kVersion)));
  }
  SECTION("another size") {
    Region region(p, identity());
    region.header().lcore_size += 64;
    CHECK_THROWS_WITH(Reader(p), Catch::Contains("a layout of other sizes"));
  }
}

TEST_CASE("region: one sidecar per node; a stopped node is seen as stopped") {
  TempDir t;
  const std::string p = t.path("n7.stats");
  auto region = std::make_unique<Region>(p, identity());
  region->set_running();
  Reader a(p), b(p);
  std::uint32_t holder = 0;
  CHECK(a.lock_sidecar(holder));
  CHECK_FALSE(b.lock_sidecar(holder));
  CHECK(holder == static_cast<std::uint32_t>(::getpid()));
  CHECK(b.node_running());
  region.reset();  // the node stops: its lock goes, its state says so
  CHECK_FALSE(b.node_running());
}

TEST_CASE("region: samples answer the doorbell and are never torn, while the writer publishes") {
  TempDir t;
  const std::string p = t.path("n7.stats");
  Region region(p, identity());
  region.set_running();
  Reader r(p);

  telemetry::Sample s{};
  CHECK_FALSE(r.fresh(s, 2'000'000));  // no datapath answers: false after the wait, not a hang

  // The "datapath": answers every doorbell, and between doorbells publishes unasked as fast as
  // it can (a worst case no real node produces), each sample uniform in a new value.
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    std::uint64_t v = 1;
    telemetry::Sample w{};
    while (!stop.load(std::memory_order_relaxed)) {
      fill(w, v++);
      region.publish(w);
    }
  });
  std::uint64_t answered = 0, last_value = 0;
  for (int i = 0; i < 20'000; ++i) {
    telemetry::Sample got{};
    const std::uint64_t before = r.header().request.load();
    if (!r.fresh(got, 5'000'000'000)) continue;  // (what a timed-out wait leaves in got is not a sample)
    ++answered;
    REQUIRE(uniform(got));
    CHECK(got.seq > before);              // answers a doorbell rung after it was asked
    CHECK(got.lane[0].sent >= last_value);  // newer samples only
    last_value = got.lane[0].sent;
  }
  stop = true;
  writer.join();
  CHECK(answered == 20'000);
  CHECK(r.latest(s));
  CHECK(uniform(s));
}

TEST_CASE("region: a writer that publishes only when rung answers every reader's doorbell") {
  TempDir t;
  const std::string p = t.path("n7.stats");
  Region region(p, identity());
  region.set_running();
  Reader a(p), b(p);  // two readers ringing at once
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> published{0};
  std::thread writer([&] {  // the datapath's protocol: a look at the doorbell per "poll"
    std::uint64_t v = 1;
    telemetry::Sample w{};
    while (!stop.load(std::memory_order_relaxed)) {
      if (!region.requested()) continue;
      fill(w, v++);
      region.publish(w);
      published.fetch_add(1);
    }
  });
  auto ask = [](Reader& r, int n) {
    int ok = 0;
    for (int i = 0; i < n; ++i) {
      telemetry::Sample got{};
      const std::uint64_t before = r.header().request.load();
      if (r.fresh(got, 1'000'000'000) && uniform(got) && got.seq > before) ++ok;
    }
    return ok;
  };
  int ok_b = 0;
  std::thread other([&] { ok_b = ask(b, 2'000); });
  const int ok_a = ask(a, 2'000);
  other.join();
  stop = true;
  writer.join();
  CHECK(ok_a == 2'000);
  CHECK(ok_b == 2'000);
  CHECK(published.load() <= 4'000);  // a sample per doorbell at most: none unasked
  CHECK(published.load() > 0);
}

TEST_CASE("region: the ports' xstats read back whole, never torn, at most kXstats") {
  TempDir t;
  const std::string p = t.path("n7.stats");
  Region region(p, identity());
  Reader r(p);
  std::vector<telemetry::Xstat> got;
  REQUIRE(r.xstats(got));
  CHECK(got.empty());
  // Generation g: every entry's value is g, and its name says so.
  auto generation = [](std::uint64_t g, std::size_t n) {
    std::vector<telemetry::Xstat> v(n);
    for (std::size_t i = 0; i < n; ++i) {
      v[i].value = g;
      v[i].port = static_cast<std::uint32_t>(i % 2);
      std::snprintf(v[i].name, sizeof v[i].name, "stat_%zu_of_%llu", i, static_cast<unsigned long long>(g));
    }
    return v;
  };
  region.write_xstats(generation(1, 3));
  REQUIRE(r.xstats(got));
  REQUIRE(got.size() == 3);
  CHECK(std::string(got[2].name) == "stat_2_of_1");
  CHECK(got[1].port == 1);
  region.write_xstats(generation(2, telemetry::kXstats + 10));
  REQUIRE(r.xstats(got));
  CHECK(got.size() == telemetry::kXstats);

  // A writer rewriting as fast as it can: every consistent read is one generation.
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (std::uint64_t g = 3; !stop.load(std::memory_order_relaxed); ++g) region.write_xstats(generation(g, 40));
  });
  // Reads until 2,000 of them came back whole (a read gives up after 16 looks at a copy being
  // written; a writer descheduled mid-write on a busy machine fails every read meanwhile), with
  // a deadline.
  unsigned whole = 0, reads = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (whole < 2000 && std::chrono::steady_clock::now() < deadline) {
    ++reads;
    if (!r.xstats(got)) continue;
    ++whole;
    bool same = true;
    for (const auto& x : got) same &= x.value == got.front().value;
    REQUIRE(same);
  }
  stop.store(true);
  writer.join();
  INFO(reads << " reads");
  CHECK(whole == 2000);
}
