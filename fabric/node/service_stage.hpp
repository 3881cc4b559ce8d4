// The service stage: load-balanced services on the sender's node.
//
// send() picks one live instance of a service by its policy (route/balance.hpp) and sends the
// message to it through the TX stage (SendOptions::reliable: through the reliable stage, to that
// instance as to any node; its response comes back as reliably). An instance is live while this node has a route to it:
// the forwarding table and the link mask decide, so an instance that fails leaves the set
// within the failure detection time ((heartbeat_miss + 0.5) / heartbeat_hz).
//
// Requests (kCommand, kResourceRequest) are tracked until answered: a table direct-mapped by
// message id (the correlation id the response carries) holds each open request, and a ring
// per service keeps them in send order for the timeout sweep (a timer at the earliest
// deadline). A request ends exactly once: answered (a response from that instance), timed
// out (the service's timeout_ms), or failed because its instance went down (check(), on every
// change of the table or the links). Failures go to the node's failure handler and to the
// control stage (a proxy request waiting on them), and are counted per instance.
//
// Owner thread only, no allocation after start-up; the counters are read from any thread.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "../route/balance.hpp"
#include "nerve/clock.hpp"
#include "nerve/node.hpp"
#include "routing.hpp"
#include "timer_stage.hpp"
#include "tx_stage.hpp"

namespace nerve::node {

class ReliableStage;

class ServiceStage {
 public:
  static constexpr std::uint32_t kTrackSlots = 16384;  // requests open at once, all services
  static constexpr std::uint32_t kRing = 65536;        // per service, in send order

  // Told of every failed request (the control stage: a proxy request may be waiting on it).
  using Sink = void (*)(void* ctx, std::uint32_t msg_id);

  ServiceStage(const config::Cluster& c, Routing& r, TxStage& tx, TimerStage& timers, Clock& clock);
  ServiceStage(const ServiceStage&) = delete;
  ServiceStage& operator=(const ServiceStage&) = delete;
  // Where reliable sends go (the reliable stage is built after this one).
  void use_reliable(ReliableStage& r) noexcept { reliable_ = &r; }

  // Position of service `id` in the cluster file, or -1.
  int index(std::uint16_t id) const noexcept;
  std::size_t size() const noexcept { return svcs_.size(); }
  std::uint16_t instance_id(unsigned svc, int i) const noexcept { return svcs_[svc]->bal.instance(i); }
  int instance_pos(unsigned svc, std::uint16_t node) const noexcept { return svcs_[svc]->bal.position(node); }

  // Sends `m` to one live instance of service `svc` (an index). On kOk the stage owns `m` and
  // `*instance` is the node chosen.
  SendStatus send(rte_mbuf* m, unsigned svc, MsgType type, std::uint8_t prio, const SendOptions& o,
                  NodeId* instance) noexcept;

  bool open() const noexcept { return open_ != 0; }
  // A response arrived: closes the request it answers, if it is one of ours from its instance.
  void answered(const wire::Header& h) noexcept;
  // Between bursts: recomputes which instances are live when the table or the links changed,
  // and fails the open requests of those that are not.
  void check() noexcept;

  void set_handler(std::function<void(const ServiceFailure&)> h) { handler_ = std::move(h); }
  void set_sink(Sink fn, void* ctx) noexcept {
    sink_ = fn;
    sink_ctx_ = ctx;
  }

  // Any thread.
  std::vector<ServiceInfo> info() const;

 private:
  struct Counters {
    stats::Counter sent, requests, answered, timed_out, failed_down;
  };
  struct Svc {
    explicit Svc(const config::Service& s) : cfg(s), bal(s), ring(kRing), counters(s.instances.size()) {}
    config::Service cfg;
    route::Balancer bal;
    std::uint64_t timeout_ns = 0;
    std::uint64_t live = 0;                    // bit i: instance i has a route
    std::uint64_t gone = 0;                    // were live, are not: open requests to fail
    std::atomic<std::uint64_t> live_shared{0};  // the same, for readers on other threads
    std::vector<std::uint32_t> ring;           // message ids of requests, in send order
    std::uint32_t head = 0, tail = 0;
    std::vector<Counters> counters;            // per instance
  };
  struct Track {
    std::uint32_t msg_id = 0;
    std::uint16_t svc = 0;
    std::uint8_t inst = 0;
    bool live = false;
    std::uint64_t deadline_ns = 0;
  };

  void fail(Track& t, bool timed_out) noexcept;
  void refresh_live() noexcept;
  static void on_deadline(void* self, std::uint64_t now_ns);

  Routing& r_;
  TxStage& tx_;
  ReliableStage* reliable_ = nullptr;
  Clock& clock_;
  std::vector<std::unique_ptr<Svc>> svcs_;
  std::vector<Track> track_;
  std::uint32_t open_ = 0;
  Timer deadline_;
  const route::Fib* seen_fib_ = nullptr;  // the table and links the live masks were computed on
  std::uint64_t seen_up_ = ~0ull;
  std::function<void(const ServiceFailure&)> handler_;
  Sink sink_ = nullptr;
  void* sink_ctx_ = nullptr;
};

}  // namespace nerve::node
