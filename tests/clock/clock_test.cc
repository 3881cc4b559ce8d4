// The clock: the TSC converted to wall time, and a manual clock that tests step.
#include <catch2/catch.hpp>

#include <time.h>

#include <thread>
#include <vector>

#include "nerve/clock.hpp"

using nerve::Clock;

namespace {
std::uint64_t realtime_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}
std::uint64_t diff(std::uint64_t a, std::uint64_t b) { return a > b ? a - b : b - a; }
}  // namespace

TEST_CASE("the TSC clock reads wall time", "[clock]") {
  const Clock& c = Clock::tsc();
  CHECK_FALSE(c.is_manual());
  CHECK(c.cycles_per_ns() > 0.1);   // any real TSC runs between 100 MHz
  CHECK(c.cycles_per_ns() < 10.0);  // and 10 GHz
  // Bracketed by two realtime readings, with room for a preemption between them on a busy
  // machine; what matters is that it is realtime, not some other epoch.
  for (int i = 0; i < 100; ++i) {
    const std::uint64_t before = realtime_ns();
    const std::uint64_t now = c.now_ns();
    const std::uint64_t after = realtime_ns();
    CHECK(now + 1'000'000 >= before);
    CHECK(now <= after + 1'000'000);
  }
}

TEST_CASE("the TSC clock keeps time across re-anchorings", "[clock]") {
  const Clock& c = Clock::tsc();
  // Past several sync intervals, the clock still agrees with realtime to within a
  // millisecond (the bound a preempted test thread needs, far above the clock's own error).
  const std::uint64_t end = realtime_ns() + 3 * Clock::kSyncIntervalNs;
  while (realtime_ns() < end) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK(diff(c.now_ns(), realtime_ns()) < 1'000'000);
  c.sync();
  CHECK(diff(c.now_ns(), realtime_ns()) < 1'000'000);
}

TEST_CASE("intervals convert between cycles and nanoseconds", "[clock]") {
  const Clock& c = Clock::tsc();
  const std::uint64_t cycles = c.to_cycles(1'000'000);
  CHECK(diff(c.to_ns(cycles), 1'000'000) < 1000);
  const std::uint64_t c0 = Clock::cycles();
  const std::uint64_t t0 = realtime_ns();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const std::uint64_t c1 = Clock::cycles();
  const std::uint64_t t1 = realtime_ns();
  // The cycles measured over 50 ms convert to the realtime interval, to 1 % (scheduler noise
  // between the paired readings on a loaded machine is the only error of note).
  CHECK(diff(c.to_ns(c1 - c0), t1 - t0) < (t1 - t0) / 100);
}

TEST_CASE("concurrent readers across re-anchorings see consistent time", "[clock]") {
  const Clock& c = Clock::tsc();
  std::atomic<bool> bad{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t)
    threads.emplace_back([&] {
      std::uint64_t last = 0;
      for (int i = 0; i < 200000; ++i) {
        if (i % 1000 == 0) c.sync();
        const std::uint64_t now = c.now_ns();
        // Each re-anchoring may step the clock by the error of one (tsc, realtime) pair; never
        // by more than a microsecond.
        if (last != 0 && now + 1000 < last) bad = true;
        last = now;
      }
    });
  for (auto& th : threads) th.join();
  CHECK_FALSE(bad.load());
}

TEST_CASE("a manual clock moves only when told", "[clock]") {
  auto c = Clock::manual(5'000);
  CHECK(c->is_manual());
  CHECK(c->now_ns() == 5'000);
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  CHECK(c->now_ns() == 5'000);
  c->advance(std::chrono::microseconds(3));
  CHECK(c->now_ns() == 8'000);
  c->set(1'000'000);
  CHECK(c->now_ns() == 1'000'000);
  c->sync();  // no effect on a manual clock
  CHECK(c->now_ns() == 1'000'000);
  Clock::tsc().advance(1'000'000'000);  // and set/advance do nothing to the TSC clock
  CHECK(diff(Clock::tsc().now_ns(), realtime_ns()) < 1'000'000);
}
