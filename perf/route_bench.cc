// `nerve-perf route`: what routing costs as the cluster grows. For generated topologies of n
// nodes (fabric/route/generate.hpp), with every node's advertisement in the database as after
// convergence: the time one node takes to build its forwarding table (shortest paths on both
// metrics, loop-free alternates; and with the broadcast trees of every source, which take one
// shortest-path run per source), and the advertisement traffic the whole fabric carries.
//
// Flooding: an advertisement crosses each link once in one direction, but for the links back
// toward where it came from: deg(origin) + sum over the others of (deg - 1) = 2E - (n - 1)
// frames. Every node re-advertises every lsa_refresh_ms (and on every change), so a full
// refresh of the fabric is n (2E - n + 1) frames. Heartbeats: 2 frames per link per period.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <numeric>

#include "harness.hpp"
#include "../fabric/route/fib.hpp"
#include "../fabric/route/generate.hpp"
#include "../fabric/route/protocol.hpp"
#include "nerve/wire.hpp"

namespace nerve::perf {

std::vector<Row> route_bench(const Options& o) {
  std::vector<Row> rows;
  const std::vector<std::string> shapes = o.topologies.empty() ? std::vector<std::string>{"leaf-spine", "random"}
                                                                : o.topologies;
  for (const auto& shape : shapes) {
    for (const std::uint32_t n : o.node_counts) {
      const auto g = route::gen::by_name(shape, n, 7);
      route::Topology topo(g.ids, g.links);
      route::Lsdb db(topo);
      const auto lsas = route::gen::advertise(topo, db, 50'000, 4, 11);
      const std::vector<std::uint64_t> groups(topo.size(), 0);
      // The node that measures: the first one with the most links (a spine, in a leaf-spine).
      std::uint32_t self = 0;
      for (std::uint32_t u = 0; u < topo.size(); ++u)
        if (topo.links(u).size() > topo.links(self).size()) self = u;
      std::vector<route::LocalLink> links;
      for (const std::uint32_t v : topo.links(self)) {
        const route::LinkAdvert* a = db.advert(self, v);
        links.push_back(route::LocalLink{v, true, a ? a->delay_ns : 0, a ? a->load : std::uint8_t{0}});
      }
      std::uint64_t edges2 = 0, lsa_bytes = 0;
      for (std::uint32_t u = 0; u < topo.size(); ++u) edges2 += topo.links(u).size();
      // One full refresh: every advertisement flooded once.
      for (std::uint32_t u = 0; u < topo.size(); ++u)
        lsa_bytes += wire::frame_len(route::lsa_len(topo.links(u).size())) * (edges2 - (topo.size() - 1));
      const std::uint64_t lsa_frames = std::uint64_t{topo.size()} * (edges2 - (topo.size() - 1));
      for (const bool trees : {false, true}) {
        Row r;
        r.scenario = "route";
        r.transport = shape;
        r.stack = trees ? "fib+trees" : "fib";
        r.metric = "compute";
        r.nodes = topo.size();
        r.links = edges2 / 2;
        r.lsa_frames_per_refresh = lsa_frames;
        r.lsa_bytes_per_refresh = lsa_bytes;
        r.heartbeat_bytes_per_s = static_cast<double>(edges2) * 1000.0 * static_cast<double>(wire::frame_len(route::kHeartbeatLen));
        const unsigned reps = o.count ? static_cast<unsigned>(o.count) : (n >= 1024 ? 7u : n >= 256 ? 21u : 101u);
        for (unsigned k = 0; k < reps; ++k) {
          route::FibInputs in{db, self, links, {}, groups, 0, trees};
          const auto t0 = std::chrono::steady_clock::now();
          const auto fib = route::build_fib(in, k + 1);
          const auto dt = std::chrono::steady_clock::now() - t0;
          if (!fib || fib->size() != topo.size()) throw std::runtime_error("route: a table of the wrong size");
          r.latency->record(static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(dt).count()));
        }
        r.sent = reps;
        rows.push_back(std::move(r));
      }
    }
  }
  return rows;
}

}  // namespace nerve::perf
