// Service policies: round robin and rendezvous hashing spread as they should (chi-square),
// hashing keeps a key on its instance while it lives, least-outstanding avoids a busy instance,
// and no policy picks an instance that is down.
#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <map>

#include "route/balance.hpp"

using namespace nerve;
using namespace nerve::route;

namespace {

config::Service service(config::Balance p, unsigned n) {
  config::Service s;
  s.name = "svc";
  s.id = 9;
  s.policy = p;
  for (unsigned i = 0; i < n; ++i) s.instances.push_back(static_cast<std::uint16_t>(100 + i));
  return s;
}

// Pearson's chi-square statistic of `counts` against a uniform spread.
double chi_square(const std::vector<std::uint64_t>& counts) {
  double total = 0;
  for (auto c : counts) total += static_cast<double>(c);
  const double expected = total / static_cast<double>(counts.size());
  double x2 = 0;
  for (auto c : counts) x2 += (static_cast<double>(c) - expected) * (static_cast<double>(c) - expected) / expected;
  return x2;
}
// Upper 0.1 % point of chi-square with 7 degrees of freedom.
constexpr double kChi2_7dof_p001 = 24.32;

}  // namespace

TEST_CASE("balance: round robin visits live instances in turn", "[route][balance]") {
  Balancer b(service(config::Balance::kRoundRobin, 4));
  CHECK(b.pick(0, 0b1111) == 0);
  CHECK(b.pick(0, 0b1111) == 1);
  CHECK(b.pick(0, 0b1011) == 3);  // 2 is down
  CHECK(b.pick(0, 0b1011) == 0);
  CHECK(b.pick(0, 0) == -1);
  std::vector<std::uint64_t> counts(8);
  Balancer r(service(config::Balance::kRoundRobin, 8));
  for (int i = 0; i < 80000; ++i) ++counts[static_cast<std::size_t>(r.pick(0, 0xff))];
  CHECK(chi_square(counts) == 0.0);  // exactly even
}

TEST_CASE("balance: rendezvous hashing spreads keys evenly and moves only a dead instance's keys",
          "[route][balance]") {
  Balancer b(service(config::Balance::kHash, 8));
  std::vector<std::uint64_t> counts(8);
  std::map<std::uint64_t, int> owner;
  for (std::uint64_t key = 0; key < 80000; ++key) {
    const int i = b.pick(key, 0xff);
    REQUIRE(i >= 0);
    ++counts[static_cast<std::size_t>(i)];
    owner[key] = i;
    REQUIRE(b.pick(key, 0xff) == i);  // one key, one instance
  }
  INFO("chi-square " << chi_square(counts));
  CHECK(chi_square(counts) < kChi2_7dof_p001);
  // Instance 3 dies: its keys spread over the others, nobody else's key moves.
  std::size_t moved = 0;
  for (const auto& [key, i] : owner) {
    const int now = b.pick(key, 0xff & ~(1u << 3));
    if (i == 3) {
      REQUIRE(now != 3);
      ++moved;
    } else {
      REQUIRE(now == i);
    }
  }
  CHECK(moved == counts[3]);
}

TEST_CASE("balance: least outstanding avoids the busy instance, spreads evenly when all are equal",
          "[route][balance]") {
  Balancer b(service(config::Balance::kLeastOutstanding, 8));
  for (int k = 0; k < 100; ++k) b.opened(5);
  std::vector<std::uint64_t> counts(8);
  for (int i = 0; i < 80000; ++i) ++counts[static_cast<std::size_t>(b.pick(0, 0xff))];
  // Of two distinct instances drawn, 5 always loses against an idle one.
  CHECK(counts[5] == 0);
  for (int k = 0; k < 100; ++k) b.closed(5);
  CHECK(b.outstanding(5) == 0);
  b.closed(5);  // never below zero
  CHECK(b.outstanding(5) == 0);
  std::fill(counts.begin(), counts.end(), 0);
  for (int i = 0; i < 80000; ++i) ++counts[static_cast<std::size_t>(b.pick(0, 0xff))];
  INFO("chi-square " << chi_square(counts));
  CHECK(chi_square(counts) < kChi2_7dof_p001);
  // Only live instances, and a lone live one is always picked.
  for (int i = 0; i < 1000; ++i) REQUIRE(b.pick(0, 0b100) == 2);
  CHECK(b.pick(0, 0) == -1);
}

TEST_CASE("balance: positions and ids", "[route][balance]") {
  Balancer b(service(config::Balance::kHash, 3));
  CHECK(b.size() == 3);
  CHECK(b.instance(2) == 102);
  CHECK(b.position(101) == 1);
  CHECK(b.position(7) == -1);
  CHECK(b.pick(1, ~0ull) >= 0);  // bits past the last instance are ignored
  CHECK(b.pick(1, ~0ull << 3) == -1);
}
