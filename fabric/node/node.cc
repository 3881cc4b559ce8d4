// The node: start-up and shutdown, the public API, and poll() as the list of its stages.
#include "nerve/node.hpp"

#include <fmt/format.h>
#include <rte_mbuf.h>

#include <cstring>
#include <stdexcept>

#include "access.hpp"
#include "eal.hpp"
#include "node_impl.hpp"

namespace nerve {

// ---- the datapath -------------------------------------------------------------------------

void Node::Impl::Pipeline::operator()(std::size_t port, rte_mbuf** frames, std::uint16_t n) noexcept {
  node::RxItem* it = items.data();
  std::uint16_t k = I.validate->run(frames, n, it);
  // [open]     security: decrypt and verify here (secure/), before anything reads a payload.
  // [sequence] reliability: per-peer sequence and acknowledgement state here (reliable/).
  k = I.dispatch->run(port, it, k);
  if (k == 0) return;
  const std::uint64_t now = I.clock.now_ns();  // the clock, read once per burst
  I.tx->lend_now(now);                         // what handlers send carries it too
  I.deliver->run(it, k, now);
  I.tx->end_lend();
}

unsigned Node::poll() noexcept {
  Impl& I = *impl_;
  I.p0.tick();
  unsigned work = I.tx->drain();               // TX: what earlier sends left queued, P0 first
  work += I.rx->poll(I.pipeline);              // RX -> validate -> dispatch -> deliver
  // The slow path, every kSlowEvery polls (or every poll while a control request is under
  // way): the clock, control requests, timers. An idle poll reads no clock.
  if (I.control->busy() || ++I.slow_tick >= Impl::kSlowEvery) {
    I.slow_tick = 0;
    const std::uint64_t now = I.clock.now_ns();
    work += I.control->run(now);               // requests from other threads, one budget
    work += I.timers.run(now);                 // due timers: control deadlines, clock sync
  }
  work += I.tx->drain();                       // TX: what this poll sent
  return work;
}

unsigned Node::flush() noexcept {
  impl_->tx->flush_all();
  return impl_->tx->waiting();
}

void Node::idle_step(unsigned work) noexcept {
  Impl& I = *impl_;
  I.idle->step(work, [&] { return I.clock.now_ns(); });
}

void Node::run(const std::atomic<bool>& stop) noexcept {
  while (!stop.load(std::memory_order_relaxed)) idle_step(poll());
  impl_->tx->flush_all();
}

void Node::cancel_requests() noexcept { impl_->control->cancel_all(); }

// ---- send and receive ---------------------------------------------------------------------

TxFrame Node::alloc(std::size_t payload_len) noexcept {
  rte_mbuf* m = impl_->tx->alloc(payload_len);
  if (!m) return {};
  return NodeAccess::frame(m, std::span<std::byte>(rte_pktmbuf_mtod(m, std::byte*), payload_len));
}

SendStatus Node::send(TxFrame& f, NodeId dst, MsgType type, std::uint8_t priority, const SendOptions& o) noexcept {
  if (!f) return SendStatus::kBadArgument;
  const SendStatus s = impl_->tx->send(NodeAccess::mbuf(f), dst, type, priority, o);
  if (s == SendStatus::kOk) NodeAccess::release(f);
  return s;
}

SendStatus Node::send_copy(NodeId dst, MsgType type, std::uint8_t priority, std::span<const std::byte> payload,
                           const SendOptions& o) noexcept {
  if (payload.size() > impl_->max_payload) return SendStatus::kTooLarge;
  TxFrame f = alloc(payload.size());
  if (!f) return SendStatus::kBackpressure;
  std::memcpy(f.payload().data(), payload.data(), payload.size());
  return send(f, dst, type, priority, o);
}

SendStatus Node::respond(const RxMessage& request, TxFrame& f) noexcept {
  if (!f) return SendStatus::kBadArgument;
  SendOptions o;
  o.channel = request.channel();
  o.never_shed = true;  // a response is owed: pushed back, never shed
  const SendStatus s =
      impl_->tx->send(NodeAccess::mbuf(f), request.source(), MsgType::kResponse, request.priority(), o, request.header().msg_id);
  if (s == SendStatus::kOk) NodeAccess::release(f);
  return s;
}

TxFrame Node::take_frame(RxMessage& m) noexcept {
  rte_mbuf* mb = NodeAccess::release(m);
  if (!mb) return {};
  // The payload stays where it is; the old headers become headroom for the new ones.
  const auto len = static_cast<std::uint16_t>(m.header().payload_len);
  rte_pktmbuf_adj(mb, static_cast<std::uint16_t>(wire::kOverhead));
  rte_pktmbuf_trim(mb, static_cast<std::uint16_t>(mb->data_len - len));
  mb->ol_flags = 0;
  return NodeAccess::frame(mb, std::span<std::byte>(rte_pktmbuf_mtod(mb, std::byte*), len));
}

void Node::on_message(Handler h) { impl_->deliver->set_handler(std::move(h)); }

std::optional<RxMessage> Node::recv() noexcept { return impl_->deliver->recv(); }

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
void TxFrame::truncate(std::size_t n) noexcept {
  if (!m_ || n >= payload_.size()) return;
  rte_pktmbuf_trim(m_, static_cast<std::uint16_t>(payload_.size() - n));
  payload_ = payload_.first(n);
}

RxMessage& RxMessage::operator=(RxMessage&& o) noexcept {
  if (this != &o) {
    if (m_) rte_pktmbuf_free(m_);
    m_ = o.m_;
    hdr_ = o.hdr_;
    payload_ = o.payload_;
    latency_ns_ = o.latency_ns_;
    received_ns_ = o.received_ns_;
    o.m_ = nullptr;
  }
  return *this;
}
RxMessage::~RxMessage() {
  if (m_) rte_pktmbuf_free(m_);
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

// ---- start-up and shutdown ----------------------------------------------------------------

Node::Impl::Impl(Node& self, const config::Cluster& c, NodeId node_id, const NodeOptions& o)
    : cluster(c),
      cfg(c.node(node_id)),
      opts(o),
      clock(o.clock ? *o.clock : Clock::tsc()),
      max_payload(config::max_payload(c.mtu)),
      clock_sync([](void* ctx, std::uint64_t now) {
        auto& I = *static_cast<Impl*>(ctx);
        I.clock.sync();  // re-anchored here, between bursts, rather than inside one
        I.clock_sync.arm(now + Clock::kSyncIntervalNs / 2);
      }, this),
      proxy(self) {}

Node::Node(const config::Cluster& cluster, NodeId id, drivers::Eal& eal, const NodeOptions& opts)
    : impl_(std::make_unique<Impl>(*this, cluster, id, opts)) {
  Impl& I = *impl_;
  if (opts.rx_queue_depth == 0 || (opts.rx_queue_depth & (opts.rx_queue_depth - 1)) != 0)
    throw std::invalid_argument("NodeOptions.rx_queue_depth must be a power of two");
  for (unsigned l = 0; l < wire::kPriorities; ++l) I.budget_ns[l] = std::uint64_t{I.cfg.lane_budget_us[l]} * 1000u;

  auto pool_for = [&](int socket) {
    auto& p = I.pools[socket];
    if (!p)
      p = std::make_unique<drivers::Mempool>(fmt::format("nv{}s{}", I.cfg.id, socket), I.cfg.mbufs, socket,
                                             cluster.mtu);
    return p->get();
  };
  rte_mempool* tx_pool = pool_for(eal.socket());

  std::vector<wire::Mac> macs;
  for (std::size_t j = 0; j < I.cfg.ports.size(); ++j) {
    const config::Port& pc = I.cfg.ports[j];
    const int numa = drivers::port_numa_node(pc);
    const bool lead = pc.peers.empty() || I.cfg.id < pc.peers.front();
    // Lane mode: paired queues where the link pairs them end to end, hardware steering where a
    // NIC accepts the rules, software classification everywhere else.
    config::LaneMode mode = config::LaneMode::kSoftware;
    std::uint16_t queues = 1;
    if (pc.lanes == config::LaneMode::kAuto) {
      if (pc.kind == config::PortKind::kRing || pc.kind == config::PortKind::kMemif) {
        mode = config::LaneMode::kPaired;
        queues = wire::kPriorities;
      } else if (pc.kind == config::PortKind::kPci) {
        mode = config::LaneMode::kFlow;
        queues = wire::kPriorities;
      }
    }
    node::NodePort np;
    np.dev = std::make_unique<drivers::Port>(pc, fmt::format("n{}p{}", I.cfg.id, j),
                                             pool_for(numa >= 0 ? numa : eal.socket()), queues, I.cfg.mac, lead,
                                             cluster.mtu);
    // Without the rules every frame lands on queue 0 (no RSS is configured): software lanes.
    if (mode == config::LaneMode::kFlow && !np.dev->steer_lanes_by_dscp()) mode = config::LaneMode::kSoftware;
    np.lanes = mode;
    macs.push_back(np.dev->mac());
    I.ports.push_back(std::move(np));
  }
  I.nodes = std::make_unique<route::NodeTable>(cluster);
  I.routes = std::make_unique<route::RouteTable>(cluster, I.cfg, macs);

  stats::LcoreStats& st = *I.lcore;
  I.idle.emplace(I.cfg);
  I.tx.emplace(I.ports, *I.routes, I.cfg, tx_pool, I.max_payload, I.clock, st, *I.idle, I.guard, I.p0);
  I.proxies.emplace(I.cfg.id, I.max_payload, eal.socket());
  I.control.emplace(*I.proxies, *I.tx, I.timers);
  I.validate.emplace(wire::RxFilter{cluster.udp_port, cluster.mtu, 0}, st);
  I.dispatch.emplace(I.cfg.id, I.cfg.ip, *I.nodes, macs, st);
  I.deliver.emplace(cluster, I.cfg, opts.rx_queue_depth, st, *I.idle, *I.control);
  I.rx.emplace(I.ports, I.guard, I.p0);
  I.timers.add(I.clock_sync);
  I.clock_sync.arm(0);

  for (auto& p : I.ports) p.dev->wait_link(opts.link_wait);
}

Node::~Node() {
  Impl& I = *impl_;
  I.control.reset();   // requests still queued or in flight end with kShutdown
  I.deliver->clear();  // messages never taken by recv()
  I.tx.reset();        // frames still queued
  I.ports.clear();     // stopped and closed before their pools go
  I.pools.clear();
}

NodeId Node::id() const noexcept { return impl_->cfg.id; }
const config::Node& Node::config() const noexcept { return impl_->cfg; }
Clock& Node::clock() const noexcept { return impl_->clock; }
NodeProxy& Node::proxy() noexcept { return impl_->proxy; }

// ---- any thread ---------------------------------------------------------------------------

stats::Snapshot Node::snapshot() const { return stats::snapshot({impl_->lcore.get()}, impl_->budget_ns); }

std::vector<PortInfo> Node::ports() const {
  const Impl& I = *impl_;
  std::vector<PortInfo> out;
  for (std::size_t j = 0; j < I.ports.size(); ++j) {
    const drivers::Port& p = *I.ports[j].dev;
    const drivers::PortStats s = p.stats();
    std::array<std::uint32_t, wire::kPriorities> queued{};
    for (unsigned l = 0; l < wire::kPriorities; ++l) queued[l] = I.tx->queued(j, l);
    out.push_back(PortInfo{p.name(), p.kind(), I.ports[j].lanes, I.tx->ip_checksum_offload(j), queued, p.id(),
                           p.socket(), p.mac(), p.link_up(), s.eth.ipackets, s.eth.opackets, s.eth.ibytes,
                           s.eth.obytes, s.eth.imissed, s.eth.ierrors, s.eth.oerrors, s.eth.rx_nombuf,
                           s.ip_fragments, I.cfg.ports[j].peers});
  }
  return out;
}

std::vector<PeerInfo> Node::peers() const {
  const Impl& I = *impl_;
  std::vector<PeerInfo> out;
  for (const route::Route& r : I.routes->routes()) {
    const config::Node& pn = I.cluster.node(r.dst);
    out.push_back(PeerInfo{r.dst, pn.name, pn.ip, pn.mac, r.port});
  }
  return out;
}

std::size_t Node::max_payload() const noexcept { return impl_->max_payload; }

unsigned Node::mbufs_available() const noexcept {
  unsigned n = impl_->tx->stashed();
  for (const auto& [s, p] : impl_->pools) n += p->available();
  return n;
}

}  // namespace nerve
