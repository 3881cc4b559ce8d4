#include "tx_stage.hpp"

#include <bit>
#include <cassert>
#include <cstring>
#include <random>

#include <rte_ip.h>

#include "../wire/bytes.hpp"
#include "../wire/layout.hpp"
#include "../wire/rewrite.hpp"

namespace nerve::node {
namespace {

constexpr unsigned kAll = ~0u;  // bursts: as many as the port takes

// The UDP checksum of frame `m` (headers at its data), written into it. A chained frame (a
// header mbuf in front of a shared payload) is summed segment by segment.
void fill_udp_checksum(rte_mbuf* m) noexcept {
  namespace hl = wire::layout;
  auto* f = rte_pktmbuf_mtod(m, std::byte*);
  if (m->nb_segs == 1) [[likely]]
    return wire::fill_udp_checksum(std::span<std::byte>(f, m->data_len));
  wire::bytes::store_be<std::uint16_t>(f + hl::kUdpOff + 6, 0);
  std::uint16_t raw = 0;
  [[maybe_unused]] const int rc = rte_raw_cksum_mbuf(m, hl::kUdpOff, m->pkt_len - hl::kUdpOff, &raw);
  assert(rc == 0);  // the range is the frame's own
  std::uint32_t sum = std::uint32_t{rte_ipv4_phdr_cksum(reinterpret_cast<const rte_ipv4_hdr*>(f + hl::kIpOff), 0)} + raw;
  sum = (sum & 0xffffu) + (sum >> 16);
  sum = (sum & 0xffffu) + (sum >> 16);
  auto c = static_cast<std::uint16_t>(~sum);
  if (c == 0) c = 0xffff;  // RFC 768: a computed 0 is sent as all ones
  // rte_raw_cksum sums 16-bit words in host order; the field is written as the bytes summed.
  std::memcpy(f + hl::kUdpOff + 6, &c, 2);
}

// One more reference to frame `m`: the port's, beside the reliable stage's. Counted on every
// segment, as a port frees a chained frame segment by segment (a header mbuf's count alone
// would let the port free the shared payload behind it while the stage still keeps it).
void add_ref(rte_mbuf* m) noexcept {
  for (; m != nullptr; m = m->next) rte_mbuf_refcnt_update(m, 1);
}

}  // namespace

TxStage::TxStage(NodePorts& ports, Routing& routing, const config::Node& cfg, rte_mempool* pool, std::size_t max_payload,
                 Clock& clock, stats::LcoreStats& st, IdlePolicy& idle, drivers::DatapathGuard::Section& guard,
                 P0Watch& p0)
    : ports_(ports), r_(routing), pool_(pool), max_payload_(max_payload), clock_(clock), st_(st), idle_(idle),
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
    t.chains = p.dev->sends_chains();
    t.shares = p.dev->kind() == config::PortKind::kRing;
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

bool TxStage::room(std::size_t port, std::uint8_t prio, bool never_shed) noexcept {
  PortTx& pt = ports_tx_[port];
  if ((!never_shed && lane::sheds(prio)) || !pt.lanes.full(prio)) [[likely]]
    return true;
  if (pt.paired) flush_lane(port, prio, 1);
  else flush_sched(port, 1);
  if (!pt.lanes.full(prio)) return true;
  // P0-P2 (and never_shed sends) are never dropped: the caller keeps the frame and decides.
  st_.tx_backpressure.add();
  st_.backpressure[prio].add();
  return false;
}

void TxStage::write_headers(rte_mbuf* m, std::uint32_t di, const Link& l, const wire::Header& h) noexcept {
  const PortTx& pt = ports_tx_[l.port];
  auto* hdr = reinterpret_cast<std::byte*>(rte_pktmbuf_prepend(m, wire::kOverhead));
  r_.dest[di].write(hdr, h, !pt.csum_offload);
  std::memcpy(hdr, l.peer_mac.data(), 6);
  std::memcpy(hdr + 6, l.port_mac.data(), 6);
  if (pt.csum_offload) {
    m->ol_flags |= RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM;
    m->l2_len = wire::kEthLen;
    m->l3_len = wire::kIpv4Len;
  }
}

void TxStage::enqueue(rte_mbuf* m, std::size_t port, std::uint8_t prio, bool more) noexcept {
  PortTx& pt = ports_tx_[port];
  st_.lane_tx_bytes[prio].add(m->pkt_len);
  if (prio == 0) p0_.seen();
  if (prio == 0 && !more && pt.lanes.size(0) == 0) [[likely]] {
    // A lone P0 frame with nothing queued ahead of it on its lane goes straight to the port.
    rte_mbuf* one[1] = {m};
    if (tx(port, 0, one, 1) == 1) return;
  }
  dirty_ |= std::uint64_t{1} << port;
  rte_mbuf* evicted = nullptr;
  const lane::Push pushed = pt.lanes.push(prio, m, &evicted);
  if (pushed == lane::Push::kShed) {
    // P3/P4 lane full: its oldest frame makes room (counted, never silent).
    st_.shed[prio].add();
    rte_pktmbuf_free(evicted);
  } else if (pushed == lane::Push::kBackpressure) [[unlikely]] {
    // A full P0-P2 lane: callers check room() first, so only a second frame for a lane that
    // had room for one (copies of one message to children on one port) ends here: dropped,
    // counted, never leaked.
    st_.backpressure[prio].add();
    rte_pktmbuf_free(m);
    return;
  }
  if (prio == 0 && !more) {
    flush_lane(port, 0, kAll);  // P0 leaves now, ahead of anything queued
  } else if (pt.lanes.size(prio) >= (prio == 0 ? kBurst : p0_.lower_burst())) {
    // A full burst leaves at once (a P0 batch too): one burst, so this send never waits
    // behind more than that.
    if (pt.paired || prio == 0) flush_lane(port, prio, 1);
    else flush_sched(port, 1);
  }
}

rte_mbuf* TxStage::tx_copy(const rte_mbuf* m) noexcept {
  rte_mbuf* c = rte_pktmbuf_copy(m, pool_, 0, UINT32_MAX);
  if (!c) {
    st_.alloc_failed.add();
    return nullptr;
  }
  c->ol_flags = m->ol_flags;
  c->l2_len = m->l2_len;
  c->l3_len = m->l3_len;
  return c;
}

bool TxStage::enqueue_kept(rte_mbuf* m, std::size_t port, std::uint8_t prio, bool more) noexcept {
  rte_mbuf* out = m;
  if (ports_tx_[port].shares) {
    out = tx_copy(m);
    if (!out) return false;
  } else {
    add_ref(m);  // the port's reference; the reliable stage keeps its own
  }
  enqueue(out, port, prio, more);
  return true;
}

SendStatus TxStage::resend(rte_mbuf* kept, std::uint32_t di, std::uint8_t prio, std::uint32_t ack) noexcept {
  namespace hl = wire::layout;
  const auto channel =
      wire::bytes::load_le<std::uint16_t>(rte_pktmbuf_mtod_offset(kept, const std::byte*, hl::kHdrOff + hl::hdr::kChannel));
  const int slot = r_.fib->hops(di, r_.metric[prio]).pick(flow_of(self_, r_.topo.id(di), channel), r_.up);
  if (slot < 0) return SendStatus::kNoRoute;
  const Link& l = r_.links[static_cast<std::size_t>(slot)];
  if (!room(l.port, prio, true)) return SendStatus::kBackpressure;
  // The kept frame itself goes again, unless something still holds it: a port that passes
  // mbufs to its peer (ring), or an earlier send still queued or in a device's TX ring (many
  // PMDs free sent mbufs only when they next reclaim completions). That one may be read while
  // it is written: a copy goes instead.
  // So does a chained frame (a reliable broadcast's copy) for a port that cannot send chains:
  // its route may have moved since it was built.
  rte_mbuf* m = kept;
  if (ports_tx_[l.port].shares || rte_mbuf_refcnt_read(kept) > 1 ||
      (kept->nb_segs > 1 && !ports_tx_[l.port].chains)) {
    m = tx_copy(kept);
    if (!m) return SendStatus::kBackpressure;
  } else {
    add_ref(m);  // the port's reference; the reliable stage keeps its own
  }
  auto* f = rte_pktmbuf_mtod(m, std::byte*);
  std::memcpy(f, l.peer_mac.data(), 6);
  std::memcpy(f + 6, l.port_mac.data(), 6);
  wire::bytes::store_le<std::uint32_t>(f + hl::kHdrOff + hl::hdr::kAck, ack);
  // Sent again over one path (the lane's route): no longer a copy of a two-path message (its
  // session tells it from the first transmission).
  auto& flags = reinterpret_cast<std::uint8_t&>(f[hl::kHdrOff + hl::hdr::kFlags]);
  flags = static_cast<std::uint8_t>(flags & ~(wire::flag::kTwoPaths | wire::flag::kSecondPath));
  if (ports_tx_[l.port].csum_offload) {
    m->ol_flags |= RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM;
    m->l2_len = wire::kEthLen;
    m->l3_len = wire::kIpv4Len;
  } else if ((m->ol_flags & RTE_MBUF_F_TX_IP_CKSUM) != 0) {  // first sent where the NIC filled it in
    m->ol_flags &= ~(RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM);
    wire::bytes::store_be<std::uint16_t>(f + hl::kIpOff + 10, 0);
    const std::uint16_t c = wire::ipv4_checksum(std::span<const std::byte>(f + hl::kIpOff, wire::kIpv4Len));
    wire::bytes::store_be<std::uint16_t>(f + hl::kIpOff + 10, c);
  }
  fill_udp_checksum(m);
  enqueue(m, l.port, prio, false);
  return SendStatus::kOk;
}

SendStatus TxStage::send_frame(rte_mbuf* m, NodeId dst, MsgType type, std::uint8_t prio, const SendOptions& o,
                               std::uint32_t corr_id, NodeId* via, const Sequenced* sq) noexcept {
  const auto t = static_cast<std::uint8_t>(type);
  const bool ack = type == MsgType::kAck && sq != nullptr;
  if (!m || prio >= wire::kPriorities || ((t < wire::kMsgTypeFirst || t > wire::kMsgTypeLast) && !ack)) [[unlikely]]
    return SendStatus::kBadArgument;
  const std::uint32_t di = r_.index(dst);
  int slot = di == route::kNoIndex || di == r_.self_idx
                 ? -1
                 : r_.fib->hops(di, r_.metric[prio]).pick(flow_of(self_, dst, o.channel), r_.up);
  if (slot < 0) [[unlikely]] {
    st_.tx_no_route.add();
    return SendStatus::kNoRoute;
  }
  // Two paths: the table's pair of disjoint paths when both its links are up (on two ports).
  // A path whose lane is full (its peer stalled, say) is left out: the copy goes by the other,
  // counted as sent over one; only both full push back.
  const bool two = o.paths > 1 && !ack && !(sq && sq->frag_count > 1);
  int second = -1;
  if (two) [[unlikely]] {
    int a = -1, b = -1;
    if (r_.fib->two_paths(di, a, b) && ((r_.up >> a) & 1u) && ((r_.up >> b) & 1u) &&
        r_.links[static_cast<std::size_t>(a)].port != r_.links[static_cast<std::size_t>(b)].port) {
      const bool room_a = room(r_.links[static_cast<std::size_t>(a)].port, prio, o.never_shed);
      const bool room_b = room(r_.links[static_cast<std::size_t>(b)].port, prio, o.never_shed);
      if (!room_a && !room_b) return SendStatus::kBackpressure;
      slot = room_a ? a : b;
      second = room_a && room_b ? b : -1;
    } else if (!room(r_.links[static_cast<std::size_t>(slot)].port, prio, o.never_shed)) {
      return SendStatus::kBackpressure;
    }
  }
  const Link& l = r_.links[static_cast<std::size_t>(slot)];
  // A reliable frame that may wait (Sequenced::hold) is kept, not queued, when its lane is
  // full: its retransmission timer sends it.
  bool queue = true;
  if (!two && !room(l.port, prio, o.never_shed)) [[unlikely]] {
    if (!sq || !sq->hold) return SendStatus::kBackpressure;
    queue = false;
  }
  wire::Header h;
  h.type = type;
  h.priority = prio;
  h.ttl = r_.ttl;
  h.channel = o.channel;
  h.msg_id = sq && sq->msg_id != 0 ? sq->msg_id : next_msg_id_++;
  h.corr_id = corr_id;
  h.payload_len = static_cast<std::uint16_t>(m->pkt_len);  // a shared payload behind a header mbuf too
  h.timestamp_ns = in_batch_ ? batch_ns_ : lent_ns_ != 0 ? lent_ns_ : clock_.now_ns();
  in_batch_ = o.more;
  batch_ns_ = h.timestamp_ns;
  if (sq) [[unlikely]] {
    if (!ack) h.flags = wire::flag::kReliable;
    if (sq->frag_count > 1) {
      h.flags |= wire::flag::kFragment;
      h.frag_index = sq->frag_index;
      h.frag_count = sq->frag_count;
    }
    h.session = sq->session;
    h.seq = sq->seq;
    h.ack = sq->ack;
  }
  // The second path's copy: its own headers in front of m's payload, by reference.
  rte_mbuf* copy = nullptr;
  if (two) [[unlikely]] {
    if (second >= 0) copy = copy_of(m, 0, r_.links[static_cast<std::size_t>(second)].port);
    (copy ? st_.paths_two : st_.paths_one)[prio].add();
    if (copy) h.flags |= wire::flag::kTwoPaths;
  }
  write_headers(m, di, l, h);
  if (via) *via = l.peer;
  idle_.note(prio, h.timestamp_ns);
  if (!sq) [[likely]] {
    st_.sent[t][prio].add();
    if (copy) [[unlikely]] {
      second_headers(copy, m, di, static_cast<std::size_t>(second), h);
      enqueue(m, l.port, prio, o.more);  // the first path's first
      enqueue(copy, r_.links[static_cast<std::size_t>(second)].port, prio, o.more);
      return SendStatus::kOk;
    }
    enqueue(m, l.port, prio, o.more);
    return SendStatus::kOk;
  }
  fill_udp_checksum(m);
  if (ack) {
    enqueue(m, l.port, prio, o.more);
    return SendStatus::kOk;
  }
  st_.sent[t][prio].add();
  if (copy) [[unlikely]] second_headers(copy, m, di, static_cast<std::size_t>(second), h);
  if (queue) enqueue_kept(m, l.port, prio, o.more);  // no copy now: the retransmission timer sends it
  if (copy) [[unlikely]] enqueue(copy, r_.links[static_cast<std::size_t>(second)].port, prio, o.more);
  return SendStatus::kOk;
}

void TxStage::second_headers(rte_mbuf* copy, const rte_mbuf* m, std::uint32_t di, std::size_t slot,
                             wire::Header h) noexcept {
  namespace hl = wire::layout;
  const Link& l = r_.links[slot];
  const std::uint8_t flags = h.flags;
  h.flags |= wire::flag::kSecondPath;
  write_headers(copy, di, l, h);
  // The UDP checksum (reliable frames): m's, updated for the one byte that differs (the flags,
  // the low byte of the word they share with the priority). Zero stays zero.
  const auto* f = rte_pktmbuf_mtod(m, const std::byte*);
  const auto sum = wire::bytes::load_be<std::uint16_t>(f + hl::kUdpOff + 6);
  if (sum != 0) {
    std::uint16_t c = wire::checksum_update(sum, static_cast<std::uint16_t>((h.priority << 8) | flags),
                                            static_cast<std::uint16_t>((h.priority << 8) | h.flags));
    if (c == 0) c = 0xffff;
    wire::bytes::store_be<std::uint16_t>(rte_pktmbuf_mtod(copy, std::byte*) + hl::kUdpOff + 6, c);
  }
}

SendStatus TxStage::send_link(rte_mbuf* m, std::size_t slot, std::uint8_t prio) noexcept {
  const Link& l = r_.links[slot];
  if (!room(l.port, prio, true)) return SendStatus::kBackpressure;
  wire::Header h;
  h.type = MsgType::kFabric;
  h.priority = prio;
  h.ttl = 1;  // for the neighbour only
  h.msg_id = next_msg_id_++;
  h.payload_len = static_cast<std::uint16_t>(m->data_len);
  h.timestamp_ns = clock_.now_ns();
  write_headers(m, l.peer_idx, l, h);
  st_.fabric_tx.add();
  enqueue(m, l.port, prio, false);
  return SendStatus::kOk;
}

rte_mbuf* TxStage::copy_of(rte_mbuf* m, std::uint16_t payload_off, std::size_t port) noexcept {
  // A header mbuf from the pool, with the payload behind it by reference (an indirect mbuf).
  rte_mbuf* h = alloc(0);
  if (!h) return nullptr;
  rte_mbuf* ind = rte_pktmbuf_alloc(pool_);
  if (!ind) {
    st_.alloc_failed.add();
    rte_pktmbuf_free(h);
    return nullptr;
  }
  rte_pktmbuf_attach(ind, m);
  rte_pktmbuf_adj(ind, payload_off);
  if (rte_pktmbuf_chain(h, ind) != 0 || (!ports_tx_[port].chains && rte_pktmbuf_linearize(h) != 0)) {
    rte_pktmbuf_free(h);
    return nullptr;
  }
  return h;
}

rte_mbuf* TxStage::share(rte_mbuf* m, NodeId dst, std::uint8_t prio, std::uint16_t channel) noexcept {
  const std::uint32_t di = r_.index(dst);
  const int slot = di == route::kNoIndex || di == r_.self_idx
                       ? -1
                       : r_.fib->hops(di, r_.metric[prio]).pick(flow_of(self_, dst, channel), r_.up);
  return slot < 0 ? nullptr : copy_of(m, 0, r_.links[static_cast<std::size_t>(slot)].port);
}

SendStatus TxStage::send_tree(rte_mbuf* m, int group, std::uint16_t group_id, MsgType type, std::uint8_t prio,
                              const SendOptions& o) noexcept {
  const auto t = static_cast<std::uint8_t>(type);
  if (!m || prio >= wire::kPriorities || t < wire::kMsgTypeFirst || t > wire::kMsgTypeLast) [[unlikely]]
    return SendStatus::kBadArgument;
  const auto children = r_.fib->children(r_.self_idx);
  // The links to the children that get a copy; all must have room (or none is sent).
  std::array<int, route::kMaxLinks> to{};
  unsigned n = 0;
  for (const route::TreeChild& c : children) {
    if (group >= 0 && !((c.groups >> group) & 1u)) continue;
    const int slot = up_slot_to(c.peer);
    if (slot < 0) continue;  // the child's link is down: the tree is being rebuilt
    if (!room(r_.links[static_cast<std::size_t>(slot)].port, prio, o.never_shed)) return SendStatus::kBackpressure;
    to[n++] = slot;
  }
  wire::Header h;
  h.type = type;
  h.priority = prio;
  h.ttl = r_.ttl;
  h.channel = o.channel;
  h.flags = group >= 0 ? wire::flag::kMulticast : wire::flag::kBroadcast;
  h.msg_id = next_msg_id_++;
  h.payload_len = static_cast<std::uint16_t>(m->data_len);
  h.timestamp_ns = in_batch_ ? batch_ns_ : lent_ns_ != 0 ? lent_ns_ : clock_.now_ns();
  in_batch_ = false;
  st_.sent[t][prio].add();
  idle_.note(prio, h.timestamp_ns);
  if (n == 0) {
    rte_pktmbuf_free(m);
    return SendStatus::kOk;
  }
  const std::uint16_t dst = group >= 0 ? group_id : wire::kBroadcast;
  auto finish = [&](rte_mbuf* f, std::size_t slot) {
    const Link& l = r_.links[slot];
    write_headers(f, l.peer_idx, l, h);
    // The destination field names the group (or everyone), not the neighbour.
    wire::bytes::store_le<std::uint16_t>(rte_pktmbuf_mtod_offset(f, std::byte*, wire::layout::kHdrOff + wire::layout::hdr::kDst), dst);
    enqueue(f, l.port, prio, false);
  };
  // Copies first (they reference m's payload as it is now), then m itself to the first child.
  for (unsigned k = 1; k < n; ++k) {
    const auto slot = static_cast<std::size_t>(to[k]);
    rte_mbuf* c = copy_of(m, 0, r_.links[slot].port);
    if (!c) continue;  // pool dry: counted in alloc_failed
    finish(c, slot);
  }
  finish(m, static_cast<std::size_t>(to[0]));
  return SendStatus::kOk;
}

unsigned TxStage::fan_out(rte_mbuf* m, std::uint32_t src, int group, std::uint8_t prio) noexcept {
  unsigned sent = 0;
  const auto* frame = rte_pktmbuf_mtod(m, const std::byte*);
  for (const route::TreeChild& c : r_.fib->children(src)) {
    if (group >= 0 && !((c.groups >> group) & 1u)) continue;
    const int slot = up_slot_to(c.peer);
    if (slot < 0) continue;
    const Link& l = r_.links[static_cast<std::size_t>(slot)];
    rte_mbuf* copy = copy_of(m, wire::kOverhead, l.port);
    if (!copy) continue;
    auto* hdr = reinterpret_cast<std::byte*>(rte_pktmbuf_prepend(copy, wire::kOverhead));
    std::memcpy(hdr, frame, wire::kOverhead);
    if (!wire::rewrite_for_hop(hdr, l.port_mac, l.peer_mac, l.peer_ip)) {  // TTL spent
      rte_pktmbuf_free(copy);
      st_.refused[static_cast<std::size_t>(wire::Refusal::kTtlExpired)].add();
      return sent;
    }
    forward(copy, static_cast<std::size_t>(slot), prio);
    ++sent;
  }
  return sent;
}

void TxStage::forward(rte_mbuf* const* ms, std::uint16_t n, std::size_t slot, std::uint8_t prio) noexcept {
  const std::size_t port = r_.links[slot].port;
  for (std::uint16_t i = 0; i < n; ++i) ms[i]->ol_flags = 0;
  if (prio == 0) [[unlikely]] {
    for (std::uint16_t i = 0; i < n; ++i) forward_one(ms[i], port, prio);
    return;
  }
  PortTx& pt = ports_tx_[port];
  fwd_dirty_ |= std::uint64_t{1} << port;
  while (n != 0) {
    if (pt.fwd_n == kBurst) forward_port(port);
    const auto take = std::min<std::uint16_t>(n, static_cast<std::uint16_t>(kBurst - pt.fwd_n));
    std::copy_n(ms, take, pt.fwd.data() + pt.fwd_n);
    std::fill_n(pt.fwd_prio.data() + pt.fwd_n, take, prio);
    pt.fwd_n = static_cast<std::uint16_t>(pt.fwd_n + take);
    ms += take;
    n = static_cast<std::uint16_t>(n - take);
  }
}

void TxStage::forward_one(rte_mbuf* m, std::size_t port, std::uint8_t prio) noexcept {
  PortTx& pt = ports_tx_[port];
  if (!lane::sheds(prio) && pt.lanes.full(prio)) {
    if (pt.paired) flush_lane(port, prio, 1);
    else flush_sched(port, 1);
    if (pt.lanes.full(prio)) {
      st_.forward_dropped[prio].add();
      rte_pktmbuf_free(m);
      return;
    }
  }
  st_.forwarded[prio].add();
  st_.forwarded_port[port].add();
  enqueue(m, port, prio, false);
}

unsigned TxStage::forward_port(std::size_t port) noexcept {
  PortTx& pt = ports_tx_[port];
  const std::uint16_t n = pt.fwd_n;
  pt.fwd_n = 0;
  const std::uint8_t prio = pt.fwd_prio[0];
  bool one_lane = true;
  for (std::uint16_t i = 1; i < n; ++i) one_lane &= pt.fwd_prio[i] == prio;
  std::uint16_t sent = 0;
  // One lane with nothing queued ahead of the burst on the port's queue: it leaves as one, as
  // the lane would send it now (a lane's own queue on paired ports; on a shared queue, only
  // while every lane is empty, so the scheduler's order holds), and no longer than a lane's
  // burst: while P0 flows, a short one (P0Watch), so a P0 frame never waits behind more.
  if (one_lane && (pt.paired ? pt.lanes.size(prio) == 0 : pt.lanes.total() == 0)) [[likely]] {
    std::uint64_t bytes = 0;
    sent = static_cast<std::uint16_t>(
        tx(port, pt.paired ? prio : 0, pt.fwd.data(), std::min(n, p0_.lower_burst()), &bytes));
    st_.lane_tx_bytes[prio].add(bytes);
    st_.forwarded[prio].add(sent);
    st_.forwarded_port[port].add(sent);
  }
  // The rest (what the port did not take, or a burst of several lanes) queues frame by frame.
  for (std::uint16_t i = sent; i < n; ++i) forward_one(pt.fwd[i], port, pt.fwd_prio[i]);
  return sent;
}

unsigned TxStage::forward_flush() noexcept {
  unsigned sent = 0;
  while (fwd_dirty_ != 0) {
    const auto port = static_cast<std::size_t>(std::countr_zero(fwd_dirty_));
    fwd_dirty_ &= fwd_dirty_ - 1;
    if (ports_tx_[port].fwd_n != 0) sent += forward_port(port);
  }
  return sent;
}

unsigned TxStage::tx(std::size_t p, std::uint16_t q, rte_mbuf** burst, std::uint16_t n,
                     std::uint64_t* sent_bytes) noexcept {
  // The lengths are read before the port owns the frames: a ring's peer may free them at once.
  std::uint64_t bytes = 0;
  for (std::uint16_t i = 0; i < n; ++i) bytes += burst[i]->pkt_len;
  guard_.enter();
  const std::uint16_t sent = ports_[p].dev->tx_burst(q, burst, n);
  guard_.exit();
  for (std::uint16_t i = sent; i < n; ++i) bytes -= burst[i]->pkt_len;  // still ours
  if (sent_bytes) *sent_bytes = bytes;
  st_.tx_frames.add(sent);
  st_.tx_bytes.add(bytes);
  st_.port_tx_frames[p].add(sent);
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
  unsigned moved = 0;
  if (fwd_dirty_ != 0) [[unlikely]]
    moved = forward_flush();
  if (dirty_ == 0) return moved;
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
  for (PortTx& pt : ports_tx_) {
    if (pt.fwd_n != 0) rte_pktmbuf_free_bulk(pt.fwd.data(), pt.fwd_n);
    pt.fwd_n = 0;
  }
  fwd_dirty_ = 0;
  for (PortTx& pt : ports_tx_)
    for (unsigned l = 0; l < lane::kLanes; ++l)
      while (const unsigned n = pt.lanes.pull_lane(l, m, kBurst)) rte_pktmbuf_free_bulk(m, n);
}

}  // namespace nerve::node
