// Ethernet + IPv4/IPv6 + UDP frames as an AF_XDP socket sends and receives them: headers are
// written in place into the head-room in front of a payload, with both checksums computed, and
// received frames are parsed with the same bounded parser the BPF programs use (parse.h).
#pragma once

#include "bertha/addr.hpp"
#include "bertha/buffer.hpp"
#include "bertha/error.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace bertha::xsk {

using Mac = std::array<uint8_t, 6>;
std::string to_string(const Mac& mac); // "02:00:5e:10:00:01"

inline constexpr size_t kEthHeader = 14;
inline constexpr size_t kIpv4Header = 20; // no options
inline constexpr size_t kIpv6Header = 40; // no extension headers
inline constexpr size_t kUdpHeader = 8;
inline constexpr uint8_t kTtl = 64; // IPv4 TTL and IPv6 hop limit

// Bytes of Ethernet + IP + UDP header in front of a payload: 42 (IPv4) or 62 (IPv6).
constexpr size_t udp_headers_len(int family) noexcept {
    return kEthHeader + (family == AF_INET6 ? kIpv6Header : kIpv4Header) + kUdpHeader;
}

// The two ends of a datagram on the wire. src and dst carry the IP addresses and UDP ports and
// must be of the same family.
struct FrameEnds {
    Mac src_mac{};
    Mac dst_mac{};
    Addr src;
    Addr dst;
};

// One's complement sums (RFC 1071) in memory order: the results are 16-bit values in network
// byte order as they lie in the header (store them with memcpy, never through htons).
uint16_t ipv4_header_checksum(const void* header, size_t len) noexcept;
// The UDP checksum over the pseudo-header of src/dst (IPv4 or IPv6) and `udp_len` bytes of UDP
// header + payload (whose checksum field must be zero while computing). A computed zero is
// returned as 0xffff: zero means "no checksum" on the wire (and is illegal over IPv6).
uint16_t udp_checksum(const Addr& src, const Addr& dst, const void* udp, size_t udp_len) noexcept;

// Writes Ethernet, IP and UDP headers into frame[0, udp_headers_len(family)) for a payload of
// `payload_len` bytes that already lies right behind them. IPv4: no options, DF set, TTL 64, the
// given id, header checksum. IPv6: hop limit 64, flow label 0. UDP checksum computed for both.
// The caller guarantees the room and that the datagram fits 16-bit lengths. Returns the frame
// length.
size_t write_udp_headers(std::byte* frame, size_t payload_len, const FrameEnds& ends,
                         uint16_t ip_id) noexcept;

// The same in front of a message's payload: pushes the headers into its head-room, so that the
// message then holds the whole frame. Fails, leaving the message untouched, when the head-room
// is too small, the payload too long for one IP datagram, or the ends are inconsistent.
Result<void> push_udp_headers(Msg& m, const FrameEnds& ends, uint16_t ip_id);

// A received frame, understood. Offsets are from the frame's first byte.
struct UdpFrame {
    Addr src; // source IP address and UDP port
    Addr dst; // destination IP address and UDP port
    uint16_t payload_off = 0;
    uint16_t payload_len = 0; // from the UDP length field, bounded by the frame (parse.h)
    uint16_t l3_off = 0;
    uint16_t l4_off = 0;
    uint8_t vlans = 0;
};

// Parses a frame with bertha_parse_udp. Returns 0 (BERTHA_PARSE_OK) and fills `out`, or the
// parser's reason (enum bertha_parse_status) for a frame that is not a whole UDP datagram.
int parse_udp_frame(std::span<const std::byte> frame, UdpFrame& out) noexcept;

// Is the UDP checksum of a parsed frame right? A zero checksum over IPv4 ("none") counts as
// right; over IPv6 it is wrong.
bool udp_checksum_ok(std::span<const std::byte> frame, const UdpFrame& f) noexcept;

} // namespace bertha::xsk
