// The interrupt-handle accessors are experimental API in DPDK 22.11 (stable from 23.11).
#define ALLOW_EXPERIMENTAL_API
#include "intr_registry.hpp"

#include <dlfcn.h>
#include <rte_interrupts.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <vector>

#include "datapath_guard.hpp"

namespace nerve::drivers {
namespace {

// One registered callback: what the PMD asked for, and the wrapper the EAL calls instead.
struct Wrapped {
  int fd;
  rte_intr_callback_fn fn;
  void* arg;
  rte_intr_unregister_callback_fn ucb = nullptr;  // set by unregister_pending
};

// Never destroyed: the EAL unregisters callbacks from static destructors (a test's EAL) and
// from rte_eal_cleanup, whenever that runs.
std::mutex& mu() {
  static auto* m = new std::mutex;
  return *m;
}
std::vector<Wrapped*>& live() {
  static auto* v = new std::vector<Wrapped*>;
  return *v;
}

template <typename Fn>
Fn eal(const char* name) {
  return reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name));
}
using RegisterFn = int (*)(const rte_intr_handle*, rte_intr_callback_fn, void*);
using UnregisterFn = int (*)(const rte_intr_handle*, rte_intr_callback_fn, void*);
using PendingFn = int (*)(const rte_intr_handle*, rte_intr_callback_fn, void*, rte_intr_unregister_callback_fn);

RegisterFn eal_register() {
  static const auto f = eal<RegisterFn>("rte_intr_callback_register");
  return f;
}
UnregisterFn eal_unregister() {
  static const auto f = eal<UnregisterFn>("rte_intr_callback_unregister");
  return f;
}
PendingFn eal_pending() {
  static const auto f = eal<PendingFn>("rte_intr_callback_unregister_pending");
  return f;
}

// What the EAL calls: the PMD's callback with the datapath paused.
void trampoline(void* p) {
  auto* w = static_cast<Wrapped*>(p);
  DatapathGuard::pause_all();
  w->fn(w->arg);
  DatapathGuard::resume_all();
}

void forget(Wrapped* w) {
  {
    const std::lock_guard lock(mu());
    std::erase(live(), w);
  }
  delete w;
}

// After a pending unregistration the EAL calls this; the PMD's own one gets its argument.
void pending_done(rte_intr_handle* h, void* p) {
  auto* w = static_cast<Wrapped*>(p);
  if (w->ucb) w->ucb(h, w->arg);
  forget(w);
}

// The live registrations on `fd` matching (fn, arg); arg (void*)-1 matches any, as in the EAL.
std::vector<Wrapped*> matching(int fd, rte_intr_callback_fn fn, void* arg) {
  std::vector<Wrapped*> out;
  const std::lock_guard lock(mu());
  for (Wrapped* w : live())
    if (w->fd == fd && w->fn == fn && (arg == reinterpret_cast<void*>(-1) || w->arg == arg)) out.push_back(w);
  return out;
}

bool is_unix_listener_on(int fd, const std::string& path) {
  sockaddr_un a{};
  socklen_t len = sizeof a;
  int listening = 0;
  socklen_t ll = sizeof listening;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0 || a.sun_family != AF_UNIX) return false;
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ll) != 0 || !listening) return false;
  return path == std::string(a.sun_path, strnlen(a.sun_path, sizeof a.sun_path));
}

}  // namespace

unsigned release_unix_listener(const std::string& path) {
  std::vector<Wrapped*> stale;
  {
    const std::lock_guard lock(mu());
    for (Wrapped* w : live())
      if (is_unix_listener_on(w->fd, path)) stale.push_back(w);
  }
  unsigned removed = 0;
  for (Wrapped* w : stale) {
    rte_intr_handle* h = rte_intr_instance_alloc(RTE_INTR_INSTANCE_F_PRIVATE);
    if (!h) continue;
    rte_intr_fd_set(h, w->fd);
    rte_intr_type_set(h, RTE_INTR_HANDLE_EXT);
    const int rc = eal_unregister()(h, trampoline, w);
    rte_intr_instance_free(h);
    if (rc > 0) {
      removed += static_cast<unsigned>(rc);
      ::close(w->fd);  // the PMD's, which it never closes
      forget(w);
    }
  }
  return removed;
}

}  // namespace nerve::drivers

using nerve::drivers::Wrapped;

extern "C" int rte_intr_callback_register(const struct rte_intr_handle* h, rte_intr_callback_fn cb, void* cb_arg) {
  using namespace nerve::drivers;
  if (!eal_register()) return -ENOSYS;
  auto* w = new Wrapped{rte_intr_fd_get(h), cb, cb_arg};
  {
    const std::lock_guard lock(mu());
    live().push_back(w);
  }
  const int rc = eal_register()(h, trampoline, w);
  if (rc != 0) forget(w);
  return rc;
}

extern "C" int rte_intr_callback_unregister(const struct rte_intr_handle* h, rte_intr_callback_fn cb, void* cb_arg) {
  using namespace nerve::drivers;
  const auto found = matching(rte_intr_fd_get(h), cb, cb_arg);
  if (found.empty()) return eal_unregister()(h, cb, cb_arg);  // registered before us, or not at all
  int removed = 0;
  bool busy = false;
  for (Wrapped* w : found) {
    const int rc = eal_unregister()(h, trampoline, w);
    if (rc == -EAGAIN) busy = true;
    if (rc < 0) continue;
    removed += rc;
    if (rc > 0) forget(w);
  }
  return busy ? -EAGAIN : removed;
}

extern "C" int rte_intr_callback_unregister_pending(const struct rte_intr_handle* h, rte_intr_callback_fn cb,
                                                    void* cb_arg, rte_intr_unregister_callback_fn ucb) {
  using namespace nerve::drivers;
  const auto found = matching(rte_intr_fd_get(h), cb, cb_arg);
  if (found.empty()) return eal_pending()(h, cb, cb_arg, ucb);
  int marked = 0;
  for (Wrapped* w : found) {
    w->ucb = ucb;
    const int rc = eal_pending()(h, trampoline, w, pending_done);
    if (rc < 0) return rc;
    marked += rc;
  }
  return marked;
}

extern "C" int rte_intr_callback_unregister_sync(const struct rte_intr_handle* h, rte_intr_callback_fn cb,
                                                 void* cb_arg) {
  int rc;
  while ((rc = rte_intr_callback_unregister(h, cb, cb_arg)) == -EAGAIN) {
  }
  return rc;
}
