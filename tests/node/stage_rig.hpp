// A rig for testing the node's stages one at a time, without a Node: two ring ports joined as
// a pair (`port` is ours, `far` is the other end, which the test reads and writes directly),
// the node tables of a two-node cluster, counters, and helpers that build frames as node 2
// would send them to node 1.
#pragma once

#include <rte_mbuf.h>

#include <cstring>
#include <memory>
#include <vector>

#include "../support.hpp"
#include "datapath_guard.hpp"
#include "nerve/clock.hpp"
#include "nerve/stats.hpp"
#include "node/ports.hpp"
#include "node/routing.hpp"
#include "port.hpp"

namespace nerve::test {

struct StageRig {
  // `port_keys` go into node 1's [[node.port]] (e.g. lanes = "software").
  explicit StageRig(const std::string& pair, const std::string& node_keys = "", const std::string& port_keys = "")
      : eal_(eal()),
        cluster(ring_pair_cluster(pair, 8191, node_keys, port_keys)),
        self(cluster.node(1)),
        peer(cluster.node(2)),
        pool(std::make_unique<drivers::Mempool>("rig" + pair, 8191, 0)) {
    const bool paired = self.ports[0].lanes == config::LaneMode::kAuto;
    const std::uint16_t queues = paired ? wire::kPriorities : 1;
    node::NodePort np;
    np.dev = std::make_unique<drivers::Port>(self.ports[0], "r1" + pair, pool->get(), queues, self.mac, true);
    np.lanes = paired ? config::LaneMode::kPaired : config::LaneMode::kSoftware;
    ports.push_back(std::move(np));
    far = std::make_unique<drivers::Port>(peer.ports[0], "r2" + pair, pool->get(), queues, peer.mac, false);
    const std::vector<wire::Mac> macs = {ports[0].dev->mac()};
    routing = std::make_unique<node::Routing>(cluster, self, macs, *clock, st);
  }
  const route::NodeTable& nodes() const { return routing->nodes; }

  // A frame from node 2 to node 1, as node 2 would send it; `edit` may change anything.
  template <typename Edit>
  std::vector<std::byte> frame(std::uint8_t prio, std::uint32_t msg_id, Edit&& edit) const {
    wire::Endpoints ep;
    ep.src_mac = peer.mac;
    ep.dst_mac = self.mac;
    ep.src_ip = peer.ip;
    ep.dst_ip = self.ip;
    wire::Header h;
    h.type = wire::MsgType::kStatus;
    h.priority = prio;
    h.src_node = 2;
    h.dst = 1;
    h.ttl = 8;
    h.msg_id = msg_id;
    h.payload_len = 8;
    h.timestamp_ns = clock->now_ns();
    edit(ep, h);
    std::vector<std::byte> f(wire::frame_len(h.payload_len, (h.flags & wire::flag::kEncrypted) != 0));
    wire::encode_headers(std::span<std::byte, wire::kOverhead>(f.data(), wire::kOverhead), ep, h);
    std::memcpy(f.data() + wire::kOverhead, &msg_id, 4);
    if ((h.flags & wire::flag::kReliable) != 0 || h.type == wire::MsgType::kAck) wire::fill_udp_checksum(f);
    return f;
  }
  std::vector<std::byte> frame(std::uint8_t prio, std::uint32_t msg_id) const {
    return frame(prio, msg_id, [](auto&, auto&) {});
  }

  rte_mbuf* mbuf(const std::vector<std::byte>& bytes) const {
    rte_mbuf* m = rte_pktmbuf_alloc(pool->get());
    REQUIRE(m != nullptr);
    std::memcpy(rte_pktmbuf_append(m, static_cast<std::uint16_t>(bytes.size())), bytes.data(), bytes.size());
    return m;
  }
  // Sends frames from the far end, on queue q, as node 2's TX would.
  void inject(std::uint16_t q, const std::vector<std::vector<std::byte>>& frames) const {
    std::vector<rte_mbuf*> m;
    for (const auto& f : frames) m.push_back(mbuf(f));
    REQUIRE(far->tx_burst(q, m.data(), static_cast<std::uint16_t>(m.size())) == m.size());
  }
  // Frames that arrived at the far end on queue q (decoded), up to n.
  std::vector<wire::Decoded> take(std::uint16_t q, std::uint16_t n = 32) {
    std::vector<wire::Decoded> out;
    rte_mbuf* m[32];
    const std::uint16_t k = far->rx_burst(q, m, std::min<std::uint16_t>(n, 32));
    for (std::uint16_t i = 0; i < k; ++i) {
      wire::Decoded d;
      const auto span = std::span<const std::byte>(rte_pktmbuf_mtod(m[i], const std::byte*), m[i]->data_len);
      REQUIRE(wire::decode(span, wire::RxFilter{cluster.udp_port, cluster.mtu, 0}, d) == wire::Refusal::kNone);
      d.payload = {};  // the mbuf goes now
      out.push_back(d);
    }
    rte_pktmbuf_free_bulk(m, k);
    return out;
  }

  unsigned free_mbufs() const { return rte_mempool_avail_count(pool->get()); }

  drivers::Eal& eal_;  // first: everything below needs it
  config::Cluster cluster;
  config::Node self, peer;
  std::unique_ptr<Clock> clock = Clock::manual(1'000'000'000'000'000'000ull);
  std::unique_ptr<drivers::Mempool> pool;
  node::NodePorts ports;
  std::unique_ptr<drivers::Port> far;
  stats::LcoreStats st;
  std::unique_ptr<node::Routing> routing;  // the agent's thread is not started: tables stay as built
  drivers::DatapathGuard::Section guard;
  node::P0Watch p0;
};

inline std::uint64_t refused(const stats::LcoreStats& st, wire::Refusal r) {
  return st.refused[static_cast<std::size_t>(r)].get();
}

}  // namespace nerve::test
