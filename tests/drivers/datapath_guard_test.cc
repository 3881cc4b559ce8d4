// The datapath guard: while paused, no section is inside a burst, and none enters one; after
// resume, they go on. Checked with a thread that counts its bursts.
#include <catch2/catch.hpp>

#include <atomic>
#include <thread>

#include "datapath_guard.hpp"

using nerve::drivers::DatapathGuard;

TEST_CASE("a paused datapath is outside its bursts until resumed", "[drivers][guard]") {
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> bursts{0};
  std::atomic<int> inside{0};
  std::atomic<bool> overlap{false};
  std::atomic<bool> paused{false};
  std::thread datapath([&] {
    DatapathGuard::Section s;
    while (!stop.load(std::memory_order_relaxed)) {
      s.enter();
      inside.store(1, std::memory_order_relaxed);
      if (paused.load(std::memory_order_relaxed)) overlap = true;  // a burst while paused
      inside.store(0, std::memory_order_relaxed);
      s.exit();
      bursts.fetch_add(1, std::memory_order_relaxed);
    }
  });
  while (bursts.load() < 1000) std::this_thread::yield();
  const std::uint64_t pauses_before = DatapathGuard::pauses();
  for (int round = 0; round < 200; ++round) {
    DatapathGuard::pause_all();
    paused = true;
    const std::uint64_t at = bursts.load();
    CHECK(inside.load() == 0);
    for (int k = 0; k < 50; ++k) std::this_thread::yield();
    CHECK(bursts.load() <= at + 1);  // at most the one that was finishing its count
    paused = false;
    DatapathGuard::resume_all();
    const std::uint64_t after = bursts.load();
    while (bursts.load() < after + 10) std::this_thread::yield();
  }
  stop = true;
  datapath.join();
  CHECK_FALSE(overlap.load());
  CHECK(DatapathGuard::pauses() == pauses_before + 200);
}
