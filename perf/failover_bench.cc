// `nerve-perf failover`: what a P0 stream loses when the node forwarding it dies.
//
// The diamond A-B-D, A-C-D over af_packet veth pairs (or, --transport memif, memif links: a
// killed node's peers see its links go down at once), each node in its own network namespace,
// default heartbeats (1 kHz, down after 3.5 periods of silence) unless --heartbeat-miss says
// otherwise. A
// (this process, busy-polling) sends P0 messages to D at --rate (default 10,000/s) for
// --seconds; a third of the way in, the forwarder that carries them (B or C, from A's routes)
// is killed with SIGKILL. D (nerve-perf peer --role sink) records every message's arrival. The
// row: `lost` = messages sent and never delivered (split by whether A sent them before the kill,
// so they died queued in the forwarder, or after it, toward the dead forwarder until detection);
// latency_ns = the gaps between consecutive deliveries at D, whose max is the outage the stream
// saw (10,000/s: 100 us apart normally).
//
// A busy-polls its schedule on one vCPU; B, C and D back off when idle and share the other, all
// their threads (left to the default placement, one of them would land on A's core, behind a
// thread that never sleeps, and their control threads would all run there). They get 128 MB
// each: the forwarder killed frees its memory on the vCPU the survivors run on.
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "eal.hpp"
#include "harness.hpp"
#include "netns.hpp"
#include "nerve/clock.hpp"
#include "nerve/node.hpp"

namespace nerve::perf {

drivers::Eal& shared_eal(const Options& opt, const std::string& transport, unsigned cpu_a, unsigned cpu_b);
void throw_if_interrupted();

namespace {

int sh(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()); }

struct Child {
  pid_t pid = -1;
  int out = -1;  // its stdout
};

// `cpu`: the one CPU every thread of the child may run on.
Child spawn(const std::vector<std::string>& args, const std::string& log, unsigned cpu) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  Child c;
  c.pid = ::fork();
  if (c.pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    ::dup2(fds[1], STDOUT_FILENO);
    const int err = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    ::dup2(err, STDERR_FILENO);
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    ::sched_setaffinity(0, sizeof set, &set);
    std::vector<std::string> copy = args;
    std::vector<char*> argv;
    for (auto& s : copy) argv.push_back(s.data());
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    _exit(127);
  }
  ::close(fds[1]);
  c.out = fds[0];
  return c;
}

// Whether process `pid` is in the kernel's hands: exiting (PF_EXITING), or in an
// uninterruptible wait (state D). Closing an af_packet socket waits for an RCU grace period or
// two (packet_release, packet_set_ring), and leaving the mount namespace `ip netns exec` made
// for one more; on a machine whose CPUs are busy, grace periods take long, and a node with a
// socket per queue and ring took over 20 s to end, making progress all the while.
bool in_kernel_teardown(pid_t pid) {
  const int fd = ::open(fmt::format("/proc/{}/stat", pid).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[1024];
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  const char* rest = std::strrchr(buf, ')');  // after the command name, which may hold anything
  char state = 0;
  unsigned long flags = 0;
  // state ppid pgrp session tty_nr tpgid flags
  if (!rest || std::sscanf(rest + 1, " %c %*d %*d %*d %*d %*d %lu", &state, &flags) != 2) return false;
  constexpr unsigned long kPfExiting = 0x4;
  return state == 'D' || state == 'Z' || (flags & kPfExiting) != 0;
}

// Signals the child and reads its stdout to the end. A child that has not ended within
// `timeout_ms` is a bug, unless the kernel is still tearing it down (then it gets up to
// `teardown_ms` more): its threads' stacks go into the error, then it is killed.
std::string finish(Child& c, int sig, int timeout_ms = 20000, int teardown_ms = 120000) {
  std::string out;
  if (c.pid <= 0) return out;
  ::kill(c.pid, sig);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  const auto last = deadline + std::chrono::milliseconds(teardown_ms);
  char buf[65536];
  while (true) {
    pollfd p{c.out, POLLIN, 0};
    int left = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count());
    if (left <= 0 && deadline < last && in_kernel_teardown(c.pid)) {
      deadline = std::min(last, deadline + std::chrono::seconds(1));
      left = 1;
    }
    if (left <= 0) {
      std::string bt;
      if (FILE* f = ::popen(fmt::format("gdb -batch -ex 'thread apply all bt' -p {} 2>&1", c.pid).c_str(), "r")) {
        while (const std::size_t got = std::fread(buf, 1, sizeof buf, f)) bt.append(buf, got);
        ::pclose(f);
      }
      const pid_t pid = c.pid;
      ::kill(pid, SIGKILL);
      ::close(c.out);
      c.pid = -1;
      throw std::runtime_error(fmt::format("failover: pid {} did not end on signal {}; its threads:\n{}", pid, sig,
                                           bt.substr(0, 20000)));
    }
    if (::poll(&p, 1, std::min(left, 100)) <= 0) continue;
    const ssize_t n = ::read(c.out, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(c.out);
  // Its output is complete; a process killed while the kernel tears down its sockets can take
  // a while to become reapable: wait a bounded time, then leave it to init (PR_SET_PDEATHSIG
  // already has it dying).
  // (SIGCHLD is ignored during the scenario: the kernel reaps the children itself.)
  for (int i = 0; i < 1000 && ::kill(c.pid, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  c.pid = -1;
  return out;
}

struct Message {
  std::uint64_t seq;
  std::uint64_t due_ns;
};

}  // namespace

std::vector<Row> failover_bench(const Options& o) {
  const auto& cpus = harness_cpus();
  const unsigned cpu_a = cpus.front(), cpu_b = cpus.size() > 1 ? cpus[1] : cpus.front();
  const std::string run = fmt::format("{}-91", getpid());  // digits only: reap_stale_runs knows it
  const std::string dir = "/tmp/nerve-perf-" + run;
  std::filesystem::create_directories(dir);
  const char* names = "abcd";
  std::vector<std::string> ns;
  std::vector<Child> kids;
  struct Cleanup {
    std::string run, dir;
    std::vector<std::string>& ns;
    std::vector<Child>& kids;
    ~Cleanup() {
      // All at once: the kernel's teardowns wait on shared RCU grace periods (in_kernel_teardown).
      for (auto& k : kids)
        if (k.pid > 0) ::kill(k.pid, SIGKILL);
      for (auto& k : kids) {
        try {
          finish(k, SIGKILL);
        } catch (...) {
        }
      }
      for (const auto& n : ns) sh("ip netns del " + n);
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
      // The DPDK runtime files of the nodes killed (the one on the path, and any SIGKILLed here).
      for (int id = 2; id <= 4; ++id)
        std::filesystem::remove_all(fmt::format("/var/run/dpdk/nerve-perf-{}-{}", run, id), ec);
    }
  } cleanup{run, dir, ns, kids};

  // Namespaces nvperf-a-<run> .. nvperf-d-<run> (reap_stale_runs removes a killed run's).
  for (int i = 0; i < 4; ++i) {
    ns.push_back(fmt::format("nvperf-{}-{}", names[i], run));
    if (sh("ip netns add " + ns.back()) != 0) throw std::runtime_error("ip netns add failed (root needed)");
    sh(fmt::format("ip netns exec {} sysctl -qw net.ipv6.conf.all.disable_ipv6=1", ns.back()));
  }
  // Links: A-B, A-C, B-D, C-D; the interface toward node j is "fo<j>".
  const std::vector<std::pair<std::size_t, std::size_t>> links = {{1, 2}, {1, 3}, {2, 4}, {3, 4}};
  auto mac = [](std::size_t id) { return fmt::format("02:00:00:00:0c:{:02x}", id); };
  const bool memif = o.transport == "memif";
  for (auto [x, y] : links) {
    if (memif) break;
    sh(fmt::format("ip link add fo{} netns {} type veth peer name fo{} netns {}", y, ns[x - 1], x, ns[y - 1]));
    for (auto [self, peer] : {std::pair{x, y}, std::pair{y, x}})
      sh(fmt::format("ip -n {} link set fo{} address {} up", ns[self - 1], peer, mac(self)));
  }
  std::string toml = fmt::format("[cluster]\nname = \"perf-{}\"\n{}\n", run,
                                 o.heartbeat_miss ? fmt::format("heartbeat_miss = {}", o.heartbeat_miss) : "");
  for (std::size_t id = 1; id <= 4; ++id) {
    toml += fmt::format("\n[[node]]\nid = {0}\nmac = \"{1}\"\nip = \"198.18.12.{0}\"\ncontrol_socket = \"{2}/n{0}.sock\"\n"
                        "memory_mb = 128\n{3}\n",
                        id, mac(id), dir,
                        id == 1 ? fmt::format("idle = \"busy\"\ncores = [{}]", cpu_a)
                                : fmt::format("idle = \"backoff\"\nbusy_lanes = []\ncores = [{}]", cpu_b));
    for (auto [x, y] : links)
      if (x == id || y == id) {
        if (memif)  // the lower id serves the link
          toml += fmt::format("  [[node.port]]\n  kind = \"memif\"\n  socket = \"{}/l{}{}.memif\"\n  role = \"{}\"\n"
                              "  peers = [{}]\n",
                              dir, x, y, x == id ? "server" : "client", x == id ? y : x);
        else
          toml += fmt::format("  [[node.port]]\n  kind = \"af_packet\"\n  iface = \"fo{}\"\n  rx_desc = 4096\n  peers = [{}]\n",
                              x == id ? y : x, x == id ? y : x);
      }
  }
  const std::string cfg = dir + "/cluster.toml";
  std::ofstream(cfg) << toml;
  const auto cluster = config::load_file(cfg);

  // The children (the nodes B, C, D) are reaped by the kernel: no waitpid, which was seen to
  // hang here now and then after a child's output had ended.
  struct IgnoreChildren {
    struct sigaction old {};
    IgnoreChildren() {
      struct sigaction sa {};
      sa.sa_handler = SIG_IGN;
      sigaction(SIGCHLD, &sa, &old);
    }
    ~IgnoreChildren() { sigaction(SIGCHLD, &old, nullptr); }
  } ignore_children;
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  std::map<NodeId, std::size_t> kid_of;
  for (int id = 2; id <= 4; ++id) {
    kid_of[static_cast<NodeId>(id)] = kids.size();
    kids.push_back(spawn({"ip", "netns", "exec", ns[static_cast<std::size_t>(id - 1)], self, "peer", "--transport",
                          o.transport, "--role", id == 4 ? "sink" : "forward", "--config", cfg, "--node",
                          std::to_string(id), "--cpu", std::to_string(cpu_b)},
                         dir + fmt::format("/node{}.log", id), cpu_b));
  }
  drivers::Eal& eal = shared_eal(o, o.transport, cpu_a, cpu_b);
  std::unique_ptr<Node> a;
  {
    NetnsGuard in(ns[0]);
    NodeOptions no;
    no.link_wait = std::chrono::milliseconds(15000);
    a = std::make_unique<Node>(cluster, 1, eal, no);
  }
  Node& A = *a;
  bool ready = false;
  A.on_message([&](RxMessage& m) {
    if (m.type() == MsgType::kResponse && m.source() == 4) ready = true;
  });
  // D answers a command once the whole path is up (routes computed at every node).
  const auto up_by = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  auto next_ping = std::chrono::steady_clock::now();
  while (!ready) {
    throw_if_interrupted();
    if (std::chrono::steady_clock::now() > up_by) throw std::runtime_error("failover: D never answered");
    if (std::chrono::steady_clock::now() >= next_ping) {
      const char ping[] = "ping";
      A.send_copy(4, MsgType::kCommand, 0, std::as_bytes(std::span(ping)));
      next_ping += std::chrono::milliseconds(20);
    }
    A.poll();
  }
  // Both paths known, then the stream.
  const auto two_paths = [&] {
    for (const auto& r : A.routes())
      if (r.dst == 4) return r.lanes[0].paths == 2;
    return false;
  };
  while (!two_paths() && std::chrono::steady_clock::now() < up_by) A.poll();
  const double rate = o.rate > 0 ? o.rate : 10000;
  const double seconds = o.seconds > 0 ? o.seconds : 3.0;
  const auto total = static_cast<std::uint64_t>(rate * seconds);
  const std::uint64_t kill_at = total / 3;
  Clock& clock = Clock::tsc();
  const std::uint64_t t0 = clock.now_ns() + 1'000'000;
  const double interval_ns = 1e9 / rate;
  std::uint64_t seq = 0, sent = 0;
  std::array<std::uint64_t, 16> refused{};  // by SendStatus: messages the node did not take
  std::vector<bool> taken(total, false);     // by seq: the node took it
  NodeId killed = 0;
  unsigned paths_at_kill = 0;
  std::uint64_t kill_ns = 0, detected_ns = 0;
  // What A saw, for the row: its links, its route to D and its routing agent's figures.
  std::vector<std::string> trace;
  std::uint64_t traced_ns = 0;
  auto trace_state = [&](std::string_view what) {
    const std::uint64_t now = clock.now_ns();
    std::string s = fmt::format("{:.1f} ms after the kill, {}: links", static_cast<double>(now - kill_ns) / 1e6, what);
    for (const LinkInfo& l : A.links())
      s += fmt::format(" {}:{} (downs {}, rtt {} ns)", l.peer, l.up ? "up" : "down", l.downs, l.rtt_ns);
    for (const RouteInfo& ri : A.routes())
      if (ri.dst == 4) s += fmt::format("; to D: next hop {}, {} path(s)", ri.lanes[0].next_hop, ri.lanes[0].paths);
    const RoutingInfo g = A.routing();
    s += fmt::format("; tables {} (in use {}), advertisements received {}, database {} nodes, syncs {}", g.table_version,
                     g.table_in_use, g.lsa_received, g.db_size, g.db_syncs);
    trace.push_back(std::move(s));
    traced_ns = now;
  };
  while (seq < total) {
    const auto due = t0 + static_cast<std::uint64_t>(static_cast<double>(seq) * interval_ns);
    if (clock.now_ns() >= due) {
      if (seq == kill_at) {
        for (const auto& r : A.routes())
          if (r.dst == 4) {
            killed = r.lanes[0].next_hop;
            paths_at_kill = r.lanes[0].paths;
          }
        if (killed != 2 && killed != 3) throw std::runtime_error("failover: no forwarder on the path to D");
        kill_ns = clock.now_ns();
        ::kill(kids[kid_of[killed]].pid, SIGKILL);
      }
      const Message msg{seq, due};
      const SendStatus st = A.send_copy(4, MsgType::kStatus, 0, std::as_bytes(std::span(&msg, 1)));
      if (st == SendStatus::kOk) {
        ++sent;
        taken[seq] = true;
      } else {
        ++refused[static_cast<std::size_t>(st)];
        if (kill_ns != 0 && (traced_ns == 0 || clock.now_ns() - traced_ns >= 100'000'000))
          trace_state(to_string(st));
      }
      ++seq;
      if ((seq & 1023) == 0) throw_if_interrupted();
    }
    if (kill_ns != 0 && detected_ns == 0)  // until A's link to the killed forwarder is down
      for (const LinkInfo& l : A.links())
        if (l.peer == killed && !l.up) detected_ns = clock.now_ns();
    A.poll();
  }
  if (!trace.empty()) trace_state("the stream's end");
  // Stragglers, then D's account.
  const auto drain_until = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
  while (std::chrono::steady_clock::now() < drain_until) A.poll();
  // D's count is final once the stragglers are in: the forwarder that lived ends now too, so
  // that its teardown shares the kernel's grace periods with the others' (in_kernel_teardown).
  std::vector<std::pair<std::string, std::uint64_t>> r_refused_at_survivor;
  Child& sink = kids[kid_of[4]];
  Child& survivor = kids[kid_of[killed == 2 ? 3 : 2]];
  for (Child& k : kids)
    if (k.pid > 0) ::kill(k.pid, &k == &sink || &k == &survivor ? SIGTERM : SIGKILL);
  finish(kids[kid_of[killed]], SIGKILL);
  const std::string out = finish(sink, SIGTERM);
  // What the surviving forwarder refused or dropped (its last line: forwarder-refused {...}).
  const std::string fwd = finish(survivor, SIGTERM);
  if (const auto at = fwd.find("forwarder-refused "); at != std::string::npos) {
    const auto j = nlohmann::json::parse(fwd.substr(at + 18), nullptr, false);
    if (!j.is_discarded())
      for (const auto& [why, n] : j.items()) r_refused_at_survivor.emplace_back(why, n.get<std::uint64_t>());
  }
  const auto rep = nlohmann::json::parse(out, nullptr, false);
  if (rep.is_discarded() || !rep.contains("received"))
    throw std::runtime_error("failover: no report from D: " + out.substr(0, 200));

  Row r;
  r.refused_at_survivor = std::move(r_refused_at_survivor);
  r.scenario = "failover";
  r.transport = o.transport;
  r.metric = "gap";
  r.priority = 0;
  r.size = sizeof(Message);
  r.frame_bytes = wire::frame_len(sizeof(Message));
  r.sent = sent;
  const std::uint64_t received = rep["received"].get<std::uint64_t>();
  r.lost = sent > received ? sent - received : 0;
  r.offered_mps = rate;
  r.rate_mps = static_cast<double>(received) / seconds;
  for (const auto& g : rep["gaps"]) r.latency->record(g.get<std::uint64_t>());
  r.killed = killed;
  r.detect_ms = detected_ns != 0 ? static_cast<double>(detected_ns - kill_ns) / 1e6 : -1;
  // D names what it missed below the highest sequence it received; anything above it is missed too.
  std::vector<bool> got = taken;
  for (const auto& range : rep["missing"]) {
    const auto first = range[0].get<std::uint64_t>(), last = range[1].get<std::uint64_t>();
    for (std::uint64_t q = first; q <= last && q < total; ++q) got[q] = false;
  }
  for (std::uint64_t q = rep["end"].get<std::uint64_t>(); q < total; ++q) got[q] = false;
  for (std::uint64_t q = 0; q < total; ++q)
    if (taken[q] && !got[q]) ++(q < kill_at ? r.lost_before_kill : r.lost_after_kill);
  // Where in the stream they were: runs of lost messages, in ms of the stream from the kill.
  for (std::uint64_t q = 0; q < total && r.lost_runs_ms.size() < 16; ++q) {
    if (!taken[q] || got[q]) continue;
    std::uint64_t e = q;
    while (e + 1 < total && !(taken[e + 1] && got[e + 1])) ++e;  // refused sends inside a run join it
    auto ms = [&](std::uint64_t s) { return (static_cast<double>(s) - static_cast<double>(kill_at)) * 1e3 / rate; };
    r.lost_runs_ms.push_back({ms(q), ms(e + 1)});
    q = e;
  }
  r.heartbeat_miss = o.heartbeat_miss ? o.heartbeat_miss : cluster.heartbeat_miss;
  r.duplicates = rep["duplicates"].get<std::uint64_t>();
  for (const auto& [why, n] : rep["refused"].items()) r.refused_at_d.emplace_back(why, n.get<std::uint64_t>());
  r.paths_at_kill = paths_at_kill;
  r.trace = std::move(trace);
  for (std::size_t k = 0; k < refused.size(); ++k)
    if (refused[k]) r.refused.emplace_back(std::string(to_string(static_cast<SendStatus>(k))), refused[k]);
  return {r};
}

// `nerve-perf peer --role sink`: D. Answers commands (readiness), records P0 status messages.
int failover_sink(Node& node, const std::atomic<bool>& stop) {
  std::vector<std::uint8_t> seen(1u << 24, 0);
  std::vector<std::uint64_t> gaps;
  gaps.reserve(1u << 20);
  std::uint64_t received = 0, duplicates = 0, last = 0;
  node.on_message([&](RxMessage& m) {
    if (m.type() == MsgType::kCommand) {
      TxFrame f = node.alloc(4);
      if (f) node.respond(m, f);
      return;
    }
    if (m.type() != MsgType::kStatus || m.payload().size() < sizeof(Message)) return;
    Message msg;
    std::memcpy(&msg, m.payload().data(), sizeof msg);
    if (msg.seq >= seen.size()) return;
    if (seen[msg.seq]) {
      ++duplicates;
      return;
    }
    seen[msg.seq] = 1;
    ++received;
    const std::uint64_t now = m.received_ns();
    if (last != 0 && gaps.size() < gaps.capacity()) gaps.push_back(now > last ? now - last : 0);
    last = now;
  });
  node.run(stop);
  // What it missed below the highest sequence it received (`end` is one past it), as
  // [first, last] runs.
  std::uint64_t end = seen.size();
  while (end > 0 && !seen[end - 1]) --end;
  nlohmann::json missing = nlohmann::json::array();
  for (std::uint64_t q = 0; q < end; ++q) {
    if (seen[q]) continue;
    std::uint64_t e = q;
    while (e + 1 < end && !seen[e + 1]) ++e;
    missing.push_back({q, e});
    q = e;
  }
  // What D refused, by reason (frames that reached it and were not delivered).
  nlohmann::json refused = nlohmann::json::object();
  const stats::Snapshot s = node.snapshot();
  for (std::size_t k = 1; k < wire::kRefusalCount; ++k)
    if (s.refused[k] != 0) refused[std::string(wire::to_string(static_cast<wire::Refusal>(k)))] = s.refused[k];
  nlohmann::json j = {{"received", received}, {"duplicates", duplicates}, {"gaps", gaps},
                      {"missing", missing}, {"end", end}, {"refused", refused}};
  fmt::print("{}\n", j.dump());
  std::fflush(stdout);
  return 0;
}

}  // namespace nerve::perf
