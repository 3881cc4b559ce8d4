// Sessions (a transport and its peer) and the scenarios that run over them.
#include "harness.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>
#include <thread>

#include "eal.hpp"
#include "netns.hpp"
#include "port.hpp"
#include "nerve/node.hpp"
#include "nerve/telemetry.hpp"
#include "schedule.hpp"
#include "transport.hpp"
#include "nerve/clock.hpp"

namespace nerve::perf {
namespace {

using nlohmann::json;

std::atomic<bool> g_peer_stop{false};
extern "C" void on_peer_signal(int) { g_peer_stop.store(true); }

std::atomic<int> g_interrupt{0};  // the signal that asked the harness to stop
extern "C" void on_interrupt(int sig) { g_interrupt.store(sig); }

// Called at every step of a scenario loop (never inside a receive callback, which runs under
// a noexcept poll()): a relaxed load, then unwinding through the Session's teardown.
void check_interrupt() {
  if (const int sig = g_interrupt.load(std::memory_order_relaxed)) [[unlikely]]
    throw Interrupted(sig);
}

constexpr std::uint64_t kReplyTimeoutNs = 100'000'000;  // a ping unanswered for 100 ms is lost
// Unpaced floods: frames per step of the ping loop, between two looks at the RX queue: enough
// to keep the TX path full, few enough that the pinger reads its replies promptly.
constexpr std::uint64_t kFloodPerStep = 8;

// Sends `p`, polling (and handing arrivals to `rx`) while the transport pushes back; an
// interrupt ends the wait.
void send_retrying(Transport& t, const Probe& p, std::size_t size, const RxFn& rx) {
  while (!t.send(p, size)) {
    check_interrupt();
    t.poll(rx, false);
  }
}

// ---- the far end ---------------------------------------------------------------------------

struct PointStats {
  std::uint64_t count = 0;
  std::uint64_t flood = 0;  // background messages received for this point
  std::unique_ptr<stats::Histogram> h = std::make_unique<stats::Histogram>();
};
struct PeerReport {
  std::map<std::uint16_t, PointStats> points;  // one-way latency per sweep point
  std::uint64_t flood = 0;
};

// Reflects pings, measures one-way probes, counts floods, until `stop`.
void peer_loop(Transport& t, PeerReport& rep, const std::atomic<bool>& stop) {
  const RxFn rx = [&](const Probe& p, std::size_t, std::uint64_t now) {
    if (p.kind == kOneway) {
      PointStats& ps = rep.points[p.point];
      ++ps.count;
      ps.h->record(now > p.stamp_ns ? (now - p.stamp_ns) : 0);
    } else if (p.kind == kFlood) {
      ++rep.flood;
      ++rep.points[p.point].flood;
    }
  };
  while (!stop.load(std::memory_order_relaxed)) t.idle(t.poll(rx, true));
}

json report_to_json(const PeerReport& r) {
  json j = {{"flood", r.flood}, {"points", json::object()}};
  for (const auto& [id, ps] : r.points) {
    json buckets = json::array();
    for (std::size_t i = 0; i < stats::Histogram::kBuckets; ++i)
      if (const auto n = ps.h->bucket_count(i)) buckets.push_back({i, n});
    j["points"][std::to_string(id)] = {{"count", ps.count}, {"flood", ps.flood}, {"buckets", buckets}};
  }
  return j;
}

PeerReport report_from_json(const json& j) {
  PeerReport r;
  r.flood = j.value("flood", 0ull);
  for (const auto& [id, pj] : j["points"].items()) {
    PointStats& ps = r.points[static_cast<std::uint16_t>(std::stoi(id))];
    ps.count = pj["count"].get<std::uint64_t>();
    ps.flood = pj.value("flood", 0ull);
    for (const auto& b : pj["buckets"])
      ps.h->record_n(stats::Histogram::upper_of(b[0].get<std::size_t>()), b[1].get<std::uint64_t>());
  }
  return r;
}

// Runs a shell command, output discarded; returns its exit status. Not std::system(): that
// ignores SIGINT while the command runs, so a Ctrl-C during namespace set-up would be lost.
int run_quiet(const std::string& cmd) {
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    const int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    ::dup2(null, STDOUT_FILENO);
    ::dup2(null, STDERR_FILENO);
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void pin_to(unsigned cpu) {
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(cpu, &s);
  sched_setaffinity(0, sizeof s, &s);
}

// The process's single EAL, started at the first nerve session: this lcore plus one more for
// the in-process (ring) peer.
drivers::Eal& process_eal(const Options& opt, const std::string& transport, unsigned cpu_a, unsigned cpu_b) {
  static std::unique_ptr<drivers::Eal> eal;
  if (!eal) {
    drivers::EalOptions o;
    o.file_prefix = fmt::format("nerve-perf-{}", getpid());
    o.memory_mb = 1024;
    o.cores = {cpu_a};
    if (cpu_b != cpu_a) o.cores.push_back(cpu_b);
    o.log_level = "error";
    if (transport == "pci") {
      o.profile = config::Profile::kProduction;
      o.pci_allow = {opt.pci_a};
    }
    eal = std::make_unique<drivers::Eal>(o);
  }
  return *eal;
}

// Node `id`'s addresses towards the other node of a two-node session cluster.
wire::Endpoints raw_endpoints(const config::Cluster& c, std::uint16_t id) {
  const config::Node& self = c.node(id);
  const config::Node& peer = c.node(static_cast<std::uint16_t>(3 - id));
  wire::Endpoints ep;
  ep.src_mac = self.mac;
  ep.dst_mac = peer.mac;
  ep.src_ip = self.ip;
  ep.dst_ip = peer.ip;
  ep.src_port = ep.dst_port = c.udp_port;
  return ep;
}

// A transport and its peer, set up for one scenario run and torn down afterwards.
class Session {
 public:
  // stack "nerve": nodes at both ends; "raw": the same ports driven by bare DPDK loops.
  Session(const Options& opt, const std::string& transport, std::size_t max_size, const std::string& stack = "nerve")
      : kind_(transport), stack_(transport == "kernel-udp" ? "kernel" : stack), peer_idle_(opt.peer_idle),
        tsc_(Clock::tsc()), hops_(opt.hop_count) {
    const auto& cpus = harness_cpus();
    cpu_a_ = cpus.front();
    cpu_b_ = cpus.size() > 1 ? cpus[1] : cpus.front();
    tag_ = fmt::format("{}{}", getpid() % 10000, id_);
    try {
      if (transport == "kernel-udp") start_udp();
      else start_nerve(opt, max_size);
      wait_peer();
    } catch (...) {
      finish();  // the peer, namespaces and files go, whatever failed
      throw;
    }
  }
  ~Session() {
    try {
      finish();
    } catch (...) {
    }
  }

  Transport& t() { return *t_; }
  const Clock& tsc() const { return tsc_; }
  const std::string& stack() const { return stack_; }
  int hops() const { return hops_; }

  // Sessions measured side by side take turns: the one not measuring stops its peer (SIGSTOP),
  // so the two never share the peer's core.
  void pause() {
    if (child_ > 0) ::kill(child_, SIGSTOP);
  }
  void resume() {
    if (child_ > 0) ::kill(child_, SIGCONT);
  }

  // Returns once the peer has handled everything sent before: a ping queued behind the
  // backlog comes back only after it. Keeps one sweep point's backlog out of the next.
  void barrier() { wait_peer(); }

  // Stops the peer; returns what it measured.
  PeerReport finish() {
    PeerReport rep;
    if (finished_) return rep;
    finished_ = true;
    if (lcore_peer_) {
      ring_stop_.store(true);
      rte_eal_mp_wait_lcore();
      rep = std::move(ring_report_);
    }
    if (child_ > 0) {
      ::kill(child_, SIGCONT);  // a paused peer must run to hear SIGTERM and report
      ::kill(child_, SIGTERM);
      std::string out;
      char buf[65536];
      ssize_t n;
      while ((n = ::read(pipe_, buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(n));
      ::close(pipe_);
      ::waitpid(child_, nullptr, 0);
      child_ = -1;
      const auto j = json::parse(out, nullptr, false);
      if (!j.is_discarded()) rep = report_from_json(j);
    }
    stop_sidecar();
    t_.reset();
    echo_t_.reset();
    node_.reset();
    region_.reset();
    forwarders_.clear();
    echo_node_.reset();
    raw_port_.reset();
    raw_pool_.reset();
    if (!ns_a_.empty()) {
      run_quiet("ip netns del " + ns_a_);
      run_quiet("ip netns del " + ns_b_);
    }
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
    return rep;
  }

 private:
  void start_udp() {
    const auto base = static_cast<std::uint16_t>(30000u + static_cast<unsigned>(getpid() % 5000) * 4u + (id_ % 2u) * 2u);
    pin_to(cpu_a_);
    t_ = make_udp_transport(base, static_cast<std::uint16_t>(base + 1));
    spawn({"peer", "--transport", "kernel-udp", "--role", peer_idle_ == "busy" ? "peer" : "block", "--udp-port",
           std::to_string(base + 1), "--cpu", std::to_string(cpu_b_)},
          "");
  }

  std::string cluster_toml(const Options& opt, std::size_t max_size) const {
    const bool jumbo = max_size > config::max_payload(1500);
    // A longer path (memif, hops_ > 1): 1 -ring- 3 -ring- ... -ring- F -memif- 2, the
    // forwarders 3..hops_+1 in this process.
    const int last_fwd = hops_ + 1;
    auto ring_to = [&](int a, int b) {
      return fmt::format("kind = \"ring\"\n  pair = \"h{}f{}x{}\"\n  peers = [{}]", tag_, std::min(a, b), std::max(a, b), b);
    };
    auto port = [&](int self) -> std::string {
      if (hops_ > 1 && self == 1) return ring_to(1, 3);
      const int peer = hops_ > 1 ? last_fwd : 3 - self;
      if (kind_ == "ring") return fmt::format("kind = \"ring\"\n  pair = \"h{}\"\n  peers = [{}]", tag_, peer);
      if (kind_ == "memif")
        return fmt::format("kind = \"memif\"\n  socket = \"{}/link.memif\"\n  role = \"{}\"\n  peers = [{}]", dir_,
                           self == 1 ? "server" : "client", peer);
      if (kind_ == "pci")
        return fmt::format("kind = \"pci\"\n  address = \"{}\"\n  peers = [{}]", self == 1 ? opt.pci_a : opt.pci_b,
                           peer);
      return fmt::format("kind = \"{}\"\n  iface = \"nvh{}{}\"\n  rx_desc = 4096\n  peers = [{}]", kind_, self, tag_,
                         peer);
    };
    std::string out =
        // The name gives the nodes' EAL file prefixes: nerve-perf-<pid>-<id>-<node>.
        // Heartbeats run as in production; a peer that loses its core for a few ms while
        // the harness shares two CPUs with it is not declared down (100 ms of silence is).
        fmt::format("[cluster]\nname = \"perf-{}\"\nmtu = {}\nheartbeat_miss = 100\n", run_,
                    jumbo && kind_ != "af_xdp" ? 9000 : 1500);
    for (int id = 3; hops_ > 1 && id <= last_fwd; ++id) {
      out += fmt::format("\n[[node]]\nid = {0}\nmac = \"02:00:00:00:0a:{0:02x}\"\nip = \"198.18.10.{0}\"\n"
                         "control_socket = \"{1}/n{0}.sock\"\nidle = \"busy\"\nmemory_mb = 512\ncores = [{2}]\n",
                         id, dir_, cpu_a_);
      out += "  [[node.port]]\n  " + ring_to(id, id == 3 ? 1 : id - 1) + "\n";
      if (id < last_fwd) out += "  [[node.port]]\n  " + ring_to(id, id + 1) + "\n";
      else
        out += fmt::format("  [[node.port]]\n  kind = \"memif\"\n  socket = \"{}/link.memif\"\n  role = \"server\"\n"
                           "  peers = [2]\n", dir_);
    }
    for (int id = 1; id <= 2; ++id)
      out += fmt::format(
          "\n[[node]]\nid = {0}\nmac = \"02:00:00:00:0a:0{0}\"\nip = \"198.18.10.{0}\"\ncontrol_socket = "
          "\"{1}/n{0}.sock\"\n{5}\nmemory_mb = 512\ncores = [{2}]\nprofile = \"{3}\"\n  [[node.port]]\n  "
          "{4}\n",
          id, dir_, id == 1 ? cpu_a_ : cpu_b_, kind_ == "pci" ? "production" : "dev", port(id),
          id == 1 || peer_idle_ == "busy" ? "idle = \"busy\""
          : peer_idle_ == "backoff"       ? "idle = \"backoff\"\nbusy_lanes = []"
                                          : "idle = \"backoff\"\nbusy_lanes = [0]");
    return out;
  }

  void start_nerve(const Options& opt, std::size_t max_size) {
    dir_ = "/tmp/nerve-perf-" + run_;
    std::filesystem::create_directories(dir_);
    const std::string cfg = dir_ + "/cluster.toml";
    std::ofstream(cfg) << cluster_toml(opt, max_size);
    const auto cluster = config::load_file(cfg);
    if (kind_ == "af_packet" || kind_ == "af_xdp") {
      ns_a_ = "nvperf-a-" + run_;
      ns_b_ = "nvperf-b-" + run_;
      for (const auto& ns : {ns_a_, ns_b_})
        if (run_quiet("ip netns add " + ns) != 0) throw std::runtime_error("ip netns add failed (root needed)");
      run_quiet(fmt::format("ip link add nvh1{} netns {} type veth peer name nvh2{} netns {}", tag_, ns_a_, tag_, ns_b_));
      for (auto [ns, i] : {std::pair{ns_a_, 1}, std::pair{ns_b_, 2}}) {
        run_quiet(fmt::format("ip netns exec {} sysctl -qw net.ipv6.conf.all.disable_ipv6=1", ns));
        if (cluster.mtu > 1500) run_quiet(fmt::format("ip -n {} link set nvh{}{} mtu {}", ns, i, tag_, cluster.mtu));
        // The node's address on its interface: peers send to it (af_xdp cannot set it itself).
        run_quiet(fmt::format("ip -n {} link set nvh{}{} address 02:00:00:00:0a:0{}", ns, i, tag_, i));
        run_quiet(fmt::format("ip -n {} link set nvh{}{} up", ns, i, tag_));
      }
    }
    drivers::Eal& eal = process_eal(opt, kind_, cpu_a_, cpu_b_);
    NodeOptions no;
    no.link_wait = std::chrono::milliseconds(15000);
    if (stack_ == "raw") {
      if (kind_ == "ring") throw std::invalid_argument("--floor: the ring transport's peer shares this process");
      spawn({"peer", "--transport", kind_, "--stack", "raw", "--role", "peer", "--config", cfg, "--node", "2"}, ns_b_);
      auto open_local = [&] { start_raw_end(cluster, 1, eal); };
      if (!ns_a_.empty()) {
        NetnsGuard in(ns_a_);
        open_local();
      } else {
        open_local();
      }
      t_ = make_raw_transport(*raw_port_, raw_pool_->get(), raw_endpoints(cluster, 1), config::max_payload(cluster.mtu),
                              kind_);
      return;
    }
    if (kind_ == "ring" && opt.sidecar > 0) throw std::invalid_argument("--sidecar-hz: memif, af_packet or af_xdp");
    if (kind_ == "ring") {
      // Both nodes here; the echo node runs on the EAL's second lcore.
      echo_node_ = std::make_unique<Node>(cluster, 2, eal);
      node_ = std::make_unique<Node>(cluster, 1, eal);
      echo_t_ = make_node_transport(*echo_node_, 1, kind_);
      const unsigned worker = rte_get_next_lcore(rte_get_main_lcore(), 1, 0);
      if (worker >= RTE_MAX_LCORE) throw std::runtime_error("the ring transport needs two cores");
      rte_eal_remote_launch(
          [](void* p) -> int {
            auto* s = static_cast<Session*>(p);
            peer_loop(*s->echo_t_, s->ring_report_, s->ring_stop_);
            return 0;
          },
          this, worker);
      lcore_peer_ = true;
    } else {
      std::vector<std::string> args = {"peer", "--transport", kind_, "--role", "peer", "--config", cfg, "--node", "2"};
      spawn(args, ns_b_);
      for (int id = hops_ + 1; hops_ > 1 && id >= 3; --id)
        forwarders_.push_back(std::make_unique<Node>(cluster, static_cast<NodeId>(id), eal, no));
      if (opt.sidecar > 0) start_sidecar(cluster, cfg, no);
      if (!ns_a_.empty()) {
        NetnsGuard in(ns_a_);
        node_ = std::make_unique<Node>(cluster, 1, eal, no);
      } else {
        node_ = std::make_unique<Node>(cluster, 1, eal, no);
      }
    }
    std::vector<Node*> also;
    for (auto& f : forwarders_) also.push_back(f.get());
    t_ = make_node_transport(*node_, 2, kind_, also, opt.reliable);
  }

  // The raw end of node `id`: its port, configured as the node would configure it (same
  // queues, descriptors, MTU, address), with a pool of its own.
  void start_raw_end(const config::Cluster& cluster, std::uint16_t id, drivers::Eal& eal) {
    const config::Node& n = cluster.node(id);
    const config::Port& pc = n.ports.front();
    raw_pool_ = std::make_unique<drivers::Mempool>(fmt::format("raw{}-{}", id, id_), n.mbufs, eal.socket(), cluster.mtu);
    const bool paired = pc.kind == config::PortKind::kRing || pc.kind == config::PortKind::kMemif ||
                        pc.kind == config::PortKind::kPci;
    raw_port_ = std::make_unique<drivers::Port>(pc, fmt::format("raw{}p{}", id, id_), raw_pool_->get(),
                                                paired ? wire::kPriorities : 1, n.mac, id == 1, cluster.mtu);
    raw_port_->wait_link(std::chrono::milliseconds(15000));
  }

  // nerve-telemetry (beside nerve-perf in the build) sampling node 1 through a stats region,
  // as nerved and its sidecar run. Its tier report lands in the run's directory.
  void start_sidecar(const config::Cluster& cluster, const std::string& cfg, NodeOptions& no) {
    const config::Node& n = cluster.node(1);
    telemetry::Region::Identity id{n.id, n.name, cluster.name, {}, {"0"}};
    for (unsigned l = 0; l < wire::kPriorities; ++l) id.lane_budget_ns[l] = std::uint64_t{n.lane_budget_us[l]} * 1000u;
    const std::string path = dir_ + "/n1.stats";
    region_ = std::make_unique<telemetry::Region>(path, id);
    region_->set_running();
    no.region = region_.get();
    const auto exe = std::filesystem::read_symlink("/proc/self/exe").parent_path().parent_path() / "apps" /
                     "nerve-telemetry";
    if (!std::filesystem::exists(exe)) throw std::runtime_error(fmt::format("--sidecar-hz: {} is not built", exe.string()));
    std::vector<std::string> args = {exe.string(), "--config", cfg, "--node", "1", "--region", path,
                                     "--report", dir_ + "/sidecar.json", "--log-level", "warn"};
    sidecar_ = ::fork();
    if (sidecar_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      _exit(127);
    }
  }
  void stop_sidecar() {
    if (sidecar_ <= 0) return;
    ::kill(sidecar_, SIGTERM);
    ::waitpid(sidecar_, nullptr, 0);
    sidecar_ = -1;
    std::ifstream rep(dir_ + "/sidecar.json");
    const auto j = json::parse(rep, nullptr, false);
    if (!j.is_discarded() && j.contains("process"))
      fmt::print(stderr, "nerve-perf: sidecar CPU {:.3f} s in {:.1f} s: {:.2f} % of a core\n",
                 j["process"].value("cpu_seconds", 0.0), j["process"].value("wall_seconds", 0.0),
                 100 * j["process"].value("share_of_a_core", 0.0));
    if (!j.is_discarded() && j.contains("tiers"))
      for (const auto& [tier, t] : j["tiers"].items())
        if (t.value("ticks", 0) > 0)
          fmt::print(stderr, "nerve-perf: sidecar {} tier: {} ticks, late p50 {:.1f} us p99 {:.1f} us max {:.1f} us\n",
                     tier, t.value("ticks", 0), t.value("late_p50_us", 0.0), t.value("late_p99_us", 0.0),
                     t.value("late_max_us", 0.0));
  }

  void spawn(const std::vector<std::string>& args, const std::string& netns) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
    const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
    std::vector<std::string> argv_s;
    if (!netns.empty()) argv_s = {"ip", "netns", "exec", netns};
    argv_s.push_back(self);
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    child_ = ::fork();
    if (child_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // never outlive the harness, however it ends
      ::dup2(fds[1], STDOUT_FILENO);
      std::vector<char*> argv;
      for (auto& s : argv_s) argv.push_back(s.data());
      argv.push_back(nullptr);
      ::execvp(argv[0], argv.data());
      _exit(127);
    }
    ::close(fds[1]);
    pipe_ = fds[0];
  }

  // Pings until the peer answers, so no scenario starts against a peer that is not polling.
  // One token probe per lane: with a queue per lane, each lane's backlog drains on its own.
  void wait_peer() {
    unsigned answered = 0;  // bit per lane
    const std::uint64_t token = ~0ull - 1 - barriers_++;
    const RxFn rx = [&](const Probe& p, std::size_t, std::uint64_t) {
      if (p.kind == kWarmup && p.seq == token) answered |= 1u << p.prio;
    };
    constexpr unsigned kAll = (1u << wire::kPriorities) - 1;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (answered != kAll) {
      check_interrupt();
      if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error(kind_ + ": the peer never answered");
      if (child_ > 0 && ::waitpid(child_, nullptr, WNOHANG) == child_) {
        child_ = -1;
        throw std::runtime_error(kind_ + ": the peer process exited during start-up");
      }
      // Ask on every lane not yet answered: every 20 ms until the peer is first up (it may
      // not be polling yet), then every second (a lossy kernel transport may drop a probe).
      for (unsigned l = 0; l < wire::kPriorities; ++l) {
        if (answered & (1u << l)) continue;
        Probe p;
        p.seq = token;
        p.kind = kWarmup;
        p.prio = static_cast<std::uint8_t>(l);
        t_->send(p, kProbeLen);
      }
      t_->flush();
      const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(barriers_ == 1 ? 20 : 1000);
      while (answered != kAll && std::chrono::steady_clock::now() < until) t_->poll(rx, false);
    }
  }
  std::uint64_t barriers_ = 0;

  std::string kind_;
  std::string stack_;
  std::string peer_idle_;
  const Clock& tsc_;
  unsigned cpu_a_ = 0, cpu_b_ = 0;
  std::string tag_, dir_, ns_a_, ns_b_;
  static inline unsigned serial_ = 0;  // sessions started by this process
  unsigned id_ = serial_++;
  // <pid>-<id>: names the session's namespaces, /tmp directory and EAL prefixes, so
  // reap_stale_runs() can tell a dead run's leftovers from a live one's.
  std::string run_ = fmt::format("{}-{}", getpid(), id_);
  int hops_ = 1;
  std::unique_ptr<telemetry::Region> region_;  // declared before the nodes: outlives them
  pid_t sidecar_ = -1;
  std::unique_ptr<Node> node_, echo_node_;
  std::vector<std::unique_ptr<Node>> forwarders_;  // the path's middle (hops_ > 1)
  std::unique_ptr<drivers::Mempool> raw_pool_;
  std::unique_ptr<drivers::Port> raw_port_;
  std::unique_ptr<Transport> t_, echo_t_;
  pid_t child_ = -1;
  int pipe_ = -1;
  bool lcore_peer_ = false, finished_ = false;
  std::atomic<bool> ring_stop_{false};
  PeerReport ring_report_;
};

// ---- progress --------------------------------------------------------------------------------

class Progress {
 public:
  Progress(bool enabled, std::string label, double expected_s)
      : on_(enabled && expected_s > 2.0 && ::isatty(STDERR_FILENO)), label_(std::move(label)) {}
  ~Progress() {
    if (on_ && shown_) fmt::print(stderr, "\r{:<70}\r", "");
  }
  void update(double fraction) {
    if (!on_) return;
    const int pct = static_cast<int>(fraction * 100);
    if (pct == last_) return;
    last_ = pct;
    shown_ = true;
    const int filled = pct * 30 / 100;
    fmt::print(stderr, "\r{:<24} [{:#<{}}{:<{}}] {:3}%", label_, "", filled, "", 30 - filled, pct);
  }

 private:
  bool on_;
  bool shown_ = false;
  int last_ = -1;
  std::string label_;
};

// ---- scenarios -----------------------------------------------------------------------------------

std::uint64_t measured_count(const Options& o, double rate, double default_s, std::uint64_t default_n) {
  if (o.count) return o.count;
  if (o.seconds > 0) return rate > 0 ? static_cast<std::uint64_t>(o.seconds * rate) : 0;
  return rate > 0 ? static_cast<std::uint64_t>(default_s * rate) : default_n;
}

void fill_rates(Row& r, double seconds) {
  const std::uint64_t delivered = r.latency->count();
  r.rate_mps = seconds > 0 ? static_cast<double>(delivered) / seconds : 0;
  r.gbps = r.rate_mps * static_cast<double>(r.frame_bytes) * 8 / 1e9;
  r.deadline_misses = r.latency->count_above(stats::kDefaultBudgetNs[static_cast<std::size_t>(r.priority)]);
}

// P-lane round trips; closed loop (one in flight), or open loop at opt.rate; optionally with
// background floods on other lanes from the same sender.
Row pingpong(Session& s, const Options& o, int prio, std::size_t size, const std::vector<int>& background,
             const std::string& scenario, std::uint16_t point = 0) {
  Transport& t = s.t();
  const Clock& tsc = s.tsc();
  Row row;
  row.scenario = scenario;
  row.transport = t.name();
  row.priority = prio;
  row.size = size;
  row.frame_bytes = t.frame_bytes(size);
  row.offered_mps = o.rate;
  row.peer_idle = o.peer_idle;
  row.gap_us = o.gap_us;
  const std::uint64_t gap_ns = static_cast<std::uint64_t>(o.gap_us * 1000);
  const bool open = o.rate > 0;
  const std::uint64_t n = measured_count(o, o.rate, 0, o.seconds > 0 ? ~0ull : 100000);
  const std::uint64_t total = o.warmup + n;
  const std::uint64_t timeout = (kReplyTimeoutNs);
  const std::uint64_t deadline_ns = o.seconds > 0 && !open ? tsc.now_ns() + (static_cast<std::uint64_t>(
                                                                             (o.seconds) * 1e9)) : ~0ull;
  std::uint64_t replies = 0, last_seq = ~0ull;
  const RxFn rx = [&](const Probe& p, std::size_t, std::uint64_t now) {
    if (p.kind != kPing && p.kind != kWarmup) return;
    if (p.seq >= ~0ull - 1'000'000) return;  // a late answer to a barrier
    last_seq = p.seq;
    if (p.kind == kPing) {
      ++replies;
      row.latency->record((now - p.stamp_ns));
    }
  };
  // Background flood: as fast as the TX path takes it, or on its own schedule.
  std::uint64_t flood_sent = 0, flood_seq = 0;
  Schedule flood_sched(o.background_rate, 1.0, tsc.now_ns());
  auto flood = [&] {
    if (background.empty()) return;
    // Unpaced: kFloodPerStep per loop iteration (the flood's own generation is time the pinger
    // does not read its RX queue: it belongs to the harness, not to the node).
    const std::uint64_t due = flood_sched.open_loop() ? flood_sched.due_count(flood_seq, ~0ull, tsc.now_ns()) : kFloodPerStep;
    for (std::uint64_t k = 0; k < due; ++k) {
      Probe f;
      f.seq = flood_seq;
      f.kind = kFlood;
      f.point = point;
      f.prio = static_cast<std::uint8_t>(background[flood_seq % background.size()]);
      f.stamp_ns = tsc.now_ns();
      if (!t.send(f, size)) break;
      ++flood_seq;
      ++flood_sent;
    }
  };

  Progress bar(o.progress, fmt::format("{} {} P{}", scenario, t.name(), prio),
               o.seconds > 0 ? o.seconds : static_cast<double>(total) * (open ? 1.0 / o.rate : 5e-6));
  const std::uint64_t start = tsc.now_ns();
  std::uint64_t measured_start = start;
  Schedule sched(o.rate, 1.0, start);
  std::uint64_t i = 0;
  if (!open) {
    for (; i < total && tsc.now_ns() < deadline_ns; ++i) {
      check_interrupt();
      if (i == o.warmup) measured_start = tsc.now_ns();
      Probe p;
      p.seq = i;
      p.prio = static_cast<std::uint8_t>(prio);
      p.kind = i < o.warmup ? kWarmup : kPing;
      p.stamp_ns = tsc.now_ns();
      send_retrying(t, p, size, rx);
      t.flush();
      while (last_seq != i && tsc.now_ns() - p.stamp_ns < timeout) {
        t.poll(rx, false);
        flood();
      }
      if (gap_ns) {  // an idle gap: the far end may back off before the next ping
        const std::uint64_t until = tsc.now_ns() + gap_ns;
        while (tsc.now_ns() < until) t.poll(rx, false);
      }
      if ((i & 1023) == 0) bar.update(o.seconds > 0 ? static_cast<double>(tsc.now_ns() - start) / static_cast<double>(
                                                                 deadline_ns - start)
                                                     : static_cast<double>(i) / static_cast<double>(total));
    }
  } else {
    // Open loop: pings leave on schedule whether or not earlier ones were answered.
    while (i < total) {
      check_interrupt();
      const std::uint64_t now = tsc.now_ns();
      for (std::uint64_t k = sched.due_count(i, total, now); k > 0; --k, ++i) {
        Probe p;
        p.seq = i;
        p.prio = static_cast<std::uint8_t>(prio);
        p.kind = i < o.warmup ? kWarmup : kPing;
        p.stamp_ns = sched.due(i);
        if (i == o.warmup) measured_start = p.stamp_ns;
        send_retrying(t, p, size, rx);
      }
      t.poll(rx, false);
      flood();
      if ((i & 1023) == 0) bar.update(static_cast<double>(i) / static_cast<double>(total));
    }
    const std::uint64_t end = tsc.now_ns() + timeout;
    while (replies < i - o.warmup && tsc.now_ns() < end) t.poll(rx, false);
  }
  const double seconds = (tsc.now_ns() - measured_start) / 1e9;
  row.sent = i > o.warmup ? i - o.warmup : 0;
  row.lost = row.sent - std::min(row.sent, replies);
  row.metric = "rtt";
  fill_rates(row, seconds);
  if (!background.empty()) {
    row.has_background = true;
    row.background_priorities = background;
    row.background_seconds = (tsc.now_ns() - start) / 1e9;
    row.background_sent_mps = static_cast<double>(flood_sent) / row.background_seconds;
  }
  return row;
}

// One-way probes on a schedule (or as fast as possible) for sweep point `point`; the peer
// measures them. Returns the row without latency (filled from the peer's report).
Row oneway_send(Session& s, const Options& o, int prio, std::size_t size, double rate, std::uint16_t point,
                double default_seconds) {
  Transport& t = s.t();
  const Clock& tsc = s.tsc();
  Row row;
  row.scenario = "oneway";
  row.transport = t.name();
  row.priority = prio;
  row.size = size;
  row.frame_bytes = t.frame_bytes(size);
  row.offered_mps = rate;
  row.metric = "one-way";
  const RxFn drop = [](const Probe&, std::size_t, std::uint64_t) {};
  // Warm-up: caches, mbuf pools, the peer's branch predictors.
  for (std::uint64_t w = 0; w < o.warmup; ++w) {
    Probe p;
    p.kind = kWarmup;
    p.seq = w;
    p.prio = static_cast<std::uint8_t>(prio);
    send_retrying(t, p, size, drop);
    if ((w & 31) == 31) t.poll(drop, false);
  }
  const double secs = o.seconds > 0 ? o.seconds : default_seconds;
  const std::uint64_t total = o.count && rate > 0 ? o.count : (rate > 0 ? static_cast<std::uint64_t>(secs * rate) : ~0ull);
  const std::uint64_t start = tsc.now_ns();
  const std::uint64_t stop_ns = (o.count && rate <= 0) ? ~0ull : start + (static_cast<std::uint64_t>(secs * 1e9));
  const std::uint64_t limit = (o.count && rate <= 0) ? o.count : total;
  Schedule sched(rate, 1.0, start);
  Progress bar(o.progress, fmt::format("oneway {} {} B", t.name(), size), secs);
  std::uint64_t i = 0;
  while (i < limit) {
    check_interrupt();
    const std::uint64_t now = tsc.now_ns();
    if (now >= stop_ns && rate <= 0) break;
    const std::uint64_t due = sched.open_loop() ? sched.due_count(i, limit, now) : std::min<std::uint64_t>(32, limit - i);
    for (std::uint64_t k = 0; k < due; ++k) {
      Probe p;
      p.seq = i;
      p.kind = kOneway;
      p.point = point;
      p.prio = static_cast<std::uint8_t>(prio);
      p.stamp_ns = sched.open_loop() ? sched.due(i) : tsc.now_ns();
      // A batch (unpaced, or paced and behind) goes out together; poll() below sends the rest.
      if (!t.send(p, size, k + 1 < due)) break;  // pushed back: the rest stay due (open loop) or wait
      ++i;
    }
    t.poll(drop, false);
    if ((i & 4095) == 0) bar.update(static_cast<double>(now - start) / static_cast<double>((static_cast<std::uint64_t>(secs * 1e9))));
  }
  t.flush();
  row.sent = i;
  row.offered_mps = rate > 0 ? rate : static_cast<double>(i) / ((tsc.now_ns() - start) / 1e9);
  row.rate_mps = static_cast<double>(i) / ((tsc.now_ns() - start) / 1e9);  // until the report says otherwise
  s.barrier();  // the next point starts with the peer's queues empty
  return row;
}

void attach_report(std::vector<Row>& rows, const std::vector<std::uint16_t>& points, PeerReport& rep,
                   const std::vector<double>& seconds) {
  for (std::size_t k = 0; k < rows.size(); ++k) {
    Row& r = rows[k];
    auto it = rep.points.find(points[k]);
    if (it != rep.points.end()) r.latency = std::shared_ptr<stats::Histogram>(std::move(it->second.h));
    r.lost = r.sent - std::min(r.sent, r.latency->count());
    fill_rates(r, seconds[k]);
  }
}

std::size_t max_of(const std::vector<std::size_t>& v) { return *std::max_element(v.begin(), v.end()); }

}  // namespace

drivers::Eal& shared_eal(const Options& opt, const std::string& transport, unsigned cpu_a, unsigned cpu_b) {
  return process_eal(opt, transport, cpu_a, cpu_b);
}
void throw_if_interrupted() { check_interrupt(); }
int failover_sink(Node& node, const std::atomic<bool>& stop);

const std::vector<unsigned>& harness_cpus() {
  static const std::vector<unsigned> cpus = drivers::cpus_on_node(-1);
  return cpus;
}

void install_interrupt_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  for (const int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);
}

unsigned reap_stale_runs() {
  // <prefix><pid>[-<serial>] whose process no longer exists.
  auto dead_run = [](const std::string& name, std::string_view prefix) {
    // Only names this harness makes (digits and dashes after the prefix): they reach a shell.
    if (!name.starts_with(prefix) ||
        name.find_first_not_of("0123456789-", prefix.size()) != std::string::npos)
      return false;
    char* end = nullptr;
    const long pid = std::strtol(name.c_str() + prefix.size(), &end, 10);
    if (pid <= 0 || end == name.c_str() + prefix.size() || (*end != '\0' && *end != '-')) return false;
    return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
  };
  unsigned reaped = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/var/run/netns", ec)) {
    const std::string n = e.path().filename().string();
    if (dead_run(n, "nvperf-a-") || dead_run(n, "nvperf-b-") || dead_run(n, "nvperf-c-") || dead_run(n, "nvperf-d-")) reaped += run_quiet("ip netns del " + n) == 0;
  }
  for (const auto& [dir, prefix] : {std::pair{"/tmp", "nerve-perf-"}, std::pair{"/var/run/dpdk", "nerve-perf-"}})
    for (const auto& e : std::filesystem::directory_iterator(dir, ec))
      if (dead_run(e.path().filename().string(), prefix)) reaped += std::filesystem::remove_all(e.path(), ec) > 0;
  return reaped;
}

namespace {

// The sessions of one transport: nerve's, and with --floor the bare DPDK loop's on the same
// kind of port, taking turns (use() pauses the others' peers).
class Stacks {
 public:
  Stacks(const Options& o, const std::string& transport, std::size_t max_size) {
    s_.push_back(std::make_unique<Session>(o, transport, max_size, "nerve"));
    if (o.floor && transport != "kernel-udp") {
      s_.front()->pause();
      s_.push_back(std::make_unique<Session>(o, transport, max_size, "raw"));
      s_.back()->pause();
    }
  }
  std::size_t size() const { return s_.size(); }
  Session& use(std::size_t k) {
    if (s_.size() > 1)
      for (std::size_t j = 0; j < s_.size(); ++j)
        if (j != k) s_[j]->pause();
    s_[k]->resume();
    return *s_[k];
  }
  Session& at(std::size_t k) { return *s_[k]; }

 private:
  std::vector<std::unique_ptr<Session>> s_;
};

Row tagged(Row r, const Session& s) {
  r.stack = s.stack();
  r.hops = s.hops();
  return r;
}

void check_size(std::size_t size, Session& s, const std::string& transport) {
  if (size < kProbeLen || size > s.t().max_payload())
    throw std::invalid_argument(fmt::format("--size {}: {} carries {} to {} bytes", size, transport, kProbeLen,
                                            s.t().max_payload()));
}

// The knee of each (size, priority) of one stack's throughput rows: the highest offered rate
// with no loss and p99 within the limit (the lane's budget unless --p99-limit-us).
void mark_knees(const Options& o, std::vector<Row>& rows) {
  for (std::size_t k = 0; k < rows.size();) {
    std::size_t e = k;
    while (e < rows.size() && rows[e].size == rows[k].size && rows[e].priority == rows[k].priority) ++e;
    const std::uint64_t limit = o.p99_limit_us > 0 ? static_cast<std::uint64_t>(o.p99_limit_us * 1000)
                                                   : stats::kDefaultBudgetNs[static_cast<std::size_t>(rows[k].priority)];
    std::size_t best = e;
    // The unpaced maximum is not a candidate: it is stamped at send time, so it cannot see
    // the queueing a schedule would reveal.
    for (std::size_t j = k; j < e; ++j)
      if (!rows[j].max_point && rows[j].lost == 0 && rows[j].latency->count() > 0 &&
          rows[j].latency->percentile(99) <= limit && (best == e || rows[j].offered_mps > rows[best].offered_mps))
        best = j;
    if (best != e) rows[best].knee = true;
    k = e;
  }
}

// Rows of several stacks, one after another row by row (nerve, raw, nerve, raw, ...).
std::vector<Row> interleave(std::vector<std::vector<Row>>& per) {
  std::vector<Row> out;
  for (std::size_t i = 0;; ++i) {
    bool any = false;
    for (auto& rows : per)
      if (i < rows.size()) {
        out.push_back(rows[i]);
        any = true;
      }
    if (!any) return out;
  }
}

}  // namespace

std::vector<Row> run_scenario(const Options& o, const std::string& transport) {
  if (o.scenario == "pingpong" && (o.hops.size() > 1 || o.hops.front() > 1)) {
    // One session per path length, one after another.
    std::vector<Row> rows;
    for (int h : o.hops) {
      Options oh = o;
      oh.hops = {1};
      oh.hop_count = h;
      auto more = run_scenario(oh, transport);
      rows.insert(rows.end(), more.begin(), more.end());
    }
    return rows;
  }
  Stacks st(o, transport, max_of(o.sizes));
  std::vector<std::vector<Row>> per(st.size());
  if (o.scenario == "pingpong") {
    for (auto size : o.sizes) {
      check_size(size, st.at(0), transport);
      for (int p : o.priorities)
        for (std::size_t k = 0; k < st.size(); ++k) {
          Session& s = st.use(k);
          per[k].push_back(tagged(pingpong(s, o, p, size, {}, "pingpong"), s));
        }
    }
  } else if (o.scenario == "isolation") {
    const std::size_t size = o.sizes.front();
    check_size(size, st.at(0), transport);
    for (std::size_t k = 0; k < st.size(); ++k) {
      Session& s = st.use(k);
      per[k].push_back(tagged(pingpong(s, o, 0, size, {}, "isolation"), s));
      per[k].back().has_background = true;  // the idle row: an empty background
    }
    std::uint16_t point = 1;
    for (int bg : o.background) {
      for (std::size_t k = 0; k < st.size(); ++k) {
        Session& s = st.use(k);
        per[k].push_back(tagged(pingpong(s, o, 0, size, {bg}, "isolation", point), s));
        s.barrier();  // the flood's backlog lands before the next row (and before the count)
      }
      ++point;
    }
    // The background rate reported is what the peer received, not what the sender offered.
    for (std::size_t k = 0; k < st.size(); ++k) {
      const PeerReport rep = st.use(k).finish();
      for (std::size_t j = 1; j < per[k].size(); ++j) {
        const auto it = rep.points.find(static_cast<std::uint16_t>(j));
        const std::uint64_t got = it == rep.points.end() ? 0 : it->second.flood;
        per[k][j].background_rate_mps = static_cast<double>(got) / per[k][j].background_seconds;
      }
    }
  } else if (o.scenario == "oneway" || o.scenario == "throughput") {
    std::vector<std::vector<std::uint16_t>> points(st.size());
    std::vector<std::vector<double>> secs(st.size());
    std::uint16_t point = 0;
    auto record = [&](std::size_t k, Row r, const std::string& scenario) {
      r.scenario = scenario;
      secs[k].push_back(static_cast<double>(r.sent) / r.offered_mps);
      points[k].push_back(point);
      per[k].push_back(tagged(std::move(r), st.at(k)));
    };
    for (auto size : o.sizes) {
      check_size(size, st.at(0), transport);
      for (int p : o.priorities) {
        if (o.scenario == "oneway") {
          for (std::size_t k = 0; k < st.size(); ++k)
            record(k, oneway_send(st.use(k), o, p, size, o.rate > 0 ? o.rate : 100000, point, 1.0), "oneway");
          ++point;
          continue;
        }
        // Throughput: as fast as the sender can, then a sweep of offered loads below that
        // (each stack swept against its own maximum).
        std::vector<double> capacity(st.size());
        for (std::size_t k = 0; k < st.size(); ++k) {
          Row max = oneway_send(st.use(k), o, p, size, 0, point, 1.0);
          max.max_point = true;
          capacity[k] = max.offered_mps;
          record(k, std::move(max), "throughput");
        }
        ++point;
        for (double f : o.sweep) {
          for (std::size_t k = 0; k < st.size(); ++k)
            record(k, oneway_send(st.use(k), o, p, size, capacity[k] * f, point, 0.5), "throughput");
          ++point;
        }
      }
    }
    for (std::size_t k = 0; k < st.size(); ++k) {
      PeerReport rep = st.use(k).finish();
      attach_report(per[k], points[k], rep, secs[k]);
      if (o.scenario == "throughput") mark_knees(o, per[k]);
    }
  } else {
    throw std::invalid_argument("unknown scenario " + o.scenario);
  }
  return interleave(per);
}

int peer_main(const std::string& transport, const std::string& stack, const std::string& role,
              const std::string& config_path, int node_id, int udp_port, int cpu) {
  struct sigaction sa {};
  sa.sa_handler = on_peer_signal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  Clock::tsc();  // calibrated now, before the loop
  PeerReport rep;
  if (transport == "kernel-udp") {
    if (cpu >= 0) pin_to(static_cast<unsigned>(cpu));
    auto t = make_udp_transport(static_cast<std::uint16_t>(udp_port), 0, role == "block");
    peer_loop(*t, rep, g_peer_stop);
  } else {
    const auto cluster = config::load_file(config_path);
    const auto& self = cluster.node(static_cast<NodeId>(node_id));
    auto eo = drivers::eal_options_for(cluster, self);
    eo.log_level = "error";
    drivers::Eal eal(eo);
    if (stack == "raw") {
      const config::Port& pc = self.ports.front();
      drivers::Mempool pool(fmt::format("rawpeer{}", node_id), self.mbufs, eal.socket(), cluster.mtu);
      const bool paired = pc.kind == config::PortKind::kMemif || pc.kind == config::PortKind::kPci;
      drivers::Port port(pc, fmt::format("rawpeer{}", node_id), pool.get(), paired ? wire::kPriorities : 1, self.mac,
                         node_id == 1, cluster.mtu);
      port.wait_link(std::chrono::milliseconds(15000));
      auto t = make_raw_transport(port, pool.get(), raw_endpoints(cluster, self.id), config::max_payload(cluster.mtu),
                                  transport);
      peer_loop(*t, rep, g_peer_stop);
    } else if (role == "sink") {
      NodeOptions no;
      no.link_wait = std::chrono::milliseconds(15000);
      Node node(cluster, self.id, eal, no);
      return failover_sink(node, g_peer_stop);
    } else if (role == "forward") {
      // The forward scenario's forwarder: a node and nothing else, busy-polled, counting the
      // cycles of its polls that found work (as the node's own busy time does) and reporting
      // them per forwarded frame when it stops.
      NodeOptions no;
      no.link_wait = std::chrono::milliseconds(15000);
      Node node(cluster, self.id, eal, no);
      std::uint64_t busy = 0;
      while (!g_peer_stop.load(std::memory_order_relaxed)) {
        const std::uint64_t t0 = rte_rdtsc();
        const unsigned work = node.poll();
        if (work != 0) busy += rte_rdtsc() - t0;
        node.idle_step(work);
      }
      node.flush();
      const stats::Snapshot s = node.snapshot();
      std::uint64_t frames = 0;
      for (const std::uint64_t f : s.forwarded) frames += f;
      fmt::print("forwarder: busy cycles {} frames {} tsc_mhz {}\n", busy, frames, rte_get_tsc_hz() / 1'000'000);
      nlohmann::json refused = nlohmann::json::object();
      for (std::size_t k = 1; k < wire::kRefusalCount; ++k)
        if (s.refused[k] != 0) refused[std::string(wire::to_string(static_cast<wire::Refusal>(k)))] = s.refused[k];
      std::uint64_t dropped = 0;
      for (const std::uint64_t d : s.forward_dropped) dropped += d;
      if (dropped != 0) refused["forward_dropped"] = dropped;
      fmt::print("forwarder-refused {}\n", refused.dump());
      std::fflush(stdout);
      return 0;
    } else {
      NodeOptions no;
      no.link_wait = std::chrono::milliseconds(15000);
      Node node(cluster, self.id, eal, no);
      auto t = make_node_transport(node, static_cast<std::uint16_t>(3 - node_id), transport);
      peer_loop(*t, rep, g_peer_stop);
    }
  }
  fmt::print("{}\n", report_to_json(rep).dump());
  std::fflush(stdout);
  return 0;
}

}  // namespace nerve::perf
