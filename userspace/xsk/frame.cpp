#include "xsk/frame.hpp"

#include "bertha/parse.h"

#include <arpa/inet.h>
#include <cstdio>
#include <cstring>

namespace bertha::xsk {
namespace {

// A one's complement sum in memory order: native-endian words are added with end-around carry,
// which gives the byte-swapped big-endian sum on a little-endian host (RFC 1071, byte order
// independence); stored back with memcpy it is right on the wire either way.
class Sum {
  public:
    void add(uint64_t w) noexcept {
        acc_ += w;
        acc_ += (acc_ < w); // the carry out of bit 63 comes back in at bit 0 (2^64 = 1 mod 2^16-1)
    }
    // Bytes starting at an even offset of the summed stream; only the last call may be odd.
    void bytes(const void* data, size_t n) noexcept {
        const auto* p = static_cast<const unsigned char*>(data);
        for (; n >= 8; p += 8, n -= 8) {
            uint64_t w;
            std::memcpy(&w, p, 8);
            add(w);
        }
        if (n >= 4) {
            uint32_t w;
            std::memcpy(&w, p, 4);
            add(w);
            p += 4;
            n -= 4;
        }
        if (n >= 2) {
            uint16_t w;
            std::memcpy(&w, p, 2);
            add(w);
            p += 2;
            n -= 2;
        }
        if (n) { // an odd last byte is the high byte of a word padded with zero
            uint16_t w = 0;
            std::memcpy(&w, p, 1);
            add(w);
        }
    }
    void be16(uint16_t host_value) noexcept { add(htons(host_value)); }
    uint16_t fold() const noexcept {
        uint64_t s = (acc_ & 0xffffffffu) + (acc_ >> 32);
        s = (s & 0xffffffffu) + (s >> 32);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        return uint16_t(s);
    }

  private:
    uint64_t acc_ = 0;
};

const sockaddr_in& v4(const Addr& a) {
    return *reinterpret_cast<const sockaddr_in*>(a.sa());
}
const sockaddr_in6& v6(const Addr& a) {
    return *reinterpret_cast<const sockaddr_in6*>(a.sa());
}

// Pseudo-header + UDP header + payload, folded.
uint16_t udp_sum(const Addr& src, const Addr& dst, const void* udp, size_t udp_len) noexcept {
    Sum s;
    if (src.family() == AF_INET6) {
        s.bytes(&v6(src).sin6_addr, 16);
        s.bytes(&v6(dst).sin6_addr, 16);
        s.be16(uint16_t(udp_len >> 16));
        s.be16(uint16_t(udp_len));
        s.be16(IPPROTO_UDP); // three zero bytes and the next header
    } else {
        s.bytes(&v4(src).sin_addr, 4);
        s.bytes(&v4(dst).sin_addr, 4);
        s.be16(IPPROTO_UDP); // a zero byte and the protocol
        s.be16(uint16_t(udp_len));
    }
    s.bytes(udp, udp_len);
    return s.fold();
}

void put16(unsigned char* p, uint16_t host_value) {
    p[0] = uint8_t(host_value >> 8);
    p[1] = uint8_t(host_value);
}
uint16_t get16(const unsigned char* p) {
    return uint16_t((p[0] << 8) | p[1]);
}

Addr make_addr(int family, const unsigned char* ip, uint16_t port) {
    Addr a;
    if (family == AF_INET6) {
        auto* sa = reinterpret_cast<sockaddr_in6*>(a.sa());
        sa->sin6_family = AF_INET6;
        std::memcpy(&sa->sin6_addr, ip, 16);
    } else {
        auto* sa = reinterpret_cast<sockaddr_in*>(a.sa());
        sa->sin_family = AF_INET;
        std::memcpy(&sa->sin_addr, ip, 4);
    }
    a.set_port(port);
    return a;
}

} // namespace

std::string to_string(const Mac& m) {
    char buf[18];
    std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4],
                  m[5]);
    return buf;
}

uint16_t ipv4_header_checksum(const void* header, size_t len) noexcept {
    Sum s;
    s.bytes(header, len);
    return uint16_t(~s.fold());
}

uint16_t udp_checksum(const Addr& src, const Addr& dst, const void* udp, size_t udp_len) noexcept {
    uint16_t c = uint16_t(~udp_sum(src, dst, udp, udp_len));
    return c == 0 ? 0xffff : c;
}

size_t write_udp_headers(std::byte* frame, size_t payload_len, const FrameEnds& e,
                         uint16_t ip_id) noexcept {
    auto* p = reinterpret_cast<unsigned char*>(frame);
    const bool is6 = e.dst.family() == AF_INET6;
    std::memcpy(p, e.dst_mac.data(), 6);
    std::memcpy(p + 6, e.src_mac.data(), 6);
    put16(p + 12, is6 ? ETH_P_IPV6 : ETH_P_IP);
    unsigned char* ip = p + kEthHeader;
    unsigned char* udp;
    const size_t udp_len = kUdpHeader + payload_len;
    if (is6) {
        ip[0] = 0x60; // version 6, traffic class 0, flow label 0
        ip[1] = ip[2] = ip[3] = 0;
        put16(ip + 4, uint16_t(udp_len));
        ip[6] = IPPROTO_UDP;
        ip[7] = kTtl;
        std::memcpy(ip + 8, &v6(e.src).sin6_addr, 16);
        std::memcpy(ip + 24, &v6(e.dst).sin6_addr, 16);
        udp = ip + kIpv6Header;
    } else {
        ip[0] = 0x45; // version 4, 5 words: no options
        ip[1] = 0;
        put16(ip + 2, uint16_t(kIpv4Header + udp_len));
        put16(ip + 4, ip_id);
        put16(ip + 6, 0x4000); // DF, offset 0
        ip[8] = kTtl;
        ip[9] = IPPROTO_UDP;
        ip[10] = ip[11] = 0;
        std::memcpy(ip + 12, &v4(e.src).sin_addr, 4);
        std::memcpy(ip + 16, &v4(e.dst).sin_addr, 4);
        uint16_t c = ipv4_header_checksum(ip, kIpv4Header);
        std::memcpy(ip + 10, &c, 2);
        udp = ip + kIpv4Header;
    }
    put16(udp, e.src.port());
    put16(udp + 2, e.dst.port());
    put16(udp + 4, uint16_t(udp_len));
    udp[6] = udp[7] = 0;
    uint16_t c = udp_checksum(e.src, e.dst, udp, udp_len);
    std::memcpy(udp + 6, &c, 2);
    return udp_headers_len(e.dst.family()) + payload_len;
}

Result<void> push_udp_headers(Msg& m, const FrameEnds& e, uint16_t ip_id) {
    const int family = e.dst.family();
    if ((family != AF_INET && family != AF_INET6) || e.src.family() != family)
        return fail(Errc::invalid_argument, "xsk frame",
                    "source " + e.src.to_string() + " and destination " + e.dst.to_string() +
                        " must both be IPv4 or both IPv6");
    const size_t hl = udp_headers_len(family);
    const size_t max_payload =
        65535 - kUdpHeader - (family == AF_INET ? kIpv4Header : 0); // IPv4 total / IPv6 payload
    if (m.size() > max_payload)
        return fail(Errc::invalid_argument, "xsk frame",
                    "a UDP payload of " + std::to_string(m.size()) + " bytes exceeds the " +
                        std::to_string(max_payload) + " one IP datagram can carry");
    if (m.headroom() < hl)
        return fail(Errc::invalid_argument, "xsk frame",
                    "the message has " + std::to_string(m.headroom()) +
                        " bytes of head-room; Ethernet + IP + UDP headers need " +
                        std::to_string(hl));
    const size_t payload = m.size();
    std::byte* frame = m.push(hl);
    write_udp_headers(frame, payload, e, ip_id);
    return {};
}

int parse_udp_frame(std::span<const std::byte> frame, UdpFrame& out) noexcept {
    bertha_pkt pkt{};
    const auto* begin = reinterpret_cast<const unsigned char*>(frame.data());
    if (frame.size() > 0xffff) return BERTHA_PARSE_BAD_HEADER; // offsets are 16-bit
    int st = bertha_parse_udp(begin, begin + frame.size(), &pkt);
    if (st != BERTHA_PARSE_OK) return st;
    const unsigned char* ip = begin + pkt.l3_off;
    const size_t l4_in_ip = size_t(pkt.l4_off - pkt.l3_off);
    const size_t udp_len = kUdpHeader + pkt.payload_len;
    // The UDP datagram must lie inside the IP datagram: bytes past the IP length are link-layer
    // padding (Ethernet pads short frames to 60 bytes), never payload.
    if (pkt.ip_version == 4) {
        if (get16(ip + 2) < l4_in_ip + udp_len) return BERTHA_PARSE_TRUNCATED;
        out.src = make_addr(AF_INET, ip + 12, pkt.sport);
        out.dst = make_addr(AF_INET, ip + 16, pkt.dport);
    } else {
        if (kIpv6Header + get16(ip + 4) < l4_in_ip + udp_len) return BERTHA_PARSE_TRUNCATED;
        out.src = make_addr(AF_INET6, ip + 8, pkt.sport);
        out.dst = make_addr(AF_INET6, ip + 24, pkt.dport);
    }
    out.payload_off = pkt.payload_off;
    out.payload_len = pkt.payload_len;
    out.l3_off = pkt.l3_off;
    out.l4_off = pkt.l4_off;
    out.vlans = uint8_t(pkt.vlans);
    return BERTHA_PARSE_OK;
}

bool udp_checksum_ok(std::span<const std::byte> frame, const UdpFrame& f) noexcept {
    const auto* udp = reinterpret_cast<const unsigned char*>(frame.data()) + f.l4_off;
    const size_t udp_len = kUdpHeader + f.payload_len;
    if (f.l4_off + udp_len > frame.size()) return false;
    if (get16(udp + 6) == 0) return f.src.family() == AF_INET; // "no checksum": IPv4 only
    return udp_sum(f.src, f.dst, udp, udp_len) == 0xffff;
}

} // namespace bertha::xsk
