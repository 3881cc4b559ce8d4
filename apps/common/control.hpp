// The local control socket between nerved and nerve-ctl: a unix stream socket at the node's
// control_socket path; one JSON request per line, one JSON reply per line.
//
//   {"op":"status"}
//   {"op":"send","to":2,"type":"command","priority":0,"payload":"ping","count":1,
//    "number":false,"await_reply":true,"timeout_ms":2000}
//
// docs/operations.md describes both and the replies.
#pragma once

#include <nlohmann/json.hpp>

#include <atomic>
#include <optional>
#include <string>

namespace nerve::app {

// Client side: connects, sends one request, returns the reply, or nullopt with `err` set.
std::optional<nlohmann::json> control_call(const std::string& path, const nlohmann::json& req, std::string& err,
                                           int timeout_ms);

enum class Line { kLine, kClosed, kTooLong, kNone };
// Reads a connection's lines, a chunk per read() (not a byte per system call). One per
// connection: it keeps what it read past the last line.
class LineReader {
 public:
  explicit LineReader(int fd) noexcept : fd_(fd) {}
  // One line, without its '\n'. With `stop`, waits in 100 ms steps and gives up (kClosed) once
  // *stop is true, so an idle or half-written connection never holds up a shutdown.
  Line read(std::string& line, std::size_t max_bytes, const std::atomic<bool>* stop = nullptr);
  // A line read already, or what one wait of up to `wait_ms` (-1: no limit) and one read bring:
  // kNone when that completes no line.
  Line poll_line(std::string& line, std::size_t max_bytes, int wait_ms);

 private:
  Line buffered(std::string& line, std::size_t max_bytes);
  int fd_;
  std::string buf_;
};

// A connection kept open for many requests (one at a time); it reconnects on the call after
// a failure. Not thread-safe.
class ControlClient {
 public:
  explicit ControlClient(std::string path) : path_(std::move(path)) {}
  ~ControlClient() { close(); }
  ControlClient(const ControlClient&) = delete;
  ControlClient& operator=(const ControlClient&) = delete;
  std::optional<nlohmann::json> call(const nlohmann::json& req, std::string& err, int timeout_ms);
  void close() noexcept;

 private:
  bool connect(std::string& err);
  std::string path_;
  int fd_ = -1;
  LineReader reader_{-1};
};

// A connected socket to nerved's control socket, or -1 with `err` set.
int control_connect(const std::string& path, std::string& err);

// Server side helpers.
int control_listen(const std::string& path, std::string& err);      // -1 on failure
bool write_all(int fd, const std::string& data);

}  // namespace nerve::app
