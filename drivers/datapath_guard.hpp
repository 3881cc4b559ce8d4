// Keeps the EAL interrupt thread's PMD callbacks and the datapath's bursts from running at once.
//
// Why: a PMD's link events run on the EAL interrupt thread with no synchronisation against
// rx/tx bursts on other threads. DPDK 22.11's memif unmaps a link's shared rings when its peer
// goes away (memif_disconnect, from the interrupt thread); a datapath thread that checked the
// link a moment earlier then reads unmapped memory (SIGSEGV). So every interrupt callback a
// PMD registers runs wrapped (intr_registry.cc): it first pauses the datapath, waiting until
// every polling thread is outside its burst, and lets it go on afterwards.
//
// The datapath side costs two relaxed stores and a load per burst: the slow side makes the
// ordering work with membarrier(2) (an asymmetric Dekker, as liburcu's membarrier flavour),
// falling back to a full fence on the fast side where membarrier is unavailable.
//
// A Section is one polling context (a node): enter()/exit() around every rx_burst/tx_burst,
// by its owner thread only. pause_all()/resume_all(): the interrupt thread (or any control
// thread), never from inside a Section.
#pragma once

#include <atomic>
#include <cstdint>

namespace nerve::drivers {

class DatapathGuard {
 public:
  class Section {
   public:
    Section();
    ~Section();
    Section(const Section&) = delete;
    Section& operator=(const Section&) = delete;

    void enter() noexcept {
      announce();
      if (paused().load(std::memory_order_seq_cst)) [[unlikely]]
        wait();
    }
    void exit() noexcept { busy_.store(0, std::memory_order_release); }

   private:
    friend class DatapathGuard;
    // busy_ = 1, ordered before the following load of paused_ (the store-load of Dekker's).
    void announce() noexcept {
#if defined(__SANITIZE_THREAD__)
      // ThreadSanitizer follows neither fences nor membarrier(2): a sequentially consistent
      // exchange here and on the slow side gives it (and the program) the same order.
      busy_.exchange(1, std::memory_order_seq_cst);
#else
      busy_.store(1, std::memory_order_relaxed);
      if (!asymmetric()) std::atomic_thread_fence(std::memory_order_seq_cst);
      std::atomic_signal_fence(std::memory_order_seq_cst);
#endif
    }
    void wait() noexcept;
    alignas(64) std::atomic<std::uint32_t> busy_{0};
  };

  // Every Section out of its burst, and held out until resume_all(). Nests (a count).
  static void pause_all() noexcept;
  static void resume_all() noexcept;

  // For tests: how many times the datapath was paused.
  static std::uint64_t pauses() noexcept;

 private:
  // Read on every burst: plain globals, not behind a function call.
  static std::atomic<std::uint32_t>& paused() noexcept { return paused_; }
  static bool asymmetric() noexcept { return asymmetric_; }
  static inline std::atomic<std::uint32_t> paused_{0};
  static inline bool asymmetric_ = false;  // set once, before any Section exists
  friend struct GuardState;
};

}  // namespace nerve::drivers
