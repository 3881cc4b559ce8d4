// Load-balanced services: which instance of a service a message goes to.
//
// A service is a named set of instance nodes (the cluster file's [[service]]). The sender's
// node picks one live instance per message by the service's policy:
//   round_robin        each live instance in turn;
//   least_outstanding  of two live instances drawn at random, the one with fewer requests
//                      awaiting a response ("power of two choices", Mitzenmacher 2001);
//   hash               rendezvous (highest random weight) hashing of the message's key over
//                      the live instances: one key, one instance while that instance lives;
//                      when it dies only its own keys move.
// Liveness comes from the routes (an instance this node has no route to is down), so an
// instance leaves the set within the failure detection time.
//
// No DPDK, no allocation after construction. Owner (datapath) thread only.
#pragma once

#include <array>
#include <cstdint>

#include "nerve/config.hpp"

namespace nerve::route {

class Balancer {
 public:
  explicit Balancer(const config::Service& s) noexcept;

  // The instance (position in the service's `instances`) for a message with `key`, among those
  // whose bit is set in `live`; -1 when none is.
  int pick(std::uint64_t key, std::uint64_t live) noexcept;
  // Outstanding requests per instance: a request was sent, or answered / failed.
  void opened(int i) noexcept { ++outstanding_[static_cast<unsigned>(i)]; }
  void closed(int i) noexcept {
    auto& o = outstanding_[static_cast<unsigned>(i)];
    o -= o != 0;
  }
  std::uint32_t outstanding(int i) const noexcept { return outstanding_[static_cast<unsigned>(i)]; }
  unsigned size() const noexcept { return n_; }
  std::uint16_t instance(int i) const noexcept { return ids_[static_cast<unsigned>(i)]; }
  int position(std::uint16_t node) const noexcept;  // -1 when not an instance
  config::Balance policy() const noexcept { return policy_; }

  // The rendezvous weight of `key` on node `id` (exposed for tests).
  static std::uint64_t weight(std::uint64_t key, std::uint16_t id) noexcept;

 private:
  std::uint64_t next_random() noexcept;  // xorshift64*
  config::Balance policy_;
  unsigned n_ = 0;
  std::array<std::uint16_t, config::kMaxInstances> ids_{};
  std::array<std::uint32_t, config::kMaxInstances> outstanding_{};
  unsigned cursor_ = 0;
  std::uint64_t rng_;
};

}  // namespace nerve::route
