#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fmt/format.h>
#include <new>

#include "nerve/telemetry.hpp"

namespace nerve::telemetry {

namespace {

static_assert(sizeof(Sample) % 8 == 0);

std::uint64_t monotonic_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

// Open-file-description locks: held by the open file, not the process, so two opens in one
// process (a test) conflict as two processes do.
bool try_lock(int fd, off_t byte) noexcept {
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = byte;
  fl.l_len = 1;
  return ::fcntl(fd, F_OFD_SETLK, &fl) == 0;
}

bool locked_by_other(int fd, off_t byte) noexcept {
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = byte;
  fl.l_len = 1;
  if (::fcntl(fd, F_OFD_GETLK, &fl) != 0) return false;
  return fl.l_type != F_UNLCK;
}

void copy_name(char* dst, std::size_t cap, const std::string& s) noexcept {
  const std::size_t n = std::min(cap - 1, s.size());
  std::memcpy(dst, s.data(), n);
  dst[n] = '\0';
}

// A slot's words, one atomic at a time (the data race a seqlock tolerates, made defined).
// Release stores keep the odd sequence word ahead of every word written; acquire loads keep
// every word read ahead of the second look at the sequence word. Plain moves on x86.
template <typename T>
void store_words(T& dst, const T& src) noexcept {
  static_assert(sizeof(T) % 8 == 0);
  auto* d = reinterpret_cast<std::uint64_t*>(&dst);
  const auto* s = reinterpret_cast<const std::uint64_t*>(&src);
  for (std::size_t i = 0; i < sizeof(T) / 8; ++i) std::atomic_ref<std::uint64_t>(d[i]).store(s[i], std::memory_order_release);
}
template <typename T>
void load_words(T& dst, const T& src) noexcept {
  static_assert(sizeof(T) % 8 == 0);
  auto* d = reinterpret_cast<std::uint64_t*>(&dst);
  auto* s = const_cast<std::uint64_t*>(reinterpret_cast<const std::uint64_t*>(&src));
  for (std::size_t i = 0; i < sizeof(T) / 8; ++i) d[i] = std::atomic_ref<std::uint64_t>(s[i]).load(std::memory_order_acquire);
}

bool read_slot(const Slot& slot, Sample& out) noexcept {
  auto& seq = const_cast<std::atomic<std::uint64_t>&>(slot.sequence);
  const std::uint64_t before = seq.load(std::memory_order_acquire);
  if (before & 1u) return false;
  load_words(out, slot.sample);
  return seq.load(std::memory_order_relaxed) == before;
}

}  // namespace

Region::Region(std::string path, const Identity& id) : path_(std::move(path)) {
  // Creations in one directory take turns (a lock on the directory, held until the region is in
  // place): two nodes starting for one region at the same instant cannot both find it free.
  const std::size_t slash = path_.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path_.substr(0, slash);
  struct DirLock {
    int fd;
    ~DirLock() {
      if (fd >= 0) ::close(fd);  // the lock goes with it
    }
  } dir_lock{::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (dir_lock.fd >= 0) {
    while (::flock(dir_lock.fd, LOCK_EX) != 0 && errno == EINTR) {
    }
  }
  // A region left by a node that stopped (or crashed) is replaced; one a running node holds is not.
  if (const int old = ::open(path_.c_str(), O_RDWR | O_CLOEXEC); old >= 0) {
    const bool held = locked_by_other(old, 0);
    ::close(old);
    if (held) throw RegionError(fmt::format("stats region {}: held by a running node (is this node already up?)", path_));
  }
  // Built under a temporary name and renamed into place: a reader never maps half a header.
  const std::string tmp = fmt::format("{}.{}.tmp", path_, ::getpid());
  fd_ = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0) throw RegionError(fmt::format("stats region {}: {}", tmp, std::strerror(errno)));
  auto fail = [&](const char* what) {
    const std::string msg = fmt::format("stats region {}: {}: {}", path_, what, std::strerror(errno));
    ::unlink(tmp.c_str());
    if (base_) ::munmap(base_, kRegionSize);
    ::close(fd_);
    throw RegionError(msg);
  };
  if (!try_lock(fd_, 0)) fail("lock");
  if (::ftruncate(fd_, static_cast<off_t>(kRegionSize)) != 0) fail("size");
  base_ = ::mmap(nullptr, kRegionSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
  if (base_ == MAP_FAILED) {
    base_ = nullptr;
    fail("map");
  }
  auto* bytes = static_cast<std::byte*>(base_);
  hdr_ = new (bytes) Header{};
  std::memcpy(hdr_->magic, kMagic, sizeof kMagic);
  hdr_->version = kVersion;
  hdr_->header_size = kHeaderSize;
  hdr_->region_size = kRegionSize;
  hdr_->slot_offset = kSlotOffset;
  hdr_->slot_size = sizeof(Slot);
  hdr_->lcore_offset = kLcoreOffset;
  hdr_->lcore_size = sizeof(stats::LcoreStats);
  hdr_->node_id = id.node_id;
  hdr_->pid = static_cast<std::uint32_t>(::getpid());
  copy_name(hdr_->node_name, sizeof hdr_->node_name, id.node_name);
  copy_name(hdr_->cluster, sizeof hdr_->cluster, id.cluster);
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  hdr_->started_realtime_ns = static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
  for (std::size_t l = 0; l < wire::kPriorities; ++l) hdr_->lane_budget_ns[l] = id.lane_budget_ns[l];
  hdr_->port_count = static_cast<std::uint32_t>(std::min(id.ports.size(), kPorts));
  for (std::size_t j = 0; j < hdr_->port_count; ++j) copy_name(hdr_->port_name[j], 32, id.ports[j]);
  slots_ = new (bytes + kSlotOffset) Slot[2]{};
  lcore_ = new (bytes + kLcoreOffset) stats::LcoreStats{};
  xstats_ = new (bytes + kXstatsOffset) Xstats{};
  if (::rename(tmp.c_str(), path_.c_str()) != 0) fail("rename");
}

Region::~Region() {
  hdr_->state.store(kStopped, std::memory_order_release);
  lcore_->~LcoreStats();
  ::munmap(base_, kRegionSize);
  // Unlinked only if it is still ours (not replaced by a node started after this one stopped).
  struct stat mine {}, named {};
  if (::fstat(fd_, &mine) == 0 && ::stat(path_.c_str(), &named) == 0 && mine.st_ino == named.st_ino &&
      mine.st_dev == named.st_dev)
    ::unlink(path_.c_str());
  ::close(fd_);
}

void Region::publish(Sample& s) noexcept {
  served_ = hdr_->request.load(std::memory_order_relaxed);
  s.seq = served_;
  s.taken_ns = monotonic_ns();
  const std::uint64_t prev = hdr_->published.load(std::memory_order_relaxed);
  Slot& slot = slots_[(prev + 1) & 1u];
  // Which slot: by the count of samples written, not by seq (seq may jump).
  const std::uint64_t v = slot.sequence.load(std::memory_order_relaxed);
  slot.sequence.store(v + 1, std::memory_order_relaxed);
  store_words(slot.sample, s);
  slot.sequence.store(v + 2, std::memory_order_release);
  hdr_->published.store(prev + 1, std::memory_order_release);
  hdr_->heartbeat_ns.store(s.taken_ns, std::memory_order_relaxed);
}

Reader::Reader(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd_ < 0)
    throw RegionError(errno == ENOENT ? fmt::format("no stats region at {} (is the node running?)", path)
                                      : fmt::format("stats region {}: {}", path, std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd_, &st) != 0 || static_cast<std::size_t>(st.st_size) < kHeaderSize) {
    ::close(fd_);
    throw RegionError(fmt::format("{} is not a nerve stats region (too small)", path));
  }
  inode_ = st.st_ino;
  void* h = ::mmap(nullptr, kHeaderSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
  if (h == MAP_FAILED) {
    ::close(fd_);
    throw RegionError(fmt::format("stats region {}: map: {}", path, std::strerror(errno)));
  }
  hdr_ = static_cast<Header*>(h);
  auto refuse = [&](std::string msg) {
    ::munmap(h, kHeaderSize);
    ::close(fd_);
    throw RegionError(msg);
  };
  if (std::memcmp(hdr_->magic, kMagic, sizeof kMagic) != 0) refuse(fmt::format("{} is not a nerve stats region", path));
  if (hdr_->version != kVersion)
    refuse(fmt::format("stats region {} has layout version {}; this program reads version {} (run a nerved and "
                       "a sidecar of the same release)",
                       path, hdr_->version, kVersion));
  if (hdr_->header_size != kHeaderSize || hdr_->region_size != kRegionSize || hdr_->slot_offset != kSlotOffset ||
      hdr_->slot_size != sizeof(Slot) || hdr_->lcore_offset != kLcoreOffset ||
      hdr_->lcore_size != sizeof(stats::LcoreStats) || static_cast<std::size_t>(st.st_size) < kRegionSize)
    refuse(fmt::format("stats region {}: version {} but a layout of other sizes (a build of another "
                       "configuration?)", path, kVersion));
  base_ = ::mmap(nullptr, kRegionSize, PROT_READ, MAP_SHARED, fd_, 0);
  if (base_ == MAP_FAILED) refuse(fmt::format("stats region {}: map: {}", path, std::strerror(errno)));
  const auto* bytes = static_cast<const std::byte*>(base_);
  slots_ = reinterpret_cast<const Slot*>(bytes + kSlotOffset);
  lcore_ = reinterpret_cast<const stats::LcoreStats*>(bytes + kLcoreOffset);
  xstats_ = reinterpret_cast<const Xstats*>(bytes + kXstatsOffset);
}

void Region::write_xstats(std::span<const Xstat> stats) noexcept {
  const std::size_t n = std::min(stats.size(), kXstats);
  const std::uint64_t seq = xstats_->sequence.load(std::memory_order_relaxed);
  xstats_->sequence.store(seq + 1, std::memory_order_release);  // odd: being written
  std::atomic_ref<std::uint64_t>(xstats_->count).store(n, std::memory_order_release);
  std::atomic_ref<std::uint64_t>(xstats_->taken_ns).store(monotonic_ns(), std::memory_order_release);
  for (std::size_t i = 0; i < n; ++i) store_words(xstats_->stat[i], stats[i]);
  xstats_->sequence.store(seq + 2, std::memory_order_release);
}

bool Reader::xstats(std::vector<Xstat>& out) const {
  auto& seq = const_cast<std::atomic<std::uint64_t>&>(xstats_->sequence);
  for (int tries = 0; tries < 16; ++tries) {
    const std::uint64_t before = seq.load(std::memory_order_acquire);
    if (before & 1u) continue;
    const std::uint64_t n = std::min<std::uint64_t>(
        std::atomic_ref<std::uint64_t>(const_cast<std::uint64_t&>(xstats_->count)).load(std::memory_order_acquire),
        kXstats);
    out.resize(n);
    for (std::size_t i = 0; i < n; ++i) load_words(out[i], xstats_->stat[i]);
    if (seq.load(std::memory_order_acquire) == before) {
      for (auto& x : out) x.name[sizeof x.name - 1] = '\0';  // whatever was written, a C string
      return true;
    }
  }
  return false;
}

Reader::~Reader() {
  if (hdr_->sidecar_pid.load(std::memory_order_relaxed) == static_cast<std::uint32_t>(::getpid()))
    hdr_->sidecar_pid.store(0, std::memory_order_relaxed);
  ::munmap(const_cast<void*>(base_), kRegionSize);
  ::munmap(hdr_, kHeaderSize);
  ::close(fd_);
}

bool Reader::node_running() const noexcept {
  return locked_by_other(fd_, 0) && hdr_->state.load(std::memory_order_acquire) == kRunning;
}

bool Reader::lock_sidecar(std::uint32_t& holder) {
  if (!try_lock(fd_, 1)) {
    holder = hdr_->sidecar_pid.load(std::memory_order_relaxed);
    return false;
  }
  hdr_->sidecar_pid.store(static_cast<std::uint32_t>(::getpid()), std::memory_order_relaxed);
  return true;
}

bool Reader::latest(Sample& out) const noexcept {
  for (int tries = 0; tries < 64; ++tries) {
    const std::uint64_t p = hdr_->published.load(std::memory_order_acquire);
    if (p == 0) return false;
    if (read_slot(slots_[p & 1u], out) && hdr_->published.load(std::memory_order_acquire) <= p + 1) return true;
  }
  return false;  // the writer lapped every attempt (it publishes only on request: cannot last)
}

bool Reader::fresh(Sample& out, std::uint64_t wait_ns) {
  std::uint64_t seen = hdr_->published.load(std::memory_order_acquire);
  const std::uint64_t want = hdr_->request.fetch_add(1, std::memory_order_relaxed) + 1;
  const std::uint64_t start = monotonic_ns();
  long nap_ns = kFirstNapNs;
  for (;;) {
    // A sample published since the last look (one load), then whether it answers this ring.
    if (const std::uint64_t p = hdr_->published.load(std::memory_order_acquire); p != seen) {
      seen = p;
      if (latest(out) && out.seq >= want) return true;
    }
    const std::uint64_t now = monotonic_ns();
    if (now - start >= wait_ns) {
      (void)latest(out);
      return false;
    }
    // A datapath on a core of its own answers within a poll: spin for that long. Beyond it the
    // datapath may share this reader's core, or sleep while idle: sleep, so that it can run and
    // answer, a little longer each time (a sleeping datapath wakes within its idle sleep; each
    // look costs this reader a wake-up).
    if (now - start < kSpinNs) {
#if defined(__x86_64__)
      __builtin_ia32_pause();
#endif
    } else {
      const timespec ts{0, nap_ns};
      ::nanosleep(&ts, nullptr);
      nap_ns = std::min(nap_ns * 2, kLastNapNs);
    }
  }
}

}  // namespace nerve::telemetry
