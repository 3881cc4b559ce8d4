// The datapath allocates nothing for the control proxy: 100,000 proxy sends, each answered,
// with every heap allocation made on the datapath thread counted (operator new and malloc,
// interposed for this test binary only). The count must be 0.
#include <catch2/catch.hpp>

#include <pthread.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <thread>

#include "nerve/node.hpp"
#include "../support.hpp"

extern "C" void* __libc_malloc(std::size_t);
extern "C" void* __libc_calloc(std::size_t, std::size_t);
extern "C" void* __libc_realloc(void*, std::size_t);
extern "C" void __libc_free(void*);

namespace {

std::atomic<pthread_t> g_watched{0};
std::atomic<std::uint64_t> g_allocs{0};

inline void count() noexcept {
  const pthread_t w = g_watched.load(std::memory_order_relaxed);
  if (w != 0 && pthread_equal(w, pthread_self())) g_allocs.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

extern "C" void* malloc(std::size_t n) {
  count();
  return __libc_malloc(n);
}
extern "C" void* calloc(std::size_t a, std::size_t b) {
  count();
  return __libc_calloc(a, b);
}
extern "C" void* realloc(void* p, std::size_t n) {
  count();
  return __libc_realloc(p, n);
}
extern "C" void free(void* p) { __libc_free(p); }

void* operator new(std::size_t n) {
  count();
  if (void* p = __libc_malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { __libc_free(p); }
void operator delete[](void* p) noexcept { __libc_free(p); }
void operator delete(void* p, std::size_t) noexcept { __libc_free(p); }
void operator delete[](void* p, std::size_t) noexcept { __libc_free(p); }

using namespace nerve;

TEST_CASE("100,000 proxy sends with replies: no allocation on the datapath thread", "[control][alloc]") {
  auto c = test::ring_pair_cluster("al1");
  Node a(c, 1, test::eal());
  Node b(c, 2, test::eal());
  b.on_message([&b](RxMessage& m) {  // answers every command in its own mbuf
    TxFrame f = b.take_frame(m);
    b.respond(m, f);
  });
  std::atomic<bool> stop{false}, started{false};
  std::uint64_t polls = 0;
  std::thread datapath([&] {
    g_watched.store(pthread_self());
    started = true;
    while (!stop.load(std::memory_order_relaxed)) {
      a.poll();
      b.poll();
      ++polls;
    }
    g_watched.store(0);
  });
  while (!started.load()) std::this_thread::yield();

  const std::string payload = "ping";
  ProxySend s;
  s.dst = 2;
  s.type = MsgType::kCommand;
  s.priority = 0;
  s.count = 100'000;
  s.await_reply = true;
  s.timeout = std::chrono::milliseconds(30'000);
  s.fill = ProxySend::copy_of(std::as_bytes(std::span(payload)));
  const ProxyResult r = a.proxy().send(s);
  // And many small requests, each a slot taken and returned.
  ProxySend one = s;
  one.count = 1;
  unsigned ok = 0;
  for (int i = 0; i < 200; ++i) ok += a.proxy().send(one).status == SendStatus::kOk;
  stop = true;
  datapath.join();

  CHECK(r.status == SendStatus::kOk);
  CHECK(r.sent == 100'000);
  CHECK(r.replies == 100'000);
  CHECK(r.reply == "ping");
  CHECK(ok == 200);
  CHECK(polls > 0);
  CHECK(g_allocs.load() == 0);
}
