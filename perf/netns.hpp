// Enters a network namespace for the life of the object (the thread's, via setns), and goes
// back to the one it came from.
#pragma once

#include <fcntl.h>
#include <fmt/format.h>
#include <sched.h>
#include <unistd.h>

#include <stdexcept>
#include <string>

namespace nerve::perf {

class NetnsGuard {
 public:
  explicit NetnsGuard(const std::string& name) {
    self_ = ::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    const int fd = ::open(fmt::format("/var/run/netns/{}", name).c_str(), O_RDONLY | O_CLOEXEC);
    if (self_ < 0 || fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
      if (fd >= 0) ::close(fd);
      throw std::runtime_error(fmt::format("cannot enter network namespace {}", name));
    }
    ::close(fd);
  }
  ~NetnsGuard() {
    setns(self_, CLONE_NEWNET);
    ::close(self_);
  }
  NetnsGuard(const NetnsGuard&) = delete;
  NetnsGuard& operator=(const NetnsGuard&) = delete;

 private:
  int self_ = -1;
};

}  // namespace nerve::perf
