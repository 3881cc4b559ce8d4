// nerve::Node — one node of the fabric: its ports, routes, datapath loop and counters.
//
// Threading: a Node is driven by one datapath thread (its owner), which calls poll() or run().
// alloc(), send(), respond(), recv() and poll() are owner-thread only (the `_st` contract of
// the datapath). Every other thread reaches the node through proxy(), which is thread-safe,
// and through snapshot()/ports(), which only read.
//
// Several Nodes may live in one process (one EAL): each has its own mempool, ports and stats.
//
// Zero copy: alloc() hands out a frame whose payload is written in place in the mbuf; send()
// writes the Ethernet/IPv4/UDP/nerve headers into the mbuf's headroom in front of it. On
// receive, a handler or recv() sees a view of the payload inside the received mbuf.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "nerve/config.hpp"
#include "nerve/stats.hpp"
#include "nerve/wire.hpp"

struct rte_mbuf;

namespace nerve {

namespace drivers {
class Eal;
}

using NodeId = std::uint16_t;
using wire::MsgType;

enum class SendStatus : std::uint8_t {
  kOk,            // handed to the port's TX path
  kBackpressure,  // TX buffer full: the frame is still the caller's, retry after poll()
  kNoRoute,       // no port reaches dst
  kTooLarge,      // payload does not fit one frame
  kBadArgument,   // priority out of range, empty frame
  kTimeout,       // proxy only: no reply in time
  kShutdown,      // proxy only: the node stopped before the request finished
};
std::string_view to_string(SendStatus s) noexcept;

// How a port keeps the lanes apart on receive (docs/architecture.md, "Lanes").
enum class LaneMode : std::uint8_t {
  kPaired,    // one queue per lane at both ends (ring, memif): lane i on queue i
  kFlow,      // the NIC steers each DSCP to its own RX queue (rte_flow)
  kSoftware,  // one shared RX queue, classified right after rx_burst, P0 delivered first
};
std::string_view to_string(LaneMode m) noexcept;

struct SendOptions {
  std::uint16_t channel = 0;
  std::uint32_t corr_id = 0;  // set by respond()
  std::uint8_t flags = 0;     // wire::flag bits the sender may set
  // P3/P4 normally shed their oldest frame when full; a sender that must not lose a message
  // (a counted bulk send) asks for back-pressure instead and retries.
  bool never_shed = false;
  // More frames follow at once (like MSG_MORE): a P0 frame waits for the batch instead of
  // leaving alone. It leaves with the next send without `more`, a full burst, poll() or flush().
  bool more = false;
};

// A frame being built. Owns its mbuf until send() takes it; freed on destruction otherwise.
class TxFrame {
 public:
  TxFrame() = default;
  TxFrame(TxFrame&& o) noexcept : m_(o.m_), payload_(o.payload_) { o.m_ = nullptr; }
  TxFrame& operator=(TxFrame&& o) noexcept;
  TxFrame(const TxFrame&) = delete;
  TxFrame& operator=(const TxFrame&) = delete;
  ~TxFrame();

  explicit operator bool() const noexcept { return m_ != nullptr; }
  std::span<std::byte> payload() const noexcept { return payload_; }

 private:
  friend class Node;
  rte_mbuf* m_ = nullptr;
  std::span<std::byte> payload_;
};

// A delivered message: a view into the received mbuf, which it owns and frees.
class RxMessage {
 public:
  RxMessage() = default;
  RxMessage(RxMessage&& o) noexcept : m_(o.m_), hdr_(o.hdr_), payload_(o.payload_), latency_ns_(o.latency_ns_) {
    o.m_ = nullptr;
  }
  RxMessage& operator=(RxMessage&& o) noexcept;
  RxMessage(const RxMessage&) = delete;
  RxMessage& operator=(const RxMessage&) = delete;
  ~RxMessage();

  const wire::Header& header() const noexcept { return hdr_; }
  NodeId source() const noexcept { return hdr_.src_node; }
  MsgType type() const noexcept { return hdr_.type; }
  std::uint8_t priority() const noexcept { return hdr_.priority; }
  std::span<const std::byte> payload() const noexcept { return payload_; }
  std::uint64_t latency_ns() const noexcept { return latency_ns_; }

 private:
  friend class Node;
  rte_mbuf* m_ = nullptr;
  wire::Header hdr_{};
  std::span<const std::byte> payload_;
  std::uint64_t latency_ns_ = 0;
};

struct NodeOptions {
  std::chrono::milliseconds link_wait{2000};   // at start-up; a link down is reported, not fatal
  std::uint32_t rx_queue_depth = 4096;         // messages held for recv(), power of two
};

struct PortInfo {
  std::string name;
  config::PortKind kind;
  LaneMode lane_mode;
  std::array<std::uint32_t, wire::kPriorities> tx_queued;  // frames waiting per lane (approximate)
  std::uint16_t dpdk_port;
  int socket;
  wire::Mac mac;
  bool link_up;
  std::uint64_t ipackets, opackets, ibytes, obytes, imissed, ierrors, oerrors, rx_nombuf;
  std::vector<NodeId> peers;
};

struct PeerInfo {
  NodeId id;
  std::string name;
  std::uint32_t ip;
  wire::Mac mac;
  std::size_t port;  // index into ports()
};

// A request from another thread (the control socket, a test) for the datapath to carry out.
struct ControlSend {
  NodeId dst = 0;
  MsgType type = MsgType::kCommand;
  std::uint8_t priority = 0;
  std::string payload;
  std::uint32_t count = 1;        // send this many messages
  bool number_payloads = false;   // message i carries payload + "#" + i
  bool await_reply = false;       // wait for a kResponse to each message
  double rate_mps = 0;            // pace the messages at this rate; 0: as fast as the port takes them
  std::chrono::milliseconds timeout{2000};  // from the last message sent (paced: from when the next is due)
};

struct ControlResult {
  SendStatus status = SendStatus::kOk;
  std::uint32_t sent = 0;
  std::uint32_t replies = 0;
  std::string reply;              // payload of the first reply
  std::uint64_t rtt_ns = 0;       // round trip of the first reply
  std::uint64_t digest = 0;       // sum of FNV-1a-64 of every payload sent (order-independent)
};

class Node;

// The thread-safe way into a node. Requests cross to the datapath over a multi-producer ring
// and are carried out by poll(); the caller blocks until they finish or time out.
class NodeProxy {
 public:
  explicit NodeProxy(Node& n) : node_(n) {}
  ControlResult send(const ControlSend& req);

 private:
  Node& node_;
};

// FNV-1a 64-bit over bytes: the payload digest nerve-ctl and nerved's --digest agree on.
std::uint64_t fnv1a64(std::span<const std::byte> data) noexcept;

class Node {
 public:
  using Handler = std::function<void(const RxMessage&)>;

  // Starts node `id` of `cluster` inside an already running EAL: mempool, ports, routes.
  // Throws config::ConfigError for config problems, std::runtime_error for device failures.
  Node(const config::Cluster& cluster, NodeId id, drivers::Eal& eal, const NodeOptions& opts = {});
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  NodeId id() const noexcept;
  const config::Node& config() const noexcept;

  // --- owner thread only ---------------------------------------------------------------
  // A frame with room for `payload_len` bytes; empty (false) when the pool is exhausted or
  // the payload cannot fit one frame.
  TxFrame alloc(std::size_t payload_len) noexcept;
  // Sends `f` to node `dst`. On kOk the frame is consumed; otherwise it stays the caller's.
  SendStatus send(TxFrame& f, NodeId dst, MsgType type, std::uint8_t priority, const SendOptions& o = {}) noexcept;
  // Copies `payload` into a new frame and sends it.
  SendStatus send_copy(NodeId dst, MsgType type, std::uint8_t priority, std::span<const std::byte> payload,
                       const SendOptions& o = {}) noexcept;
  // Sends `f` as the kResponse to `request`, on the request's priority and channel.
  SendStatus respond(const RxMessage& request, TxFrame& f) noexcept;

  // Delivery: with a handler, poll() calls it for every message (the message is freed when it
  // returns); without one, messages queue for recv() (the RX ring is left to hold the rest
  // when the queue is full, so nothing accepted is dropped).
  void on_message(Handler h);
  std::optional<RxMessage> recv() noexcept;

  // One iteration of the datapath loop: drain TX buffers, receive a burst from every port,
  // validate and deliver, carry out control requests. Returns the work done (frames moved).
  unsigned poll() noexcept;
  // Hands buffered frames to the ports without receiving anything (safe inside a handler).
  // Returns the frames still waiting.
  unsigned flush() noexcept;
  // One step of the node's idle policy after a poll() that did `work`: nothing after work;
  // when idle, nothing (busy), or pause, then sleep with a doubling interval (backoff).
  void idle_step(unsigned work) noexcept;
  // poll() until `stop`, idling per the node's config (busy-poll, or pause then sleep).
  void run(const std::atomic<bool>& stop) noexcept;
  // Ends every proxy request queued or in progress with kShutdown (what was sent stays sent);
  // their callers return at once. For a daemon on its way down.
  void cancel_requests() noexcept;

  // --- any thread -------------------------------------------------------------------------
  NodeProxy& proxy() noexcept;
  stats::Snapshot snapshot() const;
  std::vector<PortInfo> ports() const;
  std::vector<PeerInfo> peers() const;
  unsigned mbufs_available() const noexcept;
  std::size_t max_payload() const noexcept;  // bytes one frame carries at the cluster's MTU

  struct Impl;

 private:
  friend class NodeProxy;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nerve
