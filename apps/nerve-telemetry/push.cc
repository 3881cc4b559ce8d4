#include "push.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "../common/control.hpp"
#include "../common/log.hpp"

namespace nerve::sidecar {

Pusher::Pusher(const config::Cluster& cluster, const config::Node& self)
    : control_socket_(self.control_socket),
      node_name_(self.name),
      node_label_(fmt::format("node=\"{}\"", label_value(self.name))),
      max_payload_(config::max_payload(cluster.mtu)) {
  for (const auto id : cluster.telemetry.push_to)
    if (id != self.id) to_.push_back(id);
  for (const auto& t : cluster.telemetry.push_tiers)
    tiers_ |= 1u << static_cast<unsigned>(std::find(config::kTierNames.begin(), config::kTierNames.end(), t) -
                                          config::kTierNames.begin());
  if (!to_.empty()) thread_ = std::thread([this] { run(); });
}

Pusher::~Pusher() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Pusher::push(std::size_t tier, Group g, std::uint64_t seq, std::uint64_t taken_ns, const std::string& text,
                  std::uint64_t event_ns) {
  // The figures without comments and without the node label (the header line names the node).
  const std::string_view group = config::kMetricGroups[static_cast<std::size_t>(g)];
  enqueue(tier, g == Group::kErrors || g == Group::kLinks,
          fmt::format("nerve-telemetry node={} tier={} group={} seq={} taken_ns={}", node_name_,
                      config::kTierNames[tier], group, seq, taken_ns),
          series_lines(text, node_label_), event_ns);
}

void Pusher::push_rollup(std::uint64_t unix_ns, const std::vector<std::string>& lines) {
  constexpr std::size_t kHistorical = config::kTiers - 1;
  enqueue(kHistorical, false,
          fmt::format("nerve-telemetry node={} tier={} batch=rollup t={}", node_name_, config::kTierNames[kHistorical],
                      unix_ns),
          lines, 0);
}

void Pusher::enqueue(std::size_t tier, bool status, const std::string& head, const std::vector<std::string>& lines,
                     std::uint64_t event_ns) {
  // Parts: as many lines as fit under the frame's payload with the header (~120 bytes).
  std::vector<std::string> bodies(1);
  const std::size_t room = max_payload_ > 160 ? max_payload_ - 160 : max_payload_;
  for (const auto& l : lines) {
    if (l.size() + 1 > room) continue;  // a line no frame holds: left out (none are this long)
    if (bodies.back().size() + l.size() + 1 > room) bodies.emplace_back();
    bodies.back() += l;
    bodies.back() += '\n';
  }
  std::lock_guard lk(mu_);
  for (std::size_t i = 0; i < bodies.size(); ++i) {
    if (queue_.size() >= kQueue * to_.size()) {
      dropped_.fetch_add((bodies.size() - i) * to_.size(), std::memory_order_relaxed);
      break;
    }
    queue_.push_back(Message{tier, status, fmt::format("{} part={}/{}\n{}", head, i + 1, bodies.size(), bodies[i]),
                             i + 1 == bodies.size() ? event_ns : 0});  // measured when the whole sample has left
  }
  cv_.notify_one();
}

void Pusher::run() {
  app::ControlClient nerved(control_socket_);
  bool warned = false;
  for (;;) {
    Message m;
    {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      m = std::move(queue_.front());
      queue_.pop_front();
    }
    bool sent = false;
    for (const auto to : to_) {
      const nlohmann::json req = {{"op", "send"},      {"to", to},          {"type", m.status ? "status" : "metric"},
                                  {"priority", m.tier}, {"payload", m.payload}, {"count", 1},
                                  {"await_reply", false}, {"timeout_ms", 1000}};
      std::string err;
      const auto rep = nerved.call(req, err, 2000);
      if (rep && rep->value("status", "") == "ok") {
        pushed_[m.tier].fetch_add(1, std::memory_order_relaxed);
        warned = false;
        // nerved answers once the frame is on its lane: the sample has left (to the first subscriber).
        if (m.event_ns != 0 && !sent) {
          const std::uint64_t now = clock_ns(CLOCK_REALTIME);
          event_to_push_.record(now > m.event_ns ? now - m.event_ns : 0);
        }
        sent = true;
        continue;
      }
      failed_.fetch_add(1, std::memory_order_relaxed);
      if (!warned)
        app::log(app::Level::kWarn, "push to node {} failed: {}", to,
                 rep ? rep->dump().substr(0, 200) : err);  // once until one succeeds again
      warned = true;
    }
  }
}

}  // namespace nerve::sidecar
