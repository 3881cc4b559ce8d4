// The open-loop schedule: messages are due at start + i * interval regardless of how the
// sender kept up, and a late sender finds all the missed ones due at once.
#include <catch2/catch.hpp>

#include "schedule.hpp"

using nerve::perf::Schedule;

TEST_CASE("due times follow the rate, not the sender", "[perf]") {
  // 1 cycle per ns, 1000 msgs/s: one message every 1,000,000 cycles.
  const Schedule s(1000.0, 1.0, 5000);
  CHECK(s.open_loop());
  CHECK(s.due(0) == 5000);
  CHECK(s.due(1) == 1'005'000);
  CHECK(s.due(1000) == 1'000'005'000);
}

TEST_CASE("a sender that stalled finds every missed message due at once", "[perf]") {
  const Schedule s(1000.0, 1.0, 0);
  CHECK(s.due_count(0, 100, 0) == 1);               // message 0 is due at the start
  CHECK(s.due_count(1, 100, 999'999) == 0);         // message 1 not yet
  CHECK(s.due_count(1, 100, 1'000'000) == 1);
  CHECK(s.due_count(1, 100, 10'500'000) == 10);     // stalled 10 ms: messages 1..10 are all due
  CHECK(s.due_count(11, 100, 10'500'000) == 0);
  CHECK(s.due_count(0, 100, 1'000'000'000) == 100); // never more than the limit
  CHECK(s.due_count(0, 100, 0) == 1);
}

TEST_CASE("before the start nothing is due; rate 0 is closed loop", "[perf]") {
  const Schedule s(1e6, 2.5, 1000);
  CHECK(s.due_count(0, 10, 999) == 0);
  const Schedule closed(0.0, 2.5, 1000);
  CHECK_FALSE(closed.open_loop());
  CHECK(closed.due_count(3, 10, 0) == 7);
}
