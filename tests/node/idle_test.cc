// The idle policy: a backing-off node yields its core to a thread that waits for it, and a
// yield that let one run counts as a sleep (the next poll runs the timers).
#include <catch2/catch.hpp>
#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <thread>

#include "node/idle.hpp"
#include "support.hpp"

using namespace nerve;

TEST_CASE("idle: a backing-off node yields to a thread waiting for its core, and that counts as a sleep",
          "[stage][idle]") {
  test::eal();  // the TSC rate
  config::Node cfg;
  cfg.idle = config::Idle::kBackoff;
  cfg.busy_lanes = {};
  node::IdlePolicy idle(cfg);
  // This thread and a spinner on one CPU: the spinner runs only when this one gives it the core.
  cpu_set_t was;
  REQUIRE(pthread_getaffinity_np(pthread_self(), sizeof was, &was) == 0);
  const int cpu = sched_getcpu();
  REQUIRE(cpu >= 0);
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(static_cast<unsigned>(cpu), &one);
  REQUIRE(pthread_setaffinity_np(pthread_self(), sizeof one, &one) == 0);
  std::atomic<bool> started{false}, stop{false};
  std::thread spinner([&] {
    pthread_setaffinity_np(pthread_self(), sizeof one, &one);
    started = true;
    while (!stop.load(std::memory_order_relaxed)) {
    }
  });
  while (!started) sched_yield();
  bool slept = false;
  for (unsigned i = 0; i + 1 < node::IdlePolicy::kSpinPolls && !slept; ++i) {  // the spin phase
    idle.step(0, [] { return std::uint64_t{0}; });
    slept = idle.take_slept();
  }
  stop = true;
  spinner.join();
  pthread_setaffinity_np(pthread_self(), sizeof was, &was);
  CHECK(slept);
}
