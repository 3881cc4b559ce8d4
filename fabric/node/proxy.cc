// The proxy's caller side: any thread. See proxy_table.hpp for the hand-over.
#include <fmt/format.h>
#include <rte_errno.h>
#include <rte_ring.h>
#include <time.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "node_impl.hpp"
#include "proxy_table.hpp"

namespace nerve {
namespace node {
namespace {

// A caller sleeps between looks at its slot: 20 us at first, doubling to 1 ms, so a waiting
// caller costs nothing measurable and the datapath never has to wake anyone.
void nap(std::uint32_t& us) noexcept {
  const timespec ts{0, static_cast<long>(us) * 1000};
  nanosleep(&ts, nullptr);
  us = std::min<std::uint32_t>(us * 2, 1000);
}

}  // namespace

ProxyTable::ProxyTable(std::uint16_t node_id, std::size_t max_payload, int socket)
    : slots_(std::make_unique<ProxySlot[]>(kProxySlots)) {
  free_ = rte_ring_create(fmt::format("nvfree{}", node_id).c_str(), kProxySlots * 2, socket, 0);
  requests_ = rte_ring_create(fmt::format("nvreq{}", node_id).c_str(), kProxySlots * 2, socket, RING_F_SC_DEQ);
  if (!free_ || !requests_) {
    rte_ring_free(free_);
    rte_ring_free(requests_);
    throw std::runtime_error(fmt::format("node {}: control rings: {}", node_id, rte_strerror(rte_errno)));
  }
  for (std::uint32_t i = 0; i < kProxySlots; ++i) {
    slots_[i].reply.resize(max_payload);
    rte_ring_enqueue(free_, reinterpret_cast<void*>(static_cast<std::uintptr_t>(i)));
  }
}

ProxyTable::~ProxyTable() {
  rte_ring_free(free_);
  rte_ring_free(requests_);
}

int ProxyTable::acquire(std::chrono::steady_clock::time_point deadline) noexcept {
  std::uint32_t us = 20;
  void* obj = nullptr;
  while (rte_ring_mc_dequeue(free_, &obj) != 0) {
    if (std::chrono::steady_clock::now() >= deadline) return -1;
    nap(us);
  }
  const auto i = static_cast<std::uint32_t>(reinterpret_cast<std::uintptr_t>(obj));
  // Released before the enqueue (release()): orders the last user's writes before ours.
  while (slots_[i].state.load(std::memory_order_acquire) != SlotState::kFree) {
  }
  return static_cast<int>(i);
}

void ProxyTable::submit(std::uint32_t i) noexcept {
  slots_[i].state.store(SlotState::kQueued, std::memory_order_release);
  // The ring holds every slot index twice over: the enqueue cannot fail.
  rte_ring_mp_enqueue(requests_, reinterpret_cast<void*>(static_cast<std::uintptr_t>(i)));
}

void ProxyTable::wait_done(std::uint32_t i) noexcept {
  std::uint32_t us = 20;
  while (slots_[i].state.load(std::memory_order_acquire) != SlotState::kDone) nap(us);
}

void ProxyTable::release(std::uint32_t i) noexcept {
  slots_[i].req = ProxySend{};  // the caller's fill is destroyed here, on the caller's thread
  slots_[i].state.store(SlotState::kFree, std::memory_order_release);
  rte_ring_mp_enqueue(free_, reinterpret_cast<void*>(static_cast<std::uintptr_t>(i)));
}

unsigned ProxyTable::take(std::uint32_t* out, unsigned max) noexcept {
  void* objs[16];
  const unsigned n = rte_ring_sc_dequeue_burst(requests_, objs, std::min(max, 16u), nullptr);
  for (unsigned k = 0; k < n; ++k) {
    out[k] = static_cast<std::uint32_t>(reinterpret_cast<std::uintptr_t>(objs[k]));
    // Published before the enqueue: never spins, but makes the hand-over visible in C++ terms.
    while (slots_[out[k]].state.load(std::memory_order_acquire) != SlotState::kQueued) {
    }
  }
  return n;
}

}  // namespace node

std::function<std::size_t(std::uint32_t, std::span<std::byte>)> ProxySend::copy_of(std::span<const std::byte> payload) {
  return [payload](std::uint32_t, std::span<std::byte> room) {
    const std::size_t n = std::min(payload.size(), room.size());
    std::memcpy(room.data(), payload.data(), n);
    return n;
  };
}

ProxyResult NodeProxy::send(const ProxySend& req) {
  ProxyResult res;
  if (req.count == 0) return res;
  // What the datapath cannot carry out is refused here: a group or service the cluster file
  // does not have, replies awaited from many.
  const Node::Impl& I = *node_.impl_;
  using Target = ProxySend::Target;
  if ((req.target == Target::kGroup && I.cluster.group_index(req.dst) < 0) ||
      (req.target == Target::kService && I.services->index(req.dst) < 0) ||
      ((req.target == Target::kGroup || req.target == Target::kBroadcast) && req.await_reply)) {
    res.status = SendStatus::kBadArgument;
    return res;
  }
  node::ProxyTable& table = *node_.impl_->proxies;
  const int i = table.acquire(std::chrono::steady_clock::now() + req.timeout);
  if (i < 0) {
    res.status = SendStatus::kBackpressure;  // every slot busy for the whole timeout
    return res;
  }
  const auto idx = static_cast<std::uint32_t>(i);
  node::ProxySlot& s = table.slot(idx);
  s.req = req;
  table.submit(idx);
  table.wait_done(idx);
  res.status = s.status;
  res.sent = s.sent;
  res.replies = s.replies;
  res.rtt_ns = s.rtt_ns;
  res.failed = s.failed;
  if (req.target == Target::kService)
    for (std::size_t k = 0; k < s.spread.size(); ++k)
      if (s.spread[k] != 0)
        res.spread.emplace_back(I.services->instance_id(static_cast<unsigned>(s.target_index), static_cast<int>(k)),
                                s.spread[k]);
  if (s.replies) res.reply.assign(reinterpret_cast<const char*>(s.reply.data()), s.reply_len);
  table.release(idx);
  return res;
}

}  // namespace nerve
