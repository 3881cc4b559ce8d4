#include "datapath_guard.hpp"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <rte_pause.h>

#include <algorithm>
#include <mutex>
#include <vector>

namespace nerve::drivers {
namespace {

struct State {
  std::atomic<std::uint64_t> pauses{0};
  std::recursive_mutex mu;  // sections enrolled; held by pause_all until resume_all (nests)
  std::vector<DatapathGuard::Section*> sections;
  bool asymmetric = false;
  State();
};

State& state() {
  static auto* s = new State;  // never destroyed: sections and callbacks may outlive statics
  return *s;
}

}  // namespace

struct GuardState {
  static void set_asymmetric(bool on) noexcept { DatapathGuard::asymmetric_ = on; }
};

namespace {
State::State() {
  // Expedited private membarrier: one syscall on the slow side orders every thread of the
  // process as a full fence would.
  asymmetric = syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
  GuardState::set_asymmetric(asymmetric);
}
}  // namespace

std::uint64_t DatapathGuard::pauses() noexcept { return state().pauses.load(std::memory_order_relaxed); }

DatapathGuard::Section::Section() {
  State& s = state();
  const std::lock_guard lock(s.mu);
  s.sections.push_back(this);
}

DatapathGuard::Section::~Section() {
  State& s = state();
  const std::lock_guard lock(s.mu);
  std::erase(s.sections, this);
}

void DatapathGuard::Section::wait() noexcept {
  while (true) {
    busy_.store(0, std::memory_order_release);
    while (paused().load(std::memory_order_acquire) != 0) rte_pause();
    announce();
    if (paused().load(std::memory_order_seq_cst) == 0) return;
  }
}

void DatapathGuard::pause_all() noexcept {
  State& s = state();
  s.mu.lock();  // released by resume_all
  paused().fetch_add(1, std::memory_order_seq_cst);
  s.pauses.fetch_add(1, std::memory_order_relaxed);
#if !defined(__SANITIZE_THREAD__)
  if (s.asymmetric) syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
  else std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
  for (Section* sec : s.sections)
    while (sec->busy_.load(std::memory_order_seq_cst) != 0) rte_pause();
}

void DatapathGuard::resume_all() noexcept {
  State& s = state();
  paused().fetch_sub(1, std::memory_order_release);
  s.mu.unlock();
}

}  // namespace nerve::drivers
