// The stages' way into the public frame types: building an RxMessage around a received mbuf,
// taking the mbuf out of a TxFrame. Internal to the node.
#pragma once

#include <rte_mbuf.h>

#include "nerve/node.hpp"

namespace nerve {

struct NodeAccess {
  static RxMessage message(rte_mbuf* m, const wire::Header& h, std::span<const std::byte> payload,
                           std::uint64_t latency_ns, std::uint64_t received_ns) noexcept {
    RxMessage msg;
    msg.m_ = m;
    msg.hdr_ = h;
    msg.payload_ = payload;
    msg.latency_ns_ = latency_ns;
    msg.received_ns_ = received_ns;
    return msg;
  }
  static TxFrame frame(rte_mbuf* m, std::span<std::byte> payload) noexcept {
    TxFrame f;
    f.m_ = m;
    f.payload_ = payload;
    return f;
  }
  static rte_mbuf* release(TxFrame& f) noexcept {
    rte_mbuf* m = f.m_;
    f.m_ = nullptr;
    f.payload_ = {};
    return m;
  }
  static rte_mbuf* mbuf(const TxFrame& f) noexcept { return f.m_; }
  static rte_mbuf* release(RxMessage& msg) noexcept {
    rte_mbuf* m = msg.m_;
    msg.m_ = nullptr;
    msg.payload_ = {};
    return m;
  }
};

}  // namespace nerve
