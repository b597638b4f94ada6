// The AF_XDP socket's frames (userspace/xsk/frame.hpp): Ethernet + IPv4/IPv6 + UDP headers
// written in place in front of a payload, parsed back with parse.h, every field and both
// checksums checked against a plain reference implementation written here (a byte-pair sum,
// nothing shared with the code under test).
#include "bertha/parse.h"
#include "xsk/frame.hpp"

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <cstring>
#include <random>
#include <vector>

using namespace bertha;
using namespace bertha::xsk;

namespace {

// ---- the reference: RFC 1071 done the slow, obvious way, on big-endian byte pairs -------------

uint32_t ref_fold(uint32_t s) {
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return s;
}
uint32_t ref_add(uint32_t s, const std::vector<uint8_t>& bytes) {
    for (size_t i = 0; i < bytes.size(); i += 2) {
        uint32_t hi = bytes[i];
        uint32_t lo = i + 1 < bytes.size() ? bytes[i + 1] : 0;
        s = ref_fold(s + ((hi << 8) | lo));
    }
    return s;
}
std::vector<uint8_t> ip_of(const Addr& a) {
    const uint8_t* p;
    size_t n;
    if (a.family() == AF_INET) {
        p = reinterpret_cast<const uint8_t*>(
            &reinterpret_cast<const sockaddr_in*>(a.sa())->sin_addr);
        n = 4;
    } else {
        p = reinterpret_cast<const uint8_t*>(
            &reinterpret_cast<const sockaddr_in6*>(a.sa())->sin6_addr);
        n = 16;
    }
    return {p, p + n};
}
// The UDP checksum the reference expects for a segment (its checksum field is ignored).
uint16_t ref_udp_checksum(const Addr& src, const Addr& dst, std::vector<uint8_t> segment) {
    segment[6] = segment[7] = 0;
    std::vector<uint8_t> pseudo = ip_of(src);
    auto d = ip_of(dst);
    pseudo.insert(pseudo.end(), d.begin(), d.end());
    const uint32_t len = uint32_t(segment.size());
    if (src.family() == AF_INET) {
        pseudo.insert(pseudo.end(), {0, IPPROTO_UDP, uint8_t(len >> 8), uint8_t(len)});
    } else {
        pseudo.insert(pseudo.end(), {uint8_t(len >> 24), uint8_t(len >> 16), uint8_t(len >> 8),
                                     uint8_t(len), 0, 0, 0, IPPROTO_UDP});
    }
    uint32_t s = ref_add(ref_add(0, pseudo), segment);
    uint16_t c = uint16_t(~s & 0xffff);
    return c == 0 ? 0xffff : c;
}
uint16_t be16(const uint8_t* p) {
    return uint16_t((p[0] << 8) | p[1]);
}

// ---- fixtures ----------------------------------------------------------------------------------

const Mac kSrcMac{0x02, 0x00, 0x5e, 0x10, 0x00, 0x01};
const Mac kDstMac{0x02, 0x00, 0x5e, 0x10, 0x00, 0x02};

FrameEnds ends(const char* src, const char* dst) {
    return FrameEnds{kSrcMac, kDstMac, *Addr::parse(src), *Addr::parse(dst)};
}

std::unique_ptr<BufferPool> pool(uint32_t slot_size = 2048) {
    auto p = BufferPool::create(4, slot_size, 0);
    REQUIRE(p);
    return std::move(*p);
}

std::vector<std::byte> random_payload(size_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<std::byte> v(n);
    for (auto& b : v) b = std::byte(rng());
    return v;
}

// Builds a frame for `payload` and checks every header field, both checksums against the
// reference, and that parse.h (through parse_udp_frame) finds the same payload and ends.
void check_frame(const FrameEnds& e, const std::vector<std::byte>& payload, uint16_t id) {
    auto p = pool();
    Msg m(p.get(), 0, 256, 0);
    REQUIRE(m.assign(payload));
    auto r = push_udp_headers(m, e, id);
    REQUIRE_MESSAGE(r, (r ? "" : r.error().what()));
    const bool v6 = e.dst.family() == AF_INET6;
    const size_t hl = udp_headers_len(e.dst.family());
    CHECK(hl == (v6 ? 62u : 42u));
    REQUIRE(m.size() == hl + payload.size());
    CHECK(m.headroom() == 256 - hl);
    const auto* f = reinterpret_cast<const uint8_t*>(m.data());

    CHECK(std::memcmp(f, kDstMac.data(), 6) == 0);
    CHECK(std::memcmp(f + 6, kSrcMac.data(), 6) == 0);
    CHECK(be16(f + 12) == (v6 ? 0x86dd : 0x0800));
    const uint8_t* ip = f + 14;
    const uint8_t* udp;
    if (v6) {
        CHECK((ip[0] >> 4) == 6);
        CHECK(be16(ip + 4) == 8 + payload.size()); // payload length
        CHECK(ip[6] == IPPROTO_UDP);
        CHECK(ip[7] == 64); // hop limit
        CHECK(std::vector<uint8_t>(ip + 8, ip + 24) == ip_of(e.src));
        CHECK(std::vector<uint8_t>(ip + 24, ip + 40) == ip_of(e.dst));
        udp = ip + 40;
    } else {
        CHECK(ip[0] == 0x45);                       // version 4, no options
        CHECK(be16(ip + 2) == 28 + payload.size()); // total length
        CHECK(be16(ip + 4) == id);
        CHECK(be16(ip + 6) == 0x4000); // DF, not a fragment
        CHECK(ip[8] == 64);            // TTL
        CHECK(ip[9] == IPPROTO_UDP);
        CHECK(std::vector<uint8_t>(ip + 12, ip + 16) == ip_of(e.src));
        CHECK(std::vector<uint8_t>(ip + 16, ip + 20) == ip_of(e.dst));
        // A correct header sums to all ones, its checksum included.
        CHECK(ref_add(0, std::vector<uint8_t>(ip, ip + 20)) == 0xffff);
        udp = ip + 20;
    }
    CHECK(be16(udp) == e.src.port());
    CHECK(be16(udp + 2) == e.dst.port());
    CHECK(be16(udp + 4) == 8 + payload.size());
    std::vector<uint8_t> segment(udp, udp + 8 + payload.size());
    CHECK(be16(udp + 6) == ref_udp_checksum(e.src, e.dst, segment));
    CHECK((payload.empty() || std::memcmp(udp + 8, payload.data(), payload.size()) == 0));

    // Back through parse.h.
    bertha_pkt pkt{};
    REQUIRE(bertha_parse_udp(f, f + m.size(), &pkt) == BERTHA_PARSE_OK);
    CHECK(pkt.payload_len == payload.size());
    CHECK(pkt.payload_off == hl);
    CHECK(pkt.ip_version == (v6 ? 6 : 4));
    UdpFrame uf;
    REQUIRE(parse_udp_frame(m.bytes(), uf) == BERTHA_PARSE_OK);
    CHECK(uf.src == e.src);
    CHECK(uf.dst == e.dst);
    CHECK(uf.payload_off == hl);
    CHECK(uf.payload_len == payload.size());
    CHECK(udp_checksum_ok(m.bytes(), uf));
}

const size_t kLengths[] = {0, 1, 2, 3, 7, 8, 9, 63, 64, 65, 255, 1023, 1471, 1472, 1473};

} // namespace

TEST_CASE("xsk frame: IPv4 headers are right field by field and both checksums match the "
          "reference, for even and odd payload lengths") {
    uint16_t id = 0xfffe; // wraps
    for (size_t n : kLengths) {
        CAPTURE(n);
        check_frame(ends("198.18.7.1:7000", "198.18.7.2:40001"), random_payload(n, uint32_t(n)),
                    id++);
        // Addresses and ports with high bits set exercise carries in the sums.
        check_frame(ends("198.19.255.254:65535", "198.18.255.255:65534"),
                    random_payload(n, uint32_t(n) + 1000), id++);
    }
}

TEST_CASE("xsk frame: IPv6 headers are right field by field and the UDP checksum matches the "
          "reference, for even and odd payload lengths") {
    for (size_t n : kLengths) {
        CAPTURE(n);
        check_frame(ends("[2001:2::1]:7000", "[2001:2::2]:40001"), random_payload(n, uint32_t(n)),
                    0);
        check_frame(ends("[2001:2:ffff:ffff:ffff:ffff:ffff:fffe]:65535",
                         "[2001:2:ffff:ffff:ffff:ffff:ffff:ffff]:65534"),
                    random_payload(n, uint32_t(n) + 7), 0);
    }
}

TEST_CASE("xsk frame: a checksum that computes to zero goes on the wire as 0xffff") {
    for (const char* pair : {"v4", "v6"}) {
        CAPTURE(pair);
        const bool v6 = pair[1] == '6';
        FrameEnds e = v6 ? ends("[2001:2::1]:7000", "[2001:2::2]:7001")
                         : ends("198.18.7.1:7000", "198.18.7.2:7001");
        // Ten payload bytes; the last two are chosen so that everything sums to all ones.
        std::vector<uint8_t> seg(8 + 10, 0);
        seg[0] = 7000 >> 8, seg[1] = 7000 & 0xff, seg[2] = 7001 >> 8, seg[3] = 7001 & 0xff;
        seg[5] = 18;
        for (int i = 0; i < 8; ++i) seg[8 + i] = uint8_t(0x11 * (i + 1));
        uint16_t c = ref_udp_checksum(e.src, e.dst, seg); // with the last word zero
        // sum = ~c; adding the word ~sum = c makes the sum 0xffff, the checksum zero.
        seg[16] = uint8_t(c >> 8);
        seg[17] = uint8_t(c);
        std::vector<std::byte> payload(10);
        std::memcpy(payload.data(), seg.data() + 8, 10);
        auto p = pool();
        Msg m(p.get(), 0, 128, 0);
        REQUIRE(m.assign(payload));
        REQUIRE(push_udp_headers(m, e, 1));
        const auto* udp = reinterpret_cast<const uint8_t*>(m.data()) + (v6 ? 54 : 34);
        CHECK(be16(udp + 6) == 0xffff);
        UdpFrame uf;
        REQUIRE(parse_udp_frame(m.bytes(), uf) == BERTHA_PARSE_OK);
        CHECK(udp_checksum_ok(m.bytes(), uf));
    }
}

TEST_CASE("xsk frame: the largest payload a slot holds fills it exactly, and parses back") {
    for (uint32_t slot : {2048u, 4096u}) {
        for (const char* fam : {"v4", "v6"}) {
            CAPTURE(slot);
            CAPTURE(fam);
            const bool v6 = fam[1] == '6';
            FrameEnds e = v6 ? ends("[2001:2::1]:7000", "[2001:2::2]:7001")
                             : ends("198.18.7.1:7000", "198.18.7.2:7001");
            const size_t hl = udp_headers_len(e.dst.family());
            auto p = pool(slot);
            Msg m(p.get(), 1, uint32_t(hl), 0);
            auto payload = random_payload(slot - hl, slot);
            REQUIRE(m.assign(payload));
            CHECK(m.tailroom() == 0);
            REQUIRE(push_udp_headers(m, e, 9));
            CHECK(m.headroom() == 0);
            CHECK(m.size() == slot);
            UdpFrame uf;
            REQUIRE(parse_udp_frame(m.bytes(), uf) == BERTHA_PARSE_OK);
            CHECK(uf.payload_len == slot - hl);
            CHECK(udp_checksum_ok(m.bytes(), uf));
            CHECK(std::memcmp(m.data() + uf.payload_off, payload.data(), payload.size()) == 0);
        }
    }
}

TEST_CASE("xsk frame: too little head-room, mixed families and oversized payloads are refused "
          "and leave the message untouched") {
    auto p = pool(4096);
    auto payload = random_payload(100, 1);

    Msg m(p.get(), 0, 41, 0); // one byte short for IPv4
    REQUIRE(m.assign(payload));
    auto r = push_udp_headers(m, ends("198.18.7.1:7000", "198.18.7.2:7001"), 1);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::invalid_argument);
    CHECK(r.error().message.find("head-room") != std::string::npos);
    CHECK(m.headroom() == 41);
    CHECK(m.size() == 100);
    CHECK(std::memcmp(m.data(), payload.data(), 100) == 0);

    Msg m6(p.get(), 1, 61, 0); // one byte short for IPv6, enough for IPv4
    REQUIRE(m6.assign(payload));
    CHECK_FALSE(push_udp_headers(m6, ends("[2001:2::1]:7000", "[2001:2::2]:7001"), 1));
    CHECK(m6.headroom() == 61);
    CHECK(push_udp_headers(m6, ends("198.18.7.1:7000", "198.18.7.2:7001"), 1));

    Msg mixed(p.get(), 2, 128, 0);
    REQUIRE(mixed.assign(payload));
    auto rm = push_udp_headers(mixed, ends("198.18.7.1:7000", "[2001:2::2]:7001"), 1);
    REQUIRE_FALSE(rm);
    CHECK(rm.error().message.find("both be IPv4 or both IPv6") != std::string::npos);
    CHECK(mixed.headroom() == 128);

    // One IP datagram: IPv4 carries at most 65507 UDP payload bytes, IPv6 65527.
    auto big = pool(1u << 17);
    for (const char* fam : {"v4", "v6"}) {
        CAPTURE(fam);
        const bool v6 = fam[1] == '6';
        FrameEnds e = v6 ? ends("[2001:2::1]:7000", "[2001:2::2]:7001")
                         : ends("198.18.7.1:7000", "198.18.7.2:7001");
        const size_t max = v6 ? 65527 : 65507;
        Msg over(big.get(), 0, 128, 0);
        REQUIRE(over.resize(max + 1));
        auto ro = push_udp_headers(over, e, 1);
        REQUIRE_FALSE(ro);
        CHECK(ro.error().message.find(std::to_string(max)) != std::string::npos);
        CHECK(over.size() == max + 1);
        Msg fits(big.get(), 1, 128, 0);
        REQUIRE(fits.resize(max));
        REQUIRE(push_udp_headers(fits, e, 1));
        // Longer than any frame parse.h reads (16-bit offsets): check the lengths by hand.
        const auto* ip = reinterpret_cast<const uint8_t*>(fits.data()) + 14;
        const uint8_t* udp = ip + (v6 ? 40 : 20);
        CHECK(be16(ip + (v6 ? 4 : 2)) == (v6 ? 8 : 28) + max);
        CHECK(be16(udp + 4) == 8 + max);
        CHECK(be16(udp + 6) == ref_udp_checksum(e.src, e.dst, {udp, udp + 8 + max}));
        UdpFrame uf;
        CHECK(parse_udp_frame(fits.bytes(), uf) != BERTHA_PARSE_OK); // refused, not misread
    }
}

TEST_CASE("xsk frame: parsing trusts the UDP length, never the frame's: padding, truncation and "
          "a UDP length beyond the IP datagram") {
    auto p = pool();
    FrameEnds e = ends("198.18.7.1:7000", "198.18.7.2:7001");

    // A 3-byte datagram, padded by Ethernet to the 60-byte minimum frame.
    Msg m(p.get(), 0, 128, 0);
    auto payload = random_payload(3, 3);
    REQUIRE(m.assign(payload));
    REQUIRE(push_udp_headers(m, e, 1));
    REQUIRE(m.size() == 45);
    REQUIRE(m.resize(60));
    std::memset(m.data() + 45, 0xee, 15);
    UdpFrame uf;
    REQUIRE(parse_udp_frame(m.bytes(), uf) == BERTHA_PARSE_OK);
    CHECK(uf.payload_len == 3);
    CHECK(udp_checksum_ok(m.bytes(), uf));

    // Cut short: the UDP length says more than the frame holds.
    CHECK(parse_udp_frame(m.bytes().first(44), uf) == BERTHA_PARSE_TRUNCATED);

    // The UDP length runs past the IP total length (into the padding): refused.
    auto* f = reinterpret_cast<uint8_t*>(m.data());
    f[14 + 20 + 5] = 8 + 10; // UDP length 18: 10 payload bytes, 7 of them padding
    CHECK(parse_udp_frame(m.bytes(), uf) == BERTHA_PARSE_TRUNCATED);
    f[14 + 20 + 5] = 8 + 3;

    // A wrong payload byte, or a wrong address, breaks the checksum.
    REQUIRE(parse_udp_frame(m.bytes(), uf) == BERTHA_PARSE_OK);
    f[14 + 20 + 8] ^= 0x01;
    CHECK_FALSE(udp_checksum_ok(m.bytes(), uf));
    f[14 + 20 + 8] ^= 0x01;
    CHECK(udp_checksum_ok(m.bytes(), uf));
    f[14 + 12] ^= 0x80; // the source address
    REQUIRE(parse_udp_frame(m.bytes(), uf) == BERTHA_PARSE_OK);
    CHECK_FALSE(udp_checksum_ok(m.bytes(), uf));
    f[14 + 12] ^= 0x80;

    // IPv4 "no checksum" (0) is accepted; over IPv6 a zero checksum is wrong.
    f[14 + 20 + 6] = f[14 + 20 + 7] = 0;
    REQUIRE(parse_udp_frame(m.bytes(), uf) == BERTHA_PARSE_OK);
    CHECK(udp_checksum_ok(m.bytes(), uf));
    Msg m6(p.get(), 1, 128, 0);
    REQUIRE(m6.assign(payload));
    REQUIRE(push_udp_headers(m6, ends("[2001:2::1]:7000", "[2001:2::2]:7001"), 1));
    auto* f6 = reinterpret_cast<uint8_t*>(m6.data());
    f6[14 + 40 + 6] = f6[14 + 40 + 7] = 0;
    REQUIRE(parse_udp_frame(m6.bytes(), uf) == BERTHA_PARSE_OK);
    CHECK_FALSE(udp_checksum_ok(m6.bytes(), uf));

    // Not UDP, not IP: the parser's reason comes back.
    f[14 + 9] = IPPROTO_TCP;
    CHECK(parse_udp_frame(m.bytes(), uf) == BERTHA_PARSE_NOT_UDP);
    f[12] = 0x08, f[13] = 0x06; // ARP
    CHECK(parse_udp_frame(m.bytes(), uf) == BERTHA_PARSE_NOT_IP);
}
