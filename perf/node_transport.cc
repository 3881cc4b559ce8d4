#include <cstring>

#include "nerve/node.hpp"
#include "transport.hpp"
#include "nerve/clock.hpp"

namespace nerve::perf {
namespace {

constexpr unsigned kReflectTries = 100000;  // flushes before a reflected probe is dropped

class NodeTransport final : public Transport {
 public:
  NodeTransport(Node& node, std::uint16_t peer, std::string name, std::vector<Node*> also, bool reliable)
      : node_(node), peer_(peer), name_(std::move(name)), also_(std::move(also)), reliable_(reliable) {
    node_.on_message([this](RxMessage& m) { on_message(m); });
  }
  ~NodeTransport() override { node_.on_message({}); }

  std::string name() const override { return name_; }
  std::size_t frame_bytes(std::size_t payload) const override { return wire::frame_len(payload); }
  std::size_t max_payload() const override { return node_.max_payload(); }

  bool send(const Probe& p, std::size_t size, bool more) override {
    TxFrame f = node_.alloc(size);
    if (!f) return false;
    write(f, p, size);
    // The harness never sheds its own probes: a full lane pushes back, so `lost` counts only
    // what the fabric lost after a probe was accepted.
    SendOptions o;
    o.never_shed = true;
    o.more = more;
    o.reliable = reliable_;
    return node_.send(f, peer_, MsgType::kMetric, p.prio, o) == SendStatus::kOk;
  }

  unsigned poll(const RxFn& rx, bool reflect) override {
    rx_ = &rx;
    reflect_ = reflect;
    handled_ = 0;
    node_.poll();
    for (Node* n : also_) n->poll();
    rx_ = nullptr;
    return handled_;
  }

  void flush() override {
    node_.flush();
    for (Node* n : also_) n->flush();
  }
  void idle(unsigned work) override { node_.idle_step(work); }

 private:
  static void write(TxFrame& f, const Probe& p, std::size_t size) {
    auto* d = f.payload().data();
    std::memcpy(d, &p, std::min(size, kProbeLen));
    if (size > kProbeLen) std::memset(d + kProbeLen, 0x5a, size - kProbeLen);
  }

  void on_message(RxMessage& m) {
    const std::uint64_t now = m.received_ns();  // the node's clock, read once per burst
    const std::size_t size = m.payload().size();
    if (size < kProbeLen) return;
    Probe p;
    std::memcpy(&p, m.payload().data(), kProbeLen);
    ++handled_;
    if (reflect_ && (p.kind == kPing || p.kind == kWarmup)) {
      // Reflect: the same payload back, on the same lane, in the same mbuf (no copy).
      TxFrame f = node_.take_frame(m);
      // A full lane drains as the port takes frames; a peer that stopped reading never lets
      // it, so retry a bounded number of times and then drop (the pinger counts it lost).
      for (unsigned tries = 0; tries < kReflectTries && node_.respond(m, f) == SendStatus::kBackpressure; ++tries)
        node_.flush();
    }
    if (rx_) (*rx_)(p, size, now);
  }

  Node& node_;
  std::uint16_t peer_;
  std::string name_;
  std::vector<Node*> also_;
  bool reliable_;
  const RxFn* rx_ = nullptr;
  bool reflect_ = false;
  unsigned handled_ = 0;
};

}  // namespace

std::unique_ptr<Transport> make_node_transport(Node& node, std::uint16_t peer, std::string name,
                                               std::vector<Node*> also, bool reliable) {
  return std::make_unique<NodeTransport>(node, peer, std::move(name), std::move(also), reliable);
}

}  // namespace nerve::perf
