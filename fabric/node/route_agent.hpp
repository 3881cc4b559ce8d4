// The routing agent: one node's control plane of routing, on a thread of its own, so that
// decoding advertisements, running shortest paths over up to thousands of nodes and building
// forwarding tables never take time from the datapath.
//
// Every tick (1 ms) it:
//   - reads the link-state advertisements the datapath posted (mailbox), keeps the newer ones
//     and floods them on to every other neighbour (outbox; the datapath sends them);
//   - originates this node's own advertisement when its links change (up/down at once; a
//     round trip doubled or halved by more than 10 us, or load by a level, at most every
//     kOriginateMinNs: a change inside that time waits for it, never for the next refresh) or
//     its groups change, and every lsa_refresh_ms regardless; expires advertisements not
//     refreshed within kExpireRefreshes periods. Its own routes take a link's delay and load as
//     advertised, not as measured since (only up/down counts at once): its tables and its
//     neighbours' differ only while an advertisement spreads (a tick a hop), never for as long
//     as a change waits to be advertised;
//   - compares each neighbour's database digest (from its heartbeats) with its own, and sends
//     its whole database to a neighbour that disagrees for a while or whose link just came up;
//   - when anything changed, builds a new forwarding table (route::build_fib) and publishes
//     it; the datapath takes it between bursts and hands the old one back to be freed here.
//
// Threads: the agent's thread owns the database and the tables it builds; the datapath calls
// only take_next()/retire(); any thread may call current(), stats() and the group calls.
#pragma once

#include <rte_ring.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "../route/fib.hpp"
#include "../route/topology.hpp"
#include "eal.hpp"
#include "links.hpp"
#include "mailbox.hpp"
#include "nerve/clock.hpp"
#include "nerve/config.hpp"
#include "nerve/stats.hpp"

namespace nerve::node {

struct RouteAgentStats {
  std::uint64_t lsa_received = 0;   // advertisements read from the inbox
  std::uint64_t lsa_newer = 0;      // ... that changed the database
  std::uint64_t lsa_refused = 0;    // ... that did not parse or came from outside the cluster
  std::uint64_t lsa_sent = 0;       // letters posted to the outbox (originated and flooded)
  std::uint64_t lsa_originated = 0;
  std::uint64_t outbox_dropped = 0;
  std::uint64_t inbox_dropped = 0;
  std::uint64_t db_syncs = 0;       // whole databases sent to a neighbour
  std::uint64_t fib_builds = 0;
  std::uint64_t fib_build_ns = 0;   // the last build's duration
  std::uint64_t db_size = 0;
  std::uint64_t digest = 0;
};

class RouteAgent {
 public:
  static constexpr std::uint64_t kTickNs = 1'000'000;
  static constexpr std::uint64_t kOriginateMinNs = 20'000'000;
  static constexpr unsigned kExpireRefreshes = 4;

  // `port_tx` (by port) are the datapath's TX frame counters, for link load.
  RouteAgent(const config::Cluster& c, const config::Node& self, const route::Topology& topo, LinkTable& links,
             Mailbox& inbox, Mailbox& outbox, Clock& clock, const stats::LcoreStats& st);
  ~RouteAgent();
  RouteAgent(const RouteAgent&) = delete;
  RouteAgent& operator=(const RouteAgent&) = delete;

  // The first table, from the cluster file alone (every link taken as up), built in the
  // constructor: the datapath routes from its first poll. Owned by the agent.
  const route::Fib* initial() const noexcept { return live_.front().get(); }
  // The thread, on the EAL's control CPUs (never a datapath lcore if the host has another).
  void start(const drivers::Eal& eal);
  void stop();   // joins it (idempotent)

  // --- the datapath (owner thread)
  const route::Fib* take_next() noexcept { return next_.exchange(nullptr, std::memory_order_acq_rel); }
  // The datapath now uses the table of `version` and nothing older: those may be freed.
  void in_use(std::uint64_t version) noexcept { in_use_.store(version, std::memory_order_release); }
  // Any thread: the version of the table the datapath routes with (current() may be newer).
  std::uint64_t table_in_use() const noexcept { return in_use_.load(std::memory_order_acquire); }
  const std::atomic<std::uint64_t>& digest() const noexcept { return digest_; }

  // --- any thread
  std::shared_ptr<const route::Fib> current() const;
  RouteAgentStats stats() const;
  // Joins or leaves group index `g` (config::Cluster::groups): advertised within a tick.
  void set_groups(std::uint64_t mask) noexcept { groups_.store(mask, std::memory_order_relaxed); }
  std::uint64_t groups() const noexcept { return groups_.load(std::memory_order_relaxed); }
  const route::Topology& topology() const noexcept { return topo_; }

  // One tick's work at `now_ns` (the thread calls it; tests may call it instead of start()).
  void step(std::uint64_t now_ns);

 private:
  void originate(std::uint64_t now_ns);
  // Posts `lsa` (the advertisement of node index `origin`) on every link up but except_slot's
  // neighbour; a link whose post finds the outbox full owes it, in a database sync.
  void flood(std::span<const std::byte> lsa, std::uint32_t origin, int except_slot);
  // Sends the whole database on `slot`: as many advertisements as the outbox takes now
  // (leaving room for floods), the rest at the next ticks (continue_syncs, sync_next).
  void sync(std::size_t slot);
  void continue_syncs();
  void build(std::uint64_t now_ns);
  void collect_retired();
  // This node's links as the datapath sees them (up/down); delay and load as last advertised,
  // or (settled) as measured and settled now.
  std::vector<route::LocalLink> local_links(bool settled) const;

  const config::Cluster& cluster_;
  const config::Node& self_;
  const route::Topology& topo_;
  std::uint32_t self_idx_;
  LinkTable& links_;
  Mailbox& inbox_;
  Mailbox& outbox_;
  Clock& clock_;
  const stats::LcoreStats& st_;
  route::Lsdb db_;
  std::vector<std::uint64_t> default_groups_;
  std::atomic<std::uint64_t> groups_{0};
  std::atomic<std::uint64_t> digest_{0};
  std::atomic<const route::Fib*> next_{nullptr};
  std::atomic<std::uint64_t> in_use_{1};  // the datapath's table version (the first is 1)
  std::deque<std::shared_ptr<const route::Fib>> live_;  // built and not yet retired (front: oldest)
  mutable std::mutex current_mu_;
  std::shared_ptr<const route::Fib> current_;

  // Own advertisement.
  std::uint64_t own_seq_ = 0;
  std::vector<route::LinkAdvert> advertised_;
  std::uint64_t advertised_groups_ = 0;
  std::uint64_t last_originated_ns_ = 0;
  std::uint64_t last_refresh_ns_ = 0;
  // Per link: what the last tick saw, and the digest comparison.
  struct Seen {
    bool up = true;
    std::uint32_t rtt_ns = 0;             // settled (delay_moved)
    std::uint32_t advertised_rtt_ns = 0;  // in the last advertisement
    std::uint64_t mismatch_since_ns = 0;
    std::uint64_t last_sync_ns = 0;
    std::uint32_t sync_next = kNoSync;    // a database sync under way: the next index to post
  };
  static constexpr std::uint32_t kNoSync = ~0u;
  std::vector<Seen> seen_;
  std::vector<std::uint64_t> port_tx_prev_;
  std::vector<std::uint8_t> port_load_, advertised_load_;
  bool unadvertised_ = false;  // a delay or load moved since the last advertisement
  std::uint64_t load_sampled_ns_ = 0;
  bool dirty_ = false;
  std::uint64_t version_ = 0;
  std::vector<std::byte> scratch_;

  mutable std::mutex stats_mu_;
  RouteAgentStats stats_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace nerve::node
