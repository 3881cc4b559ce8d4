// A one-way mailbox between two threads: a fixed set of message buffers, handed over through two
// single-producer single-consumer rte_rings (full letters one way, empty ones back). Neither side
// allocates, locks or waits: a sender that finds no empty buffer drops the message and counts it.
// The datapath posts what the routing agent must see (link-state advertisements) and takes what
// the agent wants sent (advertisements to flood).
#pragma once

#include <rte_errno.h>
#include <rte_ring.h>

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace nerve::node {

class Mailbox {
 public:
  struct Letter {
    std::uint16_t slot = 0;  // the link it came in on, or goes out on
    std::uint16_t len = 0;
    std::byte* bytes = nullptr;  // capacity() bytes
    // Hands the bytes over with a C++ release/acquire pair in each direction (the rings'
    // own ordering is x86 compiler barriers that ThreadSanitizer cannot see): 1 = written.
    std::atomic<int> state{0};
  };

  // `letters` buffers of `capacity` bytes each; `name` unique in the process (rte_ring names).
  Mailbox(const std::string& name, unsigned letters, std::size_t capacity) : capacity_(capacity) {
    const unsigned size = std::bit_ceil(letters + 1);
    full_ = rte_ring_create((name + "f").c_str(), size, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
    empty_ = rte_ring_create((name + "e").c_str(), size, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
    if (!full_ || !empty_) {
      free_rings();
      throw std::runtime_error("mailbox " + name + ": rte_ring_create: " + rte_strerror(rte_errno));
    }
    store_.resize(letters * capacity);
    letters_ = std::make_unique<Letter[]>(letters);
    for (unsigned i = 0; i < letters; ++i) {
      letters_[i].bytes = store_.data() + i * capacity;
      rte_ring_enqueue(empty_, &letters_[i]);
    }
  }
  ~Mailbox() { free_rings(); }
  Mailbox(const Mailbox&) = delete;
  Mailbox& operator=(const Mailbox&) = delete;

  std::size_t capacity() const noexcept { return capacity_; }

  // Sender's side: copies `msg` into an empty letter and posts it. False (counted in dropped())
  // when no letter is free or the message is too long.
  bool post(std::uint16_t slot, std::span<const std::byte> msg) noexcept {
    void* p = nullptr;
    if (msg.size() > capacity_ || rte_ring_dequeue(empty_, &p) != 0) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    auto* l = static_cast<Letter*>(p);
    (void)l->state.load(std::memory_order_acquire);  // the reader's done() before our writes
    l->slot = slot;
    l->len = static_cast<std::uint16_t>(msg.size());
    std::memcpy(l->bytes, msg.data(), msg.size());
    l->state.store(1, std::memory_order_release);
    rte_ring_enqueue(full_, l);  // cannot fail: the ring holds every letter
    return true;
  }
  // Receiver's side: the next letter, or nullptr. Give it back with `done` once read.
  Letter* take() noexcept {
    void* p = nullptr;
    if (rte_ring_dequeue(full_, &p) != 0) return nullptr;
    auto* l = static_cast<Letter*>(p);
    (void)l->state.load(std::memory_order_acquire);  // the writer's bytes
    return l;
  }
  void done(Letter* l) noexcept {
    l->state.store(0, std::memory_order_release);
    rte_ring_enqueue(empty_, l);
  }
  std::uint64_t dropped() const noexcept { return dropped_.load(std::memory_order_relaxed); }
  // Sender's side: letters free now (at least this many posts will succeed).
  unsigned vacant() const noexcept { return rte_ring_count(empty_); }

 private:
  void free_rings() noexcept {
    rte_ring_free(full_);
    rte_ring_free(empty_);
  }
  std::size_t capacity_;
  rte_ring* full_ = nullptr;
  rte_ring* empty_ = nullptr;
  std::vector<std::byte> store_;
  std::unique_ptr<Letter[]> letters_;
  std::atomic<std::uint64_t> dropped_{0};
};

}  // namespace nerve::node
