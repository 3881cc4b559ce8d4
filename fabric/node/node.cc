// The node: start-up and shutdown, the public API, and poll() as the list of its stages.
#include "nerve/node.hpp"

#include <fmt/format.h>
#include <rte_cycles.h>
#include <rte_mbuf.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "access.hpp"
#include "eal.hpp"
#include "node_impl.hpp"

namespace nerve {

// ---- the datapath -------------------------------------------------------------------------

void Node::Impl::Pipeline::operator()(std::size_t port, rte_mbuf** frames, std::uint16_t n) noexcept {
  const std::uint64_t now = I.clock.now_ns();  // the clock, read once per burst
  const std::uint16_t rest = I.forward->transit(port, frames, n, now);  // transit frames that need nothing more leave
  node::RxItem* it = items.data();
  std::uint16_t k = rest == 0 ? 0 : I.validate->run(frames, rest, it);
  if (k != 0 || rest != n) {  // fabric frames came (not a burst that was all refused)
    // A node busy with traffic still runs its timers on time (heartbeats above all): a due
    // timer brings the slow path forward to this poll.
    if (now >= I.timers.next_due()) I.slow_due = true;
    I.link->traffic(port, now);  // the link's peer is alive
  }
  // [open]     security: decrypt and verify here (secure/), before anything reads a payload.
  if (k != 0) k = I.dispatch->run(port, it, k, now);  // forwarded and fabric frames leave here
  I.tx->forward_flush();                       // the burst's transit frames, together
  if (k == 0) return;
  I.tx->lend_now(now);                         // what handlers send carries it too
  // [sequence] reliable frames in order, acks taken; the rest straight to delivery.
  if (node::ReliableStage::wanted(it, k)) [[unlikely]]
    I.reliable->run(it, k, now);
  else
    I.deliver->run(it, k, now);
  I.tx->end_lend();
}

unsigned Node::poll() noexcept {
  Impl& I = *impl_;
  const std::uint64_t t0 = rte_rdtsc();
  I.p0.tick();
  if (I.reliable->acks_due()) [[unlikely]] I.reliable->send_acks();  // what the last bursts owe
  unsigned work = I.tx->drain();               // TX: what earlier sends left queued, P0 first
  work += I.rx->poll(I.pipeline);              // RX -> validate -> dispatch -> deliver
  if (I.reliable->feeding()) [[unlikely]]
    work += I.reliable->feed(I.clock.now_ns());  // large messages: the fragments the windows take now
  // The slow path, every kSlowEvery polls (or every poll while a control request is under
  // way): the clock, control requests, timers. An idle poll reads no clock.
  if (I.control->busy() || I.slow_due || I.idle->take_slept() || ++I.slow_tick >= Impl::kSlowEvery) {
    I.slow_tick = 0;
    I.slow_due = false;
    const std::uint64_t now = I.clock.now_ns();
    I.routing->refresh();                      // the routing agent's newest table
    I.services->check();                       // instances gone: their open requests fail
    I.reliable->pump(now);                     // in-order frames that found recv()'s queue full
    work += I.link->run();                     // advertisements the agent wants sent
    work += I.control->run(now);               // requests from other threads, one budget
    work += I.timers.run(now);                 // due timers: heartbeats, control deadlines, clock sync
  }
  work += I.tx->drain();                       // TX: what this poll sent
  // Busy and idle time: a poll that found work is busy, one that found none idle.
  stats::LcoreStats& st = *I.lcore;
  (work ? st.tsc_busy : st.tsc_idle).add(rte_rdtsc() - t0);
  (work ? st.polls_busy : st.polls_idle).add();
  if (I.region && I.region->requested()) [[unlikely]] I.publish_sample();  // a reader rang (at most 1/ms)
  return work;
}

// A consistent sample of the counters for the stats region, between two polls. Datapath only.
void Node::Impl::publish_sample() noexcept {
  // At most one sample a millisecond, whoever rings how often; the ports' counters (a driver
  // call each) at most every 100 ms, the newest reading reused in between.
  const std::uint64_t tsc = rte_rdtsc(), hz = rte_get_tsc_hz();
  if (tsc - last_publish_tsc < hz / 1000) return;
  last_publish_tsc = tsc;
  const bool read_ports = tsc - last_ports_tsc >= hz / 10;
  if (read_ports) last_ports_tsc = tsc;
  telemetry::Sample s{};
  const stats::LcoreStats& st = *lcore;
  s.tsc_busy = st.tsc_busy.get();
  s.tsc_idle = st.tsc_idle.get();
  s.polls_busy = st.polls_busy.get();
  s.polls_idle = st.polls_idle.get();
  s.tsc_hz = rte_get_tsc_hz();
  s.rx_frames = st.rx_frames.get();
  s.rx_bytes = st.rx_bytes.get();
  s.tx_frames = st.tx_frames.get();
  s.tx_bytes = st.tx_bytes.get();
  s.tx_backpressure = st.tx_backpressure.get();
  s.tx_no_route = st.tx_no_route.get();
  s.alloc_failed = st.alloc_failed.get();
  s.rx_deferred = st.rx_deferred.get();  // (rx_lane_full: read live from the region)
  s.rx_multi_segment = st.rx_multi_segment.get();
  s.fabric_rx = st.fabric_rx.get();
  s.fabric_tx = st.fabric_tx.get();
  for (const auto& [socket, p] : pools) {
    s.mbufs_available += p->available();
    s.mbufs_total += cfg.mbufs;
  }
  s.mbufs_available += tx->stashed();
  for (std::size_t r = 0; r < wire::kRefusalCount; ++r) s.refused[r] = st.refused[r].get();
  for (std::size_t l = 0; l < wire::kPriorities; ++l) {
    telemetry::LaneSample& ls = s.lane[l];
    for (std::size_t t = 0; t <= static_cast<std::size_t>(wire::kMsgTypes); ++t) {
      ls.sent += st.sent[t][l].get();
      ls.delivered += st.delivered[t][l].get();
    }
    ls.deadline_miss = st.deadline_miss[l].get();
    ls.shed = st.shed[l].get();
    ls.backpressure = st.backpressure[l].get();
    ls.forwarded = st.forwarded[l].get();
    ls.forward_dropped = st.forward_dropped[l].get();
    ls.rel_sent = st.rel[l].sent.get();
    ls.rel_acked = st.rel[l].acked.get();
    ls.rel_failed = st.rel[l].failed.get();
    ls.rel_retransmits = st.rel[l].retransmits.get() + st.rel[l].fast_retransmits.get();
    ls.rel_duplicates = st.rel[l].duplicates.get();
    ls.rel_reordered = st.rel[l].reordered.get();
    for (std::size_t j = 0; j < ports.size(); ++j) ls.tx_queued += tx->queued(j, static_cast<unsigned>(l));
    ls.latency_count = st.latency_ns[l].count();
    ls.latency_sum_ns = st.latency_ns[l].sum();
  }
  s.ports = std::min(ports.size(), telemetry::kPorts);
  for (std::size_t j = 0; j < s.ports; ++j) {
    if (read_ports) {
      rte_eth_stats e{};
      rte_eth_stats_get(ports[j].dev->id(), &e);  // the device's counters only: no lock, no socket call
      port_cache[j] = telemetry::PortSample{e.ipackets, e.opackets, e.ibytes,     e.obytes, e.imissed,
                                            e.ierrors,  e.oerrors,  e.rx_nombuf, 0,        ports[j].dev->link_up() ? 1u : 0u};
    }
    s.port[j] = port_cache[j];
    s.port[j].tx_frames = st.port_tx_frames[j].get();
  }
  if (!xstats_out.empty() && tsc - last_xstats_tsc >= hz) {
    last_xstats_tsc = tsc;
    read_xstats();
  }
  s.links = std::min(routing->links.size(), telemetry::kLinks);
  for (std::size_t k = 0; k < s.links; ++k) {
    const node::LinkShared& sh = routing->links.shared(k);
    s.link[k] = telemetry::LinkSample{routing->links[k].peer, routing->links[k].port,
                                      sh.up.load(std::memory_order_relaxed) ? 1u : 0u,
                                      sh.rtt_ns.load(std::memory_order_relaxed), sh.downs.load(std::memory_order_relaxed),
                                      sh.heartbeats_rx.load(std::memory_order_relaxed)};
  }
  region->publish(s);
}

void Node::Impl::prepare_xstats() {
  if (!region) return;
  std::vector<rte_eth_xstat_name> names;
  for (const auto& p : ports) {
    const std::uint16_t id = p.dev->id();
    const int n = rte_eth_xstats_get_names(id, nullptr, 0);
    if (n <= 0 || xstats_out.size() + static_cast<std::size_t>(n) > telemetry::kXstats) continue;
    names.resize(static_cast<std::size_t>(n));
    if (rte_eth_xstats_get_names(id, names.data(), static_cast<unsigned>(n)) != n) continue;
    PortXstats px{id, xstats_out.size(), std::vector<rte_eth_xstat>(static_cast<std::size_t>(n))};
    for (const auto& nm : names) {
      telemetry::Xstat x{};
      x.port = static_cast<std::uint32_t>(&p - &ports[0]);
      const std::string_view name = nm.name;
      std::memcpy(x.name, name.data(), std::min(name.size(), sizeof x.name - 1));
      xstats_out.push_back(x);
    }
    xstats_ports.push_back(std::move(px));
  }
}

void Node::Impl::read_xstats() noexcept {
  for (PortXstats& px : xstats_ports) {
    const auto n = static_cast<unsigned>(px.values.size());
    if (rte_eth_xstats_get(px.dpdk_port, px.values.data(), n) != static_cast<int>(n)) continue;  // the port changed
    for (const rte_eth_xstat& v : px.values)
      if (v.id < n) xstats_out[px.first + v.id].value = v.value;
  }
  region->write_xstats(xstats_out);
}

unsigned Node::flush() noexcept {
  impl_->tx->flush_all();
  return impl_->tx->waiting();
}

void Node::idle_step(unsigned work) noexcept {
  Impl& I = *impl_;
  if (work != 0) return I.idle->step(work, [] { return std::uint64_t{0}; });
  const std::uint64_t t0 = rte_rdtsc();  // the pause or sleep after an empty poll is idle time
  I.idle->step(work, [&] { return I.clock.now_ns(); });
  I.lcore->tsc_idle.add(rte_rdtsc() - t0);
}

void Node::run(const std::atomic<bool>& stop) noexcept {
  while (!stop.load(std::memory_order_relaxed)) idle_step(poll());
  impl_->tx->flush_all();
}

void Node::cancel_requests() noexcept { impl_->control->cancel_all(); }

// ---- send and receive ---------------------------------------------------------------------

TxFrame Node::alloc(std::size_t payload_len) noexcept {
  Impl& I = *impl_;
  if (payload_len > I.max_payload) [[unlikely]] {
    node::MessageBuffer* b = payload_len <= I.cluster.max_message ? I.send_buffers->take() : nullptr;
    if (!b) return {};
    return NodeAccess::frame(b, std::span<std::byte>(b->data, payload_len));
  }
  rte_mbuf* m = I.tx->alloc(payload_len);
  if (!m) return {};
  return NodeAccess::frame(m, std::span<std::byte>(rte_pktmbuf_mtod(m, std::byte*), payload_len));
}

SendStatus Node::send(TxFrame& f, NodeId dst, MsgType type, std::uint8_t priority, const SendOptions& o) noexcept {
  if (!f) return SendStatus::kBadArgument;
  if (f.large()) [[unlikely]] {
    const SendStatus s = impl_->reliable->send_large(NodeAccess::buffer(f), f.payload().size(), dst, type, priority, o);
    if (s == SendStatus::kOk) NodeAccess::release(f);
    return s;
  }
  const SendStatus s = o.reliable ? impl_->reliable->send(NodeAccess::mbuf(f), dst, type, priority, o)
                                  : impl_->tx->send(NodeAccess::mbuf(f), dst, type, priority, o);
  if (s == SendStatus::kOk) NodeAccess::release(f);
  return s;
}

SendStatus Node::send_service(TxFrame& f, std::uint16_t service, MsgType type, std::uint8_t priority,
                              const SendOptions& o, NodeId* instance) noexcept {
  const int svc = impl_->services->index(service);
  if (!f || svc < 0) return SendStatus::kBadArgument;
  if (f.large()) return SendStatus::kTooLarge;
  const SendStatus s = impl_->services->send(NodeAccess::mbuf(f), static_cast<unsigned>(svc), type, priority, o, instance);
  if (s == SendStatus::kOk) NodeAccess::release(f);
  return s;
}

SendStatus Node::send_copy(NodeId dst, MsgType type, std::uint8_t priority, std::span<const std::byte> payload,
                           const SendOptions& o) noexcept {
  if (payload.size() > max_message()) return SendStatus::kTooLarge;
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
  o.reliable = (request.header().flags & wire::flag::kReliable) != 0;  // as reliably as it was asked,
  o.paths = (request.header().flags & wire::flag::kTwoPaths) != 0 ? 2 : 1;  // over as many paths
  if (f.large()) [[unlikely]] {
    const SendStatus s = impl_->reliable->send_large(NodeAccess::buffer(f), f.payload().size(), request.source(),
                                                     MsgType::kResponse, request.priority(), o,
                                                     request.header().msg_id);
    if (s == SendStatus::kOk) NodeAccess::release(f);
    return s;
  }
  const SendStatus s =
      o.reliable ? impl_->reliable->send(NodeAccess::mbuf(f), request.source(), MsgType::kResponse,
                                         request.priority(), o, request.header().msg_id)
                 : impl_->tx->send(NodeAccess::mbuf(f), request.source(), MsgType::kResponse, request.priority(), o,
                                   request.header().msg_id);
  if (s == SendStatus::kOk) NodeAccess::release(f);
  return s;
}

SendStatus Node::broadcast(TxFrame& f, MsgType type, std::uint8_t priority, const SendOptions& o) noexcept {
  if (!f) return SendStatus::kBadArgument;
  if (f.large()) return SendStatus::kTooLarge;
  const SendStatus s = o.reliable ? impl_->reliable->send_group(NodeAccess::mbuf(f), -1, type, priority, o)
                                  : impl_->tx->send_tree(NodeAccess::mbuf(f), -1, wire::kBroadcast, type, priority, o);
  if (s == SendStatus::kOk) NodeAccess::release(f);
  return s;
}

SendStatus Node::multicast(TxFrame& f, std::uint16_t group, MsgType type, std::uint8_t priority,
                           const SendOptions& o) noexcept {
  const int g = impl_->cluster.group_index(group);
  if (!f || g < 0) return SendStatus::kBadArgument;
  if (f.large()) return SendStatus::kTooLarge;
  const SendStatus s = o.reliable ? impl_->reliable->send_group(NodeAccess::mbuf(f), g, type, priority, o)
                                  : impl_->tx->send_tree(NodeAccess::mbuf(f), g, group, type, priority, o);
  if (s == SendStatus::kOk) NodeAccess::release(f);
  return s;
}

TxFrame Node::take_frame(RxMessage& m) noexcept {
  rte_mbuf* mb = NodeAccess::release(m);
  if (!mb) {
    NodeAccess::drop_buffer(m);  // a large message: no frame to reuse; its buffer goes back
    return {};
  }
  // The payload stays where it is; the old headers become headroom for the new ones.
  const auto len = static_cast<std::uint16_t>(m.header().payload_len);
  rte_pktmbuf_adj(mb, static_cast<std::uint16_t>(wire::kOverhead));
  rte_pktmbuf_trim(mb, static_cast<std::uint16_t>(mb->data_len - len));
  mb->ol_flags = 0;
  return NodeAccess::frame(mb, std::span<std::byte>(rte_pktmbuf_mtod(mb, std::byte*), len));
}

void Node::on_message(Handler h) { impl_->deliver->set_handler(std::move(h)); }

void Node::on_service_failure(std::function<void(const ServiceFailure&)> h) { impl_->services->set_handler(std::move(h)); }
void Node::on_delivery_failure(std::function<void(const DeliveryFailure&)> h) { impl_->reliable->on_failure(std::move(h)); }

std::optional<RxMessage> Node::recv() noexcept { return impl_->deliver->recv(); }
std::optional<RxMessage> Node::recv(std::uint8_t priority) noexcept {
  if (priority >= wire::kPriorities) return std::nullopt;
  return impl_->deliver->recv(priority);
}

// ---- frames -------------------------------------------------------------------------------

TxFrame& TxFrame::operator=(TxFrame&& o) noexcept {
  if (this != &o) {
    if (m_) rte_pktmbuf_free(m_);
    if (buf_) node::give_back(buf_);
    m_ = o.m_;
    buf_ = o.buf_;
    payload_ = o.payload_;
    o.m_ = nullptr;
    o.buf_ = nullptr;
  }
  return *this;
}
TxFrame::~TxFrame() {
  if (m_) rte_pktmbuf_free(m_);
  if (buf_) node::give_back(buf_);
}
void TxFrame::truncate(std::size_t n) noexcept {
  if ((!m_ && !buf_) || n >= payload_.size()) return;
  // A large frame cut to one frame's size or less goes as one reliable frame.
  if (m_) rte_pktmbuf_trim(m_, static_cast<std::uint16_t>(payload_.size() - n));
  payload_ = payload_.first(n);
}

RxMessage& RxMessage::operator=(RxMessage&& o) noexcept {
  if (this != &o) {
    if (m_) rte_pktmbuf_free(m_);
    if (buf_) node::give_back(buf_);
    m_ = o.m_;
    buf_ = o.buf_;
    hdr_ = o.hdr_;
    payload_ = o.payload_;
    latency_ns_ = o.latency_ns_;
    received_ns_ = o.received_ns_;
    o.m_ = nullptr;
    o.buf_ = nullptr;
  }
  return *this;
}
RxMessage::~RxMessage() {
  if (m_) rte_pktmbuf_free(m_);
  if (buf_) node::give_back(buf_);
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
    case SendStatus::kFailed: return "failed";
    case SendStatus::kNoSession: return "no_session";
  }
  return "unknown";
}

void Node::Impl::redial_memif(std::uint64_t now) noexcept {
  for (std::size_t j = 0; j < ports.size(); ++j) {
    drivers::Port& p = *ports[j].dev;
    if (!p.memif_client()) continue;
    if (p.link_up()) {
      link_down_since[j] = 0;
    } else if (link_down_since[j] == 0) {
      link_down_since[j] = now;
    } else if (now - link_down_since[j] >= kRedialAfterNs) {
      p.redial();
      link_down_since[j] = now;  // a dial that connects brings the link up within milliseconds
    }
  }
  redial.arm(now + kRedialCheckNs);
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
      redial([](void* ctx, std::uint64_t now) { static_cast<Impl*>(ctx)->redial_memif(now); }, this),
      proxy(self) {
  if (o.region) {
    lcore = &o.region->lcore();
    region = o.region;
  } else {
    own_lcore = std::make_unique<stats::LcoreStats>();
    lcore = own_lcore.get();
    region = nullptr;
  }
}

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
  stats::LcoreStats& st = *I.lcore;
  I.routing = std::make_unique<node::Routing>(cluster, I.cfg, macs, I.clock, st);

  const std::size_t large = cluster.max_message > I.max_payload ? cluster.max_message : 0;
  I.send_buffers.emplace(cluster.message_buffers, large, eal.socket());
  I.join_buffers.emplace(cluster.message_buffers, large, eal.socket());
  I.idle.emplace(I.cfg);
  I.tx.emplace(I.ports, *I.routing, I.cfg, tx_pool, I.max_payload, I.clock, st, *I.idle, I.guard, I.p0);
  // Ports whose link state is a memory read: a peer gone takes their link down at once.
  std::vector<const drivers::Port*> carrier;
  for (std::size_t s = 0; s < I.routing->links.size(); ++s) {
    const std::size_t port = I.routing->links[s].port;
    const config::PortKind kind = I.cfg.ports[port].kind;
    carrier.push_back(kind == config::PortKind::kMemif || kind == config::PortKind::kRing ? I.ports[port].dev.get()
                                                                                           : nullptr);
  }
  I.link.emplace(cluster, *I.routing, *I.tx, st, I.timers, I.clock.now_ns(), std::move(carrier));
  // Broadcast, multicast, reliable delivery, fragments and two paths run; encryption not yet.
  I.validate.emplace(wire::RxFilter{cluster.udp_port, cluster.mtu,
                                    wire::flag::kBroadcast | wire::flag::kMulticast | wire::flag::kReliable |
                                        wire::flag::kFragment | wire::flag::kTwoPaths | wire::flag::kSecondPath},
                     st);
  I.forward.emplace(cluster, *I.routing, *I.tx, st, I.validate->filter(), macs);
  I.paths.emplace(*I.routing, st);
  I.proxies.emplace(I.cfg.id, I.max_payload, eal.socket());
  I.services.emplace(cluster, *I.routing, *I.tx, I.timers, I.clock);
  I.control.emplace(cluster, *I.proxies, *I.tx, *I.services, I.timers);
  I.dispatch.emplace(I.cfg.id, I.cfg.ip, I.routing->nodes, macs, st, *I.forward, *I.link, *I.paths);
  I.deliver.emplace(cluster, I.cfg, opts.rx_queue_depth, st, *I.idle, *I.control, *I.services);
  I.reliable.emplace(cluster, I.cfg, *I.routing, *I.tx, *I.deliver, *I.join_buffers, st);
  I.timers.add(I.reliable->timer());
  I.control->use_reliable(*I.reliable, *I.send_buffers);
  I.services->use_reliable(*I.reliable);
  I.rx.emplace(I.ports, I.guard, I.p0);
  I.timers.add(I.clock_sync);
  I.clock_sync.arm(0);
  I.link_down_since.assign(I.ports.size(), 0);
  I.timers.add(I.redial);
  if (std::any_of(I.ports.begin(), I.ports.end(), [](const auto& p) { return p.dev->memif_client(); }))
    I.redial.arm(0);

  for (auto& p : I.ports) p.dev->wait_link(opts.link_wait);
  I.prepare_xstats();
  I.routing->agent.start(eal);
}

Node::~Node() {
  Impl& I = *impl_;
  I.routing->agent.stop();  // its thread reads the links and counters
  I.control.reset();   // requests still queued or in flight end with kShutdown
  I.services.reset();
  I.reliable.reset();  // frames kept for retransmission, or held for in-order delivery
  I.deliver->clear();  // messages never taken by recv()
  I.tx.reset();        // frames still queued
  I.ports.clear();     // stopped and closed before their pools go
  I.pools.clear();
}

NodeId Node::id() const noexcept { return impl_->cfg.id; }
const config::Node& Node::config() const noexcept { return impl_->cfg; }
const config::Cluster& Node::cluster() const noexcept { return impl_->cluster; }
Clock& Node::clock() const noexcept { return impl_->clock; }
NodeProxy& Node::proxy() noexcept { return impl_->proxy; }

bool Node::join(std::uint16_t group) noexcept {
  const int g = impl_->cluster.group_index(group);
  if (g < 0) return false;
  node::RouteAgent& a = impl_->routing->agent;
  a.set_groups(a.groups() | (std::uint64_t{1} << g));
  return true;
}

bool Node::leave(std::uint16_t group) noexcept {
  const int g = impl_->cluster.group_index(group);
  if (g < 0) return false;
  node::RouteAgent& a = impl_->routing->agent;
  a.set_groups(a.groups() & ~(std::uint64_t{1} << g));
  return true;
}

std::vector<std::uint16_t> Node::groups() const {
  std::vector<std::uint16_t> out;
  const std::uint64_t mask = impl_->routing->agent.groups();
  for (std::size_t g = 0; g < impl_->cluster.groups.size(); ++g)
    if ((mask >> g) & 1u) out.push_back(impl_->cluster.groups[g].id);
  return out;
}

std::vector<NodeId> Node::members(std::uint16_t group) const {
  std::vector<NodeId> out;
  const int g = impl_->cluster.group_index(group);
  const auto fib = impl_->routing->agent.current();
  if (g < 0 || !fib) return out;
  for (std::uint32_t i = 0; i < fib->size(); ++i)
    if ((fib->groups_of(i) >> g) & 1u) out.push_back(impl_->routing->topo.id(i));
  std::sort(out.begin(), out.end());
  return out;
}

// ---- any thread ---------------------------------------------------------------------------

stats::Snapshot Node::snapshot() const { return stats::snapshot({impl_->lcore}, impl_->budget_ns); }

std::vector<PortInfo> Node::ports() const {
  const Impl& I = *impl_;
  std::vector<PortInfo> out;
  for (std::size_t j = 0; j < I.ports.size(); ++j) {
    const drivers::Port& p = *I.ports[j].dev;
    const drivers::PortStats s = p.stats();
    std::array<std::uint32_t, wire::kPriorities> queued{};
    for (unsigned l = 0; l < wire::kPriorities; ++l) queued[l] = I.tx->queued(j, l);
    const drivers::FaultCounts f = p.faults() ? p.faults()->counts() : drivers::FaultCounts{};
    out.push_back(PortInfo{p.name(), p.kind(), I.ports[j].lanes, I.tx->ip_checksum_offload(j), queued, p.id(),
                           p.socket(), p.mac(), p.link_up(), s.eth.ipackets, s.eth.opackets, s.eth.ibytes,
                           s.eth.obytes, s.eth.imissed, s.eth.ierrors, s.eth.oerrors, s.eth.rx_nombuf,
                           s.ip_fragments, I.cfg.ports[j].peers, config::format_fault(I.cfg.ports[j].fault), f.seen,
                           f.dropped, f.corrupted, f.duplicated, f.reordered, f.delayed, p.redials()});
  }
  return out;
}

std::vector<PeerInfo> Node::peers() const {
  const Impl& I = *impl_;
  std::vector<PeerInfo> out;
  for (std::size_t s = 0; s < I.routing->links.size(); ++s) {
    const node::Link& l = I.routing->links[s];
    const config::Node& pn = I.cluster.node(l.peer);
    out.push_back(PeerInfo{l.peer, pn.name, pn.ip, pn.mac, l.port});
  }
  return out;
}

std::vector<LinkInfo> Node::links() const {
  const node::Routing& r = *impl_->routing;
  std::vector<LinkInfo> out;
  for (std::size_t s = 0; s < r.links.size(); ++s) {
    const node::LinkShared& sh = r.links.shared(s);
    out.push_back(LinkInfo{r.links[s].peer, r.links[s].port, sh.up.load(std::memory_order_relaxed),
                           sh.rtt_ns.load(std::memory_order_relaxed), sh.heartbeats_rx.load(std::memory_order_relaxed),
                           sh.heartbeats_tx.load(std::memory_order_relaxed), sh.downs.load(std::memory_order_relaxed)});
  }
  return out;
}

std::vector<RouteInfo> Node::routes() const {
  const node::Routing& r = *impl_->routing;
  const auto fib = r.agent.current();
  std::vector<RouteInfo> out;
  if (!fib) return out;
  std::uint64_t up = 0;
  for (std::size_t s = 0; s < r.links.size(); ++s)
    if (r.links.shared(s).up.load(std::memory_order_relaxed)) up |= std::uint64_t{1} << s;
  for (std::uint32_t d = 0; d < fib->size(); ++d) {
    if (d == r.self_idx) continue;
    RouteInfo ri;
    ri.dst = r.topo.id(d);
    for (unsigned l = 0; l < wire::kPriorities; ++l) {
      const unsigned m = r.metric[l];
      const route::HopSet& hs = fib->hops(d, m);
      RouteInfo::Hop& h = ri.lanes[l];
      h.metric = std::string(config::to_string(static_cast<config::RouteMetric>(m)));
      h.paths = hs.n;
      h.cost = fib->cost(d, m);
      const int slot = hs.pick(0, up);
      if (slot >= 0) {
        h.next_hop = r.links[static_cast<std::size_t>(slot)].peer;
        h.port = r.links[static_cast<std::size_t>(slot)].port;
      }
    }
    int a = -1, b = -1;
    if (fib->two_paths(d, a, b) && ((up >> a) & 1u) && ((up >> b) & 1u)) {
      ri.two_paths[0] = {r.links[static_cast<std::size_t>(a)].peer, r.links[static_cast<std::size_t>(a)].port};
      ri.two_paths[1] = {r.links[static_cast<std::size_t>(b)].peer, r.links[static_cast<std::size_t>(b)].port};
    }
    out.push_back(ri);
  }
  return out;
}

RoutingInfo Node::routing() const {
  const node::Routing& r = *impl_->routing;
  const node::RouteAgentStats s = r.agent.stats();
  return RoutingInfo{s.fib_builds, r.agent.table_in_use(), s.fib_build_ns, s.lsa_received, s.lsa_sent, s.lsa_originated, s.lsa_refused,
                     s.db_size, s.db_syncs, s.outbox_dropped + s.inbox_dropped};
}

std::vector<ServiceInfo> Node::services() const { return impl_->services->info(); }

std::size_t Node::max_payload() const noexcept { return impl_->max_payload; }
std::size_t Node::max_message() const noexcept {
  return std::max<std::size_t>(impl_->max_payload, impl_->cluster.max_message);
}

unsigned Node::mbufs_available() const noexcept {
  unsigned n = impl_->tx->stashed();
  for (const auto& [s, p] : impl_->pools) n += p->available();
  return n;
}

}  // namespace nerve
