// The node: ports, routes, the datapath loop, delivery and the control proxy.
#include "nerve/node.hpp"

#include <fmt/format.h>
#include <rte_cycles.h>
#include <rte_mbuf.h>
#include <rte_pause.h>
#include <rte_prefetch.h>
#include <rte_ring.h>
#include <time.h>

#include <cstring>
#include <deque>
#include <future>
#include <iterator>
#include <map>
#include <stdexcept>
#include <unordered_map>

#include "eal.hpp"
#include "nerve/tx_lanes.hpp"
#include "port.hpp"

namespace nerve {
namespace {

constexpr std::uint16_t kBurst = 32;          // RX and TX burst size (DESIGN.md: up to 32)
constexpr unsigned kSoftwareRxBursts = 4;     // software lanes: bursts read per poll before delivering
constexpr unsigned kControlRingSize = 1024;   // pending proxy requests
constexpr unsigned kControlPerPoll = 32;      // proxy messages sent per poll iteration
constexpr unsigned kSpinPolls = 512;          // back-off: empty polls spent pausing before sleeping
constexpr std::uint8_t kDefaultTtl = 8;

// Wall-clock nanoseconds (vDSO, no syscall): every node on a host shares this clock, so
// one-way latency is sender timestamp to receiver delivery. Across hosts it needs PTP.
inline std::uint64_t now_ns() noexcept {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

struct Route {
  std::size_t port;
  wire::Endpoints ep;
};

// A port and how it keeps lanes apart.
struct PortLanes {
  LaneMode mode = LaneMode::kSoftware;
  lane::TxLanes<rte_mbuf> tx;
  explicit PortLanes(const lane::LaneConfig& c) : tx(c) {}
};

unsigned held_total(const std::array<unsigned, lane::kLanes>& h) noexcept {
  unsigned n = 0;
  for (unsigned v : h) n += v;
  return n;
}

}  // namespace

// One ControlSend in flight on the datapath. Owned by the proxy caller, who blocks on `done`
// until the datapath fulfils it exactly once.
struct ProxyRequest {
  ControlSend req;
  ControlResult res;
  std::promise<ControlResult> done;
  std::uint32_t next = 0;       // messages sent so far
  std::uint32_t awaiting = 0;   // replies outstanding
  std::uint64_t deadline_ns = 0;
  std::uint64_t start_ns = 0;
  std::string payload;          // the message being sent (payload, and "#i" when numbered)
  // The hand-over through the control ring, in C++ terms: DPDK 22.11's ring orders its slots
  // with x86 compiler barriers, which the C++ memory model (and ThreadSanitizer) do not see.
  // Released by the caller before the enqueue, acquired by the datapath after the dequeue.
  std::atomic<bool> published{false};
};

// A request just dequeued from the control ring, with everything its caller wrote visible.
ProxyRequest* take_request(void* obj) noexcept {
  auto* r = static_cast<ProxyRequest*>(obj);
  while (!r->published.load(std::memory_order_acquire)) rte_pause();  // set before the enqueue: never spins
  return r;
}

struct Node::Impl {
  Impl(Node& self, const config::Cluster& c, NodeId node_id, const NodeOptions& o)
      : cluster(c), cfg(c.node(node_id)), opts(o), proxy(self) {}

  config::Cluster cluster;
  config::Node cfg;
  NodeOptions opts;
  wire::RxFilter filter;
  std::size_t max_payload = 0;  // one frame at the cluster's MTU
  std::map<int, std::unique_ptr<drivers::Mempool>> pools;  // one per NUMA socket
  rte_mempool* tx_pool = nullptr;                          // the datapath lcore's socket
  std::vector<std::unique_ptr<drivers::Port>> ports;
  std::deque<PortLanes> lanes;  // per port (deque: TxLanes is not movable)
  lane::LaneConfig lane_cfg;
  std::array<std::uint64_t, wire::kPriorities> budget_ns{};
  std::uint32_t busy_mask = 0;    // lanes that keep a backing-off node busy
  std::uint64_t busy_window_ns = 0;
  std::uint64_t busy_until_ns = 0;
  unsigned idle_polls = 0;        // back-off state (idle_step)
  std::uint32_t sleep_us = 1;
  std::vector<std::int32_t> route_of = std::vector<std::int32_t>(65536, -1);
  std::vector<Route> routes;
  std::vector<PeerInfo> peers;
  std::unique_ptr<stats::LcoreStats> lcore = std::make_unique<stats::LcoreStats>();
  Handler handler;
  std::vector<RxMessage> rxq;
  std::uint32_t rx_head = 0, rx_tail = 0, rx_mask = 0;
  std::uint32_t next_msg_id = 1;
  rte_ring* control = nullptr;
  std::vector<ProxyRequest*> active;
  std::unordered_map<std::uint32_t, std::pair<ProxyRequest*, std::uint64_t>> awaiting;  // msg_id -> (req, sent ns)
  NodeProxy proxy;

  std::uint32_t rxq_space() const noexcept { return rx_mask + 1 - (rx_tail - rx_head); }

  // Frames one RX burst may take: with no handler, never more than recv()'s queue can keep
  // beside the `held` frames already taken but not yet queued (the rest wait in the port's
  // ring rather than be dropped).
  std::uint16_t rx_want(std::uint32_t held = 0) noexcept {
    if (handler) return kBurst;
    const std::uint32_t space = rxq_space() - held;
    if (space >= kBurst) return kBurst;
    lcore->rx_deferred.add();
    return static_cast<std::uint16_t>(space);
  }

  // Counts a received frame and validates it; false (frame freed, refusal counted) if refused.
  bool accept(rte_mbuf* m, wire::Decoded& d) noexcept {
    lcore->rx_frames.add();
    lcore->rx_bytes.add(m->pkt_len);
    if (m->nb_segs != 1) [[unlikely]] {
      lcore->rx_multi_segment.add();
      rte_pktmbuf_free(m);
      return false;
    }
    const auto frame = std::span<const std::byte>(rte_pktmbuf_mtod(m, const std::byte*), m->data_len);
    if (const wire::Refusal r = wire::decode(frame, filter, d); r != wire::Refusal::kNone) [[unlikely]] {
      lcore->refused[static_cast<std::size_t>(r)].add();
      rte_pktmbuf_free(m);
      return false;
    }
    return true;
  }

  // Accounts latency against the lane's budget, then hands the message to a waiting proxy
  // request, the handler, or recv()'s queue.
  void deliver(rte_mbuf* m, const wire::Decoded& d, std::uint64_t now) noexcept {
    const std::uint8_t prio = d.hdr.priority;
    const std::uint64_t lat = now > d.hdr.timestamp_ns ? now - d.hdr.timestamp_ns : 0;
    lcore->latency_ns[prio].record(lat);
    if (lat > budget_ns[prio]) lcore->deadline_miss[prio].add();
    lcore->delivered[static_cast<std::size_t>(d.hdr.type)][prio].add();
    if ((busy_mask >> prio) & 1u) busy_until_ns = now + busy_window_ns;

    RxMessage msg;
    msg.m_ = m;
    msg.hdr_ = d.hdr;
    msg.payload_ = d.payload;
    msg.latency_ns_ = lat;
    if (d.hdr.type == MsgType::kResponse && !awaiting.empty()) {
      if (auto it = awaiting.find(d.hdr.corr_id); it != awaiting.end()) {
        auto [req, sent_ns] = it->second;
        awaiting.erase(it);
        if (req->res.replies++ == 0) {
          req->res.reply.assign(reinterpret_cast<const char*>(d.payload.data()), d.payload.size());
          req->res.rtt_ns = now - sent_ns;
        }
        --req->awaiting;
        if (req->awaiting == 0 && req->next == req->req.count) finish(req, SendStatus::kOk);
        return;
      }
    }
    if (handler) handler(msg);
    else rxq[rx_tail++ & rx_mask] = std::move(msg);
  }

  struct Held {
    rte_mbuf* m;
    wire::Decoded d;
  };
  std::array<std::array<Held, kSoftwareRxBursts * kBurst>, lane::kLanes> stash{};  // software lanes

  void count_tx(rte_mbuf* const* pkts, std::uint16_t n) noexcept {
    std::uint64_t bytes = 0;
    for (std::uint16_t i = 0; i < n; ++i) bytes += pkts[i]->pkt_len;
    lcore->tx_frames.add(n);
    lcore->tx_bytes.add(bytes);
  }

  // Hands queued frames to port p, scheduler order. A port that takes less than offered keeps
  // the rest at the head of their lanes for next time. Returns frames handed over.
  unsigned flush(std::size_t p) noexcept {
    PortLanes& pl = lanes[p];
    drivers::Port& port = *ports[p];
    unsigned moved = 0;
    rte_mbuf* burst[kBurst];
    if (pl.mode == LaneMode::kPaired) {
      // Lane l leaves on TX queue l, which the peer reads as RX queue l: no lane waits behind
      // another anywhere between the two nodes.
      for (unsigned l = 0; l < lane::kLanes; ++l) {
        while (pl.tx.size(l) > 0) {
          const auto n = static_cast<std::uint16_t>(pl.tx.pull_lane(l, burst, kBurst));
          const std::uint16_t sent = port.tx_burst(static_cast<std::uint16_t>(l), burst, n);
          count_tx(burst, sent);
          moved += sent;
          if (sent < n) {
            pl.tx.unpull_lane(l, burst + sent, n - sent);
            break;
          }
        }
      }
      return moved;
    }
    std::uint8_t from[kBurst];
    while (pl.tx.total() > 0) {
      const auto n = static_cast<std::uint16_t>(pl.tx.pull(burst, from, kBurst));
      const std::uint16_t sent = port.tx_burst(0, burst, n);
      count_tx(burst, sent);
      moved += sent;
      if (sent < n) {
        pl.tx.unpull(burst + sent, from + sent, n - sent);
        break;
      }
    }
    return moved;
  }

  unsigned flush_all() noexcept {
    unsigned moved = 0;
    for (std::size_t p = 0; p < lanes.size(); ++p) moved += flush(p);
    return moved;
  }

  void finish(ProxyRequest* r, SendStatus s) {
    r->res.status = r->res.status == SendStatus::kOk ? s : r->res.status;
    for (auto it = awaiting.begin(); it != awaiting.end();) {
      it = it->second.first == r ? awaiting.erase(it) : std::next(it);
    }
    std::erase(active, r);
    r->done.set_value(r->res);
  }
};

// ---- frames -------------------------------------------------------------------------------

TxFrame& TxFrame::operator=(TxFrame&& o) noexcept {
  if (this != &o) {
    if (m_) rte_pktmbuf_free(m_);
    m_ = o.m_;
    payload_ = o.payload_;
    o.m_ = nullptr;
  }
  return *this;
}
TxFrame::~TxFrame() {
  if (m_) rte_pktmbuf_free(m_);
}

RxMessage& RxMessage::operator=(RxMessage&& o) noexcept {
  if (this != &o) {
    if (m_) rte_pktmbuf_free(m_);
    m_ = o.m_;
    hdr_ = o.hdr_;
    payload_ = o.payload_;
    latency_ns_ = o.latency_ns_;
    o.m_ = nullptr;
  }
  return *this;
}
RxMessage::~RxMessage() {
  if (m_) rte_pktmbuf_free(m_);
}

std::string_view to_string(LaneMode m) noexcept {
  switch (m) {
    case LaneMode::kPaired: return "paired-queues";
    case LaneMode::kFlow: return "rte_flow";
    case LaneMode::kSoftware: return "software";
  }
  return "unknown";
}

std::string_view to_string(SendStatus s) noexcept {
  switch (s) {
    case SendStatus::kOk: return "ok";
    case SendStatus::kBackpressure: return "backpressure";
    case SendStatus::kNoRoute: return "no_route";
    case SendStatus::kTooLarge: return "too_large";
    case SendStatus::kBadArgument: return "bad_argument";
    case SendStatus::kTimeout: return "timeout";
    case SendStatus::kShutdown: return "shutdown";
  }
  return "unknown";
}

std::uint64_t fnv1a64(std::span<const std::byte> data) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (std::byte b : data) {
    h ^= std::to_integer<std::uint64_t>(b);
    h *= 0x100000001b3ull;
  }
  return h;
}

// ---- start-up and shutdown ----------------------------------------------------------------

Node::Node(const config::Cluster& cluster, NodeId id, drivers::Eal& eal, const NodeOptions& opts)
    : impl_(std::make_unique<Impl>(*this, cluster, id, opts)) {
  Impl& I = *impl_;
  if (opts.rx_queue_depth == 0 || (opts.rx_queue_depth & (opts.rx_queue_depth - 1)) != 0)
    throw std::invalid_argument("NodeOptions.rx_queue_depth must be a power of two");
  I.filter = wire::RxFilter{I.cfg.id, cluster.udp_port};
  I.max_payload = config::max_payload(cluster.mtu);
  I.rxq.resize(opts.rx_queue_depth);
  I.rx_mask = opts.rx_queue_depth - 1;

  auto pool_for = [&](int socket) {
    auto& p = I.pools[socket];
    if (!p)
      p = std::make_unique<drivers::Mempool>(fmt::format("nv{}s{}", I.cfg.id, socket), I.cfg.mbufs, socket,
                                             cluster.mtu);
    return p->get();
  };
  I.tx_pool = pool_for(eal.socket());
  for (unsigned l = 0; l < lane::kLanes; ++l) {
    I.budget_ns[l] = std::uint64_t{I.cfg.lane_budget_us[l]} * 1000u;
    I.lane_cfg.depth[l] = I.cfg.lane_depth[l];
    I.lane_cfg.min_share[l] = l == 0 ? 0.0 : I.cfg.lane_min_share;
  }
  for (unsigned l : I.cfg.busy_lanes) I.busy_mask |= 1u << l;
  I.busy_window_ns = std::uint64_t{I.cfg.busy_window_ms} * 1'000'000u;

  for (std::size_t j = 0; j < I.cfg.ports.size(); ++j) {
    const config::Port& pc = I.cfg.ports[j];
    const int numa = drivers::port_numa_node(pc);
    const bool lead = pc.peers.empty() || I.cfg.id < pc.peers.front();
    // Lane mode: paired queues where the link pairs them end to end, hardware steering where a
    // NIC accepts the rules, software classification everywhere else.
    LaneMode mode = LaneMode::kSoftware;
    std::uint16_t queues = 1;
    if (pc.lanes == config::LaneMode::kAuto) {
      if (pc.kind == config::PortKind::kRing || pc.kind == config::PortKind::kMemif) {
        mode = LaneMode::kPaired;
        queues = lane::kLanes;
      } else if (pc.kind == config::PortKind::kPci) {
        mode = LaneMode::kFlow;
        queues = lane::kLanes;
      }
    }
    I.ports.push_back(std::make_unique<drivers::Port>(pc, fmt::format("n{}p{}", I.cfg.id, j),
                                                      pool_for(numa >= 0 ? numa : eal.socket()), queues, I.cfg.mac,
                                                      lead, cluster.mtu));
    // Without the rules every frame lands on queue 0 (no RSS is configured): software lanes.
    if (mode == LaneMode::kFlow && !I.ports.back()->steer_lanes_by_dscp()) mode = LaneMode::kSoftware;
    I.lanes.emplace_back(I.lane_cfg);
    I.lanes.back().mode = mode;
  }

  for (std::size_t j = 0; j < I.cfg.ports.size(); ++j) {
    for (NodeId peer : I.cfg.ports[j].peers) {
      if (I.route_of[peer] >= 0) continue;  // the first port listing a peer carries its traffic
      const config::Node& pn = cluster.node(peer);
      Route r{j, {}};
      r.ep.src_mac = I.ports[j]->mac();
      r.ep.dst_mac = pn.mac;
      r.ep.src_ip = I.cfg.ip;
      r.ep.dst_ip = pn.ip;
      r.ep.src_port = r.ep.dst_port = cluster.udp_port;
      I.route_of[peer] = static_cast<std::int32_t>(I.routes.size());
      I.routes.push_back(r);
      I.peers.push_back(PeerInfo{peer, pn.name, pn.ip, pn.mac, j});
    }
  }

  I.control = rte_ring_create(fmt::format("nvctl{}", I.cfg.id).c_str(), kControlRingSize, eal.socket(),
                              RING_F_SC_DEQ);
  if (!I.control) throw std::runtime_error(fmt::format("node {}: control ring: {}", id, rte_strerror(rte_errno)));

  for (auto& p : I.ports) p->wait_link(opts.link_wait);
}

void Node::cancel_requests() noexcept {
  Impl& I = *impl_;
  void* obj = nullptr;
  while (rte_ring_dequeue(I.control, &obj) == 0) I.active.push_back(take_request(obj));
  while (!I.active.empty()) I.finish(I.active.back(), SendStatus::kShutdown);
}

Node::~Node() {
  Impl& I = *impl_;
  cancel_requests();  // requests still queued or in flight: their callers are waiting
  rte_ring_free(I.control);
  I.rxq.clear();
  for (auto& pl : I.lanes) {
    rte_mbuf* m[kBurst];
    for (unsigned l = 0; l < lane::kLanes; ++l)
      while (const unsigned n = pl.tx.pull_lane(l, m, kBurst)) rte_pktmbuf_free_bulk(m, n);
  }
  I.ports.clear();  // stop and close before their pools go
  I.pools.clear();
}

NodeId Node::id() const noexcept { return impl_->cfg.id; }
const config::Node& Node::config() const noexcept { return impl_->cfg; }
NodeProxy& Node::proxy() noexcept { return impl_->proxy; }
void Node::on_message(Handler h) { impl_->handler = std::move(h); }

// ---- send ---------------------------------------------------------------------------------

TxFrame Node::alloc(std::size_t payload_len) noexcept {
  TxFrame f;
  if (payload_len > impl_->max_payload) return f;
  rte_mbuf* m = rte_pktmbuf_alloc(impl_->tx_pool);
  if (!m) [[unlikely]] {
    impl_->lcore->alloc_failed.add();
    return f;
  }
  // Headroom (RTE_PKTMBUF_HEADROOM, 128 B) takes the 90 bytes of headers at send().
  auto* p = reinterpret_cast<std::byte*>(rte_pktmbuf_append(m, static_cast<std::uint16_t>(payload_len)));
  f.m_ = m;
  f.payload_ = std::span<std::byte>(p, payload_len);
  return f;
}

SendStatus Node::send(TxFrame& f, NodeId dst, MsgType type, std::uint8_t priority, const SendOptions& o) noexcept {
  Impl& I = *impl_;
  const auto t = static_cast<std::uint8_t>(type);
  if (!f || priority >= wire::kPriorities || t < wire::kMsgTypeFirst || t > wire::kMsgTypeLast ||
      (o.flags & ~wire::flag::kKnown) != 0)
    return SendStatus::kBadArgument;
  const std::int32_t r = I.route_of[dst];
  if (r < 0) [[unlikely]] {
    I.lcore->tx_no_route.add();
    return SendStatus::kNoRoute;
  }
  const Route& route = I.routes[static_cast<std::size_t>(r)];
  PortLanes& pl = I.lanes[route.port];
  if ((o.never_shed || !lane::sheds(priority)) && pl.tx.full(priority)) [[unlikely]] {
    I.flush(route.port);
    if (pl.tx.full(priority)) {
      // P0-P2 (and never_shed sends) are never dropped: the caller keeps the frame and decides.
      I.lcore->tx_backpressure.add();
      I.lcore->backpressure[priority].add();
      return SendStatus::kBackpressure;
    }
  }
  wire::Header h;
  h.type = type;
  h.priority = priority;
  h.flags = o.flags;
  h.ttl = kDefaultTtl;
  h.src_node = I.cfg.id;
  h.dst = dst;
  h.channel = o.channel;
  h.msg_id = I.next_msg_id++;
  h.corr_id = o.corr_id;
  h.payload_len = static_cast<std::uint16_t>(f.payload_.size());
  h.timestamp_ns = now_ns();
  auto* hdr = reinterpret_cast<std::byte*>(rte_pktmbuf_prepend(f.m_, wire::kOverhead));
  wire::encode_headers(std::span<std::byte, wire::kOverhead>(hdr, wire::kOverhead), route.ep, h);
  rte_mbuf* evicted = nullptr;
  if (pl.tx.push(priority, f.m_, &evicted) == lane::Push::kShed) {
    // P3/P4 lane full: its oldest frame makes room (counted, never silent).
    I.lcore->shed[priority].add();
    rte_pktmbuf_free(evicted);
  }
  f.m_ = nullptr;
  I.lcore->sent[t][priority].add();
  if ((I.busy_mask >> priority) & 1u) I.busy_until_ns = h.timestamp_ns + I.busy_window_ns;
  // P0 leaves now (unless the caller has more at once), ahead of anything queued; the other
  // lanes go out in bursts.
  if ((priority == 0 && !o.more) || pl.tx.total() >= kBurst) I.flush(route.port);
  return SendStatus::kOk;
}

SendStatus Node::send_copy(NodeId dst, MsgType type, std::uint8_t priority, std::span<const std::byte> payload,
                           const SendOptions& o) noexcept {
  TxFrame f = alloc(payload.size());
  if (!f) return payload.size() > impl_->max_payload ? SendStatus::kTooLarge : SendStatus::kBackpressure;
  std::memcpy(f.payload().data(), payload.data(), payload.size());
  return send(f, dst, type, priority, o);
}

SendStatus Node::respond(const RxMessage& request, TxFrame& f) noexcept {
  SendOptions o;
  o.channel = request.header().channel;
  o.corr_id = request.header().msg_id;
  return send(f, request.source(), MsgType::kResponse, request.priority(), o);
}

// ---- receive ------------------------------------------------------------------------------

std::optional<RxMessage> Node::recv() noexcept {
  Impl& I = *impl_;
  if (I.rx_head == I.rx_tail) return std::nullopt;
  return std::move(I.rxq[I.rx_head++ & I.rx_mask]);
}

unsigned Node::poll() noexcept {
  Impl& I = *impl_;
  unsigned work = I.flush_all();
  const std::uint64_t now = now_ns();

  for (std::size_t p = 0; p < I.ports.size(); ++p) {
    drivers::Port& port = *I.ports[p];
    rte_mbuf* bufs[kBurst];
    if (I.lanes[p].mode != LaneMode::kSoftware) {
      // One RX queue per lane: read P0's queue first, and again after each lower lane's
      // burst, so a P0 frame never waits behind lower-priority frames in a shared ring and at
      // most one burst of lower-lane work.
      auto drain = [&](std::uint16_t q) -> std::uint16_t {
        const std::uint16_t want = I.rx_want();
        if (want == 0) return 0;
        const std::uint16_t n = port.rx_burst(q, bufs, want);
        for (std::uint16_t i = 0; i < n; ++i) {
          if (i + 1 < n) rte_prefetch0(rte_pktmbuf_mtod(bufs[i + 1], void*));
          wire::Decoded d;
          if (I.accept(bufs[i], d)) I.deliver(bufs[i], d, now);
        }
        work += n;
        return n;
      };
      drain(0);
      for (std::uint16_t q = 1; q < lane::kLanes; ++q)
        if (drain(q) != 0) drain(0);
      continue;
    }
    // Shared RX queue: read several bursts (reading is cheap next to delivering), classify
    // them into lanes, then deliver P0 first.
    std::array<unsigned, lane::kLanes> held{};
    for (unsigned b = 0; b < kSoftwareRxBursts; ++b) {
      const std::uint16_t want = I.rx_want(held_total(held));
      if (want == 0) break;
      const std::uint16_t n = port.rx_burst(0, bufs, want);
      for (std::uint16_t i = 0; i < n; ++i) {
        if (i + 1 < n) rte_prefetch0(rte_pktmbuf_mtod(bufs[i + 1], void*));
        wire::Decoded d;
        if (!I.accept(bufs[i], d)) continue;
        const unsigned l = d.hdr.priority;
        I.stash[l][held[l]] = {bufs[i], d};
        ++held[l];
      }
      work += n;
      if (n < want) break;
    }
    for (unsigned l = 0; l < lane::kLanes; ++l)
      for (unsigned k = 0; k < held[l]; ++k) I.deliver(I.stash[l][k].m, I.stash[l][k].d, now);
  }

  // Control requests from other threads: bounded work per iteration so traffic keeps moving.
  if (!rte_ring_empty(I.control)) {
    void* objs[8];
    const unsigned n = rte_ring_sc_dequeue_burst(I.control, objs, 8, nullptr);
    for (unsigned i = 0; i < n; ++i) {
      ProxyRequest* r = take_request(objs[i]);
      r->start_ns = now;
      r->deadline_ns = now + static_cast<std::uint64_t>(r->req.timeout.count()) * 1'000'000u;
      I.active.push_back(r);
    }
  }
  for (std::size_t k = 0; k < I.active.size();) {
    ProxyRequest* r = I.active[k];
    unsigned budget = kControlPerPoll;
    if (r->req.rate_mps > 0) {
      // Paced: only the messages the schedule has made due by now.
      const double due = static_cast<double>(now - r->start_ns) * r->req.rate_mps / 1e9 + 1;
      const auto due_n = static_cast<std::uint64_t>(std::min(due, static_cast<double>(r->req.count)));
      budget = static_cast<unsigned>(std::min<std::uint64_t>(budget, due_n > r->next ? due_n - r->next : 0));
      // The timeout runs from when the next message is due, not from the last one sent: a
      // slow schedule is not a stalled send.
      if (r->next < r->req.count) {
        const auto next_due_ns = r->start_ns + static_cast<std::uint64_t>(static_cast<double>(r->next) * 1e9 / r->req.rate_mps);
        r->deadline_ns = std::max(r->deadline_ns, next_due_ns + static_cast<std::uint64_t>(r->req.timeout.count()) * 1'000'000u);
      }
    }
    SendStatus st = SendStatus::kOk;
    while (budget-- > 0 && r->next < r->req.count) {
      // Built in the request's own buffer: no allocation per message once it has grown.
      std::string& payload = r->payload;
      payload.assign(r->req.payload);
      if (r->req.number_payloads) fmt::format_to(std::back_inserter(payload), "#{}", r->next);
      const auto bytes = std::as_bytes(std::span(payload));
      const std::uint32_t msg_id = I.next_msg_id;
      // A counted bulk send must deliver every message: it waits for room on P3/P4 too.
      SendOptions o;
      o.never_shed = true;
      o.more = budget > 0 && r->next + 1 < r->req.count;  // P0 too leaves as one batch per poll
      st = send_copy(r->req.dst, r->req.type, r->req.priority, bytes, o);
      if (st == SendStatus::kBackpressure) break;  // retried next iteration, until the deadline
      if (st != SendStatus::kOk) break;
      r->res.digest += fnv1a64(bytes);
      ++r->res.sent;
      ++r->next;
      r->deadline_ns = now + static_cast<std::uint64_t>(r->req.timeout.count()) * 1'000'000u;
      ++work;
      if (r->req.await_reply) {
        I.awaiting[msg_id] = {r, now};
        ++r->awaiting;
      }
    }
    const bool sent_all = r->next == r->req.count;
    if (st != SendStatus::kOk && st != SendStatus::kBackpressure) I.finish(r, st);
    else if (sent_all && r->awaiting == 0) I.finish(r, SendStatus::kOk);
    else if (now > r->deadline_ns) I.finish(r, st == SendStatus::kBackpressure ? st : SendStatus::kTimeout);
    else ++k;
  }

  work += I.flush_all();
  return work;
}

unsigned Node::flush() noexcept {
  impl_->flush_all();
  unsigned waiting = 0;
  for (const auto& pl : impl_->lanes) waiting += pl.tx.total();
  return waiting;
}

void Node::idle_step(unsigned work) noexcept {
  Impl& I = *impl_;
  if (work != 0) {
    I.idle_polls = 0;
    I.sleep_us = 1;
    return;
  }
  if (I.cfg.idle == config::Idle::kBusy) return;
  // A busy lane (busy_lanes) had traffic within busy_window_ms: keep polling for the next.
  if (I.busy_until_ns != 0 && now_ns() < I.busy_until_ns) return;
  if (++I.idle_polls < kSpinPolls) {
    rte_pause();
    return;
  }
  // Back-off: sleep, doubling up to the node's limit, so idle dev nodes share cores.
  const timespec ts{0, static_cast<long>(I.sleep_us) * 1000};
  nanosleep(&ts, nullptr);
  I.sleep_us = std::min(I.sleep_us * 2, I.cfg.idle_sleep_max_us);
}

void Node::run(const std::atomic<bool>& stop) noexcept {
  while (!stop.load(std::memory_order_relaxed)) idle_step(poll());
  impl_->flush_all();
}

// ---- any thread ---------------------------------------------------------------------------

ControlResult NodeProxy::send(const ControlSend& req) {
  ProxyRequest r;
  r.req = req;
  if (req.count == 0) return r.res;
  auto fut = r.done.get_future();
  r.published.store(true, std::memory_order_release);
  if (rte_ring_mp_enqueue(node_.impl_->control, &r) != 0) {
    r.res.status = SendStatus::kBackpressure;
    return r.res;
  }
  return fut.get();  // the datapath fulfils every request: done, timed out or shut down
}

stats::Snapshot Node::snapshot() const {
  return stats::snapshot({impl_->lcore.get()}, impl_->budget_ns);
}

std::vector<PortInfo> Node::ports() const {
  std::vector<PortInfo> out;
  for (std::size_t j = 0; j < impl_->ports.size(); ++j) {
    const auto& p = *impl_->ports[j];
    const rte_eth_stats s = p.stats();
    std::array<std::uint32_t, wire::kPriorities> queued{};
    for (unsigned l = 0; l < lane::kLanes; ++l) queued[l] = impl_->lanes[j].tx.size(l);
    out.push_back(PortInfo{p.name(), p.kind(), impl_->lanes[j].mode, queued, p.id(), p.socket(), p.mac(), p.link_up(), s.ipackets, s.opackets,
                           s.ibytes, s.obytes, s.imissed, s.ierrors, s.oerrors, s.rx_nombuf,
                           impl_->cfg.ports[j].peers});
  }
  return out;
}

std::vector<PeerInfo> Node::peers() const { return impl_->peers; }

std::size_t Node::max_payload() const noexcept { return impl_->max_payload; }

unsigned Node::mbufs_available() const noexcept {
  unsigned n = 0;
  for (const auto& [s, p] : impl_->pools) n += p->available();
  return n;
}

}  // namespace nerve
