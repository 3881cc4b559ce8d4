// The dispatch stage: frames for this node stay, in order; every other frame is refused with
// its reason: a source not in the cluster or not at its address, a frame not addressed to the
// port's MAC or the node's IP (for a frame to forward: not the destination's IP).
#include <catch2/catch.hpp>

#include "node/dispatch_stage.hpp"
#include "node/idle.hpp"
#include "node/validate_stage.hpp"
#include "stage_rig.hpp"

using namespace nerve;

namespace {

// The stages dispatch hands frames to.
struct Onward {
  explicit Onward(test::StageRig& r)
      : idle(r.self),
        tx(r.ports, *r.routing, r.self, r.pool->get(), config::max_payload(r.cluster.mtu), *r.clock, r.st, idle, r.guard,
           r.p0),
        link(r.cluster, *r.routing, tx, r.st, timers, r.clock->now_ns()),
        forward(r.cluster, *r.routing, tx, r.st, wire::RxFilter{r.cluster.udp_port, r.cluster.mtu, 0},
                {r.ports[0].dev->mac()}),
        paths(*r.routing, r.st) {}
  node::IdlePolicy idle;
  node::TimerStage timers;
  node::TxStage tx;
  node::LinkStage link;
  node::ForwardStage forward;
  node::PathsStage paths;
};

}  // namespace

TEST_CASE("dispatch: deliver what is ours, refuse the rest by reason", "[stage][dispatch]") {
  test::StageRig rig("di1");
  Onward o(rig);
  node::ValidateStage v(wire::RxFilter{rig.cluster.udp_port, rig.cluster.mtu, 0}, rig.st);
  node::DispatchStage d(1, rig.self.ip, rig.nodes(), {rig.ports[0].dev->mac()}, rig.st, o.forward, o.link, o.paths);
  const unsigned free_before = rig.free_mbufs();
  using R = wire::Refusal;
  const std::vector<std::pair<std::vector<std::byte>, R>> cases = {
      {rig.frame(0, 1), R::kNone},
      {rig.frame(0, 2, [](auto&, auto& h) { h.src_node = 9; }), R::kUnknownSource},
      {rig.frame(0, 3, [](auto& ep, auto&) { ep.src_ip = 0xc6120109; }), R::kSourceMismatch},
      {rig.frame(0, 4, [](auto& ep, auto&) { ep.dst_mac = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}; }), R::kWrongDstMac},
      {rig.frame(0, 5, [](auto& ep, auto&) { ep.dst_mac = {2, 0, 0, 0, 1, 2}; }), R::kWrongDstMac},
      {rig.frame(0, 6, [](auto&, auto& h) { h.dst = 2; }), R::kWrongDstIp},  // to forward, but at our IP
      {rig.frame(0, 7, [](auto& ep, auto&) { ep.dst_ip = 0xc6120202; }), R::kWrongDstIp},
      {rig.frame(2, 8), R::kNone},
  };
  std::vector<rte_mbuf*> in;
  for (const auto& [f, r] : cases) in.push_back(rig.mbuf(f));
  node::RxItem items[node::kBurst];
  const std::uint16_t n = v.run(in.data(), static_cast<std::uint16_t>(in.size()), items);
  REQUIRE(n == cases.size());  // all well-formed: validation passes them all
  const std::uint16_t k = d.run(0, items, n, rig.clock->now_ns());
  REQUIRE(k == 2);
  CHECK(items[0].d.hdr.msg_id == 1);
  CHECK(items[1].d.hdr.msg_id == 8);
  for (const auto& [f, r] : cases)
    if (r != R::kNone) CHECK(test::refused(rig.st, r) >= 1);
  CHECK(test::refused(rig.st, R::kWrongDstMac) == 2);
  CHECK(test::refused(rig.st, R::kWrongDstIp) == 2);
  CHECK(rig.free_mbufs() == free_before - 2);
  for (std::uint16_t i = 0; i < k; ++i) rte_pktmbuf_free(items[i].m);
}

// Node 1 forwards a frame of node 2's back to node 2 (the rig's only other node): a transit
// frame, which the fast path sends on unless anything about it is to be refused.
TEST_CASE("transit: frames to pass on leave at once, rewritten; the rest stay, in order, for the full path",
          "[stage][forward]") {
  test::StageRig rig("tr1");
  Onward o(rig);
  node::ValidateStage v(wire::RxFilter{rig.cluster.udp_port, rig.cluster.mtu, 0}, rig.st);
  node::DispatchStage d(1, rig.self.ip, rig.nodes(), {rig.ports[0].dev->mac()}, rig.st, o.forward, o.link, o.paths);
  const std::uint32_t peer_ip = rig.peer.ip;
  const auto onward = [&](std::uint32_t id, auto&& edit) {
    return rig.frame(3, id, [&](auto& ep, auto& h) {
      h.dst = 2;
      ep.dst_ip = peer_ip;
      edit(ep, h);
    });
  };
  const auto same = [](auto&, auto&) {};
  using R = wire::Refusal;
  const std::vector<std::pair<std::vector<std::byte>, R>> cases = {
      {onward(1, same), R::kNone},
      {rig.frame(3, 2), R::kNone},  // ours: delivered by the full path
      {onward(3, [](auto& ep, auto&) { ep.src_ip = 0xc6120109; }), R::kSourceMismatch},
      {onward(4, [](auto& ep, auto&) { ep.dst_mac = {2, 0, 0, 0, 1, 2}; }), R::kWrongDstMac},
      {onward(5, [](auto&, auto& h) { h.ttl = 1; }), R::kTtlExpired},
      {onward(6, same), R::kNone},
      {onward(7, [&](auto& ep, auto&) { ep.dst_ip = rig.self.ip; }), R::kWrongDstIp},
      {onward(8, [](auto&, auto& h) { h.src_node = 9; }), R::kUnknownSource},
      {onward(9, [](auto&, auto& h) { h.src_node = 1; }), R::kSourceMismatch},  // ours, from node 2's address
      {onward(10, [](auto&, auto& h) { h.flags = wire::flag::kReliable; h.session = 1; h.seq = 1; }), R::kFeatureDisabled},
      {onward(11, [](auto&, auto& h) { h.type = wire::MsgType::kFabric; }), R::kBadFabric},
      {onward(12, [](auto& ep, auto& h) { h.dst = 9; ep.dst_ip = 0; }), R::kNoRoute},  // no node 9
      {onward(13, same), R::kNone},  // chained below: a header in front of its payload
      {onward(14, same), R::kNone},
  };
  std::vector<rte_mbuf*> in;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const auto& f = cases[i].first;
    if (i != 12) {
      in.push_back(rig.mbuf(f));
      continue;
    }
    rte_mbuf* head = rig.mbuf({f.begin(), f.begin() + wire::kOverhead});
    REQUIRE(rte_pktmbuf_chain(head, rig.mbuf({f.begin() + wire::kOverhead, f.end()})) == 0);
    in.push_back(head);
  }
  const std::uint64_t rx_before = rig.st.rx_frames.get();
  const auto n = static_cast<std::uint16_t>(in.size());
  const std::uint16_t k = o.forward.transit(0, in.data(), n, rig.clock->now_ns());
  REQUIRE(k == n - 4);
  CHECK(rig.st.rx_frames.get() - rx_before == 4);
  CHECK(rig.st.lane_rx_bytes[3].get() == 4 * cases[0].first.size());
  // Kept in order for the full path: validation, dispatch and the forward stage refuse each one
  // by its reason, and deliver ours.
  std::vector<std::uint32_t> kept_ids;
  for (std::uint16_t i = 0; i < k; ++i) kept_ids.push_back(rte_pktmbuf_mtod_offset(in[i], const std::uint32_t*, wire::kOverhead)[0]);
  CHECK(kept_ids == std::vector<std::uint32_t>{2, 3, 4, 5, 7, 8, 9, 10, 11, 12});
  node::RxItem items[node::kBurst];
  const std::uint16_t valid = v.run(in.data(), k, items);
  const std::uint16_t ours = d.run(0, items, valid, rig.clock->now_ns());
  REQUIRE(ours == 1);
  CHECK(items[0].d.hdr.msg_id == 2);
  rte_pktmbuf_free(items[0].m);
  for (const auto& [f, r] : cases)
    if (r != R::kNone) CHECK(test::refused(rig.st, r) >= 1);
  CHECK(test::refused(rig.st, R::kSourceMismatch) == 2);
  CHECK(rig.st.rx_frames.get() - rx_before == n);  // every frame counted once, by one path or the other
  // Those sent on, in their order (the chained one in its place), for the next hop: our MAC to
  // node 2's, TTL one less.
  o.tx.forward_flush();
  const auto out = rig.take(3);
  REQUIRE(out.size() == 4);
  const std::uint32_t sent_ids[] = {1, 6, 13, 14};
  for (std::size_t i = 0; i < out.size(); ++i) {
    CHECK(out[i].hdr.msg_id == sent_ids[i]);
    CHECK(out[i].hdr.ttl == 7);
    CHECK(out[i].hdr.src_node == 2);
    CHECK(out[i].hdr.dst == 2);
    CHECK(out[i].ep.dst_mac == rig.peer.mac);
    CHECK(out[i].ep.src_mac == rig.ports[0].dev->mac());
  }
  CHECK(rig.st.forwarded[3].get() == 4);
  CHECK(rig.st.transit_ns[3].count() == 4);
}

TEST_CASE("paths: a copy is known among its source's newest 8,192 ids; an older one is let through",
          "[stage][paths]") {
  node::PathsStage::Window w;
  CHECK_FALSE(w.seen(1000));
  CHECK(w.seen(1000));             // the second copy
  CHECK_FALSE(w.seen(6000));       // the source sent 4,999 other messages in between
  CHECK(w.seen(1000));             // a late copy, still known
  CHECK_FALSE(w.seen(999));        // never seen, behind the newest
  CHECK(w.seen(999));
  CHECK_FALSE(w.seen(6000u - 8192u)); // older than the window: let through (at worst a duplicate)
  CHECK_FALSE(w.seen(6000u - 8192u)); // ... every time: never refused
  CHECK_FALSE(w.seen(6000 + 8200));  // a jump past the window forgets everything before it
  CHECK_FALSE(w.seen(6000 + 8192 - 1));
  CHECK(w.seen(6000 + 8200));
  // Ids wrap around 2^32.
  node::PathsStage::Window v;
  CHECK_FALSE(v.seen(0xffffff00u));
  CHECK_FALSE(v.seen(0x100u));
  CHECK(v.seen(0xffffff00u));
}
