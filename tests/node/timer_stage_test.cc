// The timer stage, stepped with a manual clock: timers fire once each, earliest first, at the
// first run at or after their time; a callback can re-arm its timer.
#include <catch2/catch.hpp>

#include <vector>

#include "nerve/clock.hpp"
#include "node/timer_stage.hpp"

using nerve::Clock;
using nerve::node::Timer;
using nerve::node::TimerStage;

namespace {

struct Log {
  std::vector<int> fired;
};
struct Ctx {
  Log* log;
  int id;
  Timer* self = nullptr;
  std::uint64_t every = 0;  // re-arm this far ahead when it fires
};
void on_fire(void* p, std::uint64_t now) {
  auto* c = static_cast<Ctx*>(p);
  c->log->fired.push_back(c->id);
  if (c->every) c->self->arm(now + c->every);
}

}  // namespace

TEST_CASE("timers fire once, earliest first, when the clock reaches them", "[timer]") {
  auto clock = Clock::manual(1000);
  Log log;
  Ctx a{&log, 1}, b{&log, 2}, c{&log, 3};
  Timer ta(on_fire, &a), tb(on_fire, &b), tc(on_fire, &c);
  TimerStage s;
  REQUIRE(s.add(ta));
  REQUIRE(s.add(tb));
  REQUIRE(s.add(tc));
  ta.arm(1500);
  tb.arm(1200);
  CHECK(s.next_due() == 1200);
  CHECK(s.run(clock->now_ns()) == 0);
  clock->advance(300);  // 1300: b only
  CHECK(s.run(clock->now_ns()) == 1);
  CHECK(log.fired == std::vector<int>{2});
  CHECK_FALSE(tb.armed());
  clock->advance(10'000);  // a; c never armed
  CHECK(s.run(clock->now_ns()) == 1);
  CHECK(log.fired == std::vector<int>{2, 1});
  CHECK(s.run(clock->now_ns()) == 0);
  CHECK(s.next_due() == Timer::kNever);
}

TEST_CASE("two timers due together fire in order of their times", "[timer]") {
  Log log;
  Ctx a{&log, 1}, b{&log, 2};
  Timer ta(on_fire, &a), tb(on_fire, &b);
  TimerStage s;
  s.add(ta);
  s.add(tb);
  ta.arm(50);
  tb.arm(20);
  CHECK(s.run(100) == 2);
  CHECK(log.fired == std::vector<int>{2, 1});
}

TEST_CASE("a periodic timer re-arms itself and fires once per run", "[timer]") {
  auto clock = Clock::manual(0);
  Log log;
  Ctx p{&log, 7};
  Timer t(on_fire, &p);
  p.self = &t;
  p.every = 100;
  TimerStage s;
  s.add(t);
  t.arm(0);
  for (int i = 0; i < 10; ++i) {
    s.run(clock->now_ns());
    clock->advance(100);
  }
  CHECK(log.fired.size() == 10);
  // Far behind (the clock jumped): one firing per run, not one per missed period.
  clock->advance(1'000'000);
  CHECK(s.run(clock->now_ns()) == 1);
  p.every = 0;  // a callback re-arming for `now` does not loop
  t.arm(clock->now_ns());
  CHECK(s.run(clock->now_ns()) == 1);
}

TEST_CASE("arm_before keeps the earlier time; the stage holds a bounded number", "[timer]") {
  Log log;
  Ctx a{&log, 1};
  Timer t(on_fire, &a);
  t.arm_before(500);
  t.arm_before(900);
  CHECK(t.due_ns() == 500);
  t.arm_before(100);
  CHECK(t.due_ns() == 100);
  t.disarm();
  CHECK_FALSE(t.armed());
  TimerStage s;
  std::vector<Timer> many(TimerStage::kMaxTimers + 1, Timer(on_fire, &a));
  for (unsigned i = 0; i < TimerStage::kMaxTimers; ++i) CHECK(s.add(many[i]));
  CHECK_FALSE(s.add(many.back()));
}

TEST_CASE("a run knows how long before it the previous run was, whether or not anything fired", "[timer]") {
  TimerStage s;
  CHECK(s.run(1'000) == 0);
  CHECK(s.gap_ns() == 0);  // the first run
  CHECK(s.run(1'250) == 0);
  CHECK(s.gap_ns() == 250);
  Log log;
  Ctx a{&log, 1};
  Timer t(on_fire, &a);
  s.add(t);
  t.arm(5'000);
  CHECK(s.run(9'000) == 1);
  CHECK(s.gap_ns() == 7'750);
}
