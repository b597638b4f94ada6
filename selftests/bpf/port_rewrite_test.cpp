// port_rewrite.bpf.c and bertha/csum.h: the destination port of matching UDP datagrams is
// rewritten with an incremental checksum update that equals a full recomputation, the C++ build
// of the same code produces the same bytes, and everything else passes untouched.
#include "bertha/counters.h"
#include "bertha/csum.h"
#include "bpf_run.hpp"
#include "packet.hpp"
#include "port_rewrite.skel.h"

#include <doctest/doctest.h>
#include <linux/bpf.h>
#include <memory>

using namespace bertha::test;

namespace {

struct SkelDeleter {
    void operator()(port_rewrite* s) const { port_rewrite__destroy(s); }
};
using Skel = std::unique_ptr<port_rewrite, SkelDeleter>;

Skel load(uint16_t match, uint16_t to) {
    Skel s(port_rewrite__open());
    REQUIRE(s);
    s->rodata->match_port = match;
    s->rodata->new_port = to;
    REQUIRE_MESSAGE(port_rewrite__load(s.get()) == 0,
                    "port_rewrite failed to load (root needed; the verifier log is above)");
    return s;
}

// The C++ build of the same rewrite: parse, then set the port.
std::vector<uint8_t> rewrite_cpp(std::vector<uint8_t> f, uint16_t match, uint16_t to) {
    bertha_pkt pkt{};
    if (bertha_parse_udp(f.data(), f.data() + f.size(), &pkt) != BERTHA_PARSE_OK ||
        pkt.dport != match)
        return f;
    auto* udp = reinterpret_cast<udphdr*>(f.data() + pkt.l4_off);
    bertha_udp_set_port(udp, &udp->dest, to);
    return f;
}

uint64_t counted(const port_rewrite* s, uint32_t key) {
    std::vector<bertha_counters> per_cpu(static_cast<size_t>(libbpf_num_possible_cpus()));
    REQUIRE(bpf_map__lookup_elem(s->maps.port_rewrite_stats, &key, sizeof key, per_cpu.data(),
                                 per_cpu.size() * sizeof(bertha_counters), 0) == 0);
    uint64_t n = 0;
    for (auto& c : per_cpu) n += c.packets;
    return n;
}

} // namespace

TEST_CASE("port_rewrite: matching datagrams get the new port and a correct checksum") {
    Skel s = load(7000, 7003);
    int fd = bpf_program__fd(s->progs.bertha_port_rw);
    struct Case {
        const char* what;
        std::vector<uint8_t> in, want;
    };
    std::string key(250, 'k');
    std::vector<Case> cases = {
        {"IPv4",
         Packet()
             .eth()
             .ipv4("198.18.0.1", "198.18.0.2")
             .udp(4000, 7000)
             .payload("get a\r\n")
             .bytes(),
         Packet()
             .eth()
             .ipv4("198.18.0.1", "198.18.0.2")
             .udp(4000, 7003)
             .payload("get a\r\n")
             .bytes()},
        {"IPv4, 250-byte key, VLAN",
         Packet()
             .eth(ETH_P_8021Q)
             .vlan(5, ETH_P_IP)
             .ipv4("198.18.0.1", "198.18.0.2")
             .udp(1, 7000)
             .payload(key)
             .bytes(),
         Packet()
             .eth(ETH_P_8021Q)
             .vlan(5, ETH_P_IP)
             .ipv4("198.18.0.1", "198.18.0.2")
             .udp(1, 7003)
             .payload(key)
             .bytes()},
        {"IPv6",
         Packet()
             .eth(ETH_P_IPV6)
             .ipv6("2001:db8::1", "2001:db8::2")
             .udp(9, 7000)
             .payload("six")
             .bytes(),
         Packet()
             .eth(ETH_P_IPV6)
             .ipv6("2001:db8::1", "2001:db8::2")
             .udp(9, 7003)
             .payload("six")
             .bytes()},
        {"IPv6 with extension headers",
         Packet()
             .eth(ETH_P_IPV6)
             .ipv6("2001:db8::1", "2001:db8::2")
             .ipv6_ext(IPPROTO_HOPOPTS)
             .udp(9, 7000)
             .bytes(),
         Packet()
             .eth(ETH_P_IPV6)
             .ipv6("2001:db8::1", "2001:db8::2")
             .ipv6_ext(IPPROTO_HOPOPTS)
             .udp(9, 7003)
             .bytes()},
    };
    for (auto& c : cases) {
        CAPTURE(c.what);
        auto r = run_prog(fd, c.in);
        REQUIRE(r.err == 0);
        CHECK(r.verdict == XDP_PASS);
        CHECK(r.out == c.want); // byte for byte: the incremental checksum is the full one
        CHECK(rewrite_cpp(c.in, 7000, 7003) == r.out); // and the C++ build agrees
    }
    CHECK(counted(s.get(), 0) == cases.size());
}

TEST_CASE("port_rewrite: an IPv4 datagram without checksum keeps checksum 0") {
    Skel s = load(7000, 7003);
    auto in = Packet().eth().ipv4("198.18.0.1", "198.18.0.2").udp(4000, 7000).payload("x").bytes();
    in[40] = in[41] = 0; // UDP checksum: none
    auto r = run_prog(bpf_program__fd(s->progs.bertha_port_rw), in);
    REQUIRE(r.err == 0);
    CHECK(r.out[36] * 256 + r.out[37] == 7003);
    CHECK(r.out[40] == 0);
    CHECK(r.out[41] == 0);
}

TEST_CASE("port_rewrite: a result of zero is sent as 0xffff, as a full computation does") {
    Skel s = load(7000, 7003);
    int fd = bpf_program__fd(s->progs.bertha_port_rw);
    // Find a source port for which the rewritten datagram's checksum computes to zero.
    for (uint32_t sport = 0; sport < 65536; ++sport) {
        auto want = Packet()
                        .eth()
                        .ipv4("198.18.0.1", "198.18.0.2")
                        .udp(uint16_t(sport), 7003)
                        .payload("z")
                        .bytes();
        if (!(want[40] == 0xff && want[41] == 0xff)) continue;
        auto in = Packet()
                      .eth()
                      .ipv4("198.18.0.1", "198.18.0.2")
                      .udp(uint16_t(sport), 7000)
                      .payload("z")
                      .bytes();
        auto r = run_prog(fd, in);
        REQUIRE(r.err == 0);
        CHECK(r.out == want);
        CHECK(rewrite_cpp(in, 7000, 7003) == want);
        return;
    }
    FAIL("no source port gives a zero checksum (the search is wrong)");
}

TEST_CASE("port_rewrite: what it does not own passes untouched and is counted") {
    Skel s = load(7000, 7003);
    int fd = bpf_program__fd(s->progs.bertha_port_rw);
    std::vector<std::vector<uint8_t>> others = {
        Packet()
            .eth()
            .ipv4("198.18.0.1", "198.18.0.2")
            .udp(4000, 7001)
            .payload("other port")
            .bytes(),
        Packet()
            .eth()
            .ipv4("198.18.0.1", "198.18.0.2", IPPROTO_TCP)
            .payload(std::string(20, 0))
            .bytes(),
        Packet().eth().ipv4("198.18.0.1", "198.18.0.2").fragment(0, true).udp(1, 7000).bytes(),
        Packet()
            .eth()
            .ipv4("198.18.0.1", "198.18.0.2")
            .udp(1, 7000)
            .payload("cut")
            .truncate(40)
            .bytes(),
        Packet().eth(ETH_P_ARP).payload(std::string(28, 0)).bytes(),
    };
    for (auto& in : others) {
        auto r = run_prog(fd, in);
        REQUIRE(r.err == 0);
        CHECK(r.verdict == XDP_PASS);
        CHECK(r.out == in);
    }
    CHECK(counted(s.get(), 1) == others.size());
    CHECK(counted(s.get(), 0) == 0);
}
