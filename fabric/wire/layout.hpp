// Offsets of the headers in a frame and of the fields in the nerve header: the tables of
// docs/wire.md, shared by the codec and the header templates.
#pragma once

#include <cstddef>

#include "nerve/wire.hpp"

namespace nerve::wire::layout {

inline constexpr std::size_t kIpOff = kEthLen;
inline constexpr std::size_t kUdpOff = kIpOff + kIpv4Len;
inline constexpr std::size_t kHdrOff = kUdpOff + kUdpLen;

namespace hdr {
inline constexpr std::size_t kMagic = 0, kVersion = 2, kType = 3, kPriority = 4, kFlags = 5, kTtl = 6,
                             kKeyEpoch = 7, kSrc = 8, kDst = 10, kChannel = 12, kFragIndex = 14,
                             kSeq = 16, kAck = 20, kMsgId = 24, kCorrId = 28, kTimestamp = 32,
                             kPayloadLen = 40, kSession = 42, kFragCount = 46;
}  // namespace hdr

}  // namespace nerve::wire::layout
