// `nerve-perf multicast` and `nerve-perf service`: the fabric's fan-out and its load balancing,
// on nodes joined by net_ring links inside this process and stepped by this one thread (no
// second core needed: what is measured is what the nodes do, not how the cores are shared).
//
// multicast: node 1 sends to a group of --members nodes, each on a link of its own from node 1
//   (a star: node 1 makes one copy per member, the payload shared by reference). Row: the
//   sender's messages/s; every member's count must equal what was sent (none missing, none
//   twice: duplicates are counted by sequence number).
// service: node 1 sends requests to a service of 4 instances. Distribution: 100,000 requests by
//   round robin, and 100,000 with random keys by hash, their spread tested against uniform with
//   a chi-square test. Tail: requests at --rate (open loop) with one instance slow (it answers
//   each request 1 ms after it reached it, one at a time: 1,000/s), round robin against least
//   outstanding: the request-to-response time per policy (p99 is the claim).
#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <deque>
#include <map>
#include <random>

#include "eal.hpp"
#include "harness.hpp"
#include "nerve/clock.hpp"
#include "nerve/node.hpp"

namespace nerve::perf {

drivers::Eal& shared_eal(const Options& opt, const std::string& transport, unsigned cpu_a, unsigned cpu_b);
void throw_if_interrupted();

namespace {

// A star: node 1 in the middle, nodes 2..n+1 around it, `extra` appended to the cluster file.
config::Cluster star(const std::string& tag, unsigned n, const std::string& extra) {
  std::string t = fmt::format("[cluster]\nname = \"perf-{0}\"\nheartbeat_miss = 100\n", tag);
  for (unsigned id = 1; id <= n + 1; ++id) {
    t += fmt::format("[[node]]\nid = {0}\nmac = \"02:00:00:00:0d:{0:02x}\"\nip = \"198.18.13.{0}\"\n"
                     "control_socket = \"/tmp/nerve-perf-{1}-n{0}.sock\"\nmbufs = 8191\n",
                     id, tag);
    for (unsigned j = 2; j <= n + 1; ++j) {
      if (id != 1 && id != j) continue;
      t += fmt::format("  [[node.port]]\n  kind = \"ring\"\n  pair = \"{}s{}\"\n  peers = [{}]\n", tag, j, id == 1 ? j : 1);
    }
  }
  return config::load_string(t + extra);
}

struct Star {
  Star(const config::Cluster& c, drivers::Eal& eal) {
    for (const auto& n : c.nodes) nodes.push_back(std::make_unique<Node>(c, n.id, eal));
  }
  Node& operator[](NodeId id) { return *nodes[id - 1u]; }
  void poll() {
    for (auto& n : nodes) n->poll();
  }
  // Until every node has a route to every other (or the deadline).
  void converge() {
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    auto done = [&] {
      for (auto& n : nodes) {
        const auto routes = n->routes();
        if (routes.size() + 1 != nodes.size()) return false;
        for (const auto& r : routes)
          if (r.lanes[0].next_hop == 0) return false;
      }
      return true;
    };
    while (!done()) {
      if (std::chrono::steady_clock::now() > end) throw std::runtime_error("the star's routes never converged");
      poll();
    }
  }
  std::vector<std::unique_ptr<Node>> nodes;
};

// P(X > x) for X chi-square distributed with k degrees of freedom (regularized upper gamma,
// by its series; k small).
double chi2_sf(double x, unsigned k) {
  const double a = k / 2.0, z = x / 2.0;
  if (z <= 0) return 1.0;
  // Lower regularized gamma by series: P(a, z) = z^a e^-z / Gamma(a+1) * sum z^n / ((a+1)...(a+n)).
  double term = 1.0 / a, sum = term;
  for (int n = 1; n < 1000; ++n) {
    term *= z / (a + n);
    sum += term;
    if (term < sum * 1e-15) break;
  }
  const double lower = std::exp(-z + a * std::log(z) - std::lgamma(a)) * sum;
  return std::max(0.0, 1.0 - lower);
}

struct Req {
  std::uint64_t seq;
  std::uint64_t stamp_ns;
};

}  // namespace

std::vector<Row> multicast_bench(const Options& o) {
  const auto& cpus = harness_cpus();
  drivers::Eal& eal = shared_eal(o, "ring", cpus.front(), cpus.size() > 1 ? cpus[1] : cpus.front());
  const unsigned members = o.members;
  std::string ids;
  for (unsigned j = 2; j <= members + 1; ++j) ids += fmt::format("{}{}", j == 2 ? "" : ", ", j);
  const auto c = star(fmt::format("{}m", getpid()), members, fmt::format("[[group]]\nname = \"all\"\nid = 9\nmembers = [{}]\n", ids));
  Star s(c, eal);
  s.converge();
  const std::uint64_t count = o.count ? o.count : 200000;
  std::vector<std::vector<std::uint8_t>> seen(members + 2, std::vector<std::uint8_t>(count, 0));
  std::vector<std::uint64_t> got(members + 2, 0), dup(members + 2, 0);
  for (unsigned j = 2; j <= members + 1; ++j)
    s[static_cast<NodeId>(j)].on_message([&, j](RxMessage& m) {
      if (m.payload().size() < 8) return;
      std::uint64_t seq;
      std::memcpy(&seq, m.payload().data(), 8);
      if (seq >= count) return;
      if (seen[j][seq]++) ++dup[j];
      else ++got[j];
    });
  Node& src = s[1];
  Row r;
  r.scenario = "multicast";
  r.transport = "ring";
  r.metric = "rate";
  r.priority = 3;
  r.size = 64;
  r.frame_bytes = wire::frame_len(64);
  Clock& clock = Clock::tsc();
  const std::uint64_t t0 = clock.now_ns();
  std::uint64_t seq = 0;
  SendOptions so;
  so.never_shed = true;
  while (seq < count) {
    TxFrame f = src.alloc(64);
    if (f) {
      std::memcpy(f.payload().data(), &seq, 8);
      const SendStatus st = src.multicast(f, 9, MsgType::kMetric, 3, so);
      if (st == SendStatus::kOk) ++seq;
      else if (st != SendStatus::kBackpressure) throw std::runtime_error(fmt::format("multicast: {}", to_string(st)));
    }
    s.poll();
    if ((seq & 4095) == 0) throw_if_interrupted();
  }
  const std::uint64_t t1 = clock.now_ns();
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  auto all_in = [&] {
    for (unsigned j = 2; j <= members + 1; ++j)
      if (got[j] < count) return false;
    return true;
  };
  while (!all_in() && std::chrono::steady_clock::now() < end) s.poll();
  for (int k = 0; k < 1000; ++k) s.poll();  // anything late, or twice
  r.sent = count;
  r.rate_mps = static_cast<double>(count) / (static_cast<double>(t1 - t0) / 1e9);
  r.offered_mps = r.rate_mps;
  std::uint64_t lost = 0, dups = 0;
  for (unsigned j = 2; j <= members + 1; ++j) {
    lost += count - got[j];
    dups += dup[j];
    r.member_counts.push_back(got[j]);
  }
  r.lost = lost;
  r.duplicates = dups;
  r.gbps = r.rate_mps * members * static_cast<double>(r.frame_bytes) * 8 / 1e9;
  return {r};
}

std::vector<Row> service_bench(const Options& o) {
  const auto& cpus = harness_cpus();
  drivers::Eal& eal = shared_eal(o, "ring", cpus.front(), cpus.size() > 1 ? cpus[1] : cpus.front());
  const auto c = star(fmt::format("{}s", getpid()), 4,
                      "[[service]]\nname = \"rr\"\nid = 1\ninstances = [2, 3, 4, 5]\npolicy = \"round_robin\"\n"
                      "[[service]]\nname = \"lo\"\nid = 2\ninstances = [2, 3, 4, 5]\npolicy = \"least_outstanding\"\n"
                      "[[service]]\nname = \"kv\"\nid = 3\ninstances = [2, 3, 4, 5]\npolicy = \"hash\"\n");
  Star s(c, eal);
  s.converge();
  Clock& clock = Clock::tsc();
  // Instances: answer at once, except the slow one (5) while `slow` is set: it answers each
  // request 1 ms after the previous answer or its arrival, whichever is later.
  bool slow = false;
  constexpr std::uint64_t kSlowNs = 1'000'000;
  std::deque<RxMessage> held;
  std::uint64_t slow_free_ns = 0;
  std::map<NodeId, std::uint64_t> served;
  for (NodeId id = 2; id <= 5; ++id) {
    Node& n = s[id];
    n.on_message([&, id](RxMessage& m) {
      if (m.type() != MsgType::kCommand) return;
      ++served[id];
      if (id == 5 && slow) {
        held.push_back(std::move(m));
        return;
      }
      TxFrame f = n.take_frame(m);
      if (n.respond(m, f) != SendStatus::kOk) throw std::runtime_error("service: an instance could not answer");
    });
  }
  auto step_slow = [&] {
    if (held.empty()) return;
    const std::uint64_t now = clock.now_ns();
    const std::uint64_t start = std::max(slow_free_ns, held.front().received_ns());
    if (now < start + kSlowNs) return;
    TxFrame f = s[5].take_frame(held.front());
    if (s[5].respond(held.front(), f) == SendStatus::kOk) {
      held.pop_front();
      slow_free_ns = now;
    }
  };
  // Responses at node 1: latency from the request's stamp.
  stats::Histogram* hist = nullptr;
  std::uint64_t answered = 0;
  s[1].on_message([&](RxMessage& m) {
    if (m.type() != MsgType::kResponse || m.payload().size() < sizeof(Req)) return;
    Req q;
    std::memcpy(&q, m.payload().data(), sizeof q);
    ++answered;
    if (hist) hist->record(m.received_ns() - q.stamp_ns);
  });
  std::mt19937_64 rng(42);
  auto send = [&](std::uint16_t service, std::uint64_t seq, std::uint64_t key) {
    while (true) {
      TxFrame f = s[1].alloc(sizeof(Req));
      if (f) {
        const Req q{seq, clock.now_ns()};
        std::memcpy(f.payload().data(), &q, sizeof q);
        SendOptions so;
        so.key = key;
        const SendStatus st = s[1].send_service(f, service, MsgType::kCommand, 2, so);
        if (st == SendStatus::kOk) return;
        if (st != SendStatus::kBackpressure) throw std::runtime_error(fmt::format("service: {}", to_string(st)));
      }
      s.poll();
    }
  };
  auto settle = [&](std::uint64_t expect) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (answered < expect && std::chrono::steady_clock::now() < end) {
      s.poll();
      step_slow();
    }
  };
  std::vector<Row> rows;
  // Distribution: round robin, then hash with random keys.
  for (const std::uint16_t service : {std::uint16_t{1}, std::uint16_t{3}}) {
    served.clear();
    answered = 0;
    const std::uint64_t n = o.count ? o.count : 100000;
    for (std::uint64_t i = 0; i < n; ++i) {
      send(service, i, rng());
      s.poll();
    }
    settle(n);
    Row r;
    r.scenario = "service";
    r.transport = "ring";
    r.stack = service == 1 ? "round_robin" : "hash";
    r.metric = "spread";
    r.sent = n;
    r.lost = n - answered;
    double chi2 = 0;
    for (NodeId id = 2; id <= 5; ++id) {
      const double e = static_cast<double>(n) / 4, x = static_cast<double>(served[id]);
      chi2 += (x - e) * (x - e) / e;
      r.member_counts.push_back(served[id]);
    }
    r.chi2 = chi2;
    r.chi2_p = chi2_sf(chi2, 3);
    rows.push_back(std::move(r));
  }
  // The tail with a slow instance: round robin against least outstanding, open loop.
  const double rate = o.rate > 0 ? o.rate : 10000;
  const double seconds = o.seconds > 0 ? o.seconds : 1.0;
  slow = true;
  for (const std::uint16_t service : {std::uint16_t{1}, std::uint16_t{2}}) {
    served.clear();
    answered = 0;
    Row r;
    r.scenario = "service";
    r.transport = "ring";
    r.stack = service == 1 ? "round_robin" : "least_outstanding";
    r.metric = "response";
    r.offered_mps = rate;
    hist = r.latency.get();
    const auto total = static_cast<std::uint64_t>(rate * seconds);
    const std::uint64_t t0 = clock.now_ns();
    for (std::uint64_t i = 0; i < total;) {
      if (clock.now_ns() >= t0 + static_cast<std::uint64_t>(static_cast<double>(i) * 1e9 / rate)) send(service, i++, 0);
      s.poll();
      step_slow();
      if ((i & 1023) == 0) throw_if_interrupted();
    }
    settle(total);
    hist = nullptr;
    r.sent = total;
    r.lost = total - answered;
    r.rate_mps = static_cast<double>(answered) / seconds;
    for (NodeId id = 2; id <= 5; ++id) r.member_counts.push_back(served[id]);
    rows.push_back(std::move(r));
  }
  return rows;
}

}  // namespace nerve::perf
