#include "eal.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <numa.h>
#include <numaif.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_pdump.h>
#include <sched.h>

#include <algorithm>
#include <filesystem>
#include <pthread.h>
#include <fstream>
#include <stdexcept>

namespace nerve::drivers {

std::vector<std::string> eal_args(const EalOptions& o) {
  std::vector<std::string> a{"nerve"};
  if (!o.cores.empty()) {
    a.push_back("-l");
    a.push_back(fmt::format("{}", fmt::join(o.cores, ",")));
  }
  a.push_back("--file-prefix=" + o.file_prefix);
  if (o.profile == config::Profile::kDev) {
    a.push_back("--no-huge");
    a.push_back("-m");
    a.push_back(std::to_string(o.memory_mb));
    a.push_back("--no-pci");
  } else {
    if (!o.huge_dir.empty()) a.push_back("--huge-dir=" + o.huge_dir);
    for (const auto& pci : o.pci_allow) {
      a.push_back("-a");
      a.push_back(pci);
    }
    // With no PCI port in the node, allow none rather than probing every device on the host.
    if (o.pci_allow.empty()) a.push_back("--no-pci");
  }
  if (o.log_levels.empty()) {
    a.push_back("--log-level=" + o.log_level);
  } else {
    // The global level caps every component's: it opens fully, and every component is held at
    // log_level by pattern, except those asked for (a component takes the first pattern it
    // matches).
    a.push_back("--log-level=debug");
    for (const auto& l : o.log_levels) a.push_back("--log-level=" + l);
    a.push_back("--log-level=*:" + o.log_level);
  }
  return a;
}

int port_numa_node(const config::Port& port) {
  std::filesystem::path p;
  if (port.kind == config::PortKind::kPci) p = fmt::format("/sys/bus/pci/devices/{}/numa_node", port.address);
  else if (!port.iface.empty()) p = fmt::format("/sys/class/net/{}/device/numa_node", port.iface);
  else return -1;
  std::ifstream in(p);
  int n = -1;
  if (in >> n) return n;
  return -1;
}

std::vector<unsigned> cpus_on_node(int numa) {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return {0};
  std::vector<unsigned> out;
  const bool use_numa = numa >= 0 && numa_available() >= 0;
  bitmask* mask = use_numa ? numa_allocate_cpumask() : nullptr;
  if (mask && numa_node_to_cpus(numa, mask) != 0) {
    numa_free_cpumask(mask);
    mask = nullptr;
  }
  for (unsigned c = 0; c < CPU_SETSIZE; ++c) {
    if (!CPU_ISSET(c, &allowed)) continue;
    if (mask && !numa_bitmask_isbitset(mask, c)) continue;
    out.push_back(c);
  }
  if (mask) numa_free_cpumask(mask);
  if (out.empty()) return cpus_on_node(-1);  // the device's node has no CPU we may use
  return out;
}

EalOptions eal_options_for(const config::Cluster& cluster, const config::Node& node) {
  EalOptions o;
  o.profile = node.profile;
  o.file_prefix = fmt::format("nerve-{}-{}", cluster.name, node.id);
  o.memory_mb = node.memory_mb;
  o.huge_dir = node.huge_dir;
  for (const auto& p : node.ports)
    if (p.kind == config::PortKind::kPci) o.pci_allow.push_back(p.address);
  if (!node.cores.empty()) {
    o.cores = node.cores;
  } else {
    int numa = -1;
    for (const auto& p : node.ports)
      if ((numa = port_numa_node(p)) >= 0) break;
    const auto cpus = cpus_on_node(numa);
    // Spread the nodes of a host over its CPUs: node ids are dense in most clusters.
    o.cores = {cpus[(node.id - 1u) % cpus.size()]};
  }
  return o;
}

Eal::Eal(const EalOptions& o) {
  const std::vector<unsigned> allowed = cpus_on_node(-1);  // before rte_eal_init pins this thread
  for (const unsigned c : allowed)
    if (std::find(o.cores.begin(), o.cores.end(), c) == o.cores.end()) control_cpus_.push_back(c);
  if (control_cpus_.empty()) control_cpus_ = allowed;
  auto args = eal_args(o);
  std::vector<char*> argv;
  for (auto& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  if (rte_eal_init(static_cast<int>(args.size()), argv.data()) < 0)
    throw std::runtime_error(fmt::format(
        "EAL start-up failed ({}; see the EAL messages above; a running process with file prefix '{}'?)",
        rte_errno ? rte_strerror(rte_errno) : "no reason given", o.file_prefix));
  runtime_dir_ = rte_eal_get_runtime_dir();
  file_prefix_ = o.file_prefix;
  hugepages_ = o.profile == config::Profile::kProduction;
}

bool Eal::enable_capture() noexcept {
  if (!capture_) capture_ = rte_pdump_init() == 0;
  return capture_;
}

bool Eal::place_near_datapath(void* addr, std::size_t len) const noexcept {
  if (numa_available() < 0 || numa_max_node() == 0) return true;  // one node: nowhere else to be
  const int node = socket();
  if (node < 0) return true;
  unsigned long mask = 1ul << node;
  return ::mbind(addr, len, MPOL_PREFERRED, &mask, sizeof mask * 8, MPOL_MF_MOVE) == 0;
}

Eal::~Eal() {
  if (capture_) rte_pdump_uninit();
  rte_eal_cleanup();
  // The runtime directory holds the process's config, hugepage maps and MP socket; with the
  // process gone they are litter. Remove ours, and the prefix directory if now empty.
  std::error_code ec;
  if (!runtime_dir_.empty()) std::filesystem::remove_all(runtime_dir_, ec);
  // EAL keeps its hugepage files (<mount>/<prefix>map_<n>) after cleanup, for a restart or a
  // secondary process to find; with this process gone they only pin memory.
  if (hugepages_) {
    std::ifstream mounts("/proc/mounts");
    std::string dev, dir, type, rest;
    while (mounts >> dev >> dir >> type && std::getline(mounts, rest)) {
      if (type != "hugetlbfs") continue;
      for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
        const std::string f = e.path().filename().string();
        if (f.starts_with(file_prefix_ + "map_")) std::filesystem::remove(e.path(), ec);
      }
    }
  }
}

unsigned Eal::main_lcore() const noexcept { return rte_get_main_lcore(); }

void Eal::pin_control_thread() const noexcept {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (const unsigned c : control_cpus_) CPU_SET(c, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}
int Eal::socket() const noexcept { return static_cast<int>(rte_lcore_to_socket_id(rte_get_main_lcore())); }

}  // namespace nerve::drivers
