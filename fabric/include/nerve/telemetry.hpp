// The stats region: a node's figures in shared memory, for readers in other processes (the
// telemetry sidecar, tests). Layout, version 1:
//
//   [0, 4096)           Header: identity, the layout's offsets, the doorbell
//   [4096, +2*Sample)   two Sample slots: the datapath's counters, one consistent set each
//   [.., +LcoreStats)   the datapath's live stats::LcoreStats (counters and lane histograms)
//
// The datapath never waits for a reader. A reader rings the doorbell (Header::request); the
// datapath, at the end of its next poll, writes a Sample into the slot not last written, under
// that slot's sequence word, and publishes it (Header::published). A reader copies the newest
// slot and keeps the copy if the slot's sequence word did not change meanwhile (a seqlock per
// slot; two slots, so the writer never writes the slot a reader of the newest sample reads
// unless the reader is two samples behind, in which case it reads again). Histograms are read
// live from the LcoreStats: each bucket is exact, and a reader diffing two reads gets the
// interval's distribution.
//
// Readers map the region read-only, except the header page, whose doorbell they write.
// A reader refuses a region whose magic, version or sizes are not its own. nerved holds an
// open-file-description lock on byte 0 while it runs (a reader tests it: "is the node up?"),
// the sidecar one on byte 1 (a second sidecar for the node refuses to start).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <array>
#include <stdexcept>
#include <span>
#include <string>
#include <vector>

#include "nerve/stats.hpp"
#include "nerve/wire.hpp"

namespace nerve::telemetry {

inline constexpr char kMagic[8] = {'N', 'E', 'R', 'V', 'E', 'S', 'T', 'R'};
// Bump on any change to Header, Sample or stats::LcoreStats (the static_asserts below fail
// first, as a reminder).
inline constexpr std::uint32_t kVersion = 8;
inline constexpr std::size_t kHeaderSize = 4096;
inline constexpr std::size_t kPorts = 16;     // ports published per node (the first 16)
inline constexpr std::size_t kLinks = 32;     // links published per node (the first 32)
inline constexpr std::size_t kRefusals = 48;  // >= wire::kRefusalCount

struct LaneSample {
  std::uint64_t sent, delivered, deadline_miss, shed, backpressure, forwarded, forward_dropped;
  std::uint64_t rel_sent, rel_acked, rel_failed, rel_retransmits, rel_duplicates, rel_reordered;
  std::uint64_t tx_queued;                      // frames waiting in this lane's TX queues
  std::uint64_t latency_count, latency_sum_ns;  // one-way delivery latency, running totals
};

struct PortSample {
  std::uint64_t ipackets, opackets, ibytes, obytes, imissed, ierrors, oerrors, rx_nombuf;
  std::uint64_t tx_frames;  // frames the node handed to the port
  std::uint64_t link_up;
};

struct LinkSample {
  std::uint64_t peer, port, up, rtt_ns, downs, heartbeats_rx;
};

// One consistent set of the datapath's counters, taken between two polls.
struct Sample {
  std::uint64_t seq;       // the doorbell value this sample answers
  std::uint64_t taken_ns;  // CLOCK_MONOTONIC when taken
  // Datapath cycles (TSC) spent in polls that found work and in polls that found none, and
  // the polls of each kind.
  std::uint64_t tsc_busy, tsc_idle, polls_busy, polls_idle, tsc_hz;
  std::uint64_t rx_frames, rx_bytes, tx_frames, tx_bytes;
  std::uint64_t tx_backpressure, tx_no_route, alloc_failed, rx_deferred, rx_multi_segment;
  std::uint64_t fabric_rx, fabric_tx;
  std::uint64_t mbufs_available, mbufs_total;
  std::uint64_t ports, links;  // entries used below
  std::uint64_t refused[kRefusals];  // by wire::Refusal
  LaneSample lane[wire::kPriorities];
  PortSample port[kPorts];
  LinkSample link[kLinks];
};

struct alignas(64) Slot {
  std::atomic<std::uint64_t> sequence;  // odd while the datapath writes the slot
  std::uint64_t pad[7];
  Sample sample;
};

struct Header {
  char magic[8];
  std::uint32_t version;
  std::uint32_t header_size;
  std::uint64_t region_size, slot_offset, slot_size, lcore_offset, lcore_size;
  std::uint32_t node_id, pid;  // pid: nerved's
  char node_name[64];
  char cluster[64];
  std::uint64_t started_realtime_ns;
  std::uint64_t lane_budget_ns[wire::kPriorities];
  std::uint32_t port_count, link_count;
  char port_name[kPorts][32];
  // Written by readers.
  alignas(64) std::atomic<std::uint64_t> request;  // the doorbell: readers add 1
  std::atomic<std::uint32_t> sidecar_pid;          // the sidecar attached, 0 without
  // Written by the datapath.
  alignas(64) std::atomic<std::uint64_t> published;     // seq of the newest sample (slot seq & 1)
  std::atomic<std::uint64_t> heartbeat_ns;              // CLOCK_MONOTONIC at its newest sample
  std::atomic<std::uint32_t> state;                     // kRunning, then kStopped
};
inline constexpr std::uint32_t kStarting = 0, kRunning = 1, kStopped = 2;

// The layout, pinned: a change that moves any of these must bump kVersion.
static_assert(sizeof(LaneSample) == 16 * 8);
static_assert(sizeof(PortSample) == 10 * 8);
static_assert(sizeof(LinkSample) == 6 * 8);
static_assert(sizeof(Sample) == 4016);
static_assert(offsetof(Sample, refused) == 22 * 8);
static_assert(offsetof(Sample, lane) == offsetof(Sample, refused) + kRefusals * 8);
static_assert(sizeof(Slot) == 4096 && offsetof(Slot, sample) == 64);
static_assert(offsetof(Header, request) == 768 && offsetof(Header, published) == 832);
static_assert(sizeof(Header) <= kHeaderSize);
static_assert(sizeof(stats::LcoreStats) == 527168, "LcoreStats changed: bump telemetry::kVersion");
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Winvalid-offsetof"  // LcoreStats is not standard-layout; GCC and Clang agree
static_assert(offsetof(stats::LcoreStats, last_deadline_miss_ns) == 1000 &&
              offsetof(stats::LcoreStats, latency_ns) == 1200, "LcoreStats changed: bump telemetry::kVersion");
#pragma GCC diagnostic pop
static_assert(wire::kRefusalCount <= kRefusals && wire::kPriorities == 5);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

// The ports' extended statistics (rte_eth_xstats_get), written by the datapath once a second
// while a reader asks for samples (it alone reads the devices' counters: some PMDs clear their
// registers on read), under a sequence word of their own.
inline constexpr std::size_t kXstats = 512;
struct Xstat {
  std::uint64_t value;
  std::uint32_t port;  // index of the node's port
  char name[52];       // DPDK's name, NUL-terminated
};
struct Xstats {
  std::atomic<std::uint64_t> sequence;  // odd while nerved writes
  std::uint64_t count;                  // entries used
  std::uint64_t taken_ns;               // CLOCK_MONOTONIC when read
  std::uint64_t pad[5];
  Xstat stat[kXstats];
};
static_assert(sizeof(Xstat) == 64 && offsetof(Xstats, stat) == 64 && sizeof(Xstats) == 64 + 64 * kXstats);

inline constexpr std::size_t kSlotOffset = kHeaderSize;
inline constexpr std::size_t kLcoreOffset = kSlotOffset + 2 * sizeof(Slot);
inline constexpr std::size_t kXstatsOffset = (kLcoreOffset + sizeof(stats::LcoreStats) + 4095) / 4096 * 4096;
inline constexpr std::size_t kRegionSize = (kXstatsOffset + sizeof(Xstats) + 4095) / 4096 * 4096;

struct RegionError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The writer's side: nerved's. Creates the region (replacing one a stopped node left), holds
// the running lock, and hands the datapath its LcoreStats.
class Region {
 public:
  struct Identity {
    std::uint32_t node_id;
    std::string node_name, cluster;
    std::array<std::uint64_t, wire::kPriorities> lane_budget_ns;
    std::vector<std::string> ports;
  };
  // Throws RegionError: the path's directory is missing, or a running node holds the region.
  Region(std::string path, const Identity& id);
  ~Region();
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;

  const std::string& path() const noexcept { return path_; }
  stats::LcoreStats& lcore() noexcept { return *lcore_; }
  Header& header() noexcept { return *hdr_; }
  // The pages the datapath writes (slots and LcoreStats), page-aligned: to place them on its
  // NUMA node once it is pinned.
  std::span<std::byte> datapath_pages() noexcept {
    return {static_cast<std::byte*>(base_) + kSlotOffset, kXstatsOffset - kSlotOffset};
  }

  // Datapath, each poll: a reader asked for a sample not yet written.
  bool requested() const noexcept {
    return hdr_->request.load(std::memory_order_relaxed) != served_;
  }
  // Datapath: writes `s` (s.seq is set here) into the next slot and publishes it.
  void publish(Sample& s) noexcept;
  std::uint64_t pending_request() const noexcept { return hdr_->request.load(std::memory_order_relaxed); }
  void set_running() noexcept { hdr_->state.store(kRunning, std::memory_order_release); }
  // The datapath: replaces the ports' extended statistics (the first kXstats).
  void write_xstats(std::span<const Xstat> stats) noexcept;

 private:
  std::string path_;
  int fd_ = -1;
  void* base_ = nullptr;
  Header* hdr_ = nullptr;
  Slot* slots_ = nullptr;
  stats::LcoreStats* lcore_ = nullptr;
  Xstats* xstats_ = nullptr;
  std::uint64_t served_ = 0;
};

// A reader's side.
class Reader {
 public:
  // Maps the region at `path`. Throws RegionError with a clear message: no such region, not a
  // stats region, another layout version.
  explicit Reader(const std::string& path);
  ~Reader();
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  const Header& header() const noexcept { return *hdr_; }
  const stats::LcoreStats& lcore() const noexcept { return *lcore_; }
  // nerved holds the region (its lock on byte 0) and its node runs (not starting, not stopped).
  bool node_running() const noexcept;
  // Takes the sidecar lock (byte 1); false if another process holds it (its pid in `holder`).
  bool lock_sidecar(std::uint32_t& holder);
  // Rings the doorbell and waits up to `wait_ns` for the datapath's answer: spinning for the
  // first kSpinNs, then sleeping between looks (the datapath may need this core to answer),
  // 10 us at first, doubling to 160 us. False: no answer in time (the node stalled or
  // stopped); `out` then holds the newest sample.
  static constexpr std::uint64_t kSpinNs = 20'000;
  static constexpr long kFirstNapNs = 10'000, kLastNapNs = 160'000;
  bool fresh(Sample& out, std::uint64_t wait_ns);
  // The newest published sample, consistent; false if none was ever published.
  bool latest(Sample& out) const noexcept;
  // The ports' extended statistics, consistent; false while nerved is writing them (try again).
  bool xstats(std::vector<Xstat>& out) const;
  // The inode of the mapped file: a node that restarts makes a new one.
  std::uint64_t inode() const noexcept { return inode_; }

 private:
  std::string path_;
  int fd_ = -1;
  const void* base_ = nullptr;
  Header* hdr_ = nullptr;  // the header page, mapped writable (the doorbell)
  const stats::LcoreStats* lcore_ = nullptr;
  const Slot* slots_ = nullptr;
  const Xstats* xstats_ = nullptr;
  std::uint64_t inode_ = 0;
};

}  // namespace nerve::telemetry
