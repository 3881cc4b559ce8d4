// The control proxy's shared state: a preallocated table of request slots, handed between
// callers (any thread, proxy.cc) and the datapath (control_stage.cc) over DPDK rings of slot
// indices. Nothing here allocates after start-up, and nothing on the datapath side locks,
// blocks or wakes a thread.
//
// A slot's life: a caller takes a free index from `free_` (MP/MC ring), writes the request,
// publishes it (state kQueued, a release store) and enqueues the index on `requests_` (MP/SC).
// The datapath dequeues it, acquires the state, and carries the request out. When it is done it
// writes the result and stores kDone (release): the caller, which sleeps between looks at its
// slot's state, acquires it, copies the result out, and returns the index to `free_`.
//
// DPDK 22.11's rte_ring orders its slots with x86 compiler barriers, which the C++ memory model
// (and ThreadSanitizer) do not see; the state word is the hand-over in C++ terms.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "message_buffers.hpp"
#include "nerve/node.hpp"

struct rte_ring;
struct rte_mbuf;

namespace nerve::node {

inline constexpr std::uint32_t kProxySlots = 128;  // requests in flight at once (nerved: 64 connections)

enum class SlotState : std::uint32_t { kFree, kQueued, kDone };

struct alignas(64) ProxySlot {
  // Caller -> datapath: written before the slot is published.
  ProxySend req;
  // Datapath -> caller: written before kDone.
  SendStatus status = SendStatus::kOk;
  std::uint32_t sent = 0, replies = 0, failed = 0;
  std::array<std::uint32_t, config::kMaxInstances> spread{};  // a service: messages per instance
  std::uint64_t rtt_ns = 0;
  std::uint32_t reply_len = 0;
  std::vector<std::byte> reply;  // max_payload bytes, allocated at start-up
  // Datapath only.
  int target_index = -1;          // a group's or service's position in the cluster file
  std::uint32_t next = 0;         // messages sent
  std::uint32_t awaiting = 0;     // replies outstanding
  std::uint32_t generation = 0;   // bumped when the slot finishes: stale replies do not match
  std::uint64_t start_ns = 0, deadline_ns = 0;
  rte_mbuf* pending = nullptr;    // message `next`, built and pushed back by a full lane
  MessageBuffer* pending_large = nullptr;  // ... a large one (ProxySend::size)
  std::uint32_t pending_len = 0;
  bool done = false;              // finished, not yet dropped from the active list
  std::atomic<SlotState> state{SlotState::kFree};
};

class ProxyTable {
 public:
  // Rings named after `node_id` (unique per node in the process), on NUMA `socket`.
  ProxyTable(std::uint16_t node_id, std::size_t max_payload, int socket);
  ~ProxyTable();
  ProxyTable(const ProxyTable&) = delete;
  ProxyTable& operator=(const ProxyTable&) = delete;

  ProxySlot& slot(std::uint32_t i) noexcept { return slots_[i]; }

  // Caller side (any thread). acquire(): a free slot index, waiting until `deadline`; -1 if none.
  int acquire(std::chrono::steady_clock::time_point deadline) noexcept;
  void submit(std::uint32_t i) noexcept;
  void wait_done(std::uint32_t i) noexcept;
  void release(std::uint32_t i) noexcept;

  // Datapath side (owner thread): up to `max` newly submitted slot indices.
  unsigned take(std::uint32_t* out, unsigned max) noexcept;

 private:
  std::unique_ptr<ProxySlot[]> slots_;
  rte_ring* free_ = nullptr;
  rte_ring* requests_ = nullptr;
};

}  // namespace nerve::node
