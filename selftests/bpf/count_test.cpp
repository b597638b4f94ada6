// The count chunnel's offload against its fallback (differential): count::Xdp attaches the XDP
// `count` stage through the real in-process offload path (connect_wrap -> attach_offload ->
// Loader) on lo of a private network namespace (loader_fixture.hpp), and every fixture packet
// runs through the live dispatcher and chain with Loader::explain. The stage's `pass` counter,
// read back with Loader::stats, must move exactly when the fallback's counting rule
// (count::Rule) says the packet counts; and every packet must leave the chain untouched.
#include "bertha/offload.hpp"
#include "bertha/wire.hpp"
#include "count/count.hpp"
#include "loader_fixture.hpp"
#include "packet.hpp"

#include <doctest/doctest.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <string>
#include <vector>

using namespace bertha;
using namespace bertha::test;

namespace {

const char *kUs = "198.18.0.1", *kPeer = "198.18.0.2", *kOther = "198.18.0.3";
const char *kUs6 = "2001:db8::1", *kPeer6 = "2001:db8::2";

// The connection under the count chunnel: nothing arrives, sends vanish. Only its flow matters.
struct NullConn {
    using Data = Msg;
    Result<size_t> send(std::span<Msg> batch) { return batch.size(); }
    Result<size_t> recv(std::span<Msg>, Deadline) { return size_t(0); }
    void describe(std::vector<std::string>& out) const { out.push_back("null"); }
};
using XdpConn = count::Xdp::Conn<NullConn>;

// The process's offloads go through a Loader on the fixture's pins for the length of a test
// (declared after the fixture: it goes first).
struct UseFixture {
    explicit UseFixture(LoaderFixture& fx) {
        set_offload_backend(in_process_backend(fx.another({})));
    }
    ~UseFixture() { set_offload_backend(nullptr); }
};

// The serving end's context for a flow on lo: local address and port, the peer if any.
ConnectContext serving(const char* local, const char* peer = nullptr) {
    ConnectContext ctx;
    ctx.side = Side::server;
    ctx.flow.local = *Addr::parse(local);
    if (peer) ctx.flow.peer = *Addr::parse(peer);
    ctx.flow.ifname = LoaderFixture::kIf;
    return ctx;
}

XdpConn open_count(const ConnectContext& ctx) {
    auto c = count::Xdp{}.connect_wrap(NullConn{}, ctx);
    REQUIRE_MESSAGE(c, "count/xdp connect_wrap: ", (c ? std::string() : c.error().what()));
    REQUIRE(c->active());
    return std::move(*c);
}

uint64_t pass_count(const XdpConn& c) {
    auto n = c.counts();
    REQUIRE_MESSAGE(n, "counts: ", (n ? std::string() : n.error().what()));
    return n->received;
}

struct Fixture {
    std::string what;
    std::vector<uint8_t> pkt;
};

Packet udp4(const char* src, uint16_t sport, uint16_t dport) {
    Packet p;
    p.eth().ipv4(src, kUs).udp(sport, dport).payload("count me");
    return p;
}

// The fixtures, for a flow on `port` whose peer (if any) is kPeer:5000.
std::vector<Fixture> fixtures(uint16_t port) {
    std::vector<Fixture> f;
    f.push_back({"flow hit: IPv4 UDP from the peer", udp4(kPeer, 5000, port).bytes()});
    f.push_back(
        {"flow hit, empty payload", Packet().eth().ipv4(kPeer, kUs).udp(5000, port).bytes()});
    f.push_back({"other port", udp4(kPeer, 5000, uint16_t(port + 1)).bytes()});
    f.push_back({"other peer address", udp4(kOther, 5000, port).bytes()});
    f.push_back({"other peer port", udp4(kPeer, 5001, port).bytes()});
    f.push_back(
        {"IPv6 UDP to the port",
         Packet().eth(ETH_P_IPV6).ipv6(kPeer6, kUs6).udp(5000, port).payload("v6").bytes()});
    f.push_back({"IPv6 with a hop-by-hop header", Packet()
                                                      .eth(ETH_P_IPV6)
                                                      .ipv6(kPeer6, kUs6, IPPROTO_HOPOPTS)
                                                      .ipv6_ext(IPPROTO_HOPOPTS)
                                                      .udp(5000, port)
                                                      .payload("v6x")
                                                      .bytes()});
    f.push_back({"one VLAN tag", Packet()
                                     .eth(ETH_P_8021Q)
                                     .vlan(100, ETH_P_IP)
                                     .ipv4(kPeer, kUs)
                                     .udp(5000, port)
                                     .payload("vlan")
                                     .bytes()});
    f.push_back({"two VLAN tags (QinQ)", Packet()
                                             .eth(ETH_P_8021AD)
                                             .vlan(10, ETH_P_8021Q)
                                             .vlan(20, ETH_P_IP)
                                             .ipv4(kPeer, kUs)
                                             .udp(5000, port)
                                             .payload("qinq")
                                             .bytes()});
    f.push_back({"three VLAN tags (deeper than parsed)", Packet()
                                                             .eth(ETH_P_8021AD)
                                                             .vlan(10, ETH_P_8021Q)
                                                             .vlan(20, ETH_P_8021Q)
                                                             .vlan(30, ETH_P_IP)
                                                             .ipv4(kPeer, kUs)
                                                             .udp(5000, port)
                                                             .bytes()});
    f.push_back(
        {"IPv4 with 12 bytes of options",
         Packet().eth().ipv4(kPeer, kUs, IPPROTO_UDP, 3).udp(5000, port).payload("o").bytes()});
    f.push_back({"IPv4 with 40 bytes of options (IHL 15)",
                 Packet().eth().ipv4(kPeer, kUs, IPPROTO_UDP, 10).udp(5000, port).bytes()});
    f.push_back(
        {"truncated inside the UDP header", udp4(kPeer, 5000, port).truncate(14 + 20 + 4).bytes()});
    f.push_back({"truncated inside the payload",
                 udp4(kPeer, 5000, port).truncate(14 + 20 + 8 + 3).bytes()});
    f.push_back(
        {"truncated inside the IPv4 header", udp4(kPeer, 5000, port).truncate(14 + 10).bytes()});
    f.push_back({"first IPv4 fragment (more fragments)",
                 udp4(kPeer, 5000, port).fragment(0, true).bytes()});
    {
        // TCP whose header starts with the same ports: not UDP, whatever the bytes say.
        std::string tcp(20, '\0');
        tcp[0] = char(5000 >> 8), tcp[1] = char(5000 & 0xff);
        tcp[2] = char(port >> 8), tcp[3] = char(port & 0xff);
        tcp[12] = 0x50;
        f.push_back(
            {"TCP to the port", Packet().eth().ipv4(kPeer, kUs, IPPROTO_TCP).payload(tcp).bytes()});
    }
    f.push_back(
        {"ICMP",
         Packet().eth().ipv4(kPeer, kUs, IPPROTO_ICMP).payload(std::string(8, '\0')).bytes()});
    f.push_back({"ARP (not IP)", Packet().eth(ETH_P_ARP).payload(std::string(28, '\0')).bytes()});
    f.push_back({"runt frame", std::vector<uint8_t>(14, 0)});
    {
        // Negotiation is not data (negotiation.h): a real offer datagram, as a late
        // retransmission arrives, is not counted; payloads that only look alike are.
        auto offer = wire::frame(wire::Type::offer, 0, 42, std::vector<uint8_t>(40, 1));
        REQUIRE(offer.size() == 1);
        std::string neg(offer[0].begin(), offer[0].end());
        REQUIRE(wire::looks_like_negotiation(std::as_bytes(std::span(neg))));
        f.push_back({"a negotiation datagram (offer) from the peer",
                     Packet().eth().ipv4(kPeer, kUs).udp(5000, port).payload(neg).bytes()});
        f.push_back(
            {"the magic, one byte short of a negotiation header",
             Packet().eth().ipv4(kPeer, kUs).udp(5000, port).payload(neg.substr(0, 23)).bytes()});
        std::string near = neg;
        near[3] = char(near[3] ^ 1);
        f.push_back({"a header with one magic bit wrong",
                     Packet().eth().ipv4(kPeer, kUs).udp(5000, port).payload(near).bytes()});
    }
    return f;
}

// Run every fixture through the live chain: the XDP count moves exactly when the rule counts,
// the verdict is XDP_PASS and the packet leaves unchanged. Returns how many counted, and how
// many the stage saw as negotiation (its `miss`).
struct Tally {
    uint64_t counted = 0, negotiation = 0;
};
Tally differential(LoaderFixture& fx, const XdpConn& conn, const count::Rule& rule, uint16_t port) {
    Tally out;
    for (auto& fix : fixtures(port)) {
        INFO("fixture: ", fix.what, " (flow port ", port,
             rule.peer.empty() ? std::string(", any peer") : ", peer " + rule.peer.to_string(),
             ")");
        uint64_t before = pass_count(conn);
        auto ex = fx.loader().explain(LoaderFixture::kIf, load::Hook::xdp, fix.pkt);
        REQUIRE_MESSAGE(ex, "explain: ", (ex ? std::string() : ex.error().what()));
        uint64_t xdp = pass_count(conn) - before;
        bool fallback = rule.counts(fix.pkt);
        CHECK(xdp == (fallback ? 1u : 0u));
        CHECK(ex->verdict == XDP_PASS);
        CHECK_FALSE(ex->changed);
        bool stage_counted = false, stage_missed = false;
        for (auto& s : ex->steps) {
            stage_counted |= s.stage == "count" && s.did == "pass";
            stage_missed |= s.stage == "count" && s.did == "miss";
        }
        CHECK(stage_counted == fallback);
        if (stage_missed) { // only a negotiation datagram of the flow is a `miss`
            CHECK(fix.what.starts_with("a negotiation datagram"));
            ++out.negotiation;
        }
        out.counted += fallback;
    }
    return out;
}

} // namespace

TEST_CASE("count: the XDP stage behind the dispatcher counts what the fallback counts") {
    LoaderFixture fx;
    UseFixture use(fx);

    SUBCASE("a bound port: any peer") {
        auto ctx = serving("198.18.0.1:7000");
        XdpConn conn = open_count(ctx);
        CHECK(conn.offload().flow().key().text() == "lo xdp udp/7000");
        auto t = differential(fx, conn, count::Rule::of(ctx.flow), 7000);
        // Both hits, any peer address and port, IPv6 twice, one and two VLAN tags, options twice,
        // the two payloads that only look like negotiation.
        CHECK(t.counted == 12);
        CHECK(t.negotiation == 1);
        CHECK(pass_count(conn) == t.counted);
    }
    SUBCASE("an accepted peer: that peer's address and port only") {
        auto ctx = serving("198.18.0.1:7100", "198.18.0.2:5000");
        XdpConn conn = open_count(ctx);
        CHECK(conn.offload().flow().key().text() == "lo xdp udp/7100 from 198.18.0.2:5000");
        auto t = differential(fx, conn, count::Rule::of(ctx.flow), 7100);
        CHECK(t.counted == 8); // as above, but not another peer, nor IPv6 (another family)
        CHECK(t.negotiation == 1);
        CHECK(pass_count(conn) == t.counted);
    }
}

TEST_CASE("count: connections on one flow share the chain; the last to close removes it") {
    LoaderFixture fx;
    UseFixture use(fx);
    auto ctx = serving("198.18.0.1:7200");
    auto hit = udp4(kPeer, 5000, 7200).bytes();
    std::optional<XdpConn> a(open_count(ctx)), b(open_count(ctx));
    CHECK(a->offload().chain() == b->offload().chain());
    auto st = fx.loader().status(LoaderFixture::kIf);
    REQUIRE(st);
    REQUIRE(st->size() == 1);
    REQUIRE((*st)[0].chains.size() == 1);
    CHECK((*st)[0].chains[0].refs == 2);

    REQUIRE(fx.loader().explain(LoaderFixture::kIf, load::Hook::xdp, hit));
    CHECK(pass_count(*a) == 1);
    CHECK(pass_count(*b) == 1); // one counter for the flow, whoever reads it
    a.reset();                  // one connection closes: the other keeps counting
    REQUIRE(fx.loader().explain(LoaderFixture::kIf, load::Hook::xdp, hit));
    CHECK(pass_count(*b) == 2);
    st = fx.loader().status(LoaderFixture::kIf);
    REQUIRE(st);
    REQUIRE((*st)[0].chains.size() == 1);
    CHECK((*st)[0].chains[0].refs == 1);

    b.reset(); // the last one: nothing of ours remains on the interface
    auto gone = fx.loader().status(LoaderFixture::kIf);
    CHECK((!gone || gone->empty() || (*gone)[0].chains.empty()));
    CHECK_FALSE(fx.loader().explain(LoaderFixture::kIf, load::Hook::xdp, hit)); // no root left
}

TEST_CASE("count: flows on two ports are independent; closing one leaves the other counting") {
    LoaderFixture fx;
    UseFixture use(fx);
    std::optional<XdpConn> a(open_count(serving("198.18.0.1:7300")));
    XdpConn b = open_count(serving("198.18.0.1:7301"));
    CHECK(a->offload().chain() != b.offload().chain());
    REQUIRE(fx.loader().explain(LoaderFixture::kIf, load::Hook::xdp, udp4(kPeer, 1, 7300).bytes()));
    REQUIRE(fx.loader().explain(LoaderFixture::kIf, load::Hook::xdp, udp4(kPeer, 1, 7301).bytes()));
    CHECK(pass_count(*a) == 1);
    CHECK(pass_count(b) == 1);
    a.reset();
    auto ex =
        fx.loader().explain(LoaderFixture::kIf, load::Hook::xdp, udp4(kPeer, 1, 7300).bytes());
    REQUIRE(ex);
    CHECK(ex->steps.size() == 1); // the dispatcher alone: no flow for 7300 any more
    REQUIRE(fx.loader().explain(LoaderFixture::kIf, load::Hook::xdp, udp4(kPeer, 1, 7301).bytes()));
    CHECK(pass_count(b) == 2);
}
