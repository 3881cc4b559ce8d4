#include "queries.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <sys/socket.h>
#include <unistd.h>

#include "../common/control.hpp"
#include "../common/log.hpp"
#include "../common/query.hpp"

namespace nerve::sidecar {

using nlohmann::json;

QueryServer::QueryServer(std::string control_socket, Metrics metrics, const History& history)
    : socket_(std::move(control_socket)), metrics_(std::move(metrics)), history_(history) {}

void QueryServer::start() {
  stop_.store(false);
  thread_ = std::thread([this] { run(); });
}

void QueryServer::stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

std::string QueryServer::answer(std::uint16_t from, std::string_view text, std::size_t max_bytes) {
  std::string err;
  const auto req = app::query::parse(text, err);
  if (!req) {
    refused_.fetch_add(1, std::memory_order_relaxed);
    return "error " + err;
  }
  if (req->history && !history_.enabled()) {
    refused_.fetch_add(1, std::memory_order_relaxed);
    return "error no history on this node: telemetry.history_dir is not set";
  }
  app::query::Request first = *req;
  first.offset = 0;
  const std::string key = app::query::format(first);
  const auto now = std::chrono::steady_clock::now();
  // A later page of the query just answered: the same view. Otherwise (a first page, or one
  // whose result has gone) the result now.
  if (req->offset == 0 || cache_.from != from || cache_.key != key || now - cache_.at > std::chrono::seconds(30)) {
    cache_.lines = req->history
                       ? app::query::history_lines(history_.read(req->since_ns, req->limit), req->prefix)
                       : app::query::current_lines(metrics_(), req->prefix);
    cache_.from = from;
    cache_.key = key;
  }
  cache_.at = now;
  answered_.fetch_add(1, std::memory_order_relaxed);
  return app::query::page(cache_.lines, req->offset, max_bytes);
}

void QueryServer::run() {
  bool told = false;
  while (!stop_.load()) {
    std::string err;
    const int fd = app::control_connect(socket_, err);
    if (fd >= 0) {
      std::string line;
      json ack;
      app::LineReader reader(fd);
      const timeval limit{1, 0};  // a nerved that stops reading never holds this thread in a write
      ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
      if (app::write_all(fd, R"({"op":"serve_queries"})" "\n") &&
          reader.read(line, 1 << 16, &stop_) == app::Line::kLine)
        ack = json::parse(line, nullptr, false);
      if (ack.is_object() && ack.value("serving", false)) {
        app::log(app::Level::kInfo, "answering node {}'s queries over the fabric", ack.value("node", 0));
        told = false;
        attached_.store(true);
        serve(fd, reader, ack.value("max_payload", std::size_t{1024}));
        attached_.store(false);
      } else if (!told && ack.is_object() && ack.contains("error")) {
        app::log(app::Level::kWarn, "nerved will not hand this sidecar its queries: {}", ack["error"].get<std::string>());
        told = true;
      }
      ::close(fd);
    }
    // nerved not running (yet, or any more): try again shortly.
    for (int i = 0; i < 4 && !stop_.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

void QueryServer::serve(int fd, app::LineReader& reader, std::size_t max_bytes) {
  std::string line;
  while (!stop_.load()) {
    if (reader.read(line, 1 << 20, &stop_) != app::Line::kLine) return;  // nerved went, or we stop
    const json q = json::parse(line, nullptr, false);
    if (!q.is_object() || !q.contains("query") || !q["query"].is_number_unsigned() || !q.contains("text") ||
        !q["text"].is_string()) {
      refused_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    const auto from = q.contains("from") && q["from"].is_number_unsigned() ? q["from"].get<std::uint16_t>() : 0;
    const json a = {{"op", "answer"}, {"query", q["query"]}, {"text", answer(from, q["text"].get<std::string>(), max_bytes)}};
    if (!app::write_all(fd, a.dump(-1, ' ', false, json::error_handler_t::replace) + "\n")) return;
  }
}

}  // namespace nerve::sidecar
