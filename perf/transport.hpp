// The harness's view of a transport: send a probe on a lane, poll for probes, reflect probes.
// Implemented over a nerve::Node (ring, memif, af_packet, af_xdp, pci) and over a kernel UDP
// socket (the peer baseline). Owner thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

struct rte_mempool;

namespace nerve {
class Node;
namespace drivers {
class Port;
}
namespace wire {
struct Endpoints;
}
}

namespace nerve::perf {

// The first 24 bytes of every payload the harness sends; the rest is filler.
struct Probe {
  std::uint64_t seq = 0;
  std::uint64_t stamp_ns = 0;  // Clock::tsc() time the probe was due (open loop) or sent (closed loop)
  std::uint8_t prio = 0;
  std::uint8_t kind = 0;        // Kind
  std::uint16_t point = 0;      // sweep point the probe belongs to
  std::uint32_t reserved = 0;
};
static_assert(sizeof(Probe) == 24);
inline constexpr std::size_t kProbeLen = sizeof(Probe);

enum Kind : std::uint8_t {
  kPing = 1,    // reflect it
  kFlood = 2,   // background traffic: count, do not reflect
  kOneway = 3,  // measure one-way latency at the receiver
  kWarmup = 4,  // reflect or count, never record
};

// rx_ns: when the probe was received, on Clock::tsc() (the same clock the sender stamped with).
using RxFn = std::function<void(const Probe&, std::size_t size, std::uint64_t rx_ns)>;

class Transport {
 public:
  virtual ~Transport() = default;
  virtual std::string name() const = 0;
  // Bytes on the wire (no FCS) for a payload of n bytes.
  virtual std::size_t frame_bytes(std::size_t payload) const = 0;
  virtual std::size_t max_payload() const = 0;
  // Sends one probe padded to `size` bytes on its lane; false when the transport pushes back.
  // `more`: further probes follow at once, so the transport may hold this one for the batch
  // (the next send without `more`, poll() or flush() sends it).
  virtual bool send(const Probe& p, std::size_t size, bool more = false) = 0;
  // Hands every probe that arrived to `rx` (reflecting kPing/kWarmup ones when `reflect`);
  // returns the number handled.
  virtual unsigned poll(const RxFn& rx, bool reflect) = 0;
  virtual void flush() = 0;
  // The far end's idle policy after a poll that handled `work` messages (node: its configured
  // busy/backoff policy; kernel UDP in backoff: block in poll(2) until a datagram arrives).
  virtual void idle(unsigned work) = 0;
};

// A nerve node as transport: sends to `peer`, probes as kMetric messages, reflections as
// responses.
// `also`: forwarding nodes of a longer path that live in this process, polled with it.
// `reliable`: probes go with reliable delivery (the peer's reflections follow suit).
std::unique_ptr<Transport> make_node_transport(Node& node, std::uint16_t peer, std::string name,
                                               std::vector<Node*> also = {}, bool reliable = false);

// The floor: `port` driven by a bare DPDK loop (raw_transport.cc), frames of nerve's length
// from `pool`, addressed as `ep`.
std::unique_ptr<Transport> make_raw_transport(drivers::Port& port, rte_mempool* pool, const wire::Endpoints& ep,
                                              std::size_t max_payload, std::string name);

// A UDP socket on 127.0.0.1 bound to `local_port`, sending to `peer_port` (0: reply to the last
// sender). Non-blocking, busy-polled.
std::unique_ptr<Transport> make_udp_transport(std::uint16_t local_port, std::uint16_t peer_port,
                                              bool block_when_idle = false);

}  // namespace nerve::perf
