// The stages' way into the public frame types: building an RxMessage around a received mbuf,
// taking the mbuf out of a TxFrame. Internal to the node.
#pragma once

#include <rte_mbuf.h>

#include "message_buffers.hpp"
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
  // A message that came in fragments, in reassembly buffer `b` (the message owns it now).
  static RxMessage message(node::MessageBuffer* b, const wire::Header& h, std::size_t len, std::uint64_t latency_ns,
                           std::uint64_t received_ns) noexcept {
    RxMessage msg;
    msg.buf_ = b;
    msg.hdr_ = h;
    msg.payload_ = std::span<const std::byte>(b->data, len);
    msg.latency_ns_ = latency_ns;
    msg.received_ns_ = received_ns;
    return msg;
  }
  static TxFrame frame(node::MessageBuffer* b, std::span<std::byte> payload) noexcept {
    TxFrame f;
    f.buf_ = b;
    f.payload_ = payload;
    return f;
  }
  static node::MessageBuffer* buffer(const TxFrame& f) noexcept { return f.buf_; }
  static TxFrame frame(rte_mbuf* m, std::span<std::byte> payload) noexcept {
    TxFrame f;
    f.m_ = m;
    f.payload_ = payload;
    return f;
  }
  static rte_mbuf* release(TxFrame& f) noexcept {
    rte_mbuf* m = f.m_;
    f.m_ = nullptr;
    f.buf_ = nullptr;  // a large frame's buffer: the reliable stage's now
    f.payload_ = {};
    return m;
  }
  static rte_mbuf* mbuf(const TxFrame& f) noexcept { return f.m_; }
  // Takes the mbuf out of `msg` (nullptr for a large message, which keeps its buffer).
  static rte_mbuf* release(RxMessage& msg) noexcept {
    rte_mbuf* m = msg.m_;
    if (!m) return nullptr;
    msg.m_ = nullptr;
    msg.payload_ = {};
    return m;
  }
  // A large message's reassembly buffer goes back now; its header stays readable.
  static void drop_buffer(RxMessage& msg) noexcept {
    if (!msg.buf_) return;
    node::give_back(msg.buf_);
    msg.buf_ = nullptr;
    msg.payload_ = {};
  }
};

}  // namespace nerve
