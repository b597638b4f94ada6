// passcount.bpf.c: every packet is counted per CPU and passed on byte for byte.
#include "bertha/counters.h"
#include "bpf_run.hpp"
#include "packet.hpp"
#include "passcount.skel.h"

#include <doctest/doctest.h>
#include <linux/bpf.h>
#include <memory>
#include <unistd.h>

using namespace bertha::test;

namespace {

struct SkelDeleter {
    void operator()(passcount* s) const { passcount__destroy(s); }
};
using Skel = std::unique_ptr<passcount, SkelDeleter>;

Skel load() {
    Skel s(passcount__open_and_load());
    REQUIRE_MESSAGE(s, "passcount failed to load (root needed; see libbpf's log above): errno ",
                    errno);
    return s;
}

// Sum the per-CPU copies, as `bertha-load stats` will.
bertha_counters read_counters(const passcount* s) {
    int ncpu = libbpf_num_possible_cpus();
    std::vector<bertha_counters> per_cpu(static_cast<size_t>(ncpu));
    uint32_t key = 0;
    REQUIRE(bpf_map__lookup_elem(s->maps.passcount_stats, &key, sizeof key, per_cpu.data(),
                                 per_cpu.size() * sizeof(bertha_counters), 0) == 0);
    bertha_counters total{};
    for (auto& c : per_cpu) {
        total.packets += c.packets;
        total.bytes += c.bytes;
    }
    return total;
}

} // namespace

TEST_CASE("passcount: a UDP packet passes unchanged and is counted with its bytes") {
    Skel s = load();
    auto pkt =
        Packet().eth().ipv4("198.18.0.1", "198.18.0.2").udp(4000, 7000).payload("hi").bytes();
    auto r = run_prog(bpf_program__fd(s->progs.bertha_passcnt), pkt);
    REQUIRE(r.err == 0);
    CHECK(r.verdict == XDP_PASS);
    CHECK(r.out == pkt);
    auto c = read_counters(s.get());
    CHECK(c.packets == 1);
    CHECK(c.bytes == pkt.size());
}

TEST_CASE("passcount: repeated runs add up, and a bare Ethernet frame passes too") {
    Skel s = load();
    auto frame = Packet().eth(0x88b5).payload(std::string(46, '\0')).bytes(); // local experimental
    auto r = run_prog(bpf_program__fd(s->progs.bertha_passcnt), frame, 10);
    REQUIRE(r.err == 0);
    CHECK(r.verdict == XDP_PASS);
    CHECK(r.out == frame);
    auto c = read_counters(s.get());
    CHECK(c.packets == 10);
    CHECK(c.bytes == 10 * frame.size());
}

TEST_CASE("passcount: a truncated IPv4 header is passed, not dropped") {
    Skel s = load();
    auto cut = Packet().eth().ipv4("198.18.0.1", "198.18.0.2").udp(1, 2).truncate(20).bytes();
    auto r = run_prog(bpf_program__fd(s->progs.bertha_passcnt), cut);
    REQUIRE(r.err == 0);
    CHECK(r.verdict == XDP_PASS);
    CHECK(r.out == cut);
}
