// `nerve-perf reliability`: reliable delivery through a faulty link.
//
// Two nodes in this process, joined by a memif (or net_ring) link whose ports inject --fault
// into what each receives (both directions: messages and their acks). The receiver runs on the
// EAL's second lcore, the sender on this thread. Per lane: --count reliable messages, unpaced
// (the window of 256 unacknowledged frames paces them) or at --rate; the receiver checks every
// message by its sequence number: delivered once, in order. Row per lane: delivered, lost,
// duplicates, reordered (delivered out of order), retransmissions, and the delivery latency
// (the message's first send to its delivery, same clock) against the lane's budget.
//
// --size: message bytes (comma-separated: one run per size). Above one frame's payload the
// messages go as fragments and are put together again (docs/architecture.md, "Large
// messages"); every message carries its number at both ends and its size, and one that
// arrives another size or with another number at its end counts as lost.
//
// --paths 1,2: each message over one link, or over two at once (docs/architecture.md, "Two
// paths"): the nodes are then joined by two links, each faulted with its own seed, and the
// rows of both run over the same pair of links, one after the other.
//
// --unreliable: the same without reliable delivery: what is lost stays lost (with --paths 2,
// what both paths lost); the run ends when every message arrived or nothing came for 200 ms.
//
// --overhead: P0 round trips on a loss-free link (no faults), with and without reliable
// delivery, interleaved in rounds: what reliability costs when nothing is lost.
#include <fmt/format.h>
#include <rte_launch.h>
#include <rte_lcore.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>

#include "eal.hpp"
#include "harness.hpp"
#include "nerve/clock.hpp"
#include "nerve/node.hpp"

namespace nerve::perf {

drivers::Eal& shared_eal(const Options& opt, const std::string& transport, unsigned cpu_a, unsigned cpu_b);
void throw_if_interrupted();

namespace {

struct Msg {
  std::uint64_t seq;
  std::uint8_t kind;  // 1: one-way (count), 2: ping (answer)
};

struct Receiver {
  explicit Receiver(Node& n) : node(n) {
    node.on_message([this](RxMessage& m) { take(m); });
  }
  ~Receiver() { node.on_message({}); }

  void expect(std::uint8_t lane, std::uint64_t count, std::size_t bytes) {
    prio = lane;
    size = bytes;
    seen.assign(count, 0);
    next = got = dups = reordered = 0;
    latency = std::make_shared<stats::Histogram>();
  }
  void take(RxMessage& m) {
    if (m.payload().size() < sizeof(Msg)) return;
    Msg msg;
    std::memcpy(&msg, m.payload().data(), sizeof(Msg));
    if (msg.kind == 2) {
      TxFrame f = node.take_frame(m);
      while (node.respond(m, f) == SendStatus::kBackpressure) node.flush();
      return;
    }
    if (m.priority() != prio || msg.seq >= seen.size()) return;
    std::uint64_t tail = ~msg.seq;
    if (size >= sizeof(Msg) + 8) std::memcpy(&tail, m.payload().data() + m.payload().size() - 8, 8);
    if (m.payload().size() != size || (size >= sizeof(Msg) + 8 && tail != msg.seq)) return;  // not whole: lost
    if (seen[msg.seq]++) {
      ++dups;
      return;
    }
    if (msg.seq < next) ++reordered;  // after a later one (a gap alone is a loss, counted as lost)
    next = std::max(next, msg.seq + 1);
    latency->record(m.latency_ns());
    got.fetch_add(1, std::memory_order_release);
  }

  Node& node;
  std::uint8_t prio = 0;
  std::size_t size = 64;
  std::vector<std::uint8_t> seen;
  std::uint64_t next = 0, dups = 0, reordered = 0;
  std::atomic<std::uint64_t> got{0};
  std::shared_ptr<stats::Histogram> latency = std::make_shared<stats::Histogram>();
  std::atomic<bool> stop{false};
};

// The receiver's lcore: polls until told to stop.
int receive_loop(void* p) {
  auto* r = static_cast<Receiver*>(p);
  while (!r->stop.load(std::memory_order_acquire)) r->node.poll();
  return 0;
}

// `links` links between the two nodes (2 for --paths 2); link k's ports inject `faults[k]`.
std::string cluster_toml(const std::string& tag, const std::string& kind, const std::string& dir,
                         const std::vector<std::string>& faults, unsigned cpu_a, unsigned cpu_b) {
  // message_buffers: several large messages in flight at once.
  std::string t = fmt::format("[cluster]\nname = \"perf-{}\"\nheartbeat_miss = 100\nmessage_buffers = 8\n", tag);
  for (int id = 1; id <= 2; ++id) {
    t += fmt::format("[[node]]\nid = {0}\nmac = \"02:00:00:00:0e:{0:02x}\"\nip = \"198.18.14.{0}\"\n"
                     "control_socket = \"{1}/n{0}.sock\"\nidle = \"busy\"\nmbufs = 32767\ncores = [{2}]\n",
                     id, dir, id == 1 ? cpu_a : cpu_b);
    for (std::size_t k = 0; k < faults.size(); ++k) {
      t += fmt::format("  [[node.port]]\n  peers = [{}]\n", 3 - id);
      if (kind == "ring") t += fmt::format("  kind = \"ring\"\n  pair = \"r{}l{}\"\n", tag, k);
      else
        t += fmt::format("  kind = \"memif\"\n  socket = \"{}/link{}.memif\"\n  role = \"{}\"\n", dir, k,
                         id == 1 ? "server" : "client");
      if (!faults[k].empty()) t += fmt::format("  fault = \"{}\"\n", faults[k]);
    }
  }
  return t;
}

}  // namespace

std::vector<Row> reliability_bench(const Options& o) {
  if (o.transport != "memif" && o.transport != "ring")
    throw std::invalid_argument("reliability: --transport memif or ring (both nodes in this process)");
  const auto& cpus = harness_cpus();
  const unsigned cpu_a = cpus.front(), cpu_b = cpus.size() > 1 ? cpus[1] : cpus.front();
  drivers::Eal& eal = shared_eal(o, o.transport, cpu_a, cpu_b);
  const unsigned worker = rte_get_next_lcore(rte_get_main_lcore(), 1, 0);
  if (worker >= RTE_MAX_LCORE) throw std::runtime_error("reliability: needs two cores");
  const std::string tag = fmt::format("{}", getpid());
  const std::string dir = "/tmp/nerve-perf-rel-" + tag;
  std::filesystem::create_directories(dir);
  struct Cleanup {
    std::string dir;
    ~Cleanup() { std::filesystem::remove_all(dir); }
  } cleanup{dir};
  const std::string fault = o.overhead ? "" : o.fault;
  // Two links when two paths are asked for (the one-path rows then use one of them): each its
  // own fault stream (the second link's seed is the first's + 1), so the paths lose
  // independently.
  const bool two = !o.overhead && std::find(o.paths.begin(), o.paths.end(), 2u) != o.paths.end();
  std::vector<std::string> faults{fault};
  if (two) {
    std::string second;
    if (!fault.empty()) {
      config::FaultSpec f = config::parse_fault(fault, "--fault");
      f.seed += 1;
      second = config::format_fault(f);
      if (second == "none") second.clear();
    }
    faults.push_back(second);
  }
  const auto c = config::load_string(cluster_toml(tag, o.transport, dir, faults, cpu_a, cpu_b));
  NodeOptions no;
  no.link_wait = std::chrono::milliseconds(15000);
  Node a(c, 1, eal, no);
  Node b(c, 2, eal, no);
  Receiver rx(b);
  rte_eal_remote_launch(
receive_loop, &rx, worker);
  struct Join {
    Receiver& rx;
    unsigned worker;
    ~Join() {
      rx.stop.store(true, std::memory_order_release);
      rte_eal_wait_lcore(worker);
    }
  } join{rx, worker};
  // Routes up both ways before anything is measured.
  const auto up_by = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (a.routes().empty() || a.routes().front().lanes[0].next_hop == 0 ||
         (two && a.routes().front().two_paths[1].next_hop == 0)) {
    if (std::chrono::steady_clock::now() > up_by) throw std::runtime_error("reliability: the links never came up");
    a.poll();
  }
  Clock& clock = Clock::tsc();
  std::vector<Row> rows;
  // Faults the ports of both nodes injected so far (both directions, every link).
  auto faults_now = [&] {
    std::uint64_t n = 0;
    for (const Node* node : {&a, &b})
      for (const auto& p : node->ports()) n += p.fault_dropped + p.fault_duplicated + p.fault_reordered + p.fault_corrupted;
    return n;
  };

  auto send_one = [&](std::uint8_t prio, const Msg& msg, bool reliable, bool more, std::size_t size = 64,
                      std::uint8_t paths = 1) {
    while (true) {
      TxFrame f = a.alloc(size);
      if (f) {
        std::memcpy(f.payload().data(), &msg, sizeof msg);
        if (size >= sizeof msg + 8) std::memcpy(f.payload().data() + size - 8, &msg.seq, 8);
        const SendStatus s =
            a.send(f, 2, MsgType::kMetric, prio, {.never_shed = true, .more = more, .reliable = reliable, .paths = paths});
        if (s == SendStatus::kOk) return;
        if (s != SendStatus::kBackpressure) throw std::runtime_error(fmt::format("reliability: send {}", to_string(s)));
      }
      a.poll();
    }
  };

  if (o.overhead) {
    // P0 round trips, reliable and not, in alternating blocks.
    const std::uint64_t per_block = o.count ? o.count : 20000;
    std::array<Row, 2> r;
    for (std::size_t k = 0; k < 2; ++k) {
      r[k].scenario = "reliability-rtt";
      r[k].transport = o.transport;
      r[k].stack = k ? "reliable" : "unreliable";
      r[k].reliable = k == 1;
      r[k].size = 64;
      r[k].frame_bytes = wire::frame_len(64);
      r[k].metric = "rtt";
    }
    std::uint64_t answers = 0;
    a.on_message([&](RxMessage&) { ++answers; });
    for (unsigned round = 0; round < 2 * std::max(1u, o.rounds); ++round) {
      Row& row = r[round % 2];
      for (std::uint64_t i = 0; i < per_block + 500; ++i) {  // 500 of warm-up per block
        const std::uint64_t want = answers + 1;
        const std::uint64_t t0 = clock.now_ns();
        send_one(0, Msg{i, 2}, row.reliable, false);
        const std::uint64_t deadline = t0 + 1'000'000'000;
        while (answers < want) {
          a.poll();
          if (clock.now_ns() > deadline) throw std::runtime_error("reliability: a round trip took over 1 s");
        }
        if (i >= 500) row.latency->record(clock.now_ns() - t0), ++row.sent;
      }
      throw_if_interrupted();
    }
    a.on_message({});
    rows.assign(r.begin(), r.end());
    return rows;
  }

  std::array<bool, wire::kPriorities> recovery_taken{};
  for (const std::size_t size : o.sizes)
  for (const int lane : o.priorities)
  for (const unsigned paths : o.paths) {
    if (size < sizeof(Msg) || size > a.max_message())
      throw std::invalid_argument(fmt::format("reliability: --size {} out of range [{}, {}] (max_message)", size,
                                              sizeof(Msg), a.max_message()));
    const auto prio = static_cast<std::uint8_t>(lane);
    const std::uint64_t count = o.count ? o.count : 100000;
    rx.stop.store(true, std::memory_order_release);  // the receiver's tables are reset while it waits
    rte_eal_wait_lcore(worker);
    rx.expect(prio, count, size);
    rx.stop.store(false, std::memory_order_release);
    rte_eal_remote_launch(
receive_loop, &rx, worker);
    const stats::Snapshot before = a.snapshot();
    const std::uint64_t faults_before = faults_now();
    const std::uint64_t t0 = clock.now_ns();
    const double gap_ns = o.rate > 0 ? 1e9 / o.rate : 0;
    for (std::uint64_t i = 0; i < count; ++i) {
      if (gap_ns > 0) {
        const auto due = t0 + static_cast<std::uint64_t>(gap_ns * static_cast<double>(i));
        while (clock.now_ns() < due) a.poll();
      }
      send_one(prio, Msg{i, 1}, !o.unreliable, gap_ns == 0, size, static_cast<std::uint8_t>(paths));
      if ((i & 31) == 31) a.poll();
      if ((i & 65535) == 0) throw_if_interrupted();
    }
    a.flush();
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    // Every message delivered or reported failed, and nothing left unacknowledged (acked and
    // sent count frames: a large message's fragments each; failed counts messages).
    // Unreliable (--unreliable): every message delivered, or nothing new for 200 ms.
    std::uint64_t last_got = ~0ull, last_got_ns = clock.now_ns();
    auto quiet_since = std::chrono::steady_clock::now();
    auto settled = [&] {
      if (o.unreliable) {
        const std::uint64_t got = rx.got.load(std::memory_order_acquire);
        if (got >= count) return true;
        if (got != last_got) last_got = got, quiet_since = std::chrono::steady_clock::now(), last_got_ns = clock.now_ns();
        return std::chrono::steady_clock::now() - quiet_since > std::chrono::milliseconds(200);
      }
      const auto s = a.snapshot().rel[prio];
      const std::uint64_t failed = s.failed - before.rel[prio].failed;
      return rx.got.load(std::memory_order_acquire) + failed >= count &&
             (failed != 0 || s.acked - before.rel[prio].acked >= s.sent - before.rel[prio].sent);
    };
    while (!settled() && std::chrono::steady_clock::now() < end) a.poll();
    const std::uint64_t t1 = o.unreliable ? last_got_ns : clock.now_ns();  // (not the quiet wait)
    for (int k = 0; k < 10000; ++k) a.poll();  // anything late, or twice
    rx.stop.store(true, std::memory_order_release);
    rte_eal_wait_lcore(worker);
    const stats::Snapshot after = a.snapshot();
    Row r;
    r.scenario = "reliability";
    r.transport = o.transport;
    r.reliable = !o.unreliable;
    r.fault = config::format_fault(c.nodes[1].ports[0].fault);
    r.paths = static_cast<int>(paths);
    r.metric = "one-way";
    r.priority = lane;
    r.size = size;
    // Bytes on the wire per message: its fragments' frames (one frame up to max_payload).
    const std::size_t one = a.max_payload(), frags = size <= one ? 1 : (size + one - 1) / one;
    r.frame_bytes = size <= one ? wire::frame_len(size) : (frags - 1) * wire::frame_len(one) + wire::frame_len(size - (frags - 1) * one);
    r.sent = count;
    r.lost = count - rx.got.load(std::memory_order_acquire);
    r.duplicates = rx.dups;
    r.reordered = rx.reordered;
    r.retransmits = after.rel[prio].retransmits + after.rel[prio].fast_retransmits - before.rel[prio].retransmits -
                    before.rel[prio].fast_retransmits;
    r.failed = after.rel[prio].failed - before.rel[prio].failed;
    // Recovery times: a histogram of the node's whole life, so only the first row of a lane
    // (the lanes run one after another) has them alone.
    if (!recovery_taken[prio]) r.recovery = after.rel_recovery[prio];
    recovery_taken[prio] = true;
    r.rate_mps = static_cast<double>(count) / (static_cast<double>(t1 - t0) / 1e9);
    r.offered_mps = o.rate;
    r.gbps = r.rate_mps * static_cast<double>(r.frame_bytes) * 8 / 1e9;
    r.latency = rx.latency;
    r.deadline_misses = r.latency->count_above(stats::kDefaultBudgetNs[prio]);
    r.faults_injected = faults_now() - faults_before;
    rows.push_back(r);
    rx.stop.store(false, std::memory_order_release);
    rte_eal_remote_launch(
receive_loop, &rx, worker);
  }
  return rows;
}

}  // namespace nerve::perf
