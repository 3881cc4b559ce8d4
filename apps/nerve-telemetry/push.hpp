// Push: a tier's samples sent over the fabric to the cluster's telemetry.push_to nodes, through
// the node's own nerved (its control socket, one connection kept open). Tier k goes on lane Pk;
// errors and links as status messages, the other groups as metric messages. A message is one
// group's figures as text, split at line boundaries to fit a frame:
//
//   nerve-telemetry node=alpha tier=critical group=lanes seq=42 taken_ns=123 part=1/3
//   nerve_lane_sent_total{lane="P0"} 1000
//   ...
//
// The sampling loop only queues; a thread of its own talks to nerved, so a slow or absent
// nerved never delays a tick. A full queue drops (counted), never blocks.
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "collect.hpp"
#include "nerve/config.hpp"
#include "nerve/histogram.hpp"

namespace nerve::sidecar {

class Pusher {
 public:
  static constexpr std::size_t kQueue = 4096;  // messages waiting for nerved

  Pusher(const config::Cluster& cluster, const config::Node& self);
  ~Pusher();
  Pusher(const Pusher&) = delete;
  Pusher& operator=(const Pusher&) = delete;

  bool wants(std::size_t tier) const noexcept { return !to_.empty() && ((tiers_ >> tier) & 1u); }
  // Queues group g's text (Prometheus text as rendered) of a sample of `tier`. `event_ns`: the
  // wall time (nerve::Clock) of a datapath event this sample is the first to carry (a lane's
  // deadline miss), or 0; once its last part has left through nerved, the time from the event
  // is recorded (event_to_push()).
  void push(std::size_t tier, Group g, std::uint64_t seq, std::uint64_t taken_ns, const std::string& text,
            std::uint64_t event_ns = 0);
  // Batch updates: a history roll-up's lines (apps/common/query.hpp's history form) as metric
  // messages of the historical tier, headed "... batch=rollup t=<unix ns> part=i/n".
  void push_rollup(std::uint64_t unix_ns, const std::vector<std::string>& lines);
  // From datapath events to the samples carrying them handed to the fabric (nanoseconds).
  const stats::Histogram& event_to_push() const noexcept { return event_to_push_; }

  std::uint64_t pushed(std::size_t tier) const noexcept { return pushed_[tier].load(std::memory_order_relaxed); }
  std::uint64_t dropped() const noexcept { return dropped_.load(std::memory_order_relaxed); }
  std::uint64_t failed() const noexcept { return failed_.load(std::memory_order_relaxed); }

 private:
  struct Message {
    std::size_t tier;
    bool status;
    std::string payload;
    std::uint64_t event_ns = 0;
  };
  void run();
  // `lines` split into messages that fit a frame, each opened by `head` + " part=i/n".
  void enqueue(std::size_t tier, bool status, const std::string& head, const std::vector<std::string>& lines,
               std::uint64_t event_ns);

  std::string control_socket_, node_name_, node_label_;
  std::vector<std::uint16_t> to_;
  std::uint32_t tiers_ = 0;
  std::size_t max_payload_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Message> queue_;
  bool stop_ = false;
  std::array<std::atomic<std::uint64_t>, config::kTiers> pushed_{};
  std::atomic<std::uint64_t> dropped_{0}, failed_{0};
  stats::Histogram event_to_push_;  // written by the push thread only
  std::thread thread_;
};

}  // namespace nerve::sidecar
