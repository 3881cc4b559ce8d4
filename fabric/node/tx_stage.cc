#include "tx_stage.hpp"

#include <random>

namespace nerve::node {
namespace {

constexpr std::uint8_t kDefaultTtl = 8;
constexpr unsigned kAll = ~0u;  // bursts: as many as the port takes

}  // namespace

TxStage::TxStage(NodePorts& ports, const route::RouteTable& routes, const config::Node& cfg, rte_mempool* pool,
                 std::size_t max_payload, Clock& clock, stats::LcoreStats& st, IdlePolicy& idle,
                 drivers::DatapathGuard::Section& guard, P0Watch& p0)
    : ports_(ports), routes_(routes), pool_(pool), max_payload_(max_payload), clock_(clock), st_(st), idle_(idle),
      guard_(guard), p0_(p0), self_(cfg.id) {
  lane::LaneConfig lc;
  for (unsigned l = 0; l < lane::kLanes; ++l) {
    lc.depth[l] = cfg.lane_depth[l];
    lc.min_share[l] = l == 0 ? 0.0 : cfg.lane_min_share;
  }
  for (const NodePort& p : ports_) {
    PortTx& t = ports_tx_.emplace_back(lc);
    t.paired = p.lanes != config::LaneMode::kSoftware;  // paired or flow: a TX queue per lane
    t.csum_offload = p.dev->ip_checksum_offload();
  }
  // Message ids start at a random point, so a response cannot be guessed from a count.
  std::random_device rd;
  next_msg_id_ = rd() | 1u;
}

TxStage::~TxStage() {
  free_all();
  if (stash_n_) rte_pktmbuf_free_bulk(stash_.data(), stash_n_);
}

bool TxStage::refill() noexcept {
  // A burst at once; when the pool is nearly dry, one at a time.
  if (rte_pktmbuf_alloc_bulk(pool_, stash_.data(), kBurst) == 0) {
    stash_n_ = kBurst;
    return true;
  }
  if (rte_mbuf* m = rte_pktmbuf_alloc(pool_)) {
    stash_[0] = m;
    stash_n_ = 1;
    return true;
  }
  st_.alloc_failed.add();
  return false;
}

SendStatus TxStage::send(rte_mbuf* m, NodeId dst, MsgType type, std::uint8_t prio, const SendOptions& o,
                         std::uint32_t corr_id) noexcept {
  const auto t = static_cast<std::uint8_t>(type);
  if (!m || prio >= wire::kPriorities || t < wire::kMsgTypeFirst || t > wire::kMsgTypeLast) [[unlikely]]
    return SendStatus::kBadArgument;
  const route::Route* r = routes_.find(dst);
  if (!r) [[unlikely]] {
    st_.tx_no_route.add();
    return SendStatus::kNoRoute;
  }
  PortTx& pt = ports_tx_[r->port];
  if ((o.never_shed || !lane::sheds(prio)) && pt.lanes.full(prio)) [[unlikely]] {
    if (pt.paired) flush_lane(r->port, prio, 1);
    else flush_sched(r->port, 1);
    if (pt.lanes.full(prio)) {
      // P0-P2 (and never_shed sends) are never dropped: the caller keeps the frame and decides.
      st_.tx_backpressure.add();
      st_.backpressure[prio].add();
      return SendStatus::kBackpressure;
    }
  }
  wire::Header h;
  h.type = type;
  h.priority = prio;
  h.ttl = kDefaultTtl;
  h.channel = o.channel;
  h.msg_id = next_msg_id_++;
  h.corr_id = corr_id;
  h.payload_len = static_cast<std::uint16_t>(m->data_len);
  h.timestamp_ns = in_batch_ ? batch_ns_ : lent_ns_ != 0 ? lent_ns_ : clock_.now_ns();
  in_batch_ = o.more;
  batch_ns_ = h.timestamp_ns;
  auto* hdr = reinterpret_cast<std::byte*>(rte_pktmbuf_prepend(m, wire::kOverhead));
  r->headers.write(hdr, h, !pt.csum_offload);
  if (pt.csum_offload) {
    m->ol_flags |= RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM;
    m->l2_len = wire::kEthLen;
    m->l3_len = wire::kIpv4Len;
  }
  st_.sent[t][prio].add();
  idle_.note(prio, h.timestamp_ns);
  if (prio == 0) p0_.seen();
  if (prio == 0 && !o.more && pt.lanes.size(0) == 0) [[likely]] {
    // A lone P0 frame with nothing queued ahead of it on its lane goes straight to the port.
    rte_mbuf* one[1] = {m};
    if (tx(r->port, 0, one, 1) == 1) return SendStatus::kOk;
  }
  dirty_ |= std::uint64_t{1} << r->port;
  rte_mbuf* evicted = nullptr;
  if (pt.lanes.push(prio, m, &evicted) == lane::Push::kShed) {
    // P3/P4 lane full: its oldest frame makes room (counted, never silent).
    st_.shed[prio].add();
    rte_pktmbuf_free(evicted);
  }
  if (prio == 0 && !o.more) {
    flush_lane(r->port, 0, kAll);  // P0 leaves now, ahead of anything queued
  } else if (pt.lanes.size(prio) >= (prio == 0 ? kBurst : p0_.lower_burst())) {
    // A full burst leaves at once (a P0 batch too): one burst, so this send never waits
    // behind more than that.
    if (pt.paired || prio == 0) flush_lane(r->port, prio, 1);
    else flush_sched(r->port, 1);
  }
  return SendStatus::kOk;
}

unsigned TxStage::tx(std::size_t p, std::uint16_t q, rte_mbuf** burst, std::uint16_t n) noexcept {
  guard_.enter();
  const std::uint16_t sent = ports_[p].dev->tx_burst(q, burst, n);
  guard_.exit();
  std::uint64_t bytes = 0;
  for (std::uint16_t i = 0; i < sent; ++i) bytes += burst[i]->pkt_len;
  st_.tx_frames.add(sent);
  st_.tx_bytes.add(bytes);
  return sent;
}

// Lane `lane` of port p, up to max_bursts bursts. Paired ports: on TX queue `lane`, which the
// peer reads as its RX queue `lane`. Shared-queue ports: on queue 0 (P0 only goes this way).
unsigned TxStage::flush_lane(std::size_t p, unsigned lane, unsigned max_bursts) noexcept {
  PortTx& pt = ports_tx_[p];
  const auto q = static_cast<std::uint16_t>(pt.paired ? lane : 0);
  const std::uint16_t bsz = lane == 0 ? kBurst : p0_.lower_burst();
  unsigned moved = 0;
  rte_mbuf* burst[kBurst];
  for (unsigned b = 0; b < max_bursts && pt.lanes.size(lane) > 0; ++b) {
    const auto n = static_cast<std::uint16_t>(pt.lanes.pull_lane(lane, burst, bsz, !pt.paired));
    const unsigned sent = tx(p, q, burst, n);
    moved += sent;
    if (sent < n) {
      pt.lanes.unpull_lane(lane, burst + sent, n - sent);
      break;
    }
  }
  return moved;
}

// Shared-queue ports: bursts in the scheduler's order (strict priority, minimum shares).
unsigned TxStage::flush_sched(std::size_t p, unsigned max_bursts) noexcept {
  PortTx& pt = ports_tx_[p];
  unsigned moved = 0;
  rte_mbuf* burst[kBurst];
  std::uint8_t from[kBurst];
  const std::uint16_t bsz = p0_.lower_burst();
  for (unsigned b = 0; b < max_bursts && pt.lanes.total() > 0; ++b) {
    const auto n = static_cast<std::uint16_t>(pt.lanes.pull(burst, from, bsz));
    const unsigned sent = tx(p, 0, burst, n);
    moved += sent;
    if (sent < n) {
      pt.lanes.unpull(burst + sent, from + sent, n - sent);
      break;
    }
  }
  return moved;
}

unsigned TxStage::drain() noexcept {
  in_batch_ = false;  // a batch ends at the latest when the loop comes round
  if (dirty_ == 0) return 0;
  unsigned moved = 0;
  for (std::size_t p = 0; p < ports_tx_.size(); ++p) {
    if (!((dirty_ >> p) & 1u)) continue;
    PortTx& pt = ports_tx_[p];
    if (pt.lanes.total() == 0) {
      dirty_ &= ~(std::uint64_t{1} << p);
      continue;
    }
    moved += flush_lane(p, 0, kAll);
    // Each lower lane: one burst (a short one while P0 flows).
    if (pt.paired) {
      for (unsigned l = 1; l < lane::kLanes; ++l) moved += flush_lane(p, l, 1);
    } else {
      moved += flush_sched(p, 1);
    }
  }
  return moved;
}

unsigned TxStage::flush_all() noexcept {
  unsigned moved = 0;
  while (const unsigned n = drain()) moved += n;
  return moved;
}

std::uint32_t TxStage::waiting() const noexcept {
  std::uint32_t n = 0;
  for (const PortTx& pt : ports_tx_) n += pt.lanes.total();
  return n;
}

void TxStage::free_all() noexcept {
  rte_mbuf* m[kBurst];
  for (PortTx& pt : ports_tx_)
    for (unsigned l = 0; l < lane::kLanes; ++l)
      while (const unsigned n = pt.lanes.pull_lane(l, m, kBurst)) rte_pktmbuf_free_bulk(m, n);
}

}  // namespace nerve::node
