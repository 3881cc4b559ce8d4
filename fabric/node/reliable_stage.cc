#include "reliable_stage.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <random>

#include "../wire/bytes.hpp"
#include "../wire/layout.hpp"

namespace nerve::node {
namespace {

constexpr std::uint32_t kMask = ReliableStage::kWindow - 1;
static_assert((ReliableStage::kWindow & kMask) == 0, "the window is a power of two");
constexpr std::size_t kAckPayload = 8;  // 64 selective bits: sequence numbers ack+1 .. ack+64

// Serial-number order (RFC 1982): a before b.
constexpr bool before(std::uint32_t a, std::uint32_t b) noexcept { return static_cast<std::int32_t>(a - b) < 0; }
// Time from `then` to `now`, 0 if `then` is later: a frame sent inside a poll carries a timestamp
// newer than the `now` that poll read before it sent, and its timers run with.
constexpr std::uint64_t since(std::uint64_t now, std::uint64_t then) noexcept { return now > then ? now - then : 0; }

}  // namespace

ReliableStage::ReliableStage(const config::Cluster& c, const config::Node& cfg, Routing& r, TxStage& tx,
                             DeliverStage& deliver, MessageBuffers& joins, stats::LcoreStats& st)
    : r_(r), tx_(tx), deliver_(deliver), st_(st),
      give_up_ns_(std::uint64_t{c.reliable_give_up_ms} * 1'000'000u),
      first_session_(std::random_device{}() | 1u),  // each start of the node its own session
      peers_(r.topo.size()),
      joins_(joins),
      frag_size_(tx.max_payload()),
      credit_budget_(credit_budget(cfg.mbufs)),
      timer_(&ReliableStage::fire, this) {
  for (unsigned l = 0; l < wire::kPriorities; ++l) budget_ns_[l] = std::uint64_t{cfg.lane_budget_us[l]} * 1000u;
  active_.reserve(peers_.size());
  ack_due_.reserve(peers_.size() * wire::kPriorities);
  blocked_.reserve(peers_.size() * wire::kPriorities);
  feeding_.reserve(peers_.size() * wire::kPriorities);
  joining_.reserve(peers_.size() * wire::kPriorities);
  group_to_.reserve(peers_.size());
  const std::size_t sessions = std::min<std::size_t>(c.reliable_peers, peers_.empty() ? 0 : peers_.size() - 1);
  spare_.reserve(sessions);
  for (std::size_t i = 0; i < sessions; ++i) spare_.push_back(std::make_unique<Peer>());
  given_.reserve(sessions);
  for (std::uint8_t prio = 0; prio < wire::kPriorities; ++prio) set_grant(prio);
}

ReliableStage::~ReliableStage() {
  for (auto& p : peers_) {
    if (!p) continue;
    for (TxSession& t : p->tx) {
      for (TxEntry& e : t.win)
        if (e.m) rte_pktmbuf_free(e.m);
      if (t.out.buf) give_back(t.out.buf);
    }
    for (RxSession& s : p->rx) {
      for (std::uint32_t i = 0; i < kWindow; ++i)
        if (s.has[i]) rte_pktmbuf_free(s.held[i].m);
      if (s.join) give_back(s.join);
    }
  }
}

ReliableStage::Peer* ReliableStage::peer(std::uint32_t di) noexcept {
  if (!peers_[di]) [[unlikely]] {
    if (spare_.empty()) return nullptr;
    peers_[di] = std::move(spare_.back());  // allocated at start (see the header)
    spare_.pop_back();
    given_.push_back(di);
    for (TxSession& t : peers_[di]->tx) t.session = first_session_;
  }
  return peers_[di].get();
}

std::uint64_t ReliableStage::rto_ns(const Peer& p, std::uint8_t prio) const noexcept {
  // Half the lane's budget at most, so a loss is repaired inside it; but never below twice the
  // measured round trip (a queue of frames ahead of the ack delays it that long), which would
  // only send again what is still on its way.
  // And never above kMaxWaitNs (unless the budget is longer): a sample that waited on
  // something else (a stalled receiver) must not leave a loss unrepaired for seconds.
  const std::uint64_t hi = std::max({kMinRtoNs, budget_ns_[prio] / 2, std::min(2 * p.srtt_ns, kMaxWaitNs)});
  if (p.srtt_ns == 0) return hi;  // no round trip measured yet: half the lane's budget
  return std::clamp(p.srtt_ns + 4 * p.rttvar_ns, kMinRtoNs, hi);
}

// ---- sender ---------------------------------------------------------------------------------

bool ReliableStage::has_credit(TxSession& t) noexcept {
  if (t.next == t.base && t.credit > kInitialCredit && since(recent_ns_, t.credit_ns) >= kActiveNs)
    t.credit = kInitialCredit;
  return t.next - t.base < t.credit;
}

SendStatus ReliableStage::send(rte_mbuf* m, NodeId dst, MsgType type, std::uint8_t prio, const SendOptions& o,
                               std::uint32_t corr_id) noexcept {
  if (prio >= wire::kPriorities) return SendStatus::kBadArgument;
  const std::uint32_t di = r_.index(dst);
  if (di == route::kNoIndex || di == r_.self_idx) return SendStatus::kNoRoute;
  Peer* pp = peer(di);
  if (!pp) [[unlikely]] {
    st_.rel[prio].no_session.add();
    return SendStatus::kNoSession;
  }
  Peer& p = *pp;
  TxSession& t = p.tx[prio];
  if (!has_credit(t) || t.out.buf) {  // full, or a large message goes first
    st_.rel[prio].window_full.add();
    return SendStatus::kBackpressure;
  }
  const std::uint32_t msg_id = tx_.next_msg_id();
  const SendStatus s = tx_.send_reliable(m, dst, type, prio, o, corr_id, TxStage::Sequenced{t.session, t.next, t.base});
  if (s != SendStatus::kOk) return s;
  RxSession& rs = p.rx[prio];
  if (type == MsgType::kResponse && rs.ack_due && rs.last_msg_id == corr_id && rs.has.none())
    rs.ack_due = false;  // this response acknowledges the request it answers, and all before it
  sent(p, di, t, m, msg_id, o.channel, prio);
  return SendStatus::kOk;
}

SendStatus ReliableStage::send_group(rte_mbuf* m, int group, MsgType type, std::uint8_t prio,
                                     const SendOptions& o) noexcept {
  const auto t8 = static_cast<std::uint8_t>(type);
  if (!m || prio >= wire::kPriorities || t8 < wire::kMsgTypeFirst || t8 > wire::kMsgTypeLast) [[unlikely]]
    return SendStatus::kBadArgument;
  // A handler called from inside (a failure reported below) that broadcasts again waits.
  if (in_group_send_) [[unlikely]]
    return SendStatus::kBackpressure;
  // The recipients: reachable now, and (a group) members.
  group_to_.clear();
  std::size_t new_sessions = 0;
  for (std::uint32_t di = 0; di < r_.topo.size(); ++di) {
    if (di == r_.self_idx || (group >= 0 && !((r_.fib->groups_of(di) >> group) & 1u))) continue;
    if (r_.fib->hops(di, r_.metric[prio]).pick(0, r_.up) < 0) continue;  // not reachable now
    if (!peers_[di]) ++new_sessions;
    group_to_.emplace_back(di, nullptr);
  }
  // Session state for all of them, or none is taken.
  if (new_sessions > spare_.size()) [[unlikely]] {
    st_.rel[prio].no_session.add();
    return SendStatus::kNoSession;
  }
  // Credit with each of them: or nothing is sent.
  for (const auto& to : group_to_) {
    TxSession& t = peer(to.first)->tx[prio];
    if (!has_credit(t) || t.out.buf) {
      st_.rel[prio].window_full.add();
      return SendStatus::kBackpressure;
    }
  }
  const auto st = static_cast<std::size_t>(type);
  if (group_to_.empty()) {
    st_.sent[st][prio].add();  // sent, to nobody (as an unreliable broadcast with no one to reach)
    rte_pktmbuf_free(m);
    return SendStatus::kOk;
  }
  // A frame for each but the last, m's payload by reference (made before m's own headers are
  // written in front of it); the last recipient takes m itself.
  for (std::size_t k = 0; k + 1 < group_to_.size(); ++k) {
    group_to_[k].second = tx_.share(m, r_.topo.id(group_to_[k].first), prio, o.channel);
    if (!group_to_[k].second) [[unlikely]] {  // the pool is dry (counted alloc_failed): nothing sent
      for (std::size_t j = 0; j < k; ++j) rte_pktmbuf_free(group_to_[j].second);
      return SendStatus::kBackpressure;
    }
  }
  group_to_.back().second = m;
  SendOptions so = o;
  so.paths = 1;
  TxStage::Sequenced sq;
  sq.msg_id = tx_.take_msg_id();  // one message: one id at every recipient
  sq.hold = true;                 // a full lane keeps the copy for the timer: the others are out
  in_group_send_ = true;
  for (const auto& [di, f] : group_to_) {
    Peer& p = *peers_[di];
    TxSession& t = p.tx[prio];
    sq.session = t.session;
    sq.seq = t.next;
    sq.ack = t.base;
    // Routes and arguments were checked above, and the lane may keep the frame: kOk, unless
    // something unforeseen; then that recipient's copy is reported failed, never lost unseen.
    if (tx_.send_reliable(f, r_.topo.id(di), type, prio, so, 0, sq) != SendStatus::kOk) [[unlikely]] {
      rte_pktmbuf_free(f);
      report(DeliveryFailure{r_.topo.id(di), prio, o.channel, sq.msg_id, 0});
      continue;
    }
    sent(p, di, t, f, sq.msg_id, o.channel, prio);
  }
  in_group_send_ = false;
  return SendStatus::kOk;
}

void ReliableStage::sent(Peer& p, std::uint32_t di, TxSession& t, rte_mbuf* m, std::uint32_t msg_id,
                         std::uint16_t channel, std::uint8_t prio, bool fragment) noexcept {
  // The frame's headers carry its send timestamp, the time the retransmission timer counts from.
  const std::uint64_t now = wire::bytes::load_le<std::uint64_t>(
      rte_pktmbuf_mtod_offset(m, const std::byte*, wire::layout::kHdrOff + wire::layout::hdr::kTimestamp));
  t.win[t.next & kMask] = TxEntry{m, now, now, msg_id, channel, 0, false, fragment};
  ++t.next;
  st_.rel[prio].sent.add();
  if (!p.active) {
    p.active = true;
    active_.push_back(di);
  }
  timer_.arm_before(now + rto_ns(p, prio));
}

SendStatus ReliableStage::send_large(MessageBuffer* b, std::size_t len, NodeId dst, MsgType type, std::uint8_t prio,
                                     const SendOptions& o, std::uint32_t corr_id) noexcept {
  const auto t8 = static_cast<std::uint8_t>(type);
  if (prio >= wire::kPriorities || t8 < wire::kMsgTypeFirst || t8 > wire::kMsgTypeLast) return SendStatus::kBadArgument;
  if (len > joins_.size() || len > frag_size_ * 65535u) return SendStatus::kTooLarge;
  if (len <= frag_size_) {  // cut down to one frame: sent as one, reliably
    rte_mbuf* m = tx_.alloc(len);
    if (!m) return SendStatus::kBackpressure;
    std::memcpy(rte_pktmbuf_mtod(m, std::byte*), b->data, len);
    SendOptions so = o;
    so.reliable = true;
    const SendStatus s = send(m, dst, type, prio, so, corr_id);
    if (s != SendStatus::kOk) {
      rte_pktmbuf_free(m);
      return s;
    }
    give_back(b);
    return s;
  }
  const std::uint32_t di = r_.index(dst);
  if (di == route::kNoIndex || di == r_.self_idx || r_.fib->hops(di, r_.metric[prio]).pick(0, r_.up) < 0) {
    st_.tx_no_route.add();
    return SendStatus::kNoRoute;
  }
  Peer* pp = peer(di);
  if (!pp) [[unlikely]] {
    st_.rel[prio].no_session.add();
    return SendStatus::kNoSession;
  }
  TxSession& t = pp->tx[prio];
  if (t.out.buf) {  // one large message per session at a time: the next waits for it
    st_.rel[prio].window_full.add();
    return SendStatus::kBackpressure;
  }
  const auto count = static_cast<std::uint16_t>((len + frag_size_ - 1) / frag_size_);
  t.out = Outgoing{b, static_cast<std::uint32_t>(len), count, 0, type, o.channel, tx_.take_msg_id(), corr_id, 0};
  st_.rel[prio].split.add();
  feed_session(di, prio, 0);  // what the window and the lane take now; the rest each poll
  if (t.out.buf && !t.in_feeding) {
    t.in_feeding = true;
    feeding_.emplace_back(di, prio);
  }
  return SendStatus::kOk;
}

unsigned ReliableStage::feed_session(std::uint32_t di, std::uint8_t prio, std::uint64_t now_ns) noexcept {
  Peer& p = *peers_[di];
  TxSession& t = p.tx[prio];
  Outgoing& out = t.out;
  // A message whose fragments could not leave for the give-up time (no route, or this thread
  // not polling) fails, before anything more of it goes: its receiver may have dropped it.
  if (out.buf && now_ns != 0 && out.since_ns == 0) out.since_ns = now_ns;
  if (out.buf && now_ns != 0 && since(now_ns, out.since_ns) >= give_up_ns_) {
    const DeliveryFailure f{r_.topo.id(di), prio, out.channel, out.msg_id, t.next};
    t.failed_msg_id = out.msg_id;
    drop_outgoing(t);
    report(f);
    return 0;
  }
  unsigned n = 0;
  while (out.buf && has_credit(t)) {
    const std::size_t off = std::size_t{out.next} * frag_size_;
    const std::size_t len = std::min<std::size_t>(frag_size_, out.len - off);
    rte_mbuf* m = tx_.alloc(len);
    if (!m) break;  // the pool is dry: the next poll tries again
    std::memcpy(rte_pktmbuf_mtod(m, std::byte*), out.buf->data + off, len);
    SendOptions o;
    o.channel = out.channel;
    o.never_shed = true;  // a full lane pushes back: the fragment waits for the next poll
    const TxStage::Sequenced sq{t.session, t.next, t.base, out.msg_id, out.next, out.count};
    if (tx_.send_reliable(m, r_.topo.id(di), out.type, prio, o, out.corr_id, sq) != SendStatus::kOk) {
      rte_pktmbuf_free(m);
      break;
    }
    sent(p, di, t, m, out.msg_id, out.channel, prio, true);
    out.since_ns = t.win[(t.next - 1) & kMask].first_ns;
    ++n;
    if (++out.next == out.count) drop_outgoing(t);  // every fragment is out: the buffer goes back
  }
  return n;
}

void ReliableStage::drop_outgoing(TxSession& t) noexcept {
  give_back(t.out.buf);
  t.out = Outgoing{};
}

unsigned ReliableStage::feed(std::uint64_t now_ns) noexcept {
  unsigned n = 0;
  if (now_ns != 0) recent_ns_ = now_ns;
  for (std::size_t k = 0; k < feeding_.size();) {
    const auto [di, prio] = feeding_[k];
    n += feed_session(di, prio, now_ns);
    TxSession& t = peers_[di]->tx[prio];
    if (!t.out.buf) {
      t.in_feeding = false;
      feeding_[k] = feeding_.back();
      feeding_.pop_back();
    } else {
      ++k;
    }
  }
  return n;
}

void ReliableStage::advance(TxSession& t) noexcept {
  while (t.base != t.next && t.win[t.base & kMask].m == nullptr) ++t.base;
}

bool ReliableStage::retransmit(std::uint32_t di, std::uint8_t prio, TxEntry& e, std::uint64_t now_ns,
                               bool fast) noexcept {
  const TxSession& t = peers_[di]->tx[prio];
  if (tx_.resend(e.m, di, prio, t.base) != SendStatus::kOk) return false;  // full or no route: the timer tries again
  e.sent_ns = now_ns;
  if (e.retries < 255) ++e.retries;
  (fast ? st_.rel[prio].fast_retransmits : st_.rel[prio].retransmits).add();
  return true;
}

void ReliableStage::give_up(std::uint32_t di, std::uint8_t prio, std::uint32_t seq, TxEntry& e) noexcept {
  TxSession& t = peers_[di]->tx[prio];
  const DeliveryFailure f{r_.topo.id(di), prio, e.channel, e.msg_id, seq};
  rte_pktmbuf_free(e.m);
  e.m = nullptr;
  if (e.fragment) {
    // A large message fails whole, once: its other fragments in the window are dropped (the
    // receiver skips them with the rest), those not yet cut never go.
    if (e.msg_id == t.failed_msg_id) return;
    t.failed_msg_id = e.msg_id;
    for (std::uint32_t s = t.base; s != t.next; ++s) {
      TxEntry& o = t.win[s & kMask];
      if (o.m && o.fragment && o.msg_id == e.msg_id) {
        rte_pktmbuf_free(o.m);
        o.m = nullptr;
      }
    }
    if (t.out.buf && t.out.msg_id == e.msg_id) drop_outgoing(t);
  }
  report(f);
}

void ReliableStage::report(const DeliveryFailure& f) noexcept {
  st_.rel[f.priority].failed.add();
  if (on_failure_) on_failure_(f);
}

void ReliableStage::fire(void* self, std::uint64_t now_ns) noexcept { static_cast<ReliableStage*>(self)->scan(now_ns); }

void ReliableStage::scan(std::uint64_t now_ns) noexcept {
  std::uint64_t next_due = Timer::kNever;
  for (std::size_t k = 0; k < active_.size();) {
    const std::uint32_t di = active_[k];
    Peer& p = *peers_[di];
    bool any = false;
    for (std::uint8_t prio = 0; prio < wire::kPriorities; ++prio) {
      TxSession& t = p.tx[prio];
      // Backing off per session, but never past an eighth of the give-up time nor kMaxWaitNs:
      // a frame is tried several times before it is given up, however slow its acks were, and
      // a receiver back from a stall hears again soon.
      const std::uint64_t rto = rto_ns(p, prio);
      const std::uint64_t longest = std::max(rto, std::min(give_up_ns_ / 8, kMaxWaitNs));
      const std::uint64_t wait = std::min(rto << std::min<unsigned>(t.backoff, kMaxBackoff), longest);
      // One timer retransmission per session per wait: a late ack is not many losses, and a
      // receiver that lost its core is not sent its whole window again and again.
      bool may_resend = since(now_ns, t.resent_ns) >= wait;
      bool gave_up = false;
      for (std::uint32_t seq = t.base; seq != t.next; ++seq) {
        TxEntry& e = t.win[seq & kMask];
        if (!e.m) continue;
        if (since(now_ns, e.first_ns) >= give_up_ns_) {
          give_up(di, prio, seq, e);
          gave_up = true;
          continue;
        }
        if (e.sacked) {  // the receiver holds it: only its give-up is due
          next_due = std::min(next_due, e.first_ns + give_up_ns_);
          continue;
        }
        if (may_resend && since(now_ns, e.sent_ns) >= wait) {
          may_resend = false;
          // Only a frame that left counts: one refused (no route, full lane) is tried again
          // without backing off.
          if (retransmit(di, prio, e, now_ns, false)) {
            t.resent_ns = now_ns;
            if (t.backoff < 255) ++t.backoff;
          }
        }
        const std::uint64_t due = std::max({e.sent_ns + wait, t.resent_ns + wait, now_ns + kMinRtoNs / 4});
        next_due = std::min(next_due, due);
      }
      advance(t);
      // The receiver learns what was given up from the ack field of the next frame it gets:
      // send the oldest one still held again now (the rest may be all it already holds).
      if (gave_up && t.base != t.next) {
        retransmit(di, prio, t.win[t.base & kMask], now_ns, false);
        next_due = std::min(next_due, now_ns + wait);  // and again if that one is lost too
      }
      any |= t.base != t.next;
    }
    if (!any) {  // nothing in flight to this peer any more
      p.active = false;
      active_[k] = active_.back();
      active_.pop_back();
    } else {
      ++k;
    }
  }
  if (next_due != Timer::kNever) timer_.arm_before(next_due);
}

void ReliableStage::sample_rtt(Peer& p, std::uint64_t sample) noexcept {
  if (p.srtt_ns == 0) {
    p.srtt_ns = sample;
    p.rttvar_ns = sample / 2;
  } else {
    const std::uint64_t dev = sample > p.srtt_ns ? sample - p.srtt_ns : p.srtt_ns - sample;
    p.rttvar_ns = (3 * p.rttvar_ns + dev) / 4;
    p.srtt_ns = (7 * p.srtt_ns + sample) / 8;
  }
}

std::uint64_t ReliableStage::acknowledge(Peer& p, std::uint8_t prio, std::uint32_t ack, std::uint64_t now_ns,
                                         bool measure) noexcept {
  TxSession& t = p.tx[prio];
  // One round-trip sample per ack, from the newest frame it covers, and only when none of them
  // waited on anything but the link: none sent again (Karn), none acknowledged selectively
  // before (each such frame waited at the receiver for a gap to fill, and was measured when
  // its selective ack came).
  bool clean = measure;
  bool once = false;  // it covers a frame sent once: the first transmissions are coming through
  std::uint64_t newest_sent = 0, resent = 0;
  for (std::uint32_t seq = t.base; before(seq, ack); ++seq) {
    TxEntry& e = t.win[seq & kMask];
    if (!e.m) continue;
    if (e.retries != 0) {
      if (now_ns > e.first_ns) st_.rel_recovery_ns[prio].record(now_ns - e.first_ns);
      resent = std::max(resent, e.sent_ns);
    } else {
      once = true;
    }
    clean &= e.retries == 0 && !e.sacked;
    newest_sent = e.sent_ns;
    rte_pktmbuf_free(e.m);
    e.m = nullptr;
    st_.rel[prio].acked.add();
  }
  if (clean && newest_sent != 0 && now_ns > newest_sent) sample_rtt(p, now_ns - newest_sent);
  if (before(t.base, ack)) {
    t.base = ack;
    t.backoff = 0;  // the receiver is taking frames again
  }
  advance(t);
  return once ? 0 : resent;
}

void ReliableStage::resend_swallowed(std::uint32_t di, std::uint8_t prio, std::uint32_t ack, std::uint64_t resent,
                                     std::uint64_t now_ns) noexcept {
  // Only frames sent again came through: the frames sent before them that follow are not held
  // by the receiver (or the ack would say so), though their timeout has passed. They were lost
  // too, the rest of a run the link swallowed whole, and the receiver is taking frames: all go
  // again now, not one a timeout as for a receiver that may have stalled (whose first
  // transmissions, arriving late, would be in the ack). Within the ack's selective reach.
  Peer& p = *peers_[di];
  TxSession& t = p.tx[prio];
  const std::uint64_t rto = rto_ns(p, prio);
  const std::uint32_t reach = ack + 1 + 64;
  for (std::uint32_t seq = t.base; before(seq, t.next) && before(seq, reach); ++seq) {
    TxEntry& e = t.win[seq & kMask];
    if (e.m && !e.sacked && e.sent_ns < resent && since(now_ns, e.sent_ns) >= rto)
      retransmit(di, prio, e, now_ns, true);
  }
}

void ReliableStage::on_ack(const RxItem& it, std::uint64_t now_ns) noexcept {
  const wire::Header& h = it.d.hdr;
  const std::uint8_t prio = h.priority;
  const std::uint32_t di = r_.index(h.src_node);
  st_.rel[prio].acks_rx.add();
  if (!peers_[di] || it.d.payload.size() != kAckPayload) [[unlikely]] {
    st_.rel[prio].stale.add();  // nothing was sent to it reliably (or a malformed ack)
    return;
  }
  Peer& p = *peers_[di];
  TxSession& t = p.tx[prio];
  if (h.session != t.session || before(t.next, h.ack)) [[unlikely]] {
    st_.rel[prio].stale.add();
    return;
  }
  recent_ns_ = now_ns;
  // The receiver's grant (0: a node that grants none, which takes the whole window); not from
  // an ack older than what the session already heard (an outdated grant).
  if (!before(h.ack, t.base)) {
    t.credit = h.seq != 0 ? std::min(h.seq, kWindow) : kWindow;
    t.credit_ns = now_ns;
  }
  const std::uint64_t resent = acknowledge(p, prio, h.ack, now_ns);
  // Selective: frames the receiver holds; a gap before any of them is lost (or late): send it
  // again now unless it was sent within the last round trip.
  std::uint64_t sack = 0;
  std::memcpy(&sack, it.d.payload.data(), kAckPayload);
  if (sack != 0) {
    std::uint32_t last = h.ack;
    std::uint64_t newest_sacked = 0;  // one round-trip sample per ack: its newest frame sent once
    for (std::uint64_t bits = sack; bits != 0; bits &= bits - 1) {
      const std::uint32_t seq = h.ack + 1 + static_cast<std::uint32_t>(std::countr_zero(bits));
      if (!before(seq, t.next)) break;
      if (before(seq, t.base)) continue;  // an old (late, reordered) ack: that slot is a newer frame's now
      TxEntry& e = t.win[seq & kMask];
      if (e.m && !e.sacked) {
        e.sacked = true;
        if (e.retries == 0) newest_sacked = e.sent_ns;
      }
      last = seq;
    }
    if (newest_sacked != 0 && now_ns > newest_sacked) sample_rtt(p, now_ns - newest_sacked);
    const std::uint64_t recent = p.srtt_ns != 0 ? p.srtt_ns : kMinRtoNs;
    for (std::uint32_t seq = t.base; before(seq, last); ++seq) {
      TxEntry& e = t.win[seq & kMask];
      if (e.m && !e.sacked && since(now_ns, e.sent_ns) >= recent) retransmit(di, prio, e, now_ns, true);
    }
  }
  if (resent != 0) resend_swallowed(di, prio, h.ack, resent, now_ns);
}

// ---- receiver -------------------------------------------------------------------------------

void ReliableStage::deliver(RxItem& it, std::uint64_t now_ns) noexcept {
  ++out_lane_[it.d.hdr.priority];
  out_[out_n_++] = it;
  if (out_n_ == kBurst) flush_out(now_ns);
}

void ReliableStage::flush_out(std::uint64_t now_ns) noexcept {
  if (out_n_ == 0) return;
  const std::uint16_t n = out_n_;
  out_n_ = 0;
  out_lane_.fill(0);
  deliver_.run(out_.data(), n, now_ns);
}

void ReliableStage::release(std::uint32_t di, RxSession& s, std::uint8_t prio, std::uint64_t now_ns) noexcept {
  const std::uint32_t from = s.expected;
  while (s.has[s.expected & kMask]) {
    const std::uint32_t slot = s.expected & kMask;
    // No room, or no reassembly buffer: the frames wait here (pump()).
    if (deliver_.space(prio) <= out_lane_[prio] || !can_take(s, s.held[slot], now_ns)) break;
    s.has[slot] = false;
    unhold(prio, 1);
    ++s.expected;
    s.last_msg_id = s.held[slot].d.hdr.msg_id;
    st_.rel[prio].in_order.add();
    deliver(di, s, s.held[slot], now_ns);
  }
  // Frames released later (pump(): room again) are acknowledged then: their sender may have
  // nothing left to send that would bring an ack (every frame it holds acknowledged
  // selectively, or its credit used up).
  if (s.expected != from && !s.ack_due) {
    s.ack_due = true;
    ack_due_.emplace_back(di, prio);
  }
}

bool ReliableStage::can_take(RxSession& s, const RxItem& it, std::uint64_t now_ns) noexcept {
  const wire::Header& h = it.d.hdr;
  if ((h.flags & wire::flag::kFragment) == 0 || h.frag_index != 0) [[likely]]
    return true;
  if (oversize(it) || joins_.any_free()) return true;  // (an oversize one is dropped at once)
  // Reassemblies that have not moved for the give-up time: their senders gave them up.
  for (std::size_t k = 0; k < joining_.size();) {
    const auto [jdi, jprio] = joining_[k];
    RxSession& js = peers_[jdi]->rx[jprio];
    if (js.join && since(now_ns, js.join_ns) >= give_up_ns_) abort_join(js, jprio);
    if (!js.join) {
      js.in_joining = false;
      joining_[k] = joining_.back();
      joining_.pop_back();
    } else {
      ++k;
    }
  }
  if (joins_.any_free()) return true;
  if (!s.join_wait) {
    s.join_wait = true;
    st_.rel[h.priority].join_waits.add();
  }
  return false;
}

void ReliableStage::abort_join(RxSession& s, std::uint8_t prio) noexcept {
  give_back(s.join);
  s.join = nullptr;
  s.orphan_msg_id = s.join_hdr.msg_id;  // its later fragments are dropped without counting again
  st_.rel[prio].join_aborted.add();
}

void ReliableStage::deliver(std::uint32_t di, RxSession& s, RxItem& it, std::uint64_t now_ns) noexcept {
  const wire::Header& h = it.d.hdr;
  const std::uint8_t prio = h.priority;
  if ((h.flags & wire::flag::kFragment) == 0) [[likely]] {
    if (s.join) [[unlikely]] abort_join(s, prio);  // its sender moved on without finishing it
    deliver(it, now_ns);
    return;
  }
  if (h.frag_index == 0) {
    if (s.join) abort_join(s, prio);
    if (oversize(it)) [[unlikely]] {  // larger than a reassembly buffer: dropped whole, counted once
      s.orphan_msg_id = h.msg_id;
      st_.rel[prio].join_aborted.add();
      rte_pktmbuf_free(it.m);
      return;
    }
    s.join = joins_.take();  // can_take() saw one free
    s.join_len = 0;
    s.join_next = 0;
    s.join_count = h.frag_count;
    s.join_hdr = h;
    s.join_wait = false;
    if (!s.in_joining) {
      s.in_joining = true;
      joining_.emplace_back(di, prio);
    }
  }
  const std::span<const std::byte> part = it.d.payload;
  if (!s.join || h.frag_index != s.join_next || h.frag_count != s.join_count || h.msg_id != s.join_hdr.msg_id ||
      part.size() > joins_.size() - s.join_len) [[unlikely]] {
    // Not the next part of the message being put together: its start was given up by its
    // sender (reported there), or the parts disagree. The message is dropped, counted once.
    if (s.join) {
      abort_join(s, prio);
    } else if (s.orphan_msg_id != h.msg_id) {
      s.orphan_msg_id = h.msg_id;
      st_.rel[prio].join_aborted.add();
    }
    rte_pktmbuf_free(it.m);
    return;
  }
  std::memcpy(s.join->data + s.join_len, part.data(), part.size());
  s.join_len += static_cast<std::uint32_t>(part.size());
  s.join_ns = now_ns;
  rte_pktmbuf_free(it.m);
  if (++s.join_next == s.join_count) {
    flush_out(now_ns);  // what came before it is delivered first
    MessageBuffer* b = s.join;
    s.join = nullptr;
    st_.rel[prio].joined.add();
    deliver_.deliver_large(s.join_hdr, h.timestamp_ns, b, s.join_len, now_ns);
  }
}

void ReliableStage::on_data(RxItem& it, std::uint64_t now_ns) noexcept {
  const wire::Header& h = it.d.hdr;
  const std::uint8_t prio = h.priority;
  const std::uint32_t di = r_.index(h.src_node);
  Peer* pp = peer(di);
  if (!pp) [[unlikely]] {
    st_.rel[prio].no_session.add();
    rte_pktmbuf_free(it.m);
    return;
  }
  Peer& p = *pp;
  RxSession& s = p.rx[prio];
  // A response to a request of ours on this lane: the request was delivered, and every frame
  // before it in order, so it acknowledges them (the responder sends no ack of its own).
  if (h.type == MsgType::kResponse && h.corr_id != 0) {
    // Message ids grow with sequence numbers within a session (a large message's fragments
    // share one): the request's last frame is found by halving the window, however many
    // requests are in flight before it.
    const TxSession& t = p.tx[prio];
    std::uint32_t lo = t.base, n = t.next - t.base;
    while (n > 0) {
      const std::uint32_t half = n / 2, mid = lo + half;
      if (static_cast<std::int32_t>(t.win[mid & kMask].msg_id - h.corr_id) <= 0) {
        lo = mid + 1;
        n -= half + 1;
      } else {
        n = half;
      }
    }
    if (lo != t.base && t.win[(lo - 1) & kMask].msg_id == h.corr_id && t.win[(lo - 1) & kMask].m) {
      // The responder's time is in it: no sample. A request sent again answered, and none
      // sent once: the requests after it were swallowed with it.
      const std::uint64_t resent = acknowledge(p, prio, lo, now_ns, false);
      if (resent != 0) resend_swallowed(di, prio, lo, resent, now_ns);
    }
  }
  if (s.session != h.session) {
    if (h.session == s.prev_session) {  // the sender's previous incarnation, still in flight
      st_.rel[prio].stale.add();
      rte_pktmbuf_free(it.m);
      return;
    }
    // A new session (the sender started, or restarted): what an older one left is dropped.
    for (std::uint32_t i = 0; i < kWindow; ++i)
      if (s.has[i]) rte_pktmbuf_free(s.held[i].m);
    if (s.join) abort_join(s, prio);
    s.join_wait = false;
    unhold(prio, static_cast<std::uint32_t>(s.has.count()));
    s.has.reset();
    s.prev_session = s.session;
    s.session = h.session;
    s.expected = h.ack;  // the oldest frame the sender still holds
  }
  if (!s.ack_due) {
    s.ack_due = true;
    ack_due_.emplace_back(di, prio);
  }
  if (!s.counted) {  // a sender the last count left out
    s.counted = true;
    ++senders_[prio];
    set_grant(prio);
  }
  s.heard_ns = now_ns;
  // The sender gave up on frames before h.ack: skip them.
  if (before(s.expected, h.ack)) {
    // (What is held lies within kWindow of `expected`, however far the sender skipped.)
    const std::uint32_t n = std::min(h.ack - s.expected, kWindow);
    for (std::uint32_t seq = s.expected; seq != s.expected + n; ++seq) {
      const std::uint32_t slot = seq & kMask;
      if (s.has[slot]) {
        s.has[slot] = false;
        unhold(prio, 1);
        rte_pktmbuf_free(s.held[slot].m);  // reported failed to its sender: not delivered late
      }
    }
    st_.rel[prio].skipped.add();
    s.expected = h.ack;
    if (s.join) abort_join(s, prio);  // the rest of the message it was putting together is gone
    s.join_wait = false;
  }
  const std::uint32_t seq = h.seq;
  if (before(seq, s.expected) || s.has[seq & kMask]) {
    st_.rel[prio].duplicates.add();
    rte_pktmbuf_free(it.m);
    return;
  }
  if (seq - s.expected >= kWindow) {
    st_.rel[prio].beyond_window.add();
    rte_pktmbuf_free(it.m);
    return;
  }
  if (seq == s.expected && !s.blocked && deliver_.space(prio) > out_lane_[prio] && can_take(s, it, now_ns)) {
    ++s.expected;
    s.last_msg_id = h.msg_id;
    st_.rel[prio].in_order.add();
    deliver(di, s, it, now_ns);
    if (s.has[s.expected & kMask]) release(di, s, prio, now_ns);  // it filled a gap
  } else {
    // To be held: within the lane's budget (its senders' credit), or the frame its session
    // waits for next (at most one a session beyond the budget). A frame beyond it (a sender that
    // had not heard of a smaller grant yet) is dropped, and sent again like a lost one.
    if (held_[prio] >= credit_budget_ && seq != s.expected) {
      st_.rel[prio].over_credit.add();
      rte_pktmbuf_free(it.m);
      return;
    }
    if (seq != s.expected) st_.rel[prio].reordered.add();
    s.held[seq & kMask] = it;
    s.has[seq & kMask] = true;
    held_[prio] += 1;
    st_.rel[prio].held.set(held_[prio]);
    release(di, s, prio, now_ns);
  }
  if (s.has[s.expected & kMask] && !s.blocked) {
    s.blocked = true;
    blocked_.emplace_back(di, prio);
  }
}

void ReliableStage::run(RxItem* items, std::uint16_t n, std::uint64_t now_ns) noexcept {
  recent_ns_ = now_ns;
  // Messages first, to their handlers (whose answers are what the peer waits for), then the
  // burst's acks (they only free frames kept for retransmission, or send lost ones again).
  bool acks = false;
  for (std::uint16_t i = 0; i < n; ++i) {
    RxItem& it = items[i];
    const wire::Header& h = it.d.hdr;
    if (h.type == MsgType::kAck) [[unlikely]]
      acks = true;
    else if ((h.flags & wire::flag::kReliable) != 0)
      on_data(it, now_ns);
    else
      deliver(it, now_ns);
  }
  flush_out(now_ns);
  if (!acks) return;
  for (std::uint16_t i = 0; i < n; ++i) {
    if (items[i].d.hdr.type != MsgType::kAck) continue;
    on_ack(items[i], now_ns);
    rte_pktmbuf_free(items[i].m);
  }
}

void ReliableStage::count_senders(std::uint64_t now_ns) noexcept {
  counted_ns_ = now_ns;
  senders_.fill(0);
  for (const std::uint32_t di : given_) {
    Peer& p = *peers_[di];
    for (std::uint8_t prio = 0; prio < wire::kPriorities; ++prio) {
      RxSession& s = p.rx[prio];
      if (s.has.any() && since(now_ns, s.heard_ns) >= give_up_ns_) [[unlikely]] {
        // Silent for the give-up time: its sender gave these frames up (and reported them):
        // they are not delivered late, nor kept from the lane's other senders.
        const auto n = static_cast<std::uint32_t>(s.has.count());
        for (std::uint32_t i = 0; i < kWindow; ++i)
          if (s.has[i]) rte_pktmbuf_free(s.held[i].m);
        s.has.reset();
        unhold(prio, n);
        st_.rel[prio].skipped.add();
      }
      s.counted = s.session != 0 && (since(now_ns, s.heard_ns) < kActiveNs || s.has.any());
      senders_[prio] += s.counted;
    }
  }
  for (std::uint8_t prio = 0; prio < wire::kPriorities; ++prio) set_grant(prio);
}

void ReliableStage::set_grant(std::uint8_t prio) noexcept {
  grant_[prio] = std::clamp(credit_budget_ / std::max<std::uint32_t>(1, senders_[prio]), kMinCredit, kWindow);
  st_.rel[prio].senders.set(senders_[prio]);
  st_.rel[prio].credit.set(grant_[prio]);
}

void ReliableStage::pump(std::uint64_t now_ns) noexcept {
  recent_ns_ = now_ns;
  if (since(now_ns, counted_ns_) >= kRecountNs) count_senders(now_ns);
  for (std::size_t k = 0; k < blocked_.size();) {
    const auto [di, prio] = blocked_[k];
    RxSession& s = peers_[di]->rx[prio];
    release(di, s, prio, now_ns);
    flush_out(now_ns);
    if (s.has[s.expected & kMask] && deliver_.space(prio) == 0) {  // still no room on this lane
      ++k;
      continue;
    }
    if (!s.has[s.expected & kMask]) {
      s.blocked = false;
      blocked_[k] = blocked_.back();
      blocked_.pop_back();
    } else {
      ++k;
    }
  }
}

void ReliableStage::send_acks() noexcept {
  for (const auto& [di, prio] : ack_due_) {
    RxSession& s = peers_[di]->rx[prio];
    if (!s.ack_due) continue;  // a response carried it
    s.ack_due = false;
    rte_mbuf* m = tx_.alloc(kAckPayload);
    if (!m) {
      st_.rel[prio].acks_dropped.add();
      continue;
    }
    std::uint64_t sack = 0;
    for (unsigned b = 0; b < 64; ++b)
      if (s.has[(s.expected + 1 + b) & kMask]) sack |= std::uint64_t{1} << b;
    std::memcpy(rte_pktmbuf_mtod(m, void*), &sack, kAckPayload);
    if (tx_.send_ack(m, r_.topo.id(di), prio, s.session, s.expected, grant_[prio]) == SendStatus::kOk) {
      st_.rel[prio].acks_tx.add();
    } else {
      rte_pktmbuf_free(m);
      st_.rel[prio].acks_dropped.add();  // the sender's timer, or the next ack, covers it
    }
  }
  ack_due_.clear();
}

}  // namespace nerve::node
