// parse_probe.bpf.c and bertha/parse.h: the shared parser gives the same answer in BPF (through
// BPF_PROG_TEST_RUN) as its C++ build, on every fixture, and the answer is the expected one.
#include "bertha/parse.h"
#include "bpf_run.hpp"
#include "packet.hpp"
#include "parse_probe.skel.h"

#include <doctest/doctest.h>
#include <linux/bpf.h>
#include <memory>
#include <string>

using namespace bertha::test;

namespace {

struct SkelDeleter {
    void operator()(parse_probe* s) const { parse_probe__destroy(s); }
};

struct Fixture {
    const char* what;
    std::vector<uint8_t> frame;
    bertha_parse_status status;
    uint8_t ip_version;
    uint16_t vlans, dport, payload_len;
};

std::vector<Fixture> fixtures() {
    const char *a = "198.18.0.1", *b = "198.18.0.2";
    const char *a6 = "2001:db8::1", *b6 = "2001:db8::2";
    std::string key(250, 'k');
    return {
        {"IPv4 UDP", Packet().eth().ipv4(a, b).udp(4000, 7000).payload("get k\r\n").bytes(),
         BERTHA_PARSE_OK, 4, 0, 7000, 7},
        {"IPv4 with 40 bytes of options",
         Packet().eth().ipv4(a, b, IPPROTO_UDP, 10).udp(1, 2).payload("x").bytes(), BERTHA_PARSE_OK,
         4, 0, 2, 1},
        {"one VLAN tag",
         Packet().eth(ETH_P_8021Q).vlan(7, ETH_P_IP).ipv4(a, b).udp(1, 7001).payload(key).bytes(),
         BERTHA_PARSE_OK, 4, 1, 7001, 250},
        {"two VLAN tags (QinQ)",
         Packet()
             .eth(ETH_P_8021AD)
             .vlan(1, ETH_P_8021Q)
             .vlan(2, ETH_P_IP)
             .ipv4(a, b)
             .udp(1, 9)
             .bytes(),
         BERTHA_PARSE_OK, 4, 2, 9, 0},
        {"three VLAN tags: deeper than walked",
         Packet()
             .eth(ETH_P_8021AD)
             .vlan(1, ETH_P_8021Q)
             .vlan(2, ETH_P_8021Q)
             .vlan(3, ETH_P_IP)
             .ipv4(a, b)
             .udp(1, 9)
             .bytes(),
         BERTHA_PARSE_TOO_DEEP, 0, 2, 0, 0},
        {"IPv6 UDP", Packet().eth(ETH_P_IPV6).ipv6(a6, b6).udp(5, 7002).payload("six").bytes(),
         BERTHA_PARSE_OK, 6, 0, 7002, 3},
        {"IPv6 hop-by-hop + destination options",
         Packet()
             .eth(ETH_P_IPV6)
             .ipv6(a6, b6)
             .ipv6_ext(IPPROTO_HOPOPTS, IPPROTO_DSTOPTS)
             .ipv6_ext(IPPROTO_DSTOPTS)
             .udp(5, 7003)
             .bytes(),
         BERTHA_PARSE_OK, 6, 0, 7003, 0},
        {"IPv6 fragment header",
         Packet().eth(ETH_P_IPV6).ipv6(a6, b6).ipv6_ext(IPPROTO_FRAGMENT).udp(5, 6).bytes(),
         BERTHA_PARSE_FRAGMENT, 6, 0, 0, 0},
        {"IPv4 first fragment (MF)", Packet().eth().ipv4(a, b).fragment(0, true).udp(1, 2).bytes(),
         BERTHA_PARSE_FRAGMENT, 4, 0, 0, 0},
        {"IPv4 later fragment", Packet().eth().ipv4(a, b).fragment(185, false).udp(1, 2).bytes(),
         BERTHA_PARSE_FRAGMENT, 4, 0, 0, 0},
        {"TCP", Packet().eth().ipv4(a, b, IPPROTO_TCP).payload(std::string(20, '\0')).bytes(),
         BERTHA_PARSE_NOT_UDP, 4, 0, 0, 0},
        {"ARP", Packet().eth(ETH_P_ARP).payload(std::string(28, '\0')).bytes(), BERTHA_PARSE_NOT_IP,
         0, 0, 0, 0},
        {"cut inside the UDP header",
         Packet().eth().ipv4(a, b).udp(1, 2).payload("abc").truncate(38).bytes(),
         BERTHA_PARSE_TRUNCATED, 4, 0, 0, 0},
        {"UDP length beyond the frame",
         Packet().eth().ipv4(a, b).udp(1, 2).payload("abcdef").truncate(44).bytes(),
         BERTHA_PARSE_TRUNCATED, 4, 0, 0, 0},
        {"cut inside the IPv6 header",
         Packet().eth(ETH_P_IPV6).ipv6(a6, b6).udp(1, 2).truncate(40).bytes(),
         BERTHA_PARSE_TRUNCATED, 0, 0, 0, 0},
        {"cut inside a VLAN tag", Packet().eth(ETH_P_8021Q).vlan(1, ETH_P_IP).truncate(16).bytes(),
         BERTHA_PARSE_TRUNCATED, 0, 0, 0, 0},
    };
}

std::vector<uint8_t> with_ihl(std::vector<uint8_t> f, uint8_t ihl) {
    f[14] = uint8_t(0x40 | ihl);
    return f;
}

} // namespace

TEST_CASE("parse: BPF and C++ builds of bertha/parse.h agree on every fixture, as expected") {
    std::unique_ptr<parse_probe, SkelDeleter> s(parse_probe__open_and_load());
    REQUIRE_MESSAGE(s, "parse_probe failed to load (root needed; the verifier log is above)");
    int fd = bpf_program__fd(s->progs.bertha_parse);
    auto all = fixtures();
    all.push_back({"IPv4 IHL of 4 (impossible)",
                   with_ihl(Packet().eth().ipv4("198.18.0.1", "198.18.0.2").udp(1, 2).bytes(), 4),
                   BERTHA_PARSE_BAD_HEADER, 4, 0, 0, 0});
    for (const Fixture& f : all) {
        CAPTURE(f.what);
        bertha_pkt cpp{};
        bertha_parse_udp(f.frame.data(), f.frame.data() + f.frame.size(), &cpp);

        uint32_t key = 0;
        bertha_pkt zero{};
        REQUIRE(bpf_map__update_elem(s->maps.parse_result, &key, sizeof key, &zero, sizeof zero,
                                     0) == 0);
        auto r = run_prog(fd, f.frame);
        REQUIRE(r.err == 0);
        CHECK(r.verdict == XDP_PASS);
        CHECK(r.out == f.frame); // parsing never changes a byte
        bertha_pkt bpf{};
        REQUIRE(bpf_map__lookup_elem(s->maps.parse_result, &key, sizeof key, &bpf, sizeof bpf, 0) ==
                0);

        CHECK(int(bpf.status) == int(f.status));
        CHECK(int(cpp.status) == int(f.status));
        CHECK(int(bpf.ip_version) == int(f.ip_version));
        CHECK(bpf.vlans == f.vlans);
        if (f.status == BERTHA_PARSE_OK) {
            CHECK(bpf.dport == f.dport);
            CHECK(bpf.payload_len == f.payload_len);
            CHECK(bpf.payload_off + bpf.payload_len == f.frame.size());
        }
        // The differential part: every field the same in both builds.
        CHECK(bpf.status == cpp.status);
        CHECK(bpf.ip_version == cpp.ip_version);
        CHECK(bpf.vlans == cpp.vlans);
        if (f.status == BERTHA_PARSE_OK) {
            CHECK(bpf.l3_off == cpp.l3_off);
            CHECK(bpf.l4_off == cpp.l4_off);
            CHECK(bpf.payload_off == cpp.payload_off);
            CHECK(bpf.payload_len == cpp.payload_len);
            CHECK(bpf.sport == cpp.sport);
            CHECK(bpf.dport == cpp.dport);
        }
    }
}

TEST_CASE("parse: every prefix of a valid frame is refused as truncated, never misread") {
    std::unique_ptr<parse_probe, SkelDeleter> s(parse_probe__open_and_load());
    REQUIRE(s);
    auto full = Packet()
                    .eth(ETH_P_8021Q)
                    .vlan(3, ETH_P_IP)
                    .ipv4("198.18.0.1", "198.18.0.2", IPPROTO_UDP, 2)
                    .udp(1, 2)
                    .payload("payload")
                    .bytes();
    for (size_t n = 0; n < full.size(); ++n) {
        CAPTURE(n);
        bertha_pkt cpp{};
        bertha_parse_udp(full.data(), full.data() + n, &cpp);
        CHECK(int(cpp.status) == BERTHA_PARSE_TRUNCATED);
        if (n < 14) continue; // BPF_PROG_TEST_RUN needs at least an Ethernet header
        std::vector<uint8_t> cut(full.begin(), full.begin() + long(n));
        auto r = run_prog(bpf_program__fd(s->progs.bertha_parse), cut);
        REQUIRE(r.err == 0);
        uint32_t key = 0;
        bertha_pkt bpf{};
        REQUIRE(bpf_map__lookup_elem(s->maps.parse_result, &key, sizeof key, &bpf, sizeof bpf, 0) ==
                0);
        CHECK(int(bpf.status) == BERTHA_PARSE_TRUNCATED);
    }
}
