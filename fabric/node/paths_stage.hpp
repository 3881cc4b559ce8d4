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
// A copy is known by (source, message id) in a window of the source's newest 8,192 ids: the
// copies of one message arrive at most the paths' skew apart, in which a source sends far
// fewer messages than that (a receiver reads a few hundred frames a poll from each port). A
// copy older than the window (its twin came over 8,192 of the source's ids earlier) is
// delivered: at worst a duplicate, as PRP allows, never a loss. (Not the broadcast window's
// rule, where what is older than the window is refused: a source's ids count up across all its
// traffic, and a burst of its other messages must not make a late copy look old.)
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
#include "seen_window.hpp"

namespace nerve::node {

class PathsStage {
 public:
  static constexpr std::uint32_t kWindow = 8192;  // a power of two

  PathsStage(const Routing& routing, stats::LcoreStats& st) : r_(routing), st_(st), seen_(routing.topo.size()) {}

  // A frame for this node with the two-paths flag: true when it goes on to delivery (the first
  // copy, or any copy of a reliable message), false when it was a later copy and is freed.
  bool take(RxItem& it) noexcept {
    const wire::Header& h = it.d.hdr;
    stats::LcoreStats::PathChannel& c = channel(h.src_node, h.channel);
    if (!seen_[r_.index(h.src_node)].seen(h.msg_id)) {
      c.won[(h.flags & wire::flag::kSecondPath) != 0 ? 1 : 0].add();
      return true;
    }
    c.discarded.add();
    if ((h.flags & wire::flag::kReliable) != 0) return true;
    rte_pktmbuf_free(it.m);
    return false;
  }

  // The source's newest kWindow message ids (public for its test). An id older than the window
  // counts as not seen (see the top).
  struct Window {
    IdWindow<kWindow> ids;
    bool seen(std::uint32_t id) noexcept { return ids.mark(id) == IdWindow<kWindow>::Mark::kSeen; }
  };

 private:
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
  std::vector<Window> seen_;  // per source (dense index)
  std::array<std::uint64_t, stats::kPathChannels> keys_{};
  std::size_t used_ = 0, last_ = 0;
};

}  // namespace nerve::node
