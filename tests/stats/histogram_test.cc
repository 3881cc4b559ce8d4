// The histogram against exact percentiles of known distributions.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "nerve/histogram.hpp"

using nerve::stats::Histogram;

namespace {

std::uint64_t exact_percentile(std::vector<std::uint64_t> v, double pct) {
  std::sort(v.begin(), v.end());
  auto rank = static_cast<std::size_t>(std::ceil(pct / 100.0 * static_cast<double>(v.size())));
  rank = std::clamp<std::size_t>(rank, 1, v.size());
  return v[rank - 1];
}

void check_distribution(const std::vector<std::uint64_t>& values) {
  auto h = std::make_unique<Histogram>();
  for (auto v : values) h->record(v);
  REQUIRE(h->count() == values.size());
  for (double p : {0.0, 1.0, 10.0, 50.0, 90.0, 99.0, 99.9, 99.99, 100.0}) {
    const double exact = static_cast<double>(exact_percentile(values, p));
    const double got = static_cast<double>(h->percentile(p));
    INFO("p" << p << " exact " << exact << " got " << got);
    CHECK(std::abs(got - exact) <= exact * 0.01 + 1e-9);
  }
  CHECK(h->min() == *std::min_element(values.begin(), values.end()));
  CHECK(h->max() == *std::max_element(values.begin(), values.end()));
}

}  // namespace

TEST_CASE("bucket index and bounds are consistent", "[stats]") {
  for (std::uint64_t v : std::initializer_list<std::uint64_t>{0, 1, 127, 128, 129, 255, 256, 1000, 123456789,
                          Histogram::kMaxValue}) {
    const auto i = Histogram::index_of(v);
    REQUIRE(i < Histogram::kBuckets);
    CHECK(Histogram::upper_of(i) >= v);
    if (i > 0) CHECK(Histogram::upper_of(i - 1) < v);
  }
}

TEST_CASE("uniform 10 ns .. 10 s stays within 1%", "[stats]") {
  std::mt19937_64 rng(1);
  std::uniform_int_distribution<std::uint64_t> d(10, 10'000'000'000ull);
  std::vector<std::uint64_t> v(200000);
  for (auto& x : v) x = d(rng);
  check_distribution(v);
}

TEST_CASE("log-normal latencies stay within 1%", "[stats]") {
  std::mt19937_64 rng(2);
  std::lognormal_distribution<double> d(8.0, 1.5);  // median ~3 us, long tail
  std::vector<std::uint64_t> v(200000);
  for (auto& x : v) x = std::max<std::uint64_t>(10, static_cast<std::uint64_t>(d(rng)));
  check_distribution(v);
}

TEST_CASE("small exact values are exact", "[stats]") {
  std::vector<std::uint64_t> v;
  for (std::uint64_t i = 0; i < 100; ++i) v.push_back(i);
  auto h = std::make_unique<Histogram>();
  for (auto x : v) h->record(x);
  CHECK(h->percentile(50) == 49);
  CHECK(h->percentile(100) == 99);
  CHECK(h->mean() == Approx(49.5));
}

TEST_CASE("merge equals recording into one", "[stats]") {
  std::mt19937_64 rng(3);
  std::exponential_distribution<double> d(1.0 / 5000.0);
  auto a = std::make_unique<Histogram>(), b = std::make_unique<Histogram>(), all = std::make_unique<Histogram>();
  for (int i = 0; i < 50000; ++i) {
    const auto x = static_cast<std::uint64_t>(d(rng)) + 1;
    (i % 2 ? *a : *b).record(x);
    all->record(x);
  }
  a->merge(*b);
  CHECK(a->count() == all->count());
  for (double p : {50.0, 99.0, 99.99}) CHECK(a->percentile(p) == all->percentile(p));
  CHECK(a->min() == all->min());
  CHECK(a->max() == all->max());
  CHECK(a->mean() == Approx(all->mean()));
}

TEST_CASE("values past the range clamp, empty histogram reports zeros", "[stats]") {
  auto h = std::make_unique<Histogram>();
  CHECK(h->percentile(99) == 0);
  CHECK(h->min() == 0);
  h->record(~0ull);
  CHECK(h->max() == Histogram::kMaxValue);
  CHECK(h->count() == 1);
}
