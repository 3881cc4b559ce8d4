#include "balance.hpp"

#include <bit>

namespace nerve::route {

Balancer::Balancer(const config::Service& s) noexcept
    : policy_(s.policy), rng_(0x9e3779b97f4a7c15ull ^ (std::uint64_t{s.id} << 32)) {
  for (const std::uint16_t id : s.instances)
    if (n_ < ids_.size()) ids_[n_++] = id;
}

int Balancer::position(std::uint16_t node) const noexcept {
  for (unsigned i = 0; i < n_; ++i)
    if (ids_[i] == node) return static_cast<int>(i);
  return -1;
}

std::uint64_t Balancer::next_random() noexcept {
  rng_ ^= rng_ >> 12;
  rng_ ^= rng_ << 25;
  rng_ ^= rng_ >> 27;
  return rng_ * 0x2545f4914f6cdd1dull;
}

std::uint64_t Balancer::weight(std::uint64_t key, std::uint16_t id) noexcept {
  // splitmix64 of the pair: independent, uniform weights per (key, node).
  std::uint64_t z = key ^ (0x9e3779b97f4a7c15ull * (std::uint64_t{id} + 1));
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

int Balancer::pick(std::uint64_t key, std::uint64_t live) noexcept {
  live &= n_ == 64 ? ~0ull : (std::uint64_t{1} << n_) - 1;
  if (live == 0) return -1;
  switch (policy_) {
    case config::Balance::kRoundRobin:
      for (unsigned k = 0; k < n_; ++k) {
        const unsigned i = (cursor_ + k) % n_;
        if ((live >> i) & 1u) {
          cursor_ = (i + 1) % n_;
          return static_cast<int>(i);
        }
      }
      return -1;
    case config::Balance::kLeastOutstanding: {
      const auto alive = static_cast<unsigned>(std::popcount(live));
      auto nth = [&](unsigned k) {  // the k-th live instance
        std::uint64_t m = live;
        for (unsigned j = 0; j < k; ++j) m &= m - 1;
        return static_cast<unsigned>(std::countr_zero(m));
      };
      const std::uint64_t r = next_random();
      const auto ka = static_cast<unsigned>((r & 0xffffffffu) % alive);
      const unsigned a = nth(ka);
      if (alive == 1) return static_cast<int>(a);
      auto kb = static_cast<unsigned>((r >> 32) % (alive - 1));
      kb += kb >= ka;  // a second, distinct one
      const unsigned b = nth(kb);
      return static_cast<int>(outstanding_[b] < outstanding_[a] ? b : a);
    }
    case config::Balance::kHash: {
      int best = -1;
      std::uint64_t best_w = 0;
      for (unsigned i = 0; i < n_; ++i) {
        if (!((live >> i) & 1u)) continue;
        const std::uint64_t w = weight(key, ids_[i]);
        if (best < 0 || w > best_w) {
          best = static_cast<int>(i);
          best_w = w;
        }
      }
      return best;
    }
  }
  return -1;
}

}  // namespace nerve::route
