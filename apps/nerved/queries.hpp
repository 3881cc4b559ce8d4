// Queries over the fabric for a local app. A command "query ..." from another node is handed to
// the app that serves queries on this node (the telemetry sidecar, attached to the control
// socket with {"op":"serve_queries"}); its answer goes back to the asker as the response.
//
// The datapath never waits and never allocates here: it copies the request's text into one of
// kSlots fixed slots and keeps the request's header (its frame goes back to the pool); the
// control thread serving the app takes the slot, and writes the app's answer into it; the
// datapath sends the answer on its next poll. A request nobody answers within kTimeoutNs is
// answered with an error, so a requester always hears something.
//
//   slot state:  free --datapath--> asked --control--> taken --control--> answered --datapath--> free
//                asked --datapath (timeout, no app)--> free, with an error response
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "nerve/node.hpp"
#include "nerve/stats.hpp"

namespace nerve::app {

class QueryDesk {
 public:
  static constexpr std::size_t kSlots = 64;
  static constexpr std::size_t kMaxText = 9216;  // a frame's payload at a 9,216-byte MTU, and more
  static constexpr std::uint64_t kTimeoutNs = 1'000'000'000;

  enum class Handed { kOk, kNoServer, kBusy };

  // Datapath: hands `m` (a command whose text starts "query") to the serving app. kOk: the
  // answer comes later through collect(); otherwise the caller answers at once.
  Handed hand_over(Node& node, RxMessage& m) noexcept;

  // Datapath, every poll: sends the answers that are ready (and errors for requests that timed
  // out) through `send(request, frame)`, which owns the frame afterwards. Returns how many.
  template <typename Send>
  unsigned collect(Node& node, Send&& send) noexcept;

  // Control side; one app serves at a time.
  bool attach() noexcept;  // false: another app serves already
  void detach() noexcept;  // what it held is answered "the sidecar went away"
  bool serving() const noexcept { return serving_.load(std::memory_order_acquire); }
  // Requests not yet taken: f(id, from, text) for each; they become the app's to answer.
  template <typename F>
  void take(F&& f);
  // The app's answer to request `id`; false if there is no such request (answered, timed out).
  bool answer(std::uint32_t id, std::string_view text) noexcept;
  // Control side: requests held longer than kTimeoutNs by an app that does not answer.
  void expire_taken() noexcept;

  struct Counts {
    std::uint64_t handed, answered, no_server, busy, timed_out;
  };
  Counts counts() const noexcept {
    return {handed_.get(), answered_n_.get(), no_server_.get(), busy_.get(), timed_out_.load(std::memory_order_relaxed)};
  }

 private:
  enum State : std::uint8_t { kFree, kAsked, kTaken, kAnswered };
  struct Slot {
    std::atomic<std::uint8_t> state{kFree};
    std::uint32_t id = 0;  // generation * kSlots + index
    std::uint16_t from = 0;
    std::uint64_t asked_ns = 0;
    RxMessage req;  // the header only: the frame went back to the pool
    std::size_t len = 0;
    std::array<char, kMaxText> text{};
  };
  static std::uint64_t now_ns() noexcept {
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
  }
  void set_text(Slot& s, std::string_view t) noexcept {
    s.len = std::min(t.size(), s.text.size());
    std::memcpy(s.text.data(), t.data(), s.len);
  }

  std::array<Slot, kSlots> slots_;
  std::atomic<bool> serving_{false};
  std::atomic<std::uint64_t> ready_{0};  // bumped by the control side at each answer
  // Datapath only.
  std::uint64_t seen_ = 0;
  std::uint32_t generation_ = 0;
  unsigned outstanding_ = 0;
  std::uint64_t expire_at_ = 0;  // the oldest asked request times out then
  bool retry_ = false;
  stats::Counter handed_, answered_n_, no_server_, busy_;
  std::atomic<std::uint64_t> timed_out_{0};
};

template <typename Send>
unsigned QueryDesk::collect(Node& node, Send&& send) noexcept {
  if (outstanding_ == 0) return 0;
  const std::uint64_t ready = ready_.load(std::memory_order_acquire);
  // Answers arrived, or the oldest request nobody took is due to time out (a clock read per
  // poll, only while queries are outstanding).
  const std::uint64_t now = now_ns();
  if (ready == seen_ && !retry_ && now < expire_at_) return 0;
  seen_ = ready;
  retry_ = false;
  expire_at_ = UINT64_MAX;
  unsigned sent = 0;
  for (Slot& s : slots_) {
    std::uint8_t st = s.state.load(std::memory_order_acquire);
    if (st == kAsked && now - s.asked_ns > kTimeoutNs &&
        s.state.compare_exchange_strong(st, kAnswered, std::memory_order_acq_rel)) {
      set_text(s, "error no answer: the node's telemetry sidecar did not take the query");
      timed_out_.fetch_add(1, std::memory_order_relaxed);
      st = kAnswered;
    }
    if (st == kAsked) expire_at_ = std::min(expire_at_, s.asked_ns + kTimeoutNs + 1);
    if (st != kAnswered) continue;
    TxFrame f = node.alloc(std::min(node.max_payload(), s.len));
    if (!f) {
      retry_ = true;  // the pool is empty now; the answer waits
      continue;
    }
    std::memcpy(f.payload().data(), s.text.data(), f.payload().size());
    send(s.req, std::move(f));
    s.req = RxMessage{};
    s.state.store(kFree, std::memory_order_release);
    --outstanding_;
    answered_n_.add();
    ++sent;
  }
  return sent;
}

template <typename F>
void QueryDesk::take(F&& f) {
  for (Slot& s : slots_) {
    std::uint8_t st = kAsked;
    if (!s.state.compare_exchange_strong(st, kTaken, std::memory_order_acq_rel)) continue;
    f(s.id, s.from, std::string_view(s.text.data(), s.len));
  }
}

}  // namespace nerve::app
