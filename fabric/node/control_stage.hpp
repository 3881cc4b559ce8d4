// The control stage: the datapath side of the proxy (proxy_table.hpp).
//
// Each poll it takes newly submitted requests and sends their messages within one control
// budget (kBudget messages per poll, shared round robin by all requests), so P0 RX is never
// more than a burst's worth of control work away. A message's payload is written by the
// request's fill straight into the frame. Replies are matched by (correlation id, sender):
// the awaiting table is direct-mapped by message id, each entry naming the slot, the slot's
// generation and the node asked, so a reply from anyone else is refused (response_mismatch)
// and a late reply to a finished request matches nothing. A request to a service sends each
// message through the service stage (the instance it picks is the node asked); one to a group
// or to every node goes down this node's tree, without replies. A request ends when all is sent
// and answered, at its deadline (a timer: the earliest deadline of all requests), or at
// shutdown; its caller then finds kDone in its slot.
//
// Owner thread only. Nothing here allocates, locks, blocks or makes a syscall.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "proxy_table.hpp"
#include "service_stage.hpp"
#include "timer_stage.hpp"
#include "tx_stage.hpp"

namespace nerve::node {

class ReliableStage;

class ControlStage {
 public:
  static constexpr unsigned kBudget = 32;           // messages per poll, all requests together
  static constexpr std::uint32_t kAwaitSlots = 16384;  // replies awaited at once, power of two

  ControlStage(const config::Cluster& c, ProxyTable& table, TxStage& tx, ServiceStage& services, TimerStage& timers);
  ~ControlStage();
  ControlStage(const ControlStage&) = delete;
  ControlStage& operator=(const ControlStage&) = delete;

  // Where reliable requests' messages go (the reliable stage is built after this one).
  // Reliable and large sends (ProxySend::reliable, ::size) go through `r`; large messages are
  // built in `large`'s buffers.
  void use_reliable(ReliableStage& r, MessageBuffers& large) noexcept {
    reliable_ = &r;
    large_ = &large;
  }

  // Takes new requests and sends within the budget. Returns messages sent.
  unsigned run(std::uint64_t now_ns) noexcept;

  // A request is under way: poll() runs this stage every time.
  bool busy() const noexcept { return n_active_ != 0; }

  enum class Match { kNotOurs, kAnswered, kMismatch };
  bool awaiting() const noexcept { return awaiting_ != 0; }
  // A response that arrived at `now_ns`: answers a request (kAnswered; the caller frees the
  // frame), claims one but from the wrong node (kMismatch), or is none of ours.
  Match match_response(const wire::Header& h, std::span<const std::byte> payload, std::uint64_t now_ns) noexcept;

  // A service request this stage sent was reported failed (its instance down, or no answer).
  void service_failed(std::uint32_t msg_id) noexcept;

  // Ends every request, queued or active, with kShutdown.
  void cancel_all() noexcept;

 private:
  struct Await {
    std::uint32_t msg_id = 0;
    std::uint32_t generation = 0;
    std::uint16_t slot = 0;
    std::uint16_t dst = 0;
    bool live = false;
    std::uint64_t sent_ns = 0;
  };

  void admit(std::uint32_t idx, std::uint64_t now_ns) noexcept;
  unsigned send_some(std::uint32_t idx, unsigned budget, std::uint64_t now_ns) noexcept;
  void finish(std::uint32_t idx, SendStatus s) noexcept;
  void compact() noexcept;
  bool await_live(const Await& a) const noexcept;
  static void on_deadline(void* self, std::uint64_t now_ns);

  const config::Cluster& cluster_;
  ProxyTable& table_;
  TxStage& tx_;
  ServiceStage& services_;
  // Message s.next of slot `s` in one frame (built, or the one pushed back before), to its
  // target; `asked` receives the instance a service send chose. kBackpressure: kept for next
  // poll (or no mbuf yet); any other failure frees it.
  SendStatus send_frame(ProxySlot& s, unsigned allowed, NodeId& asked) noexcept;
  // A large message (ProxySend::size) of slot `s`: built (or the one pushed back before) and
  // handed to the reliable stage. kBackpressure: no buffer or no room yet, kept for next poll.
  SendStatus send_large(ProxySlot& s) noexcept;
  ReliableStage* reliable_ = nullptr;
  MessageBuffers* large_ = nullptr;
  Timer deadline_timer_;
  std::array<std::uint32_t, kProxySlots> active_{};
  unsigned n_active_ = 0;
  unsigned rr_ = 0;  // round-robin start
  std::vector<Await> await_;
  std::uint32_t awaiting_ = 0;  // live entries in await_
};

}  // namespace nerve::node
