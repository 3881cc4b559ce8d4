// The validate stage: every frame decoded or refused with one counted reason; refused frames
// freed at once, accepted ones passed on in order with their headers.
#include <catch2/catch.hpp>

#include "node/validate_stage.hpp"
#include "stage_rig.hpp"

using namespace nerve;

TEST_CASE("validate: accepted frames go on in order, refused ones are counted and freed", "[stage][validate]") {
  test::StageRig rig("va1");
  node::ValidateStage v(wire::RxFilter{rig.cluster.udp_port, rig.cluster.mtu, 0}, rig.st);
  const unsigned free_before = rig.free_mbufs();
  std::vector<rte_mbuf*> in;
  in.push_back(rig.mbuf(rig.frame(0, 1)));
  auto bad_magic = rig.frame(0, 2);
  bad_magic[wire::kEthLen + wire::kIpv4Len + wire::kUdpLen] = std::byte{0};
  in.push_back(rig.mbuf(bad_magic));
  in.push_back(rig.mbuf(rig.frame(3, 3)));
  in.push_back(rig.mbuf(rig.frame(1, 4, [](auto&, auto& h) { h.flags = wire::flag::kReliable; })));
  in.push_back(rig.mbuf(std::vector<std::byte>(20)));
  in.push_back(rig.mbuf(rig.frame(4, 5)));
  // A chained mbuf: never from our senders, refused as such.
  rte_mbuf* chain = rig.mbuf(rig.frame(2, 6));
  rte_mbuf* tail = rig.mbuf(std::vector<std::byte>(4));
  REQUIRE(rte_pktmbuf_chain(chain, tail) == 0);
  in.push_back(chain);

  node::RxItem out[node::kBurst];
  const std::uint16_t k = v.run(in.data(), static_cast<std::uint16_t>(in.size()), out);
  REQUIRE(k == 3);
  CHECK(out[0].d.hdr.msg_id == 1);
  CHECK(out[1].d.hdr.msg_id == 3);
  CHECK(out[2].d.hdr.msg_id == 5);
  CHECK(out[1].d.hdr.priority == 3);
  CHECK(out[0].d.payload.data() == rte_pktmbuf_mtod_offset(out[0].m, const std::byte*, wire::kOverhead));
  CHECK(test::refused(rig.st, wire::Refusal::kBadMagic) == 1);
  CHECK(test::refused(rig.st, wire::Refusal::kFeatureDisabled) == 1);
  CHECK(test::refused(rig.st, wire::Refusal::kTruncated) == 1);
  CHECK(rig.st.rx_multi_segment.get() == 1);
  CHECK(rig.st.rx_frames.get() == 7);
  // The refused went back to the pool; the accepted are still held.
  CHECK(rig.free_mbufs() == free_before - 3);
  for (std::uint16_t i = 0; i < k; ++i) rte_pktmbuf_free(out[i].m);
  CHECK(rig.free_mbufs() == free_before);
}

TEST_CASE("validate: a node with a feature enabled accepts its flag", "[stage][validate]") {
  test::StageRig rig("va2");
  node::ValidateStage v(wire::RxFilter{rig.cluster.udp_port, rig.cluster.mtu, wire::flag::kReliable}, rig.st);
  rte_mbuf* in[1] = {rig.mbuf(rig.frame(1, 4, [](auto&, auto& h) { h.flags = wire::flag::kReliable; }))};
  node::RxItem out[1];
  REQUIRE(v.run(in, 1, out) == 1);
  CHECK(out[0].d.hdr.flags == wire::flag::kReliable);
  rte_pktmbuf_free(out[0].m);
}
