// dispatcher.bpf.c, egress.bpf.c and libbertha-load on a live interface (lo of a private network
// namespace, see loader_fixture.hpp): a packet goes in through Loader::explain — the root program
// the loader attached, run with BPF_PROG_TEST_RUN — and the verdict, the steps (which stage did
// what, from the per-CPU trail) and the packet out are checked. Every fixture is also decided by
// the C++ build of bertha_parse_udp plus a lookup in the test's own list of attached flows: the
// dispatcher must claim exactly the packets that lookup claims, for exactly the same chain.
#include "bertha/parse.h"
#include "loader/roots.hpp"
#include "loader_fixture.hpp"
#include "packet.hpp"
#include "passcount.skel.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <doctest/doctest.h>
#include <fstream>
#include <linux/bpf.h>
#include <linux/if_link.h>
#include <linux/pkt_cls.h>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <sys/stat.h>
#include <vector>

using namespace bertha;
using namespace bertha::test;
using load::Hook;

namespace {

constexpr uint32_t kNone = BERTHA_NO_CHAIN;
const char *kUs = "198.18.0.1", *kPeer = "198.18.0.2", *kOther = "198.18.0.3";
const char *kUs6 = "2001:db8::1", *kPeer6 = "2001:db8::2", *kOther6 = "2001:db8::3";

std::vector<load::StageSpec> counts(size_t n) {
    return std::vector<load::StageSpec>(n, load::StageSpec{"count", ""});
}

load::FlowKey flow(uint16_t port, Hook hook = Hook::xdp, const char* peer = nullptr) {
    load::FlowKey k{LoaderFixture::kIf, hook, port, {}};
    if (peer) {
        auto a = Addr::parse(peer);
        REQUIRE_MESSAGE(a, "bad peer in a test: ", peer);
        k.peer = *a;
    }
    return k;
}

uint32_t attach(LoaderFixture& fx, const load::FlowKey& k, size_t nstages) {
    auto c = fx.loader().attach(k, counts(nstages));
    REQUIRE_MESSAGE(c, "attach ", k.text(), ": ", (c ? std::string() : c.error().what()));
    return *c;
}

void detach(LoaderFixture& fx, const load::FlowKey& k) {
    auto r = fx.loader().detach(k);
    REQUIRE_MESSAGE(r, "detach ", k.text(), ": ", (r ? std::string() : r.error().what()));
}

load::Explanation run(LoaderFixture& fx, const std::vector<uint8_t>& pkt, Hook hook = Hook::xdp) {
    auto ex = fx.loader().explain(LoaderFixture::kIf, hook, pkt);
    REQUIRE_MESSAGE(ex, "explain: ", (ex ? std::string() : ex.error().what()));
    return std::move(*ex);
}

// The steps as one line, "dispatcher:hit count@2.0:pass ...": a mismatch shows both lines whole.
std::string text(const std::vector<load::ExplainStep>& steps) {
    std::string s;
    for (auto& st : steps) {
        s += s.empty() ? "" : " ";
        s += st.stage;
        if (st.chain != kNone)
            s += "@" + std::to_string(st.chain) + "." + std::to_string(st.position);
        s += ":" + st.did;
    }
    return s;
}
// What a hit on `chain` of n count stages does.
std::string hit(uint32_t chain, size_t n) {
    std::string s = "dispatcher:hit";
    for (size_t i = 0; i < n; ++i)
        s += " count@" + std::to_string(chain) + "." + std::to_string(i) + ":pass";
    return s;
}

constexpr int kXdpPass = XDP_PASS;
constexpr int kTcContinue = TC_ACT_UNSPEC;

std::vector<uint8_t> udp4(const char* src, const char* dst, uint16_t sport, uint16_t dport,
                          std::string_view payload = "hello") {
    return Packet().eth().ipv4(src, dst).udp(sport, dport).payload(payload).bytes();
}
std::vector<uint8_t> udp6(const char* src, const char* dst, uint16_t sport, uint16_t dport,
                          std::string_view payload = "hello") {
    return Packet().eth(ETH_P_IPV6).ipv6(src, dst).udp(sport, dport).payload(payload).bytes();
}

// A packet the dispatcher must pass untouched, and what its parser must say about it.
struct NotOurs {
    std::string what;
    std::vector<uint8_t> frame;
    std::string parse;
};

// Every one is addressed (as far as it has addresses) to udp/7000, which has a flow.
std::vector<NotOurs> not_ours() {
    auto v4 = [] { return Packet().eth().ipv4(kPeer, kUs); };
    std::vector<NotOurs> out = {
        {"ARP", Packet().eth(ETH_P_ARP).payload(std::string(28, '\0')).bytes(), "not IP"},
        {"LLDP", Packet().eth(0x88cc).payload(std::string(46, '\0')).bytes(), "not IP"},
        {"TCP to port 7000",
         Packet()
             .eth()
             .ipv4(kPeer, kUs, IPPROTO_TCP)
             .udp(5000, 7000)
             .payload(std::string(12, 0))
             .bytes(),
         "not UDP"},
        {"ICMP echo",
         Packet().eth().ipv4(kPeer, kUs, IPPROTO_ICMP).payload("\x08\0\0\0\0\0\0\0").bytes(),
         "not UDP"},
        {"ICMPv6",
         Packet().eth(ETH_P_IPV6).ipv6(kPeer6, kUs6, IPPROTO_ICMPV6).payload("\x80\0\0\0").bytes(),
         "not UDP"},
        {"IPv4 first fragment (MF)", v4().fragment(0, true).udp(5000, 7000).bytes(),
         "an IP fragment"},
        {"IPv4 later fragment", v4().fragment(185, false).udp(5000, 7000).bytes(),
         "an IP fragment"},
        {"IPv6 fragment header",
         Packet()
             .eth(ETH_P_IPV6)
             .ipv6(kPeer6, kUs6)
             .ipv6_ext(IPPROTO_FRAGMENT)
             .udp(5000, 7000)
             .bytes(),
         "an IP fragment"},
        {"three VLAN tags",
         Packet()
             .eth(ETH_P_8021AD)
             .vlan(1, ETH_P_8021Q)
             .vlan(2, ETH_P_8021Q)
             .vlan(3, ETH_P_IP)
             .ipv4(kPeer, kUs)
             .udp(5000, 7000)
             .bytes(),
         "too many VLAN tags or IPv6 extension headers"},
        {"five IPv6 extension headers",
         Packet()
             .eth(ETH_P_IPV6)
             .ipv6(kPeer6, kUs6)
             .ipv6_ext(IPPROTO_HOPOPTS, IPPROTO_DSTOPTS)
             .ipv6_ext(IPPROTO_DSTOPTS, IPPROTO_DSTOPTS)
             .ipv6_ext(IPPROTO_DSTOPTS, IPPROTO_DSTOPTS)
             .ipv6_ext(IPPROTO_DSTOPTS, IPPROTO_DSTOPTS)
             .ipv6_ext(IPPROTO_DSTOPTS)
             .udp(5000, 7000)
             .bytes(),
         "too many VLAN tags or IPv6 extension headers"},
    };
    {
        auto f = udp4(kPeer, kUs, 5000, 7000); // UDP length 4: shorter than its own header
        f[38] = 0, f[39] = 4;
        out.push_back({"UDP length 4 (< 8)", f, "a malformed header"});
        f[39] = 7;
        out.push_back({"UDP length 7 (< 8)", f, "a malformed header"});
    }
    {
        auto f = udp4(kPeer, kUs, 5000, 7000);
        f[14] = 0x44; // IHL 4: 16 bytes, shorter than an IPv4 header
        out.push_back({"IPv4 IHL 4 (< 5)", f, "a malformed header"});
        f[14] = 0x40;
        out.push_back({"IPv4 IHL 0", f, "a malformed header"});
        f[14] = 0x65; // version 6 behind the IPv4 EtherType
        out.push_back({"IPv4 EtherType, version 6", f, "a malformed header"});
    }
    {
        auto f = udp4(kPeer, kUs, 5000, 7000, "hello"); // UDP length says more than is there
        f[39] = uint8_t(f[39] + 1);
        out.push_back({"UDP length 1 beyond the frame", f, "truncated"});
    }
    // Every length of valid frames, from a bare Ethernet header to one byte short.
    struct Whole {
        const char* what;
        std::vector<uint8_t> frame;
    };
    const Whole whole[] = {
        {"IPv4", udp4(kPeer, kUs, 5000, 7000)},
        {"IPv4 with options, two VLAN tags", Packet()
                                                 .eth(ETH_P_8021AD)
                                                 .vlan(1, ETH_P_8021Q)
                                                 .vlan(2, ETH_P_IP)
                                                 .ipv4(kPeer, kUs, IPPROTO_UDP, 3)
                                                 .udp(5000, 7000)
                                                 .payload("hi")
                                                 .bytes()},
        {"IPv6 with a hop-by-hop header", Packet()
                                              .eth(ETH_P_IPV6)
                                              .ipv6(kPeer6, kUs6)
                                              .ipv6_ext(IPPROTO_HOPOPTS)
                                              .udp(5000, 7000)
                                              .payload("hi")
                                              .bytes()},
    };
    for (auto& w : whole)
        for (size_t n = 14; n < w.frame.size(); ++n)
            out.push_back({std::string(w.what) + " cut to " + std::to_string(n) + " bytes",
                           std::vector<uint8_t>(w.frame.begin(), w.frame.begin() + long(n)),
                           "truncated"});
    return out;
}

// Packets the dispatcher must parse and claim for udp/7000, whatever their framing.
struct Framed {
    const char* what;
    std::vector<uint8_t> frame;
    uint8_t ip_version;
};
std::vector<Framed> framings() {
    return {
        {"IPv4", udp4(kPeer, kUs, 5000, 7000), 4},
        {"IPv4 with 40 bytes of options",
         Packet().eth().ipv4(kPeer, kUs, IPPROTO_UDP, 10).udp(5000, 7000).payload("x").bytes(), 4},
        {"IPv4, one VLAN tag",
         Packet().eth(ETH_P_8021Q).vlan(7, ETH_P_IP).ipv4(kPeer, kUs).udp(5000, 7000).bytes(), 4},
        {"IPv4, two VLAN tags (802.1ad + 802.1Q)",
         Packet()
             .eth(ETH_P_8021AD)
             .vlan(1, ETH_P_8021Q)
             .vlan(2, ETH_P_IP)
             .ipv4(kPeer, kUs, IPPROTO_UDP, 2)
             .udp(5000, 7000)
             .payload(std::string(250, 'k'))
             .bytes(),
         4},
        {"IPv6", udp6(kPeer6, kUs6, 5000, 7000), 6},
        {"IPv6, hop-by-hop + routing + destination options",
         Packet()
             .eth(ETH_P_IPV6)
             .ipv6(kPeer6, kUs6)
             .ipv6_ext(IPPROTO_HOPOPTS, IPPROTO_ROUTING)
             .ipv6_ext(IPPROTO_ROUTING, IPPROTO_DSTOPTS)
             .ipv6_ext(IPPROTO_DSTOPTS)
             .udp(5000, 7000)
             .payload("six")
             .bytes(),
         6},
        {"IPv6, one VLAN tag, four extension headers",
         Packet()
             .eth(ETH_P_8021Q)
             .vlan(9, ETH_P_IPV6)
             .ipv6(kPeer6, kUs6)
             .ipv6_ext(IPPROTO_HOPOPTS, IPPROTO_DSTOPTS)
             .ipv6_ext(IPPROTO_DSTOPTS, IPPROTO_ROUTING)
             .ipv6_ext(IPPROTO_ROUTING, IPPROTO_DSTOPTS)
             .ipv6_ext(IPPROTO_DSTOPTS)
             .udp(5000, 7000)
             .bytes(),
         6},
    };
}

// ---- the differential model: the C++ parser and a lookup over the flows the test attached ----
struct ModelFlow {
    load::FlowKey key;
    uint32_t chain;
};

// The chain the flows give a frame: the flow for this very peer (address and port), else the
// peer's any-port flow, else the port's any-peer flow; BERTHA_NO_CHAIN when none, or when the
// frame is not a whole UDP datagram.
uint32_t model_chain(const std::vector<ModelFlow>& flows, Hook hook,
                     const std::vector<uint8_t>& f) {
    bertha_pkt p{};
    if (bertha_parse_udp(f.data(), f.data() + f.size(), &p) != BERTHA_PARSE_OK) return kNone;
    const bool in = hook == Hook::xdp;
    const uint16_t local = in ? p.dport : p.sport, remote = in ? p.sport : p.dport;
    const uint8_t* ip = f.data() + p.l3_off;
    const uint8_t* peer = p.ip_version == 4 ? ip + (in ? 12 : 16) : ip + (in ? 8 : 24);
    uint32_t best = kNone;
    int rank = 0;
    for (auto& mf : flows) {
        const auto& k = mf.key;
        if (k.hook != hook || k.port != local) continue;
        int r = 1;
        if (k.peer) {
            const sockaddr* sa = k.peer->sa();
            bool same = false;
            if (sa->sa_family == AF_INET && p.ip_version == 4)
                same = !std::memcmp(&reinterpret_cast<const sockaddr_in*>(sa)->sin_addr, peer, 4);
            if (sa->sa_family == AF_INET6 && p.ip_version == 6)
                same =
                    !std::memcmp(&reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr, peer, 16);
            if (!same || (k.peer->port() != 0 && k.peer->port() != remote)) continue;
            r = k.peer->port() != 0 ? 3 : 2;
        }
        if (r > rank) rank = r, best = mf.chain;
    }
    return best;
}

// What explain says the dispatcher did with it: the chain it ran, or BERTHA_NO_CHAIN.
uint32_t claimed_chain(const load::Explanation& ex) {
    if (ex.steps.size() < 2 || ex.steps[0].did != "hit") return kNone;
    return ex.steps[1].chain;
}

std::vector<load::StageStats> stats(LoaderFixture& fx) {
    auto s = fx.loader().stats(LoaderFixture::kIf);
    REQUIRE_MESSAGE(s, "stats: ", (s ? std::string() : s.error().what()));
    return std::move(*s);
}
// One counter of one row: the dispatcher's (chain == BERTHA_NO_CHAIN) or a stage's.
uint64_t counter(const std::vector<load::StageStats>& rows, Hook hook, uint32_t chain,
                 uint32_t position, unsigned c) {
    for (auto& r : rows)
        if (r.hook == hook && r.chain == chain && (chain == kNone || r.position == position))
            return r.counters[c];
    FAIL("no stats row for hook ", load::to_string(hook), " chain ", chain, " position ", position);
    return 0;
}

uint32_t xdp_prog_on(int ifindex) {
    uint32_t id = 0;
    REQUIRE(bpf_xdp_query_id(ifindex, 0, &id) == 0);
    return id;
}

// Programs on lo's TC egress hook: on tcx (enum bpf_attach_type 47, Linux >= 6.6), plus our
// clsact filter (the loader's fallback on kernels without tcx, e.g. 6.1 in vmtest).
uint32_t tc_egress_progs(int ifindex) {
    uint32_t ids[8] = {}, cnt = 8;
    if (bpf_prog_query(ifindex, static_cast<bpf_attach_type>(47), 0, nullptr, ids, &cnt) != 0)
        cnt = 0;
    LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_EGRESS);
    LIBBPF_OPTS(bpf_tc_opts, to, .handle = load::kClsactHandle, .priority = load::kClsactPriority);
    load::LibbpfCapture quiet; // no clsact qdisc is an answer (0), not a message
    if (bpf_tc_query(&hook, &to) == 0) ++cnt;
    return cnt;
}

// BPF_PROG_TEST_RUN of a TC program refuses (EINVAL) a frame whose EtherType says IPv4 or IPv6
// but that is shorter than that header (the kernel builds an skb from it); the stack never hands
// egress such a frame. XDP runs take every frame of at least 14 bytes.
bool tc_test_run_refuses(const std::vector<uint8_t>& f) {
    const unsigned type = f.size() >= 14 ? unsigned(f[12] << 8 | f[13]) : 0;
    return (type == ETH_P_IP && f.size() < 14 + 20) || (type == ETH_P_IPV6 && f.size() < 14 + 40);
}

bool exists(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0;
}

} // namespace

// ---- hits run the chain in order --------------------------------------------------------------

TEST_CASE("dispatcher: a flow hit runs its chain's 1, 3 and 8 stages in order, untouched") {
    LoaderFixture fx;
    const size_t sizes[] = {1, 3, 8};
    uint32_t chains[3];
    for (size_t i = 0; i < 3; ++i) chains[i] = attach(fx, flow(uint16_t(7000 + i)), sizes[i]);
    CHECK(chains[0] != chains[1]);
    CHECK(chains[1] != chains[2]);
    for (size_t i = 0; i < 3; ++i) {
        CAPTURE(sizes[i]);
        auto in = udp4(kPeer, kUs, 5000, uint16_t(7000 + i));
        auto ex = run(fx, in);
        CHECK(ex.verdict == kXdpPass);
        CHECK(ex.verdict_name == "XDP_PASS");
        CHECK(text(ex.steps) == hit(chains[i], sizes[i]));
        CHECK(ex.parse ==
              "a UDP datagram (IPv4, 5000 -> " + std::to_string(7000 + i) + ", 5 B payload)");
        CHECK(ex.out == in);
        CHECK_FALSE(ex.changed);
    }
}

TEST_CASE("dispatcher: a packet to another port misses, passes untouched, and runs no stage") {
    LoaderFixture fx;
    attach(fx, flow(7000), 2);
    for (auto in : {udp4(kPeer, kUs, 5000, 7001), udp4(kPeer, kUs, 7000, 5000),
                    udp6(kPeer6, kUs6, 5000, 6999)}) {
        auto ex = run(fx, in);
        CHECK(ex.verdict == kXdpPass);
        CHECK(text(ex.steps) == "dispatcher:miss");
        CHECK(ex.out == in);
        CHECK_FALSE(ex.changed);
    }
}

TEST_CASE(
    "dispatcher: what is not a whole UDP datagram passes untouched as the dispatcher's pass") {
    LoaderFixture fx;
    uint32_t chain = attach(fx, flow(7000), 1);
    auto all = not_ours();
    REQUIRE(all.size() > 100); // the cut frames are there
    for (auto& n : all) {
        CAPTURE(n.what);
        auto ex = run(fx, n.frame);
        CHECK(ex.verdict == kXdpPass);
        CHECK(text(ex.steps) == "dispatcher:pass");
        CHECK(ex.parse == n.parse);
        CHECK(ex.out == n.frame);
        CHECK_FALSE(ex.changed);
    }
    auto rows = stats(fx);
    CHECK(counter(rows, Hook::xdp, kNone, 0, BERTHA_C_PASS) == all.size());
    CHECK(counter(rows, Hook::xdp, kNone, 0, BERTHA_C_HIT) == 0);
    CHECK(counter(rows, Hook::xdp, kNone, 0, BERTHA_C_MISS) == 0);
    CHECK(counter(rows, Hook::xdp, chain, 0, BERTHA_C_PASS) == 0);
    // Shorter than an Ethernet header: explain says so rather than running it.
    auto ex = fx.loader().explain(LoaderFixture::kIf, Hook::xdp, std::vector<uint8_t>(13, 0));
    REQUIRE_FALSE(ex);
    CHECK(ex.error().message == "a packet starts with a 14-byte Ethernet header (got 13 bytes)");
}

TEST_CASE("dispatcher: IPv6 (+ extension headers), VLAN tags and IPv4 options reach the flow") {
    LoaderFixture fx;
    uint32_t chain = attach(fx, flow(7000), 2);
    for (auto& f : framings()) {
        CAPTURE(f.what);
        auto ex = run(fx, f.frame);
        CHECK(ex.verdict == kXdpPass);
        CHECK(text(ex.steps) == hit(chain, 2));
        CHECK(ex.parse.starts_with("a UDP datagram (IPv" + std::to_string(f.ip_version) +
                                   ", 5000 -> 7000, "));
        CHECK(ex.out == f.frame);
    }
}

// ---- peers ------------------------------------------------------------------------------------

TEST_CASE("dispatcher: an IPv4 peer's packets take the peer's chain, others the port's") {
    LoaderFixture fx;
    uint32_t any = attach(fx, flow(7000), 1);
    uint32_t peer = attach(fx, flow(7000, Hook::xdp, "198.18.0.2:5000"), 2);
    CHECK(any != peer);
    CHECK(text(run(fx, udp4(kPeer, kUs, 5000, 7000)).steps) == hit(peer, 2));
    CHECK(text(run(fx, udp4(kPeer, kUs, 5001, 7000)).steps) == hit(any, 1));  // its other port
    CHECK(text(run(fx, udp4(kOther, kUs, 5000, 7000)).steps) == hit(any, 1)); // another peer
    CHECK(text(run(fx, udp6(kPeer6, kUs6, 5000, 7000)).steps) == hit(any, 1));
    CHECK(text(run(fx, udp4(kPeer, kUs, 5000, 7001)).steps) == "dispatcher:miss");
}

TEST_CASE("dispatcher: an IPv6 peer's packets take the peer's chain, others the port's") {
    LoaderFixture fx;
    uint32_t peer = attach(fx, flow(7000, Hook::xdp, "[2001:db8::2]:5000"), 3);
    uint32_t any = attach(fx, flow(7000), 1); // the any-peer flow after the peer's: same result
    CHECK(text(run(fx, udp6(kPeer6, kUs6, 5000, 7000)).steps) == hit(peer, 3));
    CHECK(text(run(fx, udp6(kPeer6, kUs6, 5001, 7000)).steps) == hit(any, 1));
    CHECK(text(run(fx, udp6(kOther6, kUs6, 5000, 7000)).steps) == hit(any, 1));
    // An IPv4 packet is never an IPv6 peer's.
    CHECK(text(run(fx, udp4(kPeer, kUs, 5000, 7000)).steps) == hit(any, 1));
}

TEST_CASE("dispatcher: with only a peer-specific flow, other peers miss") {
    LoaderFixture fx;
    uint32_t peer = attach(fx, flow(7000, Hook::xdp, "198.18.0.2:5000"), 1);
    CHECK(text(run(fx, udp4(kPeer, kUs, 5000, 7000)).steps) == hit(peer, 1));
    CHECK(text(run(fx, udp4(kPeer, kUs, 5001, 7000)).steps) == "dispatcher:miss");
    CHECK(text(run(fx, udp4(kOther, kUs, 5000, 7000)).steps) == "dispatcher:miss");
    CHECK(text(run(fx, udp6(kPeer6, kUs6, 5000, 7000)).steps) == "dispatcher:miss");
    auto rows = stats(fx);
    CHECK(counter(rows, Hook::xdp, kNone, 0, BERTHA_C_HIT) == 1);
    CHECK(counter(rows, Hook::xdp, kNone, 0, BERTHA_C_MISS) == 3);
    CHECK(counter(rows, Hook::xdp, kNone, 0, BERTHA_C_ERROR) == 0); // the placeholder is no chain
}

TEST_CASE("dispatcher: a peer flow with peer port 0 matches every port of that peer") {
    LoaderFixture fx;
    uint32_t any = attach(fx, flow(7000), 1);
    uint32_t peer_any_port = attach(fx, flow(7000, Hook::xdp, "198.18.0.2:0"), 2);
    uint32_t peer_5000 = attach(fx, flow(7000, Hook::xdp, "198.18.0.2:5000"), 3);
    uint32_t v6_any_port = attach(fx, flow(7000, Hook::xdp, "[2001:db8::2]:0"), 4);
    for (uint16_t sport : {1, 4999, 5001, 65535}) {
        CAPTURE(sport);
        CHECK(text(run(fx, udp4(kPeer, kUs, sport, 7000)).steps) == hit(peer_any_port, 2));
        CHECK(text(run(fx, udp6(kPeer6, kUs6, sport, 7000)).steps) == hit(v6_any_port, 4));
    }
    CHECK(text(run(fx, udp4(kPeer, kUs, 5000, 7000)).steps) == hit(peer_5000, 3)); // exact wins
    CHECK(text(run(fx, udp4(kOther, kUs, 5000, 7000)).steps) == hit(any, 1));
}

TEST_CASE("dispatcher: detaching the last peer flow clears the port's flag: any-peer as before") {
    LoaderFixture fx;
    load::FlowKey any_key = flow(7000), peer_key = flow(7000, Hook::xdp, "198.18.0.2:5000");
    uint32_t any = attach(fx, any_key, 1);
    // The port's entry in bertha_ports, as the dispatcher reads it (nullopt: all zero).
    auto any_entry = [&]() -> std::optional<bertha_flow> {
        int fd = bpf_obj_get((fx.iface_dir() + "/bertha_ports").c_str());
        REQUIRE_MESSAGE(fd >= 0, "open ", fx.iface_dir(), "/bertha_ports");
        uint32_t idx = bertha_port_index(BERTHA_HOOK_XDP, 7000);
        bertha_flow v{};
        bool found = bpf_map_lookup_elem(fd, &idx, &v) == 0 && v.flags != 0;
        ::close(fd);
        return found ? std::optional(v) : std::nullopt;
    };
    REQUIRE(any_entry());
    CHECK(any_entry()->chain == any);
    CHECK(any_entry()->flags == BERTHA_FLOW_CHAIN);

    uint32_t peer = attach(fx, peer_key, 2);
    CHECK(any_entry()->flags == (BERTHA_FLOW_CHAIN | BERTHA_FLOW_PEERS));
    CHECK(any_entry()->chain == any);
    CHECK(text(run(fx, udp4(kPeer, kUs, 5000, 7000)).steps) == hit(peer, 2));

    detach(fx, peer_key);
    REQUIRE(any_entry());
    CHECK(any_entry()->flags == BERTHA_FLOW_CHAIN);
    CHECK(any_entry()->chain == any);
    CHECK(text(run(fx, udp4(kPeer, kUs, 5000, 7000)).steps) == hit(any, 1));
    CHECK(text(run(fx, udp4(kOther, kUs, 5000, 7000)).steps) == hit(any, 1));

    // The other way round: the any-peer flow goes first, a placeholder keeps the flag for the
    // peer, and other peers miss; then the peer goes, and the entry with it.
    peer = attach(fx, peer_key, 2);
    detach(fx, any_key);
    REQUIRE(any_entry());
    CHECK(any_entry()->flags == BERTHA_FLOW_PEERS); // no chain for other peers
    CHECK(text(run(fx, udp4(kPeer, kUs, 5000, 7000)).steps) == hit(peer, 2));
    CHECK(text(run(fx, udp4(kOther, kUs, 5000, 7000)).steps) == "dispatcher:miss");
    auto other = flow(7000, Hook::xdp, "198.18.0.3:0");
    attach(fx, other, 1);
    detach(fx, peer_key); // one peer flow remains: the placeholder stays
    REQUIRE(any_entry());
    CHECK(any_entry()->flags == BERTHA_FLOW_PEERS);
    CHECK(text(run(fx, udp4(kPeer, kUs, 5000, 7000)).steps) == "dispatcher:miss");
    detach(fx, other);
    CHECK_FALSE(exists(fx.iface_dir())); // the last flow: nothing of ours remains
}

// ---- TC egress --------------------------------------------------------------------------------

TEST_CASE("egress: the TC root claims packets by their source port, and by destination peer") {
    LoaderFixture fx;
    uint32_t any = attach(fx, flow(7000, Hook::tc_egress), 2);
    uint32_t peer = attach(fx, flow(7000, Hook::tc_egress, "198.18.0.9:6000"), 1);
    auto out = udp4(kUs, kPeer, 7000, 5000);
    auto ex = run(fx, out, Hook::tc_egress);
    CHECK(ex.verdict == kTcContinue);
    CHECK(ex.verdict_name == "TC_ACT_UNSPEC (continue)");
    CHECK(text(ex.steps) == hit(any, 2));
    CHECK(ex.out == out);
    CHECK_FALSE(ex.changed);
    CHECK(text(run(fx, udp6(kUs6, kPeer6, 7000, 5000), Hook::tc_egress).steps) == hit(any, 2));
    CHECK(text(run(fx, udp4(kUs, "198.18.0.9", 7000, 6000), Hook::tc_egress).steps) ==
          hit(peer, 1));
    CHECK(text(run(fx, udp4(kUs, "198.18.0.9", 7000, 6001), Hook::tc_egress).steps) == hit(any, 2));
    // The peer of an egress flow is the destination: from 198.18.0.9, port 7000 to another
    // host's 6000 is the port's, not the peer's.
    CHECK(text(run(fx, udp4("198.18.0.9", kPeer, 7000, 6000), Hook::tc_egress).steps) ==
          hit(any, 2));
    // To port 7000 is the ingress direction: no egress flow has it.
    ex = run(fx, udp4(kPeer, kUs, 5000, 7000), Hook::tc_egress);
    CHECK(ex.verdict == kTcContinue);
    CHECK(text(ex.steps) == "dispatcher:miss");
    CHECK(text(run(fx, not_ours()[0].frame, Hook::tc_egress).steps) == "dispatcher:pass");
    // Only the TC root was attached.
    auto st = fx.loader().status(LoaderFixture::kIf);
    REQUIRE(st);
    REQUIRE(st->size() == 1);
    CHECK((*st)[0].tc.attached);
    CHECK_FALSE((*st)[0].xdp.attached);
    CHECK(tc_egress_progs(fx.ifindex()) == 1);
    CHECK(xdp_prog_on(fx.ifindex()) == 0);
    auto x = fx.loader().explain(LoaderFixture::kIf, Hook::xdp, out);
    REQUIRE_FALSE(x);
    CHECK(x.error().message == "no xdp root is loaded (attach a flow first)");
}

// ---- the loader's bookkeeping -----------------------------------------------------------------

TEST_CASE("loader: a flow attached twice survives one detach; the last leaves nothing behind") {
    LoaderFixture fx;
    auto k = flow(7000);
    auto tk = flow(7000, Hook::tc_egress);
    uint32_t c = attach(fx, k, 2);
    CHECK(attach(fx, k, 2) == c);
    uint32_t tc = attach(fx, tk, 1);
    auto refs = [&](uint32_t chain) -> uint32_t {
        auto st = fx.loader().status(LoaderFixture::kIf);
        REQUIRE(st);
        for (auto& ch : (*st)[0].chains)
            if (ch.chain == chain) return ch.refs;
        return 0;
    };
    CHECK(refs(c) == 2);
    CHECK(refs(tc) == 1);
    CHECK(xdp_prog_on(fx.ifindex()) != 0);
    CHECK(tc_egress_progs(fx.ifindex()) == 1);

    detach(fx, k);
    CHECK(refs(c) == 1);
    CHECK(text(run(fx, udp4(kPeer, kUs, 5000, 7000)).steps) == hit(c, 2));

    detach(fx, tk); // the last egress flow: the TC root goes, the XDP root stays
    CHECK(tc_egress_progs(fx.ifindex()) == 0);
    CHECK_FALSE(exists(fx.iface_dir() + "/tc_root"));
    CHECK_FALSE(exists(fx.iface_dir() + "/tc_link"));
    CHECK(xdp_prog_on(fx.ifindex()) != 0);

    detach(fx, k);
    CHECK(xdp_prog_on(fx.ifindex()) == 0);
    CHECK(tc_egress_progs(fx.ifindex()) == 0);
    CHECK_FALSE(exists(fx.iface_dir()));
    auto all = fx.loader().status();
    REQUIRE(all);
    CHECK(all->empty());
    auto again = fx.loader().detach(k);
    REQUIRE_FALSE(again);
    CHECK(again.error().message == "nothing of Bertha's here");
}

TEST_CASE("loader: the same flow with another chain is refused, naming the chain it has") {
    LoaderFixture fx;
    auto k = flow(7000);
    uint32_t c = attach(fx, k, 2);
    auto r = fx.loader().attach(k, counts(1));
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::incompatible);
    CHECK(r.error().what() == "flow lo xdp udp/7000: already has the chain count -> count "
                              "(1 reference(s)); detach it first");
    CHECK(text(run(fx, udp4(kPeer, kUs, 5000, 7000)).steps) == hit(c, 2)); // unchanged
    auto st = fx.loader().status(LoaderFixture::kIf);
    REQUIRE(st);
    REQUIRE((*st)[0].chains.size() == 1);
    CHECK((*st)[0].chains[0].refs == 1);
}

TEST_CASE(
    "loader: an unknown stage, a bad configuration or 9 stages are refused, leaving nothing") {
    struct Bad {
        const char* what;
        std::vector<load::StageSpec> stages;
        std::string message;
    };
    const std::vector<Bad> bad = {
        {"unknown stage",
         {{"count", ""}, {"nosuch", ""}},
         "stage nosuch: no such stage (known: count, shard, xsk)"},
        {"bad configuration",
         {{"count", "x=1"}},
         "stage count: unknown key 'x' (it takes no configuration)"},
        {"9 stages", counts(9), "flow lo xdp udp/7001: a chain has 1 to 8 stages"},
        {"no stage", {}, "flow lo xdp udp/7001: a chain has 1 to 8 stages"},
        {"a malformed name",
         {{"Count", ""}},
         "stage: 'Count': a stage is NAME[:key=val,...], NAME of at most 15 characters [a-z0-9_]"},
    };
    SUBCASE("on an interface with nothing of ours") {
        LoaderFixture fx;
        for (auto& b : bad) {
            CAPTURE(b.what);
            auto r = fx.loader().attach(flow(7001), b.stages);
            REQUIRE_FALSE(r);
            CHECK(r.error().what() == b.message);
            CHECK(xdp_prog_on(fx.ifindex()) == 0);
            CHECK(tc_egress_progs(fx.ifindex()) == 0);
            CHECK_FALSE(exists(fx.iface_dir()));
        }
    }
    SUBCASE("next to a live flow, on both hooks") {
        LoaderFixture fx;
        uint32_t c = attach(fx, flow(7000), 1);
        uint32_t root = xdp_prog_on(fx.ifindex());
        for (auto& b : bad) {
            CAPTURE(b.what);
            for (Hook h : {Hook::xdp, Hook::tc_egress}) {
                auto r = fx.loader().attach(flow(7001, h), b.stages);
                REQUIRE_FALSE(r);
                if (h == Hook::xdp) CHECK(r.error().what() == b.message);
                auto st = fx.loader().status(LoaderFixture::kIf);
                REQUIRE(st);
                REQUIRE((*st)[0].chains.size() == 1);
                CHECK((*st)[0].chains[0].chain == c);
                CHECK_FALSE((*st)[0].tc.attached);
                CHECK(xdp_prog_on(fx.ifindex()) == root);
                CHECK(tc_egress_progs(fx.ifindex()) == 0);
                CHECK_FALSE(exists(fx.iface_dir() + "/tc_root"));
            }
        }
        CHECK(text(run(fx, udp4(kPeer, kUs, 5000, 7000)).steps) == hit(c, 1));
        CHECK(text(run(fx, udp4(kPeer, kUs, 5000, 7001)).steps) == "dispatcher:miss");
    }
}

TEST_CASE("loader: stats count exactly the packets run, per stage and for the dispatcher") {
    LoaderFixture fx;
    uint32_t a = attach(fx, flow(7000), 3);
    uint32_t b = attach(fx, flow(7001), 1);
    uint32_t t = attach(fx, flow(7000, Hook::tc_egress), 2);
    for (int i = 0; i < 5; ++i) run(fx, udp4(kPeer, kUs, 5000, 7000));
    for (int i = 0; i < 2; ++i) run(fx, udp6(kPeer6, kUs6, 5000, 7001));
    for (int i = 0; i < 3; ++i) run(fx, udp4(kPeer, kUs, 5000, 7002));
    for (int i = 0; i < 4; ++i) run(fx, not_ours()[1].frame);
    for (int i = 0; i < 6; ++i) run(fx, udp4(kUs, kPeer, 7000, 5000), Hook::tc_egress);
    for (int i = 0; i < 1; ++i) run(fx, udp4(kUs, kPeer, 7001, 5000), Hook::tc_egress);
    auto rows = stats(fx);
    CHECK(rows.size() == 2 + 3 + 1 + 2); // two dispatcher rows, then one row per stage
    auto xdp = [&](uint32_t chain, uint32_t pos, unsigned c) {
        return counter(rows, Hook::xdp, chain, pos, c);
    };
    CHECK(xdp(kNone, 0, BERTHA_C_HIT) == 7);
    CHECK(xdp(kNone, 0, BERTHA_C_MISS) == 3);
    CHECK(xdp(kNone, 0, BERTHA_C_PASS) == 4);
    CHECK(xdp(kNone, 0, BERTHA_C_ERROR) == 0);
    for (uint32_t pos = 0; pos < 3; ++pos) CHECK(xdp(a, pos, BERTHA_C_PASS) == 5);
    CHECK(xdp(b, 0, BERTHA_C_PASS) == 2);
    CHECK(counter(rows, Hook::tc_egress, kNone, 0, BERTHA_C_HIT) == 6);
    CHECK(counter(rows, Hook::tc_egress, kNone, 0, BERTHA_C_MISS) == 1);
    CHECK(counter(rows, Hook::tc_egress, kNone, 0, BERTHA_C_PASS) == 0);
    CHECK(counter(rows, Hook::tc_egress, t, 0, BERTHA_C_PASS) == 6);
    CHECK(counter(rows, Hook::tc_egress, t, 1, BERTHA_C_PASS) == 6);
    uint64_t others = 0; // nothing counted anything else
    for (auto& r : rows)
        for (unsigned c : {BERTHA_C_TX, BERTHA_C_REDIRECT, BERTHA_C_DROP, BERTHA_C_ERROR})
            others += r.counters[c];
    CHECK(others == 0);
    // A chain's counters go with it: a new chain in its place starts from zero.
    detach(fx, flow(7001));
    uint32_t b2 = attach(fx, flow(7003), 1);
    CHECK(b2 == b);
    CHECK(counter(stats(fx), Hook::xdp, b2, 0, BERTHA_C_PASS) == 0);
}

TEST_CASE("loader: an XDP program that is not ours is refused, and replaced with force") {
    LoaderFixture fx;
    std::unique_ptr<passcount, void (*)(passcount*)> foreign(passcount__open_and_load(),
                                                             passcount__destroy);
    REQUIRE_MESSAGE(foreign, "passcount failed to load");
    int fd = bpf_program__fd(foreign->progs.bertha_passcnt);
    REQUIRE(bpf_xdp_attach(fx.ifindex(), fd, XDP_FLAGS_SKB_MODE, nullptr) == 0);
    bpf_prog_info info{};
    uint32_t len = sizeof info;
    REQUIRE(bpf_obj_get_info_by_fd(fd, &info, &len) == 0);
    const uint32_t foreign_id = info.id;
    REQUIRE(xdp_prog_on(fx.ifindex()) == foreign_id);

    auto r = fx.loader().attach(flow(7000), counts(1));
    REQUIRE_FALSE(r);
    CHECK(r.error().what() == "interface lo: program 'bertha_passcnt' (id " +
                                  std::to_string(foreign_id) +
                                  ") is attached to the XDP hook and is not Bertha's; detach it "
                                  "(ip link set dev lo xdp off, or xdp-loader unload) or pass "
                                  "--force to replace it");
    CHECK(xdp_prog_on(fx.ifindex()) == foreign_id); // left alone
    CHECK_FALSE(exists(fx.iface_dir()));            // and nothing of ours behind

    auto forced = fx.another([] {
        load::Options o;
        o.force = true;
        return o;
    }());
    auto c = forced.attach(flow(7000), counts(1));
    REQUIRE_MESSAGE(c, (c ? std::string() : c.error().what()));
    auto st = forced.status(LoaderFixture::kIf);
    REQUIRE(st);
    CHECK((*st)[0].xdp.attached);
    CHECK((*st)[0].xdp.mode == "generic"); // lo has no native XDP
    CHECK(xdp_prog_on(fx.ifindex()) == (*st)[0].xdp.prog_id);
    CHECK(xdp_prog_on(fx.ifindex()) != foreign_id);
    CHECK(text(run(fx, udp4(kPeer, kUs, 5000, 7000)).steps) == hit(*c, 1));
}

// ---- differential: the dispatcher against the C++ parser and a lookup -------------------------

TEST_CASE("dispatcher: on every fixture it claims what the C++ parser and flow lookup claim") {
    LoaderFixture fx;
    std::vector<ModelFlow> flows;
    struct Want {
        load::FlowKey key;
        size_t stages;
    };
    const Want want[] = {
        {flow(7000), 1},
        {flow(7000, Hook::xdp, "198.18.0.2:5000"), 2},
        {flow(7000, Hook::xdp, "[2001:db8::2]:0"), 3},
        {flow(7001, Hook::xdp, "198.18.0.3:0"), 1}, // a port with only a peer's flow
        {flow(7002, Hook::xdp, "[2001:db8::3]:5001"), 2},
        {flow(7000, Hook::tc_egress), 1},
        {flow(7000, Hook::tc_egress, "198.18.0.2:5000"), 2},
        {flow(5000, Hook::tc_egress, "[2001:db8::1]:0"), 3},
    };
    std::vector<size_t> nstages(BERTHA_MAX_CHAINS, 0);
    for (auto& w : want) {
        uint32_t c = attach(fx, w.key, w.stages);
        flows.push_back({w.key, c});
        nstages[c] = w.stages;
    }

    std::vector<std::pair<std::string, std::vector<uint8_t>>> frames;
    for (auto& n : not_ours()) frames.emplace_back(n.what, n.frame);
    for (auto& f : framings()) frames.emplace_back(f.what, f.frame);
    const char* v4s[] = {kUs, kPeer, kOther};
    const char* v6s[] = {kUs6, kPeer6, kOther6};
    const uint16_t ports[] = {5000, 5001, 7000, 7001, 7002, 7003};
    for (size_t i = 0; i < 3; ++i)
        for (size_t j = 0; j < 3; ++j)
            for (uint16_t sp : ports)
                for (uint16_t dp : ports) {
                    auto what = std::to_string(sp) + " -> " + std::to_string(dp);
                    frames.emplace_back(std::string(v4s[i]) + ":" + what,
                                        udp4(v4s[i], v4s[j], sp, dp));
                    frames.emplace_back(std::string(v6s[i]) + ":" + what,
                                        udp6(v6s[i], v6s[j], sp, dp));
                }

    size_t claimed[2] = {0, 0}, refused = 0;
    for (Hook h : {Hook::xdp, Hook::tc_egress}) {
        for (auto& [what, frame] : frames) {
            CAPTURE(what);
            CAPTURE(load::to_string(h));
            if (h == Hook::tc_egress && tc_test_run_refuses(frame)) {
                auto r = fx.loader().explain(LoaderFixture::kIf, h, frame);
                REQUIRE_FALSE(r);
                CHECK(r.error().sys_errno == EINVAL);
                ++refused;
                continue;
            }
            auto ex = run(fx, frame, h);
            const uint32_t want_chain = model_chain(flows, h, frame);
            const uint32_t got = claimed_chain(ex);
            CHECK(got == want_chain);
            bertha_pkt p{};
            const bool parsed =
                bertha_parse_udp(frame.data(), frame.data() + frame.size(), &p) == BERTHA_PARSE_OK;
            if (want_chain != kNone)
                CHECK(text(ex.steps) == hit(want_chain, nstages[want_chain]));
            else
                CHECK(text(ex.steps) == (parsed ? "dispatcher:miss" : "dispatcher:pass"));
            CHECK(ex.out == frame);
            claimed[size_t(h)] += want_chain != kNone;
        }
    }
    // The fixtures exercise every flow, on both hooks (a model that never claims proves nothing).
    CHECK(claimed[0] > 20);
    CHECK(claimed[1] > 20);
    CHECK(refused == (34 - 14) + (54 - 14)); // the cut IPv4 and IPv6 frames, on TC only
}

// ---- the fixture itself -----------------------------------------------------------------------

TEST_CASE("fixture: a failing test still leaves the thread's namespace and no mount behind") {
    auto netns = [] {
        struct stat st {};
        REQUIRE(::stat("/proc/thread-self/ns/net", &st) == 0);
        return st.st_ino;
    };
    auto mounted = [](const std::string& dir) {
        std::ifstream f("/proc/self/mounts");
        std::stringstream all;
        all << f.rdbuf();
        return all.str().find(" " + dir + " ") != std::string::npos;
    };
    const auto host = netns();
    std::string root, mount_dir, lock;
    try {
        LoaderFixture fx;
        root = fx.root();
        mount_dir = root.substr(0, root.rfind('/'));
        CHECK(netns() != host);
        CHECK(mounted(mount_dir));
        attach(fx, flow(7000), 2);
        lock = "/run/bertha/lock/" + fx.iface_dir().substr(root.size() + 1) + ".lock";
        CHECK(exists(lock));
        throw std::runtime_error("the test fails here");
    } catch (const std::runtime_error&) {
    }
    CHECK(netns() == host);
    CHECK_FALSE(mounted(mount_dir));
    CHECK_FALSE(exists(mount_dir));
    CHECK_FALSE(exists(lock));
}
