// Node::Impl: the node's parts and stages, composed. Each stage owns its state and touches
// only what it is given (docs/architecture.md, "The node as stages").
#pragma once

#include <rte_ethdev.h>

#include <map>
#include <memory>
#include <optional>

#include "control_stage.hpp"
#include "deliver_stage.hpp"
#include "dispatch_stage.hpp"
#include "forward_stage.hpp"
#include "idle.hpp"
#include "link_stage.hpp"
#include "nerve/node.hpp"
#include "nerve/telemetry.hpp"
#include "paths_stage.hpp"
#include "ports.hpp"
#include "proxy_table.hpp"
#include "reliable_stage.hpp"
#include "routing.hpp"
#include "rx_stage.hpp"
#include "service_stage.hpp"
#include "timer_stage.hpp"
#include "tx_stage.hpp"
#include "validate_stage.hpp"

namespace nerve {

struct Node::Impl {
  Impl(Node& self, const config::Cluster& c, NodeId id, const NodeOptions& o);

  config::Cluster cluster;
  config::Node cfg;
  NodeOptions opts;
  Clock& clock;
  std::size_t max_payload;
  std::array<std::uint64_t, wire::kPriorities> budget_ns{};

  // Resources, in the order they are made (and the reverse of the order they go).
  std::map<int, std::unique_ptr<drivers::Mempool>> pools;  // one per NUMA socket
  node::NodePorts ports;
  // The datapath's counters: in the stats region where there is one, else here.
  std::unique_ptr<stats::LcoreStats> own_lcore;
  stats::LcoreStats* lcore;
  telemetry::Region* region;
  void publish_sample() noexcept;
  std::array<telemetry::PortSample, telemetry::kPorts> port_cache{};  // read at most every 100 ms
  std::uint64_t last_publish_tsc = 0, last_ports_tsc = 0, last_xstats_tsc = 0;
  // The ports' extended statistics for the region: names taken when the node starts, values
  // read by the datapath itself once a second while a reader asks for samples (the only
  // thread that reads the devices' counters: some PMDs' registers clear on read).
  struct PortXstats {
    std::uint16_t dpdk_port = 0;
    std::size_t first = 0;  // its entries in xstats_out: [first, first + values.size())
    std::vector<rte_eth_xstat> values;
  };
  std::vector<PortXstats> xstats_ports;
  std::vector<telemetry::Xstat> xstats_out;
  void prepare_xstats();
  void read_xstats() noexcept;
  std::unique_ptr<node::Routing> routing;  // topology, links, tables, the routing agent
  // Held around every burst: PMD callbacks on the interrupt thread wait for it (drivers/).
  drivers::DatapathGuard::Section guard;
  node::P0Watch p0;  // while P0 flows, lower lanes move in short bursts

  // Large messages: buffers to cut into fragments, and to put them together again.
  std::optional<node::MessageBuffers> send_buffers, join_buffers;

  // Stages.
  std::optional<node::IdlePolicy> idle;
  node::TimerStage timers;
  std::optional<node::TxStage> tx;
  std::optional<node::LinkStage> link;
  std::optional<node::ForwardStage> forward;
  std::optional<node::PathsStage> paths;
  std::optional<node::ServiceStage> services;
  std::optional<node::ProxyTable> proxies;
  std::optional<node::ControlStage> control;
  std::optional<node::ValidateStage> validate;
  std::optional<node::DispatchStage> dispatch;
  std::optional<node::DeliverStage> deliver;
  std::optional<node::ReliableStage> reliable;
  std::optional<node::RxStage> rx;
  node::Timer clock_sync;
  // memif clients whose link has been down for kRedialAfterNs dial their server again
  // (drivers::Port::redial): a server that was not started yet when they dialled, or that
  // restarted, is reached without restarting this node. Checked every kRedialCheckNs.
  static constexpr std::uint64_t kRedialAfterNs = 2'000'000'000;
  static constexpr std::uint64_t kRedialCheckNs = 250'000'000;
  node::Timer redial;
  std::vector<std::uint64_t> link_down_since;  // per port; 0: up (or not a memif client)
  void redial_memif(std::uint64_t now) noexcept;
  // poll() runs control requests and timers every kSlowEvery polls when idle: a request waits
  // at most that many polls (microseconds) to start, and an idle poll reads no clock.
  static constexpr unsigned kSlowEvery = 64;
  unsigned slow_tick = 0;
  bool slow_due = false;  // a timer fell due during a burst

  // One burst through transit (the fast path) -> validate -> [open] -> dispatch (-> forward, link)
  // -> [sequence] -> deliver (RxStage's pipeline).
  struct Pipeline {
    Impl& I;
    std::uint16_t room(int lane, std::uint32_t held) noexcept { return I.deliver->room(lane, held); }
    void operator()(std::size_t port, rte_mbuf** frames, std::uint16_t n) noexcept;
    // One burst's decoded frames: built once, rewritten by every burst (a local array would be
    // value-initialised, 3 KB of stores, on every burst).
    std::array<node::RxItem, node::kBurst> items{};
  };
  Pipeline pipeline{*this};

  NodeProxy proxy;
};

}  // namespace nerve
