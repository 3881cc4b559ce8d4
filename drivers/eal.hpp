// EAL start-up from the cluster file: one Eal per process, started before any port.
//
// Profiles (docs/operations.md):
//   dev:        --no-huge -m <memory_mb> --no-pci, virtual devices only; any number of nodes
//               share a host, each with its own --file-prefix.
//   production: hugepages, and a PCI allow-list (-a) of the node's pci ports.
#pragma once

#include <string>
#include <vector>

#include "nerve/config.hpp"

namespace nerve::drivers {

struct EalOptions {
  config::Profile profile = config::Profile::kDev;
  std::string file_prefix;            // unique per process on a host
  std::vector<unsigned> cores;        // the first is the main lcore; all are pinned
  std::uint32_t memory_mb = 256;      // dev profile only
  std::vector<std::string> pci_allow; // production profile only
  std::string huge_dir;               // production profile: hugetlbfs mount (--huge-dir); empty: EAL's choice
  std::string log_level = "notice";
  // More of DPDK's log levels, each as its --log-level takes it: "pmd.net.memif:debug" (one
  // component, by name or glob) or "debug" (every one).
  std::vector<std::string> log_levels;
};

// The EAL command line these options produce (argv[0] included).
std::vector<std::string> eal_args(const EalOptions& o);

// Options for running `node` of `cluster` as its own process: prefix nerve-<cluster>-<id>,
// cores from the node's list or chosen on its ports' NUMA socket.
EalOptions eal_options_for(const config::Cluster& cluster, const config::Node& node);

// The NUMA node a port's device sits on (sysfs), or -1 when it has none (virtual devices).
int port_numa_node(const config::Port& port);

// CPUs this process may run on that belong to NUMA node `numa` (all allowed CPUs if numa < 0
// or libnuma is unavailable). Sorted.
std::vector<unsigned> cpus_on_node(int numa);

// Owns the process's EAL. Throws std::runtime_error if rte_eal_init fails. The destructor
// runs rte_eal_cleanup and removes the runtime directory and the process's hugepage files, so
// nothing is left behind.
class Eal {
 public:
  explicit Eal(const EalOptions& o);
  ~Eal();
  Eal(const Eal&) = delete;
  Eal& operator=(const Eal&) = delete;

  unsigned main_lcore() const noexcept;
  int socket() const noexcept;  // NUMA socket of the main lcore
  // CPUs for control-plane threads (routing agents, control sockets): those the process was
  // allowed before the EAL pinned it, less the EAL's lcores; all of them when that leaves none.
  const std::vector<unsigned>& control_cpus() const noexcept { return control_cpus_; }
  // Pins the calling thread to control_cpus().
  void pin_control_thread() const noexcept;
  // Lets DPDK's capture tools (dpdk-dumpcap, dpdk-pdump), started as secondary processes with
  // this process's file prefix, copy the ports' frames (rte_pdump_init). Nothing runs on the
  // datapath until a capture starts; then each burst is copied to the tool's ring. Secondaries
  // attach only to a hugepage-backed primary (the production profile). False if the EAL cannot
  // serve them; undone before the EAL is cleaned up.
  bool enable_capture() noexcept;
  // Moves the pages of [addr, addr + len) (page-aligned) to the NUMA node of the main lcore:
  // memory the datapath writes that was first touched before the EAL pinned this thread (the
  // stats region). True when the pages are there, or the host has no NUMA to speak of.
  bool place_near_datapath(void* addr, std::size_t len) const noexcept;

 private:
  bool capture_ = false;
  std::vector<unsigned> control_cpus_;
  std::string runtime_dir_;
  std::string file_prefix_;
  bool hugepages_ = false;
};

}  // namespace nerve::drivers
