// Buffers for messages larger than one frame (docs/architecture.md, "Large messages"): a fixed
// set of max_message-byte buffers, allocated when the node starts (NUMA-local, zeroed, so
// their pages are in place before the datapath writes them). A node has one set for sending
// (Node::alloc hands a buffer out as a TxFrame; the reliable stage cuts it into fragments and
// gives it back once the last one is sent) and one for reassembly (a received message is
// delivered as an RxMessage viewing its buffer, given back when the message is freed).
//
// The owner thread takes buffers; any thread may give one back (an RxMessage moved to another
// thread and freed there): each buffer's state is one atomic flag.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace nerve::node {

struct MessageBuffer {
  std::atomic<bool> busy{false};
  std::byte* data = nullptr;
};

// Gives `b` back to its set (any thread).
inline void give_back(MessageBuffer* b) noexcept { b->busy.store(false, std::memory_order_release); }

class MessageBuffers {
 public:
  // `count` buffers of `size` bytes on NUMA `socket`; none when size is 0. Throws
  // std::runtime_error when the memory cannot be had.
  MessageBuffers(std::size_t count, std::size_t size, int socket);
  ~MessageBuffers();
  MessageBuffers(const MessageBuffers&) = delete;
  MessageBuffers& operator=(const MessageBuffers&) = delete;

  std::size_t size() const noexcept { return size_; }  // bytes of one buffer
  // A free buffer, now busy; nullptr when every one is in use. Owner thread only.
  MessageBuffer* take() noexcept {
    for (std::size_t i = 0; i < count_; ++i)
      if (!bufs_[i].busy.load(std::memory_order_acquire)) {
        bufs_[i].busy.store(true, std::memory_order_relaxed);
        return &bufs_[i];
      }
    return nullptr;
  }
  bool any_free() const noexcept {
    for (std::size_t i = 0; i < count_; ++i)
      if (!bufs_[i].busy.load(std::memory_order_acquire)) return true;
    return false;
  }

 private:
  std::size_t count_, size_;
  std::unique_ptr<MessageBuffer[]> bufs_;
  void* mem_ = nullptr;
};

}  // namespace nerve::node
