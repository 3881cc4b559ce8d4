// The deliver stage: the last step of a frame for this node.
//
//   1. the send timestamp must lie within the cluster's timestamp window of our clock
//      (bad_timestamp: refused, never recorded, so one forged frame cannot poison a lane's
//      histogram); the one-way latency goes into the lane's histogram and is checked against
//      the lane's budget (deadline misses);
//   2. a response closes the service request it answers (service_stage.hpp); one to a request
//      of the control proxy completes it (control_stage.hpp), and one that claims a request of
//      ours but comes from another node is refused (response_mismatch);
//   3. everything else goes to the handler, or to its lane's recv() queue (one per lane, so a
//      lane whose consumer stalls never holds up another's). When a lane's queue is full, the
//      RX stage reads less of that lane (room()): a port with a queue per lane stops reading
//      that lane's queue, and its frames wait in the port; a port whose lanes share one queue
//      is read while P0's queue has room (P0 waits in the port, never dropped for room), and a
//      frame of another lane whose queue is full is dropped, counted (rx_lane_full), unless it
//      is reliable. Reliable frames wait in their session, whose credit pushes back on the
//      sender of that lane alone (reliable_stage.hpp).
//
// Owner thread only.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "control_stage.hpp"
#include "message_buffers.hpp"
#include "idle.hpp"
#include "nerve/node.hpp"
#include "rx_item.hpp"

namespace nerve::node {

// Frees frames the node is done with (single-segment mbufs), in bulk. Owner thread only.
void free_frames(rte_mbuf** m, std::uint16_t n) noexcept;

class DeliverStage {
 public:
  DeliverStage(const config::Cluster& cluster, const config::Node& cfg, std::uint32_t queue_depth,
               stats::LcoreStats& st, IdlePolicy& idle, ControlStage& control, ServiceStage& services);

  void set_handler(Node::Handler h) { handler_ = std::move(h); }

  // How many frames the RX stage may take in its next burst of lane `lane` (-1: a queue that
  // carries every lane), beside `held` frames read and not yet delivered: a burst with a
  // handler; with recv(), what the lane's queue can still keep (a shared queue: P0's, so that
  // a lane whose consumer stalls never stops P0; see the top).
  std::uint16_t room(int lane, std::uint32_t held) noexcept {
    if (handler_) return kBurst;
    std::uint32_t space = this->space(static_cast<std::uint8_t>(lane >= 0 ? lane : 0));
    space = space > held ? space - held : 0;
    if (space >= kBurst) return kBurst;
    st_.rx_deferred.add();
    return static_cast<std::uint16_t>(space);
  }

  // Frames of lane `prio` that can be delivered now without overflowing its recv() queue (a
  // handler: any).
  std::uint32_t space(std::uint8_t prio) const noexcept {
    return handler_ ? ~0u : mask_ + 1 - (lanes_[prio].tail - lanes_[prio].head);
  }
  // Delivers items[0..n), read at `now_ns`.
  void run(RxItem* items, std::uint16_t n, std::uint64_t now_ns) noexcept;
  // Delivers a reassembled large message: `len` bytes in buffer `b` (given back here when it is
  // refused or answers a proxy request; else the message owns it), `h` its first fragment's
  // header (its latency counts from there), `last_ts` its last fragment's timestamp (the one
  // checked against the cluster's timestamp window: a long message is not refused for its
  // length). Needs space() >= 1.
  void deliver_large(const wire::Header& h, std::uint64_t last_ts, MessageBuffer* b, std::size_t len,
                     std::uint64_t now_ns) noexcept;

  // The oldest message of the highest lane that has one; of lane `prio`.
  std::optional<RxMessage> recv() noexcept {
    for (std::uint8_t l = 0; l < wire::kPriorities; ++l)
      if (lanes_[l].head != lanes_[l].tail) return recv(l);
    return std::nullopt;
  }
  std::optional<RxMessage> recv(std::uint8_t prio) noexcept {
    Lane& q = lanes_[prio];
    if (q.head == q.tail) return std::nullopt;
    return std::move(q.queue[q.head++ & mask_]);
  }
  void clear() noexcept {
    for (Lane& q : lanes_) q.queue.clear();
  }

 private:
  enum class Admit : std::uint8_t { kDeliver, kRefused, kAnswered };
  // Steps 1 and 2 for one message whose newest timestamp is `ts_check`; `lat` receives its
  // latency (from h's timestamp).
  // `room`: a handler takes it, or its lane's recv() queue can (else dropped, counted rx_lane_full).
  Admit admit(const wire::Header& h, std::uint64_t ts_check, std::span<const std::byte> payload, std::uint64_t now,
              std::uint64_t& lat, bool room) noexcept;

  std::array<std::uint64_t, wire::kPriorities> budget_ns_{};
  std::uint64_t window_ns_;
  stats::LcoreStats& st_;
  IdlePolicy& idle_;
  ControlStage& control_;
  ServiceStage& services_;
  // Into lane `prio`'s recv() queue; a lane that is full (a frame that came on another lane's
  // RX queue, which room() did not account for) drops it, counted (rx_lane_full).
  bool enqueue(std::uint8_t prio, RxMessage&& msg) noexcept {
    Lane& q = lanes_[prio];
    if (q.tail - q.head > mask_) [[unlikely]] {
      st_.rx_lane_full.add();
      return false;
    }
    q.queue[q.tail++ & mask_] = std::move(msg);
    return true;
  }

  Node::Handler handler_;
  struct Lane {
    std::vector<RxMessage> queue;
    std::uint32_t head = 0, tail = 0;
  };
  std::array<Lane, wire::kPriorities> lanes_;
  std::uint32_t mask_;
};

}  // namespace nerve::node
