#include "route_agent.hpp"

#include <fmt/format.h>
#include <rte_errno.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <stdexcept>

#include "../route/protocol.hpp"

namespace nerve::node {

namespace {

std::uint8_t load_level(double frames_per_s) noexcept {
  // floor(log2(1 + rate / 1024)), at most kMaxLoad: 0 below ~1 k frames/s, 10 at ~1 M/s.
  const auto x = static_cast<std::uint64_t>(1.0 + frames_per_s / 1024.0);
  const auto l = static_cast<unsigned>(std::bit_width(x) - 1);
  return static_cast<std::uint8_t>(std::min<unsigned>(l, route::kMaxLoad));
}

// Whether a link's measured round trip moved enough to change routes: doubled or halved, and by
// more than 10 us. Smaller moves are jitter (a core lost for a moment, a burst ahead of a
// heartbeat); routing on them would move P0 between paths, and reorder it, for nothing.
bool delay_moved(std::uint32_t was, std::uint32_t now) noexcept {
  if (was == 0) return now != 0;  // the first measurement
  const std::uint32_t diff = was > now ? was - now : now - was;
  return diff > 10'000 && (now > 2 * std::uint64_t{was} || 2 * std::uint64_t{now} < was);
}

}  // namespace

RouteAgent::RouteAgent(const config::Cluster& c, const config::Node& self, const route::Topology& topo,
                       LinkTable& links, Mailbox& inbox, Mailbox& outbox, Clock& clock, const stats::LcoreStats& st)
    : cluster_(c), self_(self), topo_(topo), self_idx_(topo.index(self.id)), links_(links), inbox_(inbox),
      outbox_(outbox), clock_(clock), st_(st), db_(topo), default_groups_(topo.size(), 0), seen_(links.size()),
      port_tx_prev_(self.ports.size(), 0), port_load_(self.ports.size(), 0), advertised_load_(self.ports.size(), 0),
      scratch_(route::lsa_len(route::kMaxLinks)) {
  for (std::size_t g = 0; g < c.groups.size(); ++g)
    for (const std::uint16_t m : c.groups[g].members) default_groups_[topo.index(m)] |= std::uint64_t{1} << g;
  groups_.store(default_groups_[self_idx_], std::memory_order_relaxed);
  build(clock_.now_ns());
  // The first table goes to the datapath directly (initial()), not through next_.
  next_.store(nullptr, std::memory_order_relaxed);
}

RouteAgent::~RouteAgent() { stop(); }

void RouteAgent::start(const drivers::Eal& eal) {
  if (thread_.joinable()) return;
  thread_ = std::thread([this, &eal] {
    eal.pin_control_thread();
    while (!stop_.load(std::memory_order_relaxed)) {
      step(clock_.now_ns());
      std::this_thread::sleep_for(std::chrono::nanoseconds(kTickNs));
    }
  });
}

void RouteAgent::stop() {
  stop_.store(true, std::memory_order_relaxed);
  if (thread_.joinable()) thread_.join();
}

std::shared_ptr<const route::Fib> RouteAgent::current() const {
  std::lock_guard lk(current_mu_);
  return current_;
}

RouteAgentStats RouteAgent::stats() const {
  std::lock_guard lk(stats_mu_);
  RouteAgentStats s = stats_;
  s.outbox_dropped = outbox_.dropped();
  s.inbox_dropped = inbox_.dropped();
  return s;
}

std::vector<route::LocalLink> RouteAgent::local_links(bool settled) const {
  std::vector<route::LocalLink> out(links_.size());
  for (std::size_t s = 0; s < links_.size(); ++s) {
    const LinkShared& sh = links_.shared(s);
    const std::size_t port = links_[s].port;
    out[s].peer = links_[s].peer_idx;
    out[s].up = sh.up.load(std::memory_order_relaxed);
    // The settled round trip (delay_moved), not every sample; halved: one way.
    out[s].delay_ns = (settled ? seen_[s].rtt_ns : seen_[s].advertised_rtt_ns) / 2;
    out[s].load = settled ? port_load_[port] : advertised_load_[port];
    out[s].port = static_cast<std::uint32_t>(port);
  }
  return out;
}

void RouteAgent::originate(std::uint64_t now_ns) {
  route::Lsa lsa;
  lsa.origin = self_.id;
  lsa.seq = own_seq_ = std::max(own_seq_ + 1, now_ns);
  lsa.groups = groups_.load(std::memory_order_relaxed);
  // One advert per neighbour: up when any link to it is, with the lowest delay and the lowest
  // load of those up, as shortest paths here take parallel links (the cheapest edge per metric).
  const auto local = local_links(true);
  for (Seen& seen : seen_) seen.advertised_rtt_ns = seen.rtt_ns;
  advertised_load_ = port_load_;
  unadvertised_ = false;
  for (std::size_t s = 0; s < local.size(); ++s) {
    const std::uint16_t peer = links_[s].peer;
    auto it = std::find_if(lsa.links.begin(), lsa.links.end(), [&](const route::LinkAdvert& a) { return a.nbr == peer; });
    route::LinkAdvert a{peer, local[s].up, local[s].load, local[s].delay_ns};
    if (it == lsa.links.end()) {
      lsa.links.push_back(a);
    } else if (!it->up) {
      *it = a;
    } else if (a.up) {
      it->delay_ns = std::min(it->delay_ns, a.delay_ns);
      it->load = std::min(it->load, a.load);
    }
  }
  advertised_ = lsa.links;
  advertised_groups_ = lsa.groups;
  last_originated_ns_ = now_ns;
  last_refresh_ns_ = now_ns;
  const std::size_t n = route::encode(scratch_, lsa);
  db_.apply(std::move(lsa), now_ns);
  dirty_ = true;
  {
    std::lock_guard lk(stats_mu_);
    ++stats_.lsa_originated;
  }
  flood(std::span<const std::byte>(scratch_.data(), n), self_idx_, -1);
}

void RouteAgent::flood(std::span<const std::byte> lsa, std::uint32_t origin, int except_slot) {
  // Once per neighbour (parallel links: the first one up), never back where it came from.
  std::uint64_t posted = 0;
  const std::uint16_t except_peer = except_slot >= 0 ? links_[static_cast<std::size_t>(except_slot)].peer : 0;
  for (std::size_t s = 0; s < links_.size(); ++s) {
    const Link& l = links_[s];
    if (l.peer == except_peer || !links_.shared(s).up.load(std::memory_order_relaxed)) continue;
    bool earlier = false;  // an earlier link to the same neighbour, up, carries it
    for (std::size_t t = 0; t < s && !earlier; ++t)
      earlier = links_[t].peer == l.peer && links_.shared(t).up.load(std::memory_order_relaxed);
    if (earlier) continue;
    if (outbox_.vacant() > 0 && outbox_.post(static_cast<std::uint16_t>(s), lsa)) {
      ++posted;
    } else {
      // No letter free: the neighbour gets it with the database from this origin on (or
      // sooner, if a sync under way has not reached it yet), as the outbox empties.
      Seen& seen = seen_[s];
      if (seen.sync_next == kNoSync || origin < seen.sync_next) seen.sync_next = origin;
    }
  }
  std::lock_guard lk(stats_mu_);
  stats_.lsa_sent += posted;
}

void RouteAgent::sync(std::size_t slot) {
  seen_[slot].sync_next = 0;
  std::lock_guard lk(stats_mu_);
  ++stats_.db_syncs;
}

void RouteAgent::continue_syncs() {
  std::uint64_t posted = 0;
  // Letters kept free for floods (a new advertisement goes before an old one resent).
  const unsigned reserve = static_cast<unsigned>(links_.size());
  for (std::size_t s = 0; s < links_.size(); ++s) {
    Seen& seen = seen_[s];
    if (seen.sync_next == kNoSync) continue;
    if (!seen.up) {  // (as this tick saw it: a link back since is seen, and synced, next tick)
      seen.sync_next = kNoSync;  // it gets the whole database when it is back
      continue;
    }
    std::uint32_t i = seen.sync_next;
    for (; i < topo_.size(); ++i) {
      const route::Lsa* l = db_.get(i);
      if (!l) continue;
      if (outbox_.vacant() <= reserve) break;
      const std::size_t n = route::encode(scratch_, *l);
      if (n == 0) continue;
      if (!outbox_.post(static_cast<std::uint16_t>(s), std::span<const std::byte>(scratch_.data(), n))) break;
      ++posted;
    }
    seen.sync_next = i < topo_.size() ? i : kNoSync;
  }
  std::lock_guard lk(stats_mu_);
  stats_.lsa_sent += posted;
}

void RouteAgent::build(std::uint64_t now_ns) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto local = local_links(false);
  route::FibInputs in{db_, self_idx_, local, self_.routes, default_groups_, groups_.load(std::memory_order_relaxed), true};
  std::shared_ptr<const route::Fib> fib = route::build_fib(in, ++version_);
  const auto ns = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
  (void)now_ns;
  live_.push_back(fib);
  {
    std::lock_guard lk(current_mu_);
    current_ = fib;
  }
  if (live_.size() > 1) {
    // Hand it over; a table the datapath has not taken yet is replaced (and freed here).
    if (const route::Fib* stale = next_.exchange(fib.get(), std::memory_order_acq_rel))
      std::erase_if(live_, [&](const auto& p) { return p.get() == stale; });
  }
  dirty_ = false;
  std::lock_guard lk(stats_mu_);
  ++stats_.fib_builds;
  stats_.fib_build_ns = ns;
}

void RouteAgent::collect_retired() {
  // Tables older than the one the datapath uses are no longer read (it switched before it said
  // so); the newest stays, whether taken yet or not.
  const std::uint64_t used = in_use_.load(std::memory_order_acquire);
  while (live_.size() > 1 && live_.front()->version() < used) live_.pop_front();
}

void RouteAgent::step(std::uint64_t now_ns) {
  collect_retired();
  // 1. Advertisements from neighbours.
  std::uint64_t received = 0, newer = 0, refused = 0;
  while (Mailbox::Letter* l = inbox_.take()) {
    ++received;
    route::Lsa lsa;
    const auto msg = std::span<const std::byte>(l->bytes, l->len);
    if (route::decode(msg, lsa) != route::ProtoError::kNone) {
      ++refused;
      inbox_.done(l);
      continue;
    }
    if (lsa.origin == self_.id) {
      // Our own, from before a restart, newer than what we think we sent: go above it. (The
      // one we sent last, come back by a flood or a neighbour's database, is no news.)
      if (lsa.seq > own_seq_) {
        own_seq_ = lsa.seq;
        originate(now_ns);
      }
      inbox_.done(l);
      continue;
    }
    const std::uint32_t origin = topo_.index(lsa.origin);
    const auto r = db_.apply(std::move(lsa), now_ns);
    if (r == route::Lsdb::Apply::kUnknownOrigin) ++refused;
    if (r == route::Lsdb::Apply::kNewer) {
      ++newer;
      dirty_ = true;
      flood(msg, origin, l->slot);
    }
    inbox_.done(l);
  }

  // 2. Our own links: load (every refresh/4), up/down, delay.
  bool urgent = false;
  if (now_ns >= load_sampled_ns_ + std::uint64_t{cluster_.lsa_refresh_ms} * 250'000u) {
    const double secs = load_sampled_ns_ ? static_cast<double>(now_ns - load_sampled_ns_) / 1e9 : 0.0;
    for (std::size_t p = 0; p < port_tx_prev_.size() && p < st_.port_tx_frames.size(); ++p) {
      const std::uint64_t tx = st_.port_tx_frames[p].get();
      if (secs > 0) {
        const std::uint8_t lvl = load_level(static_cast<double>(tx - port_tx_prev_[p]) / secs);
        if (lvl != port_load_[p]) {
          port_load_[p] = lvl;
          unadvertised_ = true;
        }
      }
      port_tx_prev_[p] = tx;
    }
    load_sampled_ns_ = now_ns;
  }
  for (std::size_t s = 0; s < links_.size(); ++s) {
    const LinkShared& sh = links_.shared(s);
    Seen& seen = seen_[s];
    const bool up = sh.up.load(std::memory_order_relaxed);
    const std::uint32_t rtt = sh.rtt_ns.load(std::memory_order_relaxed);  // smoothed by the datapath
    if (up != seen.up) {
      urgent = true;
      dirty_ = true;  // local routes change at once, advertised or not
      if (up) sync(s);  // a neighbour back (or new): give it everything we know
      seen.up = up;
    }
    if (delay_moved(seen.rtt_ns, rtt)) {
      unadvertised_ = true;  // local routes follow when it is advertised, not before
      seen.rtt_ns = rtt;
    }
    // 3. Databases that disagree for a while: send ours (at most once a second per link).
    const std::uint64_t theirs = sh.peer_digest.load(std::memory_order_relaxed);
    if (!up || theirs == 0 || theirs == db_.digest()) {
      seen.mismatch_since_ns = 0;
    } else if (seen.mismatch_since_ns == 0) {
      seen.mismatch_since_ns = now_ns;
    } else if (now_ns - seen.mismatch_since_ns > 50'000'000 && now_ns - seen.last_sync_ns > 1'000'000'000 &&
               seen.sync_next == kNoSync) {  // (one under way goes on: restarted, it might never end)
      sync(s);
      seen.last_sync_ns = now_ns;
      seen.mismatch_since_ns = 0;
    }
  }
  if (groups_.load(std::memory_order_relaxed) != advertised_groups_) urgent = true;
  const bool refresh = now_ns >= last_refresh_ns_ + std::uint64_t{cluster_.lsa_refresh_ms} * 1'000'000u;
  if (own_seq_ == 0 || urgent || refresh || (unadvertised_ && now_ns >= last_originated_ns_ + kOriginateMinNs))
    originate(now_ns);
  continue_syncs();  // (after originating: a link just up gets the newest of ours)

  // 4. Advertisements nobody refreshed.
  const std::uint64_t max_age = std::uint64_t{cluster_.lsa_refresh_ms} * 1'000'000u * kExpireRefreshes;
  if (now_ns > max_age && db_.expire(now_ns - max_age, self_idx_) != 0) dirty_ = true;
  digest_.store(db_.digest(), std::memory_order_relaxed);

  // 5. A new table when anything changed.
  if (dirty_) build(now_ns);
  std::lock_guard lk(stats_mu_);
  stats_.lsa_received += received;
  stats_.lsa_newer += newer;
  stats_.lsa_refused += refused;
  stats_.db_size = db_.size();
  stats_.digest = db_.digest();
}

}  // namespace nerve::node
