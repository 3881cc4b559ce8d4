// Query responses over the fabric: the sidecar answers what other nodes ask of this node
// (`nerve-ctl --node A query --from B`). It attaches to its nerved's control socket as the app
// that serves the node's queries ({"op":"serve_queries"}, apps/nerved/queries.hpp), gets each
// query as a line and writes its answer back; nerved sends it to the asker as the response.
// Current values are what /metrics serves; history comes from the roll-ups on disk. The page
// protocol is apps/common/query.hpp's. A nerved that is not running (or restarts) is waited for.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "../common/control.hpp"
#include "history.hpp"

namespace nerve::sidecar {

class QueryServer {
 public:
  using Metrics = std::function<std::string()>;  // the /metrics text now
  QueryServer(std::string control_socket, Metrics metrics, const History& history);
  ~QueryServer() { stop(); }
  QueryServer(const QueryServer&) = delete;
  QueryServer& operator=(const QueryServer&) = delete;

  void start();
  void stop();

  // The answer to one query text from node `from`, at most `max_bytes` long. The first page
  // (offset 0) computes the result; later pages of the same query come from it.
  std::string answer(std::uint16_t from, std::string_view text, std::size_t max_bytes);

  std::uint64_t answered() const noexcept { return answered_.load(std::memory_order_relaxed); }
  std::uint64_t refused() const noexcept { return refused_.load(std::memory_order_relaxed); }
  bool attached() const noexcept { return attached_.load(std::memory_order_relaxed); }

 private:
  void run();
  void serve(int fd, app::LineReader& reader, std::size_t max_bytes);

  std::string socket_;
  Metrics metrics_;
  const History& history_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> attached_{false};
  std::atomic<std::uint64_t> answered_{0}, refused_{0};
  // The newest query's result, for its later pages.
  struct Cached {
    std::uint16_t from = 0;
    std::string key;  // the request without its offset
    std::vector<std::string> lines;
    std::chrono::steady_clock::time_point at;
  } cache_;
};

}  // namespace nerve::sidecar
