// `nerve-perf forward`: how fast one node forwards, beside DPDK's own forwarding of the same
// links. A forwarder process on the second core joins two memif links (its two ports, the
// memif servers); this process drives the other ends with bare DPDK loops on the first core:
// port A sends 64-byte messages from node 1 to node 2 as fast as the forwarder takes them,
// port B counts what arrives. The forwarder is, in turn:
//   nerve            a node (nerve-perf peer --role forward): validate, dispatch, forward in
//                    place (MACs, TTL, IPv4 checksum), TX lanes;
//   testpmd-io       dpdk-testpmd --forward-mode=io: frames moved untouched, port 0 to 1;
//   testpmd-macswap  dpdk-testpmd --forward-mode=macswap: the MACs swapped on the way.
// Rounds interleave the three (nerve, io, macswap, nerve, ...) so the machine's drift falls on
// all alike. Frames are nerve frames (a forwarder refuses anything else), heartbeats off: the
// raw ends answer none.
#include <fcntl.h>
#include <fmt/format.h>
#include <rte_mbuf.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "eal.hpp"
#include "harness.hpp"
#include "nerve/clock.hpp"
#include "nerve/config.hpp"
#include "nerve/wire.hpp"
#include "port.hpp"

namespace nerve::perf {

drivers::Eal& shared_eal(const Options& opt, const std::string& transport, unsigned cpu_a, unsigned cpu_b);
void throw_if_interrupted();

namespace {

constexpr std::uint16_t kBurst = 32;
constexpr std::size_t kPayload = 64;

// Runs args with its output in `log`; its stdin is a pipe whose write end is returned in
// `*stdin_fd` (testpmd reads its stdin until a line or end of file before it exits).
pid_t spawn(const std::vector<std::string>& args, const std::string& log, int* stdin_fd) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("forward: pipe failed");
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ::dup2(out, STDOUT_FILENO);
    ::dup2(out, STDERR_FILENO);
    ::dup2(fds[0], STDIN_FILENO);
    std::vector<char*> argv;
    std::vector<std::string> copy = args;
    for (auto& s : copy) argv.push_back(s.data());
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    _exit(127);
  }
  ::close(fds[0]);
  *stdin_fd = fds[1];
  return pid;
}

// Stops a forwarder: a line on its stdin when it has one (testpmd then stops forwarding, prints
// its statistics and exits; SIGINT a second later if not), otherwise SIGINT (a node); SIGKILL
// after 5 s.
void stop(pid_t pid, int& stdin_fd) {
  const bool line = stdin_fd >= 0;
  if (line) {
    [[maybe_unused]] const auto n = ::write(stdin_fd, "\n", 1);
    ::close(stdin_fd);
    stdin_fd = -1;
  }
  if (pid <= 0) return;
  for (int i = 0; i < 500; ++i) {
    if (i == (line ? 100 : 0)) ::kill(pid, SIGINT);
    if (::waitpid(pid, nullptr, WNOHANG) == pid) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
}

// The forwarder's busy cycles per forwarded frame and its TSC rate (MHz), from its log: nerve's
// "forwarder: busy cycles B frames F tsc_mhz M", testpmd's "CPU cycles/packet=C (...) at M MHz
// Clock". Zeros when the log has neither.
std::pair<double, double> cycles_per_frame(const std::string& log) {
  std::ifstream in(log);
  std::string line;
  std::pair<double, double> out{0, 0};
  while (std::getline(in, line)) {
    unsigned long long busy = 0, frames = 0, mhz = 0;
    double cpp = 0;
    if (std::sscanf(line.c_str(), "forwarder: busy cycles %llu frames %llu tsc_mhz %llu", &busy, &frames, &mhz) == 3 &&
        frames != 0) {
      out = {static_cast<double>(busy) / static_cast<double>(frames), static_cast<double>(mhz)};
    } else if (const auto at = line.find("CPU cycles/packet="); at != std::string::npos &&
               std::sscanf(line.c_str() + at, "CPU cycles/packet=%lf", &cpp) == 1) {
      const auto clock = line.find(" at ");
      if (clock != std::string::npos) std::sscanf(line.c_str() + clock, " at %llu MHz", &mhz);
      out = {cpp, static_cast<double>(mhz)};
    }
  }
  return out;
}

// The last `max` bytes of a file.
std::string tail_of(const std::string& path, std::size_t max) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return {};
  const auto size = static_cast<std::size_t>(in.tellg());
  const std::size_t n = std::min(size, max);
  std::string out(n, '\0');
  in.seekg(static_cast<std::streamoff>(size - n));
  in.read(out.data(), static_cast<std::streamsize>(n));
  return out;
}

struct Round {
  std::uint64_t sent = 0, received = 0;
  double seconds = 0;
  std::string log;  // the forwarder's
};

}  // namespace

std::vector<Row> forward_bench(const Options& o) {
  const auto& cpus = harness_cpus();
  if (cpus.size() < 2) throw std::invalid_argument("forward: needs two CPUs (the forwarder's and this process's)");
  const unsigned cpu_a = cpus.front(), cpu_b = cpus.size() > 1 ? cpus[1] : cpus.front();
  const std::string run = fmt::format("{}-90", getpid());  // digits only: reap_stale_runs knows it
  const std::string dir = "/tmp/nerve-perf-" + run;
  std::filesystem::create_directories(dir);
  struct RemoveDir {
    std::string d;
    ~RemoveDir() {
      std::error_code ec;
      std::filesystem::remove_all(d, ec);
    }
  } remove_dir{dir};  // whatever happens; a failure's forwarder log is printed with the error
  const std::string sock_a = dir + "/a.memif", sock_b = dir + "/b.memif";
  const std::string cfg = dir + "/cluster.toml";
  // Node 3 forwards between node 1 (port A) and node 2 (port B); one queue per link.
  std::ofstream(cfg) << fmt::format(R"([cluster]
name = "perf-{0}"
heartbeat_hz = 0

[[node]]
id = 1
mac = "02:00:00:00:0b:01"
ip = "198.18.11.1"
control_socket = "{1}/n1.sock"
  [[node.port]]
  kind = "memif"
  socket = "{2}"
  role = "server"
  lanes = "software"
  peers = [3]

[[node]]
id = 2
mac = "02:00:00:00:0b:02"
ip = "198.18.11.2"
control_socket = "{1}/n2.sock"
  [[node.port]]
  kind = "memif"
  socket = "{3}"
  role = "server"
  lanes = "software"
  peers = [3]

[[node]]
id = 3
mac = "02:00:00:00:0b:03"
ip = "198.18.11.3"
control_socket = "{1}/n3.sock"
idle = "busy"
memory_mb = 512
cores = [{4}]
  [[node.port]]
  kind = "memif"
  socket = "{2}"
  role = "client"
  lanes = "software"
  peers = [1]
  [[node.port]]
  kind = "memif"
  socket = "{3}"
  role = "client"
  lanes = "software"
  peers = [2]
)",
                                    run, dir, sock_a, sock_b, cpu_b);
  const auto cluster = config::load_file(cfg);
  const config::Node& n1 = cluster.node(1);
  const config::Node& n2 = cluster.node(2);
  const config::Node& n3 = cluster.node(3);
  drivers::Eal& eal = shared_eal(o, "memif", cpu_a, cpu_b);
  static unsigned serial = 0;
  drivers::Mempool pool(fmt::format("fwd{}", serial++), 16383, eal.socket(), cluster.mtu);

  // The frame port A sends: node 1 to node 2, through node 3 (its MAC on link A).
  wire::Endpoints ep;
  ep.src_mac = n1.mac;
  ep.dst_mac = n3.mac;
  ep.src_ip = n1.ip;
  ep.dst_ip = n2.ip;
  ep.src_port = ep.dst_port = cluster.udp_port;
  wire::Header h;
  h.type = wire::MsgType::kMetric;
  h.priority = 3;
  h.ttl = cluster.ttl;
  h.src_node = 1;
  h.dst = 2;
  h.payload_len = kPayload;
  std::array<std::byte, wire::kOverhead + kPayload> frame{};
  const std::size_t frame_len = wire::kOverhead + kPayload;

  h.timestamp_ns = Clock::tsc().now_ns();
  wire::encode_headers(std::span<std::byte, wire::kOverhead>(frame.data(), wire::kOverhead), ep, h);
  rte_mbuf* burst[kBurst];
  if (rte_pktmbuf_alloc_bulk(pool.get(), burst, kBurst) != 0) throw std::runtime_error("forward: no mbufs");
  for (auto* m : burst) {
    char* d = rte_pktmbuf_append(m, static_cast<std::uint16_t>(frame_len));
    if (!d) throw std::runtime_error("forward: an mbuf too small for a frame");
    std::memcpy(d, frame.data(), frame_len);
  }
  struct FreeBurst {
    rte_mbuf** b;
    ~FreeBurst() { rte_pktmbuf_free_bulk(b, kBurst); }
  } free_burst{burst};
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  const std::vector<std::string> stacks = {"nerve", "testpmd-io", "testpmd-macswap"};
  const unsigned rounds = o.rounds;
  const double seconds = o.seconds > 0 ? o.seconds : 2.0;
  std::vector<Row> rows;
  for (unsigned round = 0; round < rounds; ++round) {
    for (const auto& stack : stacks) {
      throw_if_interrupted();
      Round r;
      {
        drivers::Port a(n1.ports.front(), fmt::format("fwa{}{}", round, stack.size()), pool.get(), 1, n1.mac, false,
                        cluster.mtu);
        drivers::Port b(n2.ports.front(), fmt::format("fwb{}{}", round, stack.size()), pool.get(), 1, n2.mac, false,
                        cluster.mtu);
        pid_t fwd;
        int fwd_in = -1;
        const std::string log = fmt::format("{}/forwarder-{}-{}.log", dir, round, stack);
        if (stack == "nerve") {
          fwd = spawn({self, "peer", "--transport", "memif", "--role", "forward", "--config", cfg, "--node", "3"}, log,
                      &fwd_in);
          ::close(fwd_in);  // a node stops on SIGINT
          fwd_in = -1;
        } else {
          // testpmd forwards on a core of its own (cpu_b); its main lcore only waits on stdin.
          fwd = spawn({"dpdk-testpmd", "-l", fmt::format("{},{}", cpu_a, cpu_b), "--main-lcore", std::to_string(cpu_a),
                       "--no-huge", "-m", "512", "--no-pci",
                       "--file-prefix", fmt::format("nerve-perf-{}-1", run), "--log-level", "error",
                       "--vdev", fmt::format("net_memif0,role=client,socket={},socket-abstract=no", sock_a),
                       "--vdev", fmt::format("net_memif1,role=client,socket={},socket-abstract=no", sock_b), "--",
                       fmt::format("--forward-mode={}", stack == "testpmd-io" ? "io" : "macswap"), "--auto-start",
                       "--nb-cores=1", "--rxq=1", "--txq=1", "--burst=32", "--total-num-mbufs=16384",
                       "--record-core-cycles"},
                      log, &fwd_in);
        }
        // The forwarder connects to both links (this process holds the memif servers).
        const auto up_by = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        while (!(a.link_up() && b.link_up())) {
          if (std::chrono::steady_clock::now() > up_by || ::waitpid(fwd, nullptr, WNOHANG) == fwd) {
            stop(fwd, fwd_in);
            throw std::runtime_error(fmt::format("forward: {} did not connect; its log:\n{}", stack,
                                                 tail_of(log, 2000)));
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        auto pump = [&](double for_s, Round& out) {
          rte_mbuf* got[kBurst * 2];
          const auto t0 = std::chrono::steady_clock::now();
          const auto end = t0 + std::chrono::duration<double>(for_s);
          unsigned iter = 0;
          while (true) {
            if ((++iter & 255) == 0 && std::chrono::steady_clock::now() >= end) break;
            // The same 32 frames every time, one more reference each: the memif PMD copies a
            // frame into its ring and drops the reference. The generator costs next to nothing,
            // so the forwarder is what limits the rate.
            for (auto* m : burst) rte_mbuf_refcnt_update(m, 1);
            const std::uint16_t sent = a.tx_burst(0, burst, kBurst);
            for (std::uint16_t i = sent; i < kBurst; ++i) rte_mbuf_refcnt_update(burst[i], -1);
            out.sent += sent;
            const std::uint16_t n = b.rx_burst(0, got, kBurst * 2);
            for (std::uint16_t i = 0; i < n; ++i) out.received += got[i]->pkt_len == frame_len;
            if (n) rte_pktmbuf_free_bulk(got, n);
            // What the forwarder sends back toward A (its advertisements): dropped.
            const std::uint16_t back = a.rx_burst(0, got, kBurst);
            if (back) rte_pktmbuf_free_bulk(got, back);
          }
          out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        };
        // Until frames come through (routes computed, the forwarder polling), then a warm-up.
        Round warm;
        const auto flowing_by = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        while (warm.received == 0 && std::chrono::steady_clock::now() < flowing_by) pump(0.05, warm);
        if (warm.received == 0) {
          stop(fwd, fwd_in);
          throw std::runtime_error(fmt::format("forward: nothing came through {}", stack));
        }
        pump(0.2, warm);
        pump(seconds, r);
        stop(fwd, fwd_in);  // before the ports close: the forwarder's links go down under it, not ours
        r.log = log;
        std::error_code ec;
        std::filesystem::remove_all(fmt::format("/var/run/dpdk/nerve-perf-{}-1", run), ec);  // testpmd's
      }
      Row row;
      std::tie(row.cycles_per_frame, row.tsc_mhz) = cycles_per_frame(r.log);
      row.scenario = "forward";
      row.transport = "memif";
      row.stack = stack;
      row.metric = "rate";
      row.priority = h.priority;
      row.size = kPayload;
      row.frame_bytes = frame_len;
      row.sent = r.sent;
      row.lost = r.sent - std::min(r.sent, r.received);
      row.rate_mps = static_cast<double>(r.received) / r.seconds;
      row.offered_mps = static_cast<double>(r.sent) / r.seconds;
      row.gbps = row.rate_mps * static_cast<double>(frame_len) * 8 / 1e9;
      row.round = round;
      rows.push_back(std::move(row));
    }
  }
  return rows;
}

}  // namespace nerve::perf
