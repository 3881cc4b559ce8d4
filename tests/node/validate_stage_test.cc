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
  in.push_back(rig.mbuf(rig.frame(1, 4, [](auto&, auto& h) {
    h.flags = wire::flag::kReliable;
    h.session = 7;
    h.seq = 1;
  })));
  in.push_back(rig.mbuf(std::vector<std::byte>(20)));
  in.push_back(rig.mbuf(rig.frame(4, 5)));
  // A chained mbuf is copied into its first segment, then decoded like any other: a good
  // frame split in two is accepted; one with 4 bytes too many is refused (ip_length).
  const auto whole = rig.frame(2, 6);
  rte_mbuf* split = rig.mbuf(std::vector<std::byte>(whole.begin(), whole.begin() + 50));
  REQUIRE(rte_pktmbuf_chain(split, rig.mbuf(std::vector<std::byte>(whole.begin() + 50, whole.end()))) == 0);
  in.push_back(split);
  rte_mbuf* chain = rig.mbuf(rig.frame(2, 7));
  REQUIRE(rte_pktmbuf_chain(chain, rig.mbuf(std::vector<std::byte>(4))) == 0);
  in.push_back(chain);
  // A chain whose first segment has no room for the rest is refused (multi_segment).
  rte_mbuf* probe = rig.mbuf({});
  const std::size_t room = rte_pktmbuf_tailroom(probe);
  rte_pktmbuf_free(probe);
  rte_mbuf* full = rig.mbuf(std::vector<std::byte>(room));
  REQUIRE(rte_pktmbuf_chain(full, rig.mbuf(rig.frame(2, 8))) == 0);
  in.push_back(full);

  node::RxItem out[node::kBurst];
  const std::uint16_t k = v.run(in.data(), static_cast<std::uint16_t>(in.size()), out);
  REQUIRE(k == 4);
  CHECK(out[0].d.hdr.msg_id == 1);
  CHECK(out[1].d.hdr.msg_id == 3);
  CHECK(out[2].d.hdr.msg_id == 5);
  CHECK(out[3].d.hdr.msg_id == 6);
  CHECK(out[3].m->nb_segs == 1);
  CHECK(out[1].d.hdr.priority == 3);
  CHECK(out[0].d.payload.data() == rte_pktmbuf_mtod_offset(out[0].m, const std::byte*, wire::kOverhead));
  CHECK(test::refused(rig.st, wire::Refusal::kBadMagic) == 1);
  CHECK(test::refused(rig.st, wire::Refusal::kFeatureDisabled) == 1);
  CHECK(test::refused(rig.st, wire::Refusal::kTruncated) == 1);
  CHECK(test::refused(rig.st, wire::Refusal::kIpLength) == 1);
  CHECK(rig.st.rx_multi_segment.get() == 1);
  CHECK(rig.st.rx_frames.get() == 9);
  // The refused went back to the pool; the accepted are still held.
  CHECK(rig.free_mbufs() == free_before - 4);
  for (std::uint16_t i = 0; i < k; ++i) rte_pktmbuf_free(out[i].m);
  CHECK(rig.free_mbufs() == free_before);
}

TEST_CASE("validate: a node with a feature enabled accepts its flag", "[stage][validate]") {
  test::StageRig rig("va2");
  node::ValidateStage v(wire::RxFilter{rig.cluster.udp_port, rig.cluster.mtu, wire::flag::kReliable}, rig.st);
  rte_mbuf* in[1] = {rig.mbuf(rig.frame(1, 4, [](auto&, auto& h) {
    h.flags = wire::flag::kReliable;
    h.session = 7;
    h.seq = 1;
  }))};
  node::RxItem out[1];
  REQUIRE(v.run(in, 1, out) == 1);
  CHECK(out[0].d.hdr.flags == wire::flag::kReliable);
  rte_pktmbuf_free(out[0].m);
}
