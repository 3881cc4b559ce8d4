#include "control.hpp"

#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

namespace nerve::app {
namespace {

bool make_addr(const std::string& path, sockaddr_un& a, std::string& err) {
  std::memset(&a, 0, sizeof a);
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) {
    err = fmt::format("control socket path '{}' is longer than {} bytes", path, sizeof a.sun_path - 1);
    return false;
  }
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  return true;
}

}  // namespace

Line LineReader::buffered(std::string& line, std::size_t max_bytes) {
  if (const auto nl = buf_.find('\n'); nl != std::string::npos) {
    if (nl > max_bytes) return Line::kTooLong;
    line.assign(buf_, 0, nl);
    buf_.erase(0, nl + 1);
    return Line::kLine;
  }
  return buf_.size() > max_bytes ? Line::kTooLong : Line::kNone;
}

Line LineReader::poll_line(std::string& line, std::size_t max_bytes, int wait_ms) {
  line.clear();
  if (const Line got = buffered(line, max_bytes); got != Line::kNone) return got;
  pollfd p{fd_, POLLIN, 0};
  const int r = ::poll(&p, 1, wait_ms);
  if (r == 0 || (r < 0 && errno == EINTR)) return Line::kNone;
  char chunk[16384];
  const ssize_t n = ::read(fd_, chunk, sizeof chunk);
  if (n < 0 && errno == EINTR) return Line::kNone;
  if (n <= 0) return Line::kClosed;
  buf_.append(chunk, static_cast<std::size_t>(n));
  return buffered(line, max_bytes);
}

Line LineReader::read(std::string& line, std::size_t max_bytes, const std::atomic<bool>* stop) {
  while (true) {
    const Line got = poll_line(line, max_bytes, stop ? 100 : -1);
    if (got != Line::kNone) return got;
    if (stop && stop->load(std::memory_order_relaxed)) return Line::kClosed;
  }
}

bool write_all(int fd, const std::string& data) {
  std::size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<std::size_t>(n);
  }
  return true;
}

int control_connect(const std::string& path, std::string& err) {
  sockaddr_un a;
  if (!make_addr(path, a, err)) return -1;
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    err = fmt::format("socket: {}", std::strerror(errno));
    return -1;
  }
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    err = fmt::format("cannot reach nerved at {}: {} (is it running?)", path, std::strerror(errno));
    ::close(fd);
    return -1;
  }
  return fd;
}

bool ControlClient::connect(std::string& err) {
  fd_ = control_connect(path_, err);
  reader_ = LineReader(fd_);
  return fd_ >= 0;
}

void ControlClient::close() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

std::optional<nlohmann::json> ControlClient::call(const nlohmann::json& req, std::string& err, int timeout_ms) {
  if (fd_ < 0 && !connect(err)) return std::nullopt;
  std::optional<nlohmann::json> out;
  std::string line;
  Line got = Line::kClosed;
  if (write_all(fd_, req.dump() + "\n")) {
    // Waits out interruptions and partial lines until the deadline.
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    int left = timeout_ms;
    while ((got = reader_.poll_line(line, 16 << 20, left)) == Line::kNone) {
      left = static_cast<int>(
          std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now()).count());
      if (left <= 0) break;
    }
  }
  if (got == Line::kNone) {
    err = fmt::format("no reply from nerved within {} ms", timeout_ms);
  } else if (got != Line::kLine) {
    err = "nerved closed the control connection";
  } else {
    out = nlohmann::json::parse(line, nullptr, false);
    if (out->is_discarded()) {
      err = "nerved sent a reply that is not JSON";
      out.reset();
    }
  }
  if (!out) close();  // a late reply must not answer the next request
  return out;
}

std::optional<nlohmann::json> control_call(const std::string& path, const nlohmann::json& req, std::string& err,
                                           int timeout_ms) {
  ControlClient c(path);
  return c.call(req, err, timeout_ms);
}

int control_listen(const std::string& path, std::string& err) {
  sockaddr_un a;
  if (!make_addr(path, a, err)) return -1;
  std::error_code ec;
  const auto dir = std::filesystem::path(path).parent_path();
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    err = fmt::format("socket: {}", std::strerror(errno));
    return -1;
  }
  // A socket file nobody answers on is left from a process that died: take it over. One that
  // answers belongs to a running nerved: refuse to start a second one for the same node.
  if (std::filesystem::exists(path, ec)) {
    const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const bool alive = probe >= 0 && ::connect(probe, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    if (probe >= 0) ::close(probe);
    if (alive) {
      err = fmt::format("control socket {} is in use: is this node already running?", path);
      ::close(fd);
      return -1;
    }
    ::unlink(path.c_str());
  }
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 16) != 0) {
    err = fmt::format("control socket {}: {}", path, std::strerror(errno));
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace nerve::app
