#include "message_buffers.hpp"

#include <fmt/format.h>
#include <rte_malloc.h>

#include <stdexcept>

namespace nerve::node {

MessageBuffers::MessageBuffers(std::size_t count, std::size_t size, int socket)
    : count_(size == 0 ? 0 : count), size_(size), bufs_(std::make_unique<MessageBuffer[]>(count_)) {
  if (count_ == 0) return;
  mem_ = rte_zmalloc_socket("nerve_messages", count_ * size_, 64, socket);
  if (!mem_)
    throw std::runtime_error(fmt::format("cannot allocate {} message buffers of {} bytes (cluster max_message, "
                                         "message_buffers) on socket {}", count_, size_, socket));
  for (std::size_t i = 0; i < count_; ++i) bufs_[i].data = static_cast<std::byte*>(mem_) + i * size_;
}

MessageBuffers::~MessageBuffers() { rte_free(mem_); }

}  // namespace nerve::node
