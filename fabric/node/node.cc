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
#include <future>
#include <map>
#include <stdexcept>
#include <unordered_map>

#include "eal.hpp"
#include "port.hpp"

namespace nerve {
namespace {

constexpr std::uint16_t kBurst = 32;          // RX and TX burst size (DESIGN.md: up to 32)
constexpr std::uint16_t kTxCap = 512;         // frames buffered per port before back-pressure
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

struct TxBuffer {
  std::array<rte_mbuf*, kTxCap> pkts{};
  std::uint16_t n = 0;
};

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
};

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
  std::vector<TxBuffer> tx;
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

  void flush(std::size_t p) noexcept {
    TxBuffer& b = tx[p];
    if (b.n == 0) return;
    std::uint64_t bytes = 0;
    for (std::uint16_t i = 0; i < b.n; ++i) bytes += b.pkts[i]->pkt_len;
    const std::uint16_t sent = ports[p]->tx_burst(0, b.pkts.data(), b.n);
    // Partial TX: keep the rest, in order, for the next flush (the PMD's ring is full).
    for (std::uint16_t i = sent; i < b.n; ++i) bytes -= b.pkts[i]->pkt_len;
    if (sent < b.n) std::memmove(b.pkts.data(), b.pkts.data() + sent, (b.n - sent) * sizeof(rte_mbuf*));
    b.n = static_cast<std::uint16_t>(b.n - sent);
    lcore->tx_frames.add(sent);
    lcore->tx_bytes.add(bytes);
  }

  unsigned flush_all() noexcept {
    unsigned pending = 0;
    for (std::size_t p = 0; p < tx.size(); ++p) {
      pending += tx[p].n;
      flush(p);
    }
    return pending;
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

  for (std::size_t j = 0; j < I.cfg.ports.size(); ++j) {
    const config::Port& pc = I.cfg.ports[j];
    const int numa = drivers::port_numa_node(pc);
    const bool lead = pc.peers.empty() || I.cfg.id < pc.peers.front();
    I.ports.push_back(std::make_unique<drivers::Port>(pc, fmt::format("n{}p{}", I.cfg.id, j),
                                                      pool_for(numa >= 0 ? numa : eal.socket()), 1, I.cfg.mac, lead,
                                                      cluster.mtu));
  }
  I.tx.resize(I.ports.size());

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

Node::~Node() {
  Impl& I = *impl_;
  // Requests still queued or in flight end with kShutdown: their callers are waiting.
  void* obj = nullptr;
  while (rte_ring_dequeue(I.control, &obj) == 0) I.active.push_back(static_cast<ProxyRequest*>(obj));
  while (!I.active.empty()) I.finish(I.active.back(), SendStatus::kShutdown);
  rte_ring_free(I.control);
  I.rxq.clear();
  for (auto& b : I.tx) {
    for (std::uint16_t i = 0; i < b.n; ++i) rte_pktmbuf_free(b.pkts[i]);
    b.n = 0;
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
  TxBuffer& b = I.tx[route.port];
  if (b.n == kTxCap) [[unlikely]] {
    I.flush(route.port);
    if (b.n == kTxCap) {
      I.lcore->tx_backpressure.add();
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
  b.pkts[b.n++] = f.m_;
  f.m_ = nullptr;
  I.lcore->sent[t][priority].add();
  if (b.n >= kBurst) I.flush(route.port);
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
  stats::LcoreStats& lc = *I.lcore;
  unsigned work = I.flush_all();
  const std::uint64_t now = now_ns();

  for (std::size_t p = 0; p < I.ports.size(); ++p) {
    std::uint16_t want = kBurst;
    if (!I.handler) {
      const std::uint32_t space = I.rxq_space();
      if (space < want) {
        // Leave frames in the port's RX ring rather than take what we could not keep.
        lc.rx_deferred.add();
        want = static_cast<std::uint16_t>(space);
        if (want == 0) continue;
      }
    }
    rte_mbuf* bufs[kBurst];
    const std::uint16_t n = I.ports[p]->rx_burst(0, bufs, want);
    for (std::uint16_t i = 0; i < n; ++i) {
      if (i + 1 < n) rte_prefetch0(rte_pktmbuf_mtod(bufs[i + 1], void*));
      rte_mbuf* m = bufs[i];
      lc.rx_frames.add();
      lc.rx_bytes.add(m->pkt_len);
      if (m->nb_segs != 1) [[unlikely]] {
        lc.rx_multi_segment.add();
        rte_pktmbuf_free(m);
        continue;
      }
      wire::Decoded d;
      const auto frame = std::span<const std::byte>(rte_pktmbuf_mtod(m, const std::byte*), m->data_len);
      if (const wire::Refusal r = wire::decode(frame, I.filter, d); r != wire::Refusal::kNone) [[unlikely]] {
        lc.refused[static_cast<std::size_t>(r)].add();
        rte_pktmbuf_free(m);
        continue;
      }
      const std::uint8_t prio = d.hdr.priority;
      const std::uint64_t lat = now > d.hdr.timestamp_ns ? now - d.hdr.timestamp_ns : 0;
      lc.latency_ns[prio].record(lat);
      if (lat > I.opts.budget_ns[prio]) lc.deadline_miss[prio].add();
      lc.delivered[static_cast<std::size_t>(d.hdr.type)][prio].add();

      RxMessage msg;
      msg.m_ = m;
      msg.hdr_ = d.hdr;
      msg.payload_ = d.payload;
      msg.latency_ns_ = lat;
      if (d.hdr.type == MsgType::kResponse && !I.awaiting.empty()) {
        if (auto it = I.awaiting.find(d.hdr.corr_id); it != I.awaiting.end()) {
          auto [req, sent_ns] = it->second;
          I.awaiting.erase(it);
          if (req->res.replies++ == 0) {
            req->res.reply.assign(reinterpret_cast<const char*>(d.payload.data()), d.payload.size());
            req->res.rtt_ns = now - sent_ns;
          }
          --req->awaiting;
          if (req->awaiting == 0 && req->next == req->req.count) I.finish(req, SendStatus::kOk);
          continue;
        }
      }
      if (I.handler) I.handler(msg);
      else I.rxq[I.rx_tail++ & I.rx_mask] = std::move(msg);
    }
    work += n;
  }

  // Control requests from other threads: bounded work per iteration so traffic keeps moving.
  if (!rte_ring_empty(I.control)) {
    void* objs[8];
    const unsigned n = rte_ring_sc_dequeue_burst(I.control, objs, 8, nullptr);
    for (unsigned i = 0; i < n; ++i) {
      auto* r = static_cast<ProxyRequest*>(objs[i]);
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
    }
    SendStatus st = SendStatus::kOk;
    while (budget-- > 0 && r->next < r->req.count) {
      std::string payload = r->req.payload;
      if (r->req.number_payloads) payload += fmt::format("#{}", r->next);
      const auto bytes = std::as_bytes(std::span(payload));
      const std::uint32_t msg_id = I.next_msg_id;
      st = send_copy(r->req.dst, r->req.type, r->req.priority, bytes);
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
  for (const auto& b : impl_->tx) waiting += b.n;
  return waiting;
}

void Node::run(const std::atomic<bool>& stop) noexcept {
  const bool busy = impl_->cfg.idle == config::Idle::kBusy;
  const std::uint32_t max_sleep_us = impl_->cfg.idle_sleep_max_us;
  unsigned idle = 0;
  std::uint32_t sleep_us = 1;
  while (!stop.load(std::memory_order_relaxed)) {
    if (poll() != 0) {
      idle = 0;
      sleep_us = 1;
      continue;
    }
    if (busy) continue;
    if (++idle < kSpinPolls) {
      rte_pause();
      continue;
    }
    // Back-off: sleep, doubling up to the node's limit, so idle dev nodes share cores.
    const timespec ts{0, static_cast<long>(sleep_us) * 1000};
    nanosleep(&ts, nullptr);
    sleep_us = std::min(sleep_us * 2, max_sleep_us);
  }
  impl_->flush_all();
}

// ---- any thread ---------------------------------------------------------------------------

ControlResult NodeProxy::send(const ControlSend& req) {
  ProxyRequest r;
  r.req = req;
  if (req.count == 0) return r.res;
  auto fut = r.done.get_future();
  if (rte_ring_mp_enqueue(node_.impl_->control, &r) != 0) {
    r.res.status = SendStatus::kBackpressure;
    return r.res;
  }
  return fut.get();  // the datapath fulfils every request: done, timed out or shut down
}

stats::Snapshot Node::snapshot() const {
  return stats::snapshot({impl_->lcore.get()}, impl_->opts.budget_ns);
}

std::vector<PortInfo> Node::ports() const {
  std::vector<PortInfo> out;
  for (std::size_t j = 0; j < impl_->ports.size(); ++j) {
    const auto& p = *impl_->ports[j];
    rte_eth_stats s{};
    rte_eth_stats_get(p.id(), &s);
    out.push_back(PortInfo{p.name(), p.kind(), p.id(), p.socket(), p.mac(), p.link_up(), s.ipackets, s.opackets,
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
