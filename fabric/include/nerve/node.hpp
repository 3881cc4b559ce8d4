// nerve::Node — one node of the fabric: what an application needs to send and receive.
//
// Threading: a Node is driven by one datapath thread (its owner), which calls poll() or run().
// alloc(), send(), respond(), take_frame(), recv(), poll() and the rest of the "owner thread
// only" block are the `_st` contract of the datapath. Every other thread reaches the node
// through proxy(), and reads it through snapshot()/ports()/peers().
//
// Several Nodes may live in one process (one EAL): each has its own mempools, ports and stats.
//
// Zero copy: alloc() hands out a frame whose payload is written in place in the mbuf; send()
// writes the Ethernet/IPv4/UDP/nerve headers into the mbuf's headroom in front of it. On
// receive, a handler or recv() sees a view of the payload inside the received mbuf; a handler
// may keep the message (move it) or turn it back into a frame with take_frame() and send it on,
// all without copying the payload.
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

#include "nerve/clock.hpp"
#include "nerve/config.hpp"
#include "nerve/stats.hpp"
#include "nerve/wire.hpp"

struct rte_mbuf;

namespace nerve {

namespace drivers {
class Eal;
}
namespace telemetry {
class Region;
}
namespace node {
struct MessageBuffer;
}

using NodeId = std::uint16_t;
using wire::MsgType;

enum class SendStatus : std::uint8_t {
  kOk,            // handed to the port's TX path
  kBackpressure,  // the lane is full: the frame is still the caller's, retry after poll()
  kNoRoute,       // no port reaches dst
  kTooLarge,      // payload larger than the cluster's max_message, or a large frame where only one frame goes
  kBadArgument,   // priority or type out of range, empty frame
  kTimeout,       // proxy only: not all sent or answered in time
  kShutdown,      // proxy only: the node stopped before the request finished
  kFailed,        // proxy only: requests to a service instance failed (it went down, or did not
                  // answer within the service's timeout); ProxyResult::failed counts them
  kNoSession,     // reliable only: sessions with the cluster's reliable_peers peers are in use
};
std::string_view to_string(SendStatus s) noexcept;

// Reliable frames in flight per (peer, lane), at most: unacknowledged at the sender, held at the
// receiver. Within it, the receiver's grant (its credit) limits each sender; before the first
// grant (or after a pause: docs/architecture.md, "Reliable delivery") kReliableInitialCredit.
inline constexpr std::uint32_t kReliableWindow = 256;
inline constexpr std::uint32_t kReliableInitialCredit = 32;

struct SendOptions {
  std::uint16_t channel = 0;
  // P3/P4 normally shed their oldest frame when full; a sender that must not lose a message
  // (a counted bulk send) asks for back-pressure instead and retries.
  bool never_shed = false;
  // More frames follow at once (like MSG_MORE): a P0 frame waits for the batch instead of
  // leaving alone. It leaves with the next send without `more`, a full burst, poll() or flush().
  bool more = false;
  // A message to a service with the hash policy: its affinity key (one key, one instance while
  // that instance lives). Other policies ignore it.
  std::uint64_t key = 0;
  // Reliable delivery (docs/architecture.md, "Reliable delivery"): sequenced per (destination,
  // lane), acknowledged, sent again until acknowledged, delivered once and in order; a message
  // that cannot be delivered is reported (Node::on_delivery_failure). Unreliable (the default)
  // suits data where only the newest value matters. Unicast sends only (send, respond).
  bool reliable = false;
  // Two paths (docs/architecture.md, "Two paths"; meant for P0): 2 sends the message over two
  // disjoint paths at once (two links to the destination, or two routes that share no node),
  // as IEC 62439-3 PRP does; the receiver delivers the first copy and drops the other, so a
  // loss on one path costs nothing. Where no second path is up, one copy goes (counted:
  // paths_one). Unicast sends of one frame only (a large message goes over one path).
  std::uint8_t paths = 1;
};

// A reliable message that could not be delivered: unacknowledged for the cluster's
// reliable_give_up_ms (its destination down or unreachable, or every retry lost). Reported
// once, on the sender's datapath thread. It may have arrived (only its acknowledgements lost);
// it was never delivered out of order.
struct DeliveryFailure {
  std::uint16_t dst;
  std::uint8_t priority;
  std::uint16_t channel;
  std::uint32_t msg_id;
  std::uint32_t seq;       // its sequence number in the (dst, priority) session
};

// A request (kCommand or kResourceRequest) sent to a service that will not be answered: its
// instance went down, or did not answer within the service's timeout_ms. Reported once, to the
// sender's node (Node::on_service_failure, nerve-ctl's `failed`, status counters).
struct ServiceFailure {
  std::uint16_t service;   // the service's id
  std::uint16_t instance;  // the node that had it
  std::uint32_t msg_id;    // the request's id (the correlation id its response would carry)
  bool timed_out;          // true: unanswered within timeout_ms; false: the instance went down
};

// A service as its sender sees it: which instances are live, and what each was sent.
struct ServiceInfo {
  std::uint16_t id;
  std::string name;
  std::string policy;
  std::uint32_t timeout_ms;
  struct Instance {
    std::uint16_t node;
    bool live;                // this node has a route to it
    std::uint64_t sent;       // messages sent to it
    std::uint64_t requests;   // of which requests, tracked until answered or failed
    std::uint64_t answered, timed_out, failed_down;
    std::uint64_t outstanding;
  };
  std::vector<Instance> instances;
};

// A frame being built. Owns its mbuf until send() takes it; freed on destruction otherwise.
// A message larger than one frame (up to the cluster's max_message) is built the same way in
// one of the node's message buffers instead; send() cuts it into fragments.
class TxFrame {
 public:
  TxFrame() = default;
  TxFrame(TxFrame&& o) noexcept : m_(o.m_), buf_(o.buf_), payload_(o.payload_) {
    o.m_ = nullptr;
    o.buf_ = nullptr;
  }
  TxFrame& operator=(TxFrame&& o) noexcept;
  TxFrame(const TxFrame&) = delete;
  TxFrame& operator=(const TxFrame&) = delete;
  ~TxFrame();

  explicit operator bool() const noexcept { return m_ != nullptr || buf_ != nullptr; }
  std::span<std::byte> payload() const noexcept { return payload_; }
  bool large() const noexcept { return buf_ != nullptr; }  // more than one frame's payload
  // Shortens the payload to its first n bytes (n <= payload().size()): allocate for the
  // largest message, write it, then trim to what was written.
  void truncate(std::size_t n) noexcept;

 private:
  friend class Node;
  friend struct NodeAccess;
  rte_mbuf* m_ = nullptr;
  node::MessageBuffer* buf_ = nullptr;
  std::span<std::byte> payload_;
};

// A delivered message: a view into the received mbuf, which it owns and frees. A message that
// came in fragments views the reassembly buffer it owns instead (the node's; given back when the
// message is freed, from any thread); its header() is its first fragment's (payload_len
// included: the message's length is payload().size()). Neither outlives the node.
class RxMessage {
 public:
  RxMessage() = default;
  RxMessage(RxMessage&& o) noexcept
      : m_(o.m_), buf_(o.buf_), hdr_(o.hdr_), payload_(o.payload_), latency_ns_(o.latency_ns_),
        received_ns_(o.received_ns_) {
    o.m_ = nullptr;
    o.buf_ = nullptr;
  }
  RxMessage& operator=(RxMessage&& o) noexcept;
  RxMessage(const RxMessage&) = delete;
  RxMessage& operator=(const RxMessage&) = delete;
  ~RxMessage();

  const wire::Header& header() const noexcept { return hdr_; }
  NodeId source() const noexcept { return hdr_.src_node; }
  MsgType type() const noexcept { return hdr_.type; }
  std::uint8_t priority() const noexcept { return hdr_.priority; }
  std::uint16_t channel() const noexcept { return hdr_.channel; }
  // Empty once take_frame() has taken the mbuf.
  std::span<const std::byte> payload() const noexcept { return payload_; }
  bool large() const noexcept { return buf_ != nullptr; }  // it came in fragments
  std::uint64_t latency_ns() const noexcept { return latency_ns_; }  // sender's timestamp to delivery
  std::uint64_t received_ns() const noexcept { return received_ns_; }  // the node's clock when its burst arrived

 private:
  friend class Node;
  friend struct NodeAccess;
  rte_mbuf* m_ = nullptr;
  node::MessageBuffer* buf_ = nullptr;
  wire::Header hdr_{};
  std::span<const std::byte> payload_;
  std::uint64_t latency_ns_ = 0;
  std::uint64_t received_ns_ = 0;
};

struct NodeOptions {
  std::chrono::milliseconds link_wait{2000};   // at start-up; a link down is reported, not fatal
  std::uint32_t rx_queue_depth = 4096;         // messages held for recv(), per lane, power of two
  Clock* clock = nullptr;                      // the node's time; nullptr: Clock::tsc()
  // Where the datapath keeps its counters and publishes samples for other processes
  // (nerve/telemetry.hpp); nullptr: in the node's own memory, unpublished. Outlives the node.
  telemetry::Region* region = nullptr;
};

struct PortInfo {
  std::string name;
  config::PortKind kind;
  config::LaneMode lane_mode;  // kPaired, kFlow or kSoftware
  bool ip_checksum_offload;    // the device fills in IPv4 checksums of frames we send
  std::array<std::uint32_t, wire::kPriorities> tx_queued;  // frames waiting per lane (approximate)
  std::uint16_t dpdk_port;
  int socket;
  wire::Mac mac;
  bool link_up;
  std::uint64_t ipackets, opackets, ibytes, obytes, imissed, ierrors, oerrors, rx_nombuf;
  std::uint64_t ip_fragments;  // IPv4 fragments that reached the interface (kernel-backed ports)
  std::vector<NodeId> peers;
  // Faults the port injects into what it receives (config::Port::fault); all 0 without.
  std::string fault;  // the profile ("none" without)
  std::uint64_t fault_seen, fault_dropped, fault_corrupted, fault_duplicated, fault_reordered, fault_delayed;
  std::uint64_t redials;  // a memif client: times it dialled its server again (link down 2 s)
};

struct PeerInfo {
  NodeId id;
  std::string name;
  std::uint32_t ip;
  wire::Mac mac;
  std::size_t port;  // index into ports()
};

// One link of the node (a port and a peer it reaches on it), as the heartbeats see it.
struct LinkInfo {
  NodeId peer;
  std::size_t port;         // index into ports()
  bool up;                  // heartbeats arrive (or heartbeats are off)
  std::uint32_t rtt_ns;     // smoothed heartbeat round trip; 0: not measured
  std::uint64_t heartbeats_rx, heartbeats_tx;
  std::uint64_t downs;      // times declared down
};

// Where frames for one destination go, per lane (docs/architecture.md, "Routing").
struct RouteInfo {
  NodeId dst;
  struct Hop {
    NodeId next_hop = 0;      // 0: no route up
    std::size_t port = 0;
    std::uint64_t cost = 0;   // the lane's metric (delay: ns, plus 1 us a hop; load: levels)
    std::string metric;       // "delay" or "load"
    unsigned paths = 0;       // candidate links (equal-cost and alternates)
  };
  std::array<Hop, wire::kPriorities> lanes;
  // Two paths (SendOptions::paths): where the two copies leave; next_hop 0 when there is no
  // pair of disjoint paths with both links up.
  struct PathStart {
    NodeId next_hop = 0;
    std::size_t port = 0;
  };
  std::array<PathStart, 2> two_paths{};
};

struct RoutingInfo {
  std::uint64_t table_version;     // forwarding tables built so far (the newest one's version)
  std::uint64_t table_in_use;      // the version the datapath routes with (it takes the newest between bursts)
  std::uint64_t build_ns;          // the last build's duration
  std::uint64_t lsa_received, lsa_sent, lsa_originated, lsa_refused, db_size, db_syncs;
  std::uint64_t mailbox_dropped;   // received advertisements lost to a full mailbox (repaired by refresh)
};

// A send from another thread (a control socket, a test), carried out by the datapath.
struct ProxySend {
  // Who `dst` names: a node, every node (dst ignored), a group's members, or one instance of a
  // service per message. Replies can be awaited from a node or a service only.
  enum class Target : std::uint8_t { kNode, kBroadcast, kGroup, kService };
  Target target = Target::kNode;
  NodeId dst = 0;                 // node, group or service id
  // A service with the hash policy: every message's key; unset, message i has key i.
  std::optional<std::uint64_t> key;
  MsgType type = MsgType::kCommand;
  std::uint8_t priority = 0;
  std::uint16_t channel = 0;
  std::uint32_t count = 1;        // send this many messages
  // Writes message i's payload into `room` (the frame's payload, max_payload() bytes, or `size`
  // bytes) and returns its length. Runs on the datapath thread while the caller waits: it must
  // not block, lock or allocate. Empty: every message has an empty payload.
  std::function<std::size_t(std::uint32_t i, std::span<std::byte> room)> fill;
  // Room for each message's payload: 0 (one frame, max_payload()), or more, up to the cluster's
  // max_message: large messages, sent reliably as fragments (to a node only; kTooLarge above).
  std::size_t size = 0;
  bool await_reply = false;       // wait for a kResponse to each message, from dst
  // Send every message reliably (SendOptions::reliable): to a node, a service's instance, or
  // each recipient of a broadcast or group (Node::broadcast). `sent` then counts messages the
  // reliable stage took; what it later gives up
  // on is reported through Node::on_delivery_failure and counted per lane.
  bool reliable = false;
  std::uint8_t paths = 1;         // 2: over two disjoint paths (SendOptions::paths); to a node only
  double rate_mps = 0;            // pace the messages at this rate; 0: as fast as the lane takes them
  std::chrono::milliseconds timeout{2000};  // from the last message sent (paced: from when the next is due)

  // A fill that copies `payload` into every message (the span must outlive the send).
  static std::function<std::size_t(std::uint32_t, std::span<std::byte>)> copy_of(std::span<const std::byte> payload);
};

struct ProxyResult {
  SendStatus status = SendStatus::kOk;
  std::uint32_t sent = 0;         // messages handed to the port, in order: 0 .. sent-1
  std::uint32_t replies = 0;
  std::string reply;              // payload of the first reply
  std::uint64_t rtt_ns = 0;       // round trip of the first reply
  std::uint32_t failed = 0;       // service requests reported failed (status kFailed)
  std::vector<std::pair<NodeId, std::uint32_t>> spread;  // a service: messages per instance
};

class Node;

// The thread-safe way into a node (any thread). A request takes a slot of a preallocated table,
// reaches the datapath over a ring, and is carried out by poll() within one control budget
// shared by all requests; the caller's thread waits for the datapath's completion word,
// sleeping between looks (the datapath never wakes anyone, never allocates or locks for it).
class NodeProxy {
 public:
  ProxyResult send(const ProxySend& req);

 private:
  friend class Node;
  explicit NodeProxy(Node& n) : node_(n) {}
  Node& node_;
};

class Node {
 public:
  // Called for every delivered message, on the datapath thread. The message is freed when the
  // handler returns, unless the handler moved it away or took its frame (take_frame).
  using Handler = std::function<void(RxMessage&)>;

  // Starts node `id` of `cluster` inside an already running EAL: mempools, ports, routes.
  // Throws config::ConfigError for config problems, std::runtime_error for device failures.
  Node(const config::Cluster& cluster, NodeId id, drivers::Eal& eal, const NodeOptions& opts = {});
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  NodeId id() const noexcept;
  const config::Node& config() const noexcept;
  const config::Cluster& cluster() const noexcept;
  Clock& clock() const noexcept;

  // --- owner thread only ---------------------------------------------------------------
  // A frame with room for `payload_len` bytes; empty (false) when the pool is exhausted. Above
  // max_payload() and up to the cluster's max_message, a large frame in one of the node's
  // message buffers (empty when all are in use, or above max_message).
  TxFrame alloc(std::size_t payload_len) noexcept;
  // Sends `f` to node `dst`. On kOk the frame is consumed; otherwise it stays the caller's.
  // A large frame is always sent reliably, as fragments (docs/architecture.md, "Large
  // messages"); kBackpressure while an earlier large message to dst on that lane is still
  // being cut into fragments. Only send() and respond() take large frames (else kTooLarge),
  // even one truncated to one frame's size (send() then sends it as one reliable frame).
  SendStatus send(TxFrame& f, NodeId dst, MsgType type, std::uint8_t priority, const SendOptions& o = {}) noexcept;
  // Sends `f` to every other node of the cluster; each receives it once (down this node's
  // broadcast tree, one copy per branch, the payload shared).
  // With SendOptions::reliable: to every other node the routing table reaches now, one reliable
  // frame each in its (node, priority) session, the payload shared by reference behind a
  // header of its own (docs/architecture.md, "Reliable broadcast and multicast"): a receiver
  // gets it in order with this node's other reliable messages on that lane, exactly once; a
  // recipient that becomes unreachable before acknowledging its copy is reported
  // (on_delivery_failure; a node unreachable when it is sent is no recipient). All or nothing:
  // kBackpressure while any recipient's session is out of credit (or cutting a large message),
  // kNoSession when session state would run out (reliable_peers).
  SendStatus broadcast(TxFrame& f, MsgType type, std::uint8_t priority, const SendOptions& o = {}) noexcept;
  // Sends `f` to every member of group `group` (an id of the cluster file's [[group]]) but this
  // node; each receives it once. kBadArgument for a group the cluster file does not have.
  // SendOptions::reliable: to the members the routing table reaches now, as broadcast() does.
  SendStatus multicast(TxFrame& f, std::uint16_t group, MsgType type, std::uint8_t priority,
                       const SendOptions& o = {}) noexcept;
  // Sends `f` to one live instance of service `service` (an id of the cluster file's
  // [[service]]), chosen by its policy; `instance`, when given, receives the node chosen.
  // Requests (kCommand, kResourceRequest) are tracked until their response arrives; those
  // whose instance goes down or does not answer in time are reported (on_service_failure).
  // SendOptions::reliable: to the instance chosen through reliable delivery, as send() does (and
  // kNoSession as there). kNoRoute when no instance is live; kBadArgument for an unknown service; kBackpressure when
  // 16,384 requests are outstanding.
  SendStatus send_service(TxFrame& f, std::uint16_t service, MsgType type, std::uint8_t priority,
                          const SendOptions& o = {}, NodeId* instance = nullptr) noexcept;
  // Copies `payload` into a new frame (a large one above max_payload()) and sends it.
  SendStatus send_copy(NodeId dst, MsgType type, std::uint8_t priority, std::span<const std::byte> payload,
                       const SendOptions& o = {}) noexcept;
  // Sends `f` as the kResponse to `request`, to its sender, on its priority and channel.
  // A response is owed: it never sheds; on kBackpressure the caller keeps `f` and retries later
  // (the request's header stays readable after take_frame).
  SendStatus respond(const RxMessage& request, TxFrame& f) noexcept;
  // The received mbuf of `m` as a frame whose payload is the message's payload, writable:
  // answer or forward a message without copying it. `m` keeps its header; its payload is empty.
  // For a large message (no single mbuf): empty, and its reassembly buffer goes back now.
  TxFrame take_frame(RxMessage& m) noexcept;

  // Delivery: with a handler, poll() calls it for every message; without one, messages queue
  // for recv(), a queue per lane (NodeOptions::rx_queue_depth each). When a lane's queue is
  // full the rest wait where they are (the port's lane queue, or, on a port whose lanes share
  // one queue, that queue; reliable ones in their session, pushing back on their senders), so
  // nothing accepted is dropped; a lane whose consumer stalls holds up no other lane on a port
  // with a queue per lane, and no other lane's reliable traffic anywhere.
  void on_message(Handler h);
  // Called on the datapath thread for every service request reported failed.
  void on_service_failure(std::function<void(const ServiceFailure&)> h);
  // Called on the datapath thread for every reliable message given up (DeliveryFailure).
  void on_delivery_failure(std::function<void(const DeliveryFailure&)> h);
  // The oldest message of the highest-priority lane that has one (P0 first).
  std::optional<RxMessage> recv() noexcept;
  // The oldest message of lane `priority` (0..4; others: none).
  std::optional<RxMessage> recv(std::uint8_t priority) noexcept;

  // One iteration of the datapath loop (docs/architecture.md, "The node as stages"): TX, RX
  // through validate, dispatch and deliver, timers, control requests, TX. Returns the work done.
  unsigned poll() noexcept;
  // Hands every queued frame the ports take to them, without receiving (safe inside a
  // handler). Returns the frames still waiting.
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
  // Joins or leaves a group (an id of the cluster file's [[group]]); the fabric learns it
  // with this node's next advertisement (within milliseconds). False for an unknown group.
  bool join(std::uint16_t group) noexcept;
  bool leave(std::uint16_t group) noexcept;
  std::vector<std::uint16_t> groups() const;  // the groups this node is a member of
  // The members of a group as this node's newest table knows them (advertised), ascending.
  // The datapath sends by that table once routing().table_in_use has caught up with it.
  std::vector<NodeId> members(std::uint16_t group) const;
  stats::Snapshot snapshot() const;
  std::vector<PortInfo> ports() const;
  std::vector<PeerInfo> peers() const;
  std::vector<LinkInfo> links() const;
  // The routing agent's newest table, per destination and lane (links as they are now).
  std::vector<RouteInfo> routes() const;
  RoutingInfo routing() const;
  std::vector<ServiceInfo> services() const;
  unsigned mbufs_available() const noexcept;
  std::size_t max_payload() const noexcept;  // bytes one frame carries at the cluster's MTU
  std::size_t max_message() const noexcept;  // bytes one message carries (fragmented above max_payload)

  struct Impl;

 private:
  friend class NodeProxy;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nerve
