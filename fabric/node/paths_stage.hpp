// The paths stage: the receiving end of messages sent over two paths (docs/architecture.md,
// "Two paths").
//
// A sender may send a message (P0 above all) over two disjoint paths at once, as IEC 62439-3
// PRP does over two LANs: each copy carries the two-paths flag, the second path's copy also the
// second-path flag, and both the message's id. The first copy to arrive is delivered; one that
// comes after it is dropped here, or, for a reliable message, handed on to its session, which
// drops it as a duplicate and acknowledges it again (a retransmission whose first transmission
// arrived but whose ack was lost must be acknowledged). Counted per (source, channel): which
// path won, and the copies discarded.
//
// A copy is known by (source, message id) among the last kRecent two-path messages of its
// source: ids count up per source across all its traffic, so a window of ids would let a burst
// of a source's other messages push a late copy's id out of the window (and that copy be
// dropped unseen); a list of the source's recent two-path ids does not. A copy whose twin
// arrived more than kRecent two-path messages of that source earlier is delivered again: a
// duplicate, as PRP allows, never a loss.
//
// Owner thread only. No allocation after start-up.
#pragma once

#include <rte_mbuf.h>

#include <array>
#include <cstdint>
#include <vector>

#include "nerve/stats.hpp"
#include "routing.hpp"
#include "rx_item.hpp"

namespace nerve::node {

class PathsStage {
 public:
  static constexpr std::uint32_t kRecent = 64;

  PathsStage(const Routing& routing, stats::LcoreStats& st) : r_(routing), st_(st), recent_(routing.topo.size()) {}

  // A frame for this node with the two-paths flag: true when it goes on to delivery (the first
  // copy, or any copy of a reliable message), false when it was a later copy and is freed.
  bool take(RxItem& it) noexcept {
    const wire::Header& h = it.d.hdr;
    stats::LcoreStats::PathChannel& c = channel(h.src_node, h.channel);
    if (!seen(recent_[r_.index(h.src_node)], h.msg_id)) {
      c.won[(h.flags & wire::flag::kSecondPath) != 0 ? 1 : 0].add();
      return true;
    }
    c.discarded.add();
    if ((h.flags & wire::flag::kReliable) != 0) return true;
    rte_pktmbuf_free(it.m);
    return false;
  }

 private:
  struct Recent {
    std::array<std::uint32_t, kRecent> id{};
    std::uint32_t next = 0, n = 0;
  };
  // Whether `id` is among the source's recent two-path ids; remembers it if not.
  static bool seen(Recent& r, std::uint32_t id) noexcept {
    const std::uint32_t n = r.n < kRecent ? r.n : kRecent;
    for (std::uint32_t k = 0; k < n; ++k)
      if (r.id[k] == id) return true;
    r.id[r.next] = id;
    r.next = (r.next + 1) % kRecent;
    ++r.n;
    return false;
  }

  stats::LcoreStats::PathChannel& channel(std::uint16_t src, std::uint16_t ch) noexcept {
    const std::uint64_t key = 1 + ((std::uint64_t{src} << 16) | ch);
    if (last_ < used_ && keys_[last_] == key) return st_.paths[last_];
    for (std::size_t k = 0; k < used_; ++k)
      if (keys_[k] == key) return st_.paths[last_ = k];
    if (used_ == stats::kPathChannels) return st_.paths_other;
    keys_[used_] = key;
    st_.paths[used_].key.set(key);
    last_ = used_;
    return st_.paths[used_++];
  }

  const Routing& r_;
  stats::LcoreStats& st_;
  std::vector<Recent> recent_;  // per source (dense index)
  std::array<std::uint64_t, stats::kPathChannels> keys_{};
  std::size_t used_ = 0, last_ = 0;
};

}  // namespace nerve::node
