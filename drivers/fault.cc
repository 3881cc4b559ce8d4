#include "fault.hpp"

#include <rte_cycles.h>

#include <atomic>

namespace nerve::drivers {
namespace {

constexpr std::uint64_t kNotAfter = ~std::uint64_t{0};
constexpr std::size_t kPriorityOff = 14 + 20 + 8 + 4;  // the nerve header's priority byte
constexpr std::size_t kMinFrame = 14 + 20 + 8 + 48;

std::uint64_t splitmix(std::uint64_t& x) noexcept {
  std::uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::uint64_t load(const std::uint64_t& v) noexcept {
  return std::atomic_ref<const std::uint64_t>(v).load(std::memory_order_relaxed);
}
void bump(std::uint64_t& v) noexcept {
  std::atomic_ref<std::uint64_t>(v).store(v + 1, std::memory_order_relaxed);
}

}  // namespace

FaultInjector::FaultInjector(const config::FaultSpec& spec, std::uint16_t queues)
    : spec_(spec),
      delay_tsc_(spec.delay_us * rte_get_tsc_hz() / 1'000'000),
      reorder_tsc_(rte_get_tsc_hz() / 10'000),
      queues_(queues) {
  // One stream per queue, each from the seed: the same seed, the same faults per queue.
  for (std::uint16_t q = 0; q < queues; ++q) queues_[q].rng = spec.seed * 0x100000001b3ull + q;
}

FaultInjector::~FaultInjector() {
  for (Queue& s : queues_)
    for (; s.head != s.tail; ++s.head) rte_pktmbuf_free(s.held[s.head & (kHeld - 1)].m);
}

double FaultInjector::uniform(Queue& s) noexcept {
  return static_cast<double>(splitmix(s.rng) >> 11) * 0x1.0p-53;
}

bool FaultInjector::hold(Queue& s, rte_mbuf* m, std::uint64_t due_tsc, std::uint64_t after) noexcept {
  if (s.tail - s.head == kHeld) return false;
  s.held[s.tail++ & (kHeld - 1)] = Held{m, due_tsc, after};
  return true;
}

std::uint16_t FaultInjector::release(Queue& s, rte_mbuf** pkts, std::uint16_t n) noexcept {
  std::uint16_t out = 0;
  if (s.head == s.tail) return 0;
  const std::uint64_t now = rte_get_tsc_cycles();
  while (s.head != s.tail && out < n) {
    const Held& h = s.held[s.head & (kHeld - 1)];
    if (!((h.after != kNotAfter && s.passed > h.after) || h.due_tsc <= now)) break;
    pkts[out++] = h.m;
    ++s.head;
  }
  return out;
}

std::uint16_t FaultInjector::pass(Queue& s, rte_mbuf* m, rte_mbuf** pkts, std::uint16_t out, std::uint16_t n) noexcept {
  if (out < n) {  // frames held back are overtaken: that is what reordering and delay are
    pkts[out++] = m;
    ++s.passed;
  } else if (!hold(s, m, 0, kNotAfter)) {  // no room in this burst: the next one
    bump(s.c.dropped);
    rte_pktmbuf_free(m);
  }
  return out;
}

std::uint16_t FaultInjector::apply(Queue& s, rte_mbuf* m, rte_mbuf** pkts, std::uint16_t out, std::uint16_t n) noexcept {
  const auto* data = rte_pktmbuf_mtod(m, const std::uint8_t*);
  const std::uint32_t len = rte_pktmbuf_data_len(m);
  if (len < kMinFrame || data[kPriorityOff] > 4 || !((spec_.lanes >> data[kPriorityOff]) & 1u))
    return pass(s, m, pkts, out, n);
  bump(s.c.seen);
  if (spec_.drop > 0 && uniform(s) < spec_.drop) {
    bump(s.c.dropped);
    rte_pktmbuf_free(m);
    return out;
  }
  if (spec_.corrupt > 0 && uniform(s) < spec_.corrupt) {
    // One bit past the Ethernet header: IPv4, UDP, nerve header or payload.
    const std::uint64_t r = splitmix(s.rng);
    const std::uint32_t at = 14 + static_cast<std::uint32_t>(r % (len - 14));
    rte_pktmbuf_mtod(m, std::uint8_t*)[at] ^= static_cast<std::uint8_t>(1u << ((r >> 32) & 7));
    bump(s.c.corrupted);
  }
  rte_mbuf* copy = nullptr;
  if (spec_.dup > 0 && uniform(s) < spec_.dup) {
    copy = rte_pktmbuf_copy(m, m->pool, 0, UINT32_MAX);
    if (copy) bump(s.c.duplicated);
  }
  if (spec_.delay > 0 && delay_tsc_ > 0 && uniform(s) < spec_.delay &&
      hold(s, m, rte_get_tsc_cycles() + delay_tsc_, kNotAfter)) {
    bump(s.c.delayed);
  } else if (spec_.reorder > 0 && uniform(s) < spec_.reorder && hold(s, m, rte_get_tsc_cycles() + reorder_tsc_, s.passed)) {
    bump(s.c.reordered);  // leaves once the next frame has passed it (or 100 us passed)
  } else {
    out = pass(s, m, pkts, out, n);
  }
  if (copy) out = pass(s, copy, pkts, out, n);
  return out;
}

FaultCounts FaultInjector::counts() const noexcept {
  FaultCounts t;
  for (const Queue& s : queues_) {
    t.seen += load(s.c.seen);
    t.dropped += load(s.c.dropped);
    t.corrupted += load(s.c.corrupted);
    t.duplicated += load(s.c.duplicated);
    t.reordered += load(s.c.reordered);
    t.delayed += load(s.c.delayed);
  }
  return t;
}

}  // namespace nerve::drivers
