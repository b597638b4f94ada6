// chunnels/shard/shard.bpf.c, the `shard` offload stage, through the live dispatcher on lo of a
// private network namespace (loader_fixture.hpp), against its C++ reference
// chunnels/shard/steer.hpp: every fixture runs with Loader::explain, and the stage must steer
// (rewrite the UDP destination port to base + the key's shard, counted `hit`) exactly when the
// reference says so, changing nothing but the two port bytes and the two checksum bytes, with a
// UDP checksum that a plain recomputation accepts; otherwise it passes the packet on byte for
// byte (counted `pass`). The differential test runs 100,000 random keys per shard count through
// the root program with BPF_PROG_TEST_RUN.
#include "bertha/kv.h"
#include "bertha/negotiation.h"
#include "bertha/parse.h"
#include "bpf_run.hpp"
#include "loader_fixture.hpp"
#include "packet.hpp"
#include "shard/steer.hpp"

#include <bpf/bpf.h>
#include <chrono>
#include <doctest/doctest.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

using namespace bertha;
using namespace bertha::test;
using load::Hook;

namespace {

const char *kUs = "198.18.0.1", *kPeer = "198.18.0.2";
const char *kUs6 = "2001:db8::1", *kPeer6 = "2001:db8::2";
constexpr uint16_t kPort = 11211; // the service's port, where the flow is

load::FlowKey flow(uint16_t port) {
    load::FlowKey k;
    k.ifname = LoaderFixture::kIf;
    k.hook = Hook::xdp;
    k.port = port;
    return k;
}

uint32_t attach_shard(LoaderFixture& fx, uint16_t port, uint32_t shards, uint32_t base,
                      bool then_count = false) {
    std::vector<load::StageSpec> st{
        {"shard", "shards=" + std::to_string(shards) + ",base=" + std::to_string(base)}};
    if (then_count) st.push_back({"count", ""});
    auto c = fx.loader().attach(flow(port), st);
    REQUIRE_MESSAGE(c, "attach shard: ", (c ? std::string() : c.error().what()));
    return *c;
}

// The memcached UDP frame header, then the command.
std::string mc(std::string_view cmd, uint16_t total = 1, uint16_t seq = 0, uint16_t id = 0x1234) {
    std::string s;
    for (uint16_t v : {id, seq, total, uint16_t(0)}) s += char(v >> 8), s += char(v & 0xff);
    s += cmd;
    return s;
}

std::vector<uint8_t> udp4(std::string_view payload, uint16_t dport = kPort) {
    return Packet().eth().ipv4(kPeer, kUs).udp(5000, dport).payload(payload).bytes();
}

// The reference decision for a whole frame on the flow's port: the dispatcher's parse, the
// stage's own bound on where the UDP header may be, then steer.hpp on the payload.
std::optional<uint16_t> expected_port(const std::vector<uint8_t>& f, uint32_t shards, uint32_t base,
                                      uint16_t port = kPort) {
    bertha_pkt p{};
    if (bertha_parse_udp(f.data(), f.data() + f.size(), &p) != BERTHA_PARSE_OK) return {};
    if (p.dport != port || p.l4_off > BERTHA_SHARD_L4_MAX) return {};
    auto s = shard::steer(std::span(f.data() + p.payload_off, p.payload_len), shards);
    if (!s) return {};
    return uint16_t(base + *s);
}

// A straightforward UDP checksum check of a frame (IPv4 or IPv6, no extension headers walked:
// the parser's offsets say where things are): the sum over pseudo header and datagram is 0xffff.
bool udp_checksum_ok(const std::vector<uint8_t>& f) {
    bertha_pkt p{};
    REQUIRE(bertha_parse_udp(f.data(), f.data() + f.size(), &p) == BERTHA_PARSE_OK);
    const uint8_t* ip = f.data() + p.l3_off;
    const uint8_t* udp = f.data() + p.l4_off;
    const uint32_t ulen = uint32_t(udp[4] << 8 | udp[5]);
    if (p.ip_version == 4 && udp[6] == 0 && udp[7] == 0) return true; // "no checksum"
    uint32_t sum = 0;
    if (p.ip_version == 4) {
        sum = Packet::csum_add(sum, ip + 12, 8);
    } else {
        sum = Packet::csum_add(sum, ip + 8, 32);
    }
    sum += IPPROTO_UDP + ulen;
    sum = Packet::csum_add(sum, udp, ulen);
    return Packet::csum_fold(sum) == 0;
}

struct Seen {
    int verdict = -1;
    std::string did; // the shard stage's counter; "" when it did not run
    std::vector<uint8_t> out;
    bool changed = false;
};

Seen explain(LoaderFixture& fx, const std::vector<uint8_t>& f) {
    auto ex = fx.loader().explain(LoaderFixture::kIf, Hook::xdp, f);
    REQUIRE_MESSAGE(ex, "explain: ", (ex ? std::string() : ex.error().what()));
    Seen s{ex->verdict, "", ex->out, ex->changed};
    for (auto& st : ex->steps)
        if (st.stage == "shard") s.did = st.did;
    return s;
}

// Run one frame through the live chain and check it against the reference.
void check_frame(LoaderFixture& fx, const std::vector<uint8_t>& f, uint32_t shards, uint32_t base,
                 uint16_t port = kPort) {
    auto want = expected_port(f, shards, base, port);
    auto s = explain(fx, f);
    CHECK(s.verdict == XDP_PASS);
    bertha_pkt p{};
    const bool parsed = bertha_parse_udp(f.data(), f.data() + f.size(), &p) == BERTHA_PARSE_OK;
    if (!parsed || p.dport != port) {
        CHECK(s.did == ""); // the dispatcher passes it: the stage never runs
        CHECK_FALSE(s.changed);
        return;
    }
    if (!want) {
        CHECK(s.did == "pass");
        CHECK_FALSE(s.changed);
        CHECK(s.out == f);
        return;
    }
    CHECK(s.did == "hit");
    REQUIRE(s.out.size() == f.size());
    const size_t d = p.l4_off + 2, c = p.l4_off + 6;
    for (size_t i = 0; i < f.size(); ++i) {
        if (i == d || i == d + 1 || i == c || i == c + 1) continue;
        if (s.out[i] != f[i]) {
            FAIL_CHECK("byte ", i, " changed: only the destination port and checksum may");
            break;
        }
    }
    CHECK(uint16_t(s.out[d] << 8 | s.out[d + 1]) == *want);
    CHECK(s.changed == (*want != port)); // steering to the service's own port changes nothing
    CHECK(udp_checksum_ok(s.out));
    if (f[c] == 0 && f[c + 1] == 0 && p.ip_version == 4) { // no checksum stays no checksum
        CHECK(s.out[c] == 0);
        CHECK(s.out[c + 1] == 0);
    }
}

std::string key_of(size_t n, char fill = 'k') {
    return std::string(n, fill);
}

// Two keys on one shard and two on different shards, for `shards` (found by search).
std::pair<std::string, std::string> keys_on(uint32_t shards, bool same) {
    auto sh = [&](const std::string& k) {
        return bertha_shard_of(
            bertha_shard_hash(reinterpret_cast<const unsigned char*>(k.data()), k.size()), shards);
    };
    const std::string a = "user:0";
    for (int i = 1; i < 10000; ++i) {
        std::string b = "user:" + std::to_string(i);
        if ((sh(a) == sh(b)) == same) return {a, b};
    }
    FAIL("no key pair found");
    return {};
}

struct Fixture {
    std::string what;
    std::vector<uint8_t> frame;
    int steer = -1; // 1: the reference must steer it, 0: must not, -1: either (just compared)
};

std::vector<Fixture> fixtures(uint32_t shards) {
    std::vector<Fixture> f;
    auto add = [&](std::string what, std::string_view payload, int steer) {
        f.push_back({std::move(what), udp4(payload), steer});
    };
    const std::string k250 = key_of(250, 'x'), k251 = key_of(251, 'x');
    for (const std::string& k : {std::string("a"), k250}) {
        const std::string n = " (" + std::to_string(k.size()) + "-byte key)";
        add("get" + n, mc("get " + k + "\r\n"), 1);
        add("gets" + n, mc("gets " + k + "\r\n"), 1);
        add("get, \\n only" + n, mc("get " + k + "\n"), 1);
        add("set" + n, mc("set " + k + " 0 0 5\r\nhello\r\n"), 1);
        add("set noreply" + n, mc("set " + k + " 1 60 5 noreply\r\nhello\r\n"), 1);
        add("add" + n, mc("add " + k + " 0 0 3\r\nabc\r\n"), 1);
        add("replace" + n, mc("replace " + k + " 0 0 0\r\n\r\n"), 1);
        add("cas" + n, mc("cas " + k + " 0 0 5 77\r\nhello\r\n"), 1);
        add("cas noreply" + n, mc("cas " + k + " 0 0 5 77 noreply\r\nhello\r\n"), 1);
        add("delete" + n, mc("delete " + k + "\r\n"), 1);
        add("delete noreply" + n, mc("delete " + k + " noreply\r\n"), 1);
        add("delete 0 noreply" + n, mc("delete " + k + " 0 noreply\r\n"), 1);
    }
    add("get, 251-byte key", mc("get " + k251 + "\r\n"), 0);
    add("set, 251-byte key", mc("set " + k251 + " 0 0 1\r\nx\r\n"), 0);
    add("delete, 251-byte key", mc("delete " + k251 + "\r\n"), 0);
    add("get, extra spaces around and between", mc("  get   a  \r\n"), 1);
    add("set, data with spaces and \\r\\n inside", mc("set a 0 0 9\r\nab\r\n cd\nx\r\n"), 1);
    add("get of two 250-byte keys (line of 507 bytes)", mc("get " + k250 + " " + k250 + "\r\n"), 1);
    add("get whose line is exactly as long as the stage reads (512 bytes)",
        mc("get " + k250 + " " + k250 + "     \r\n"), 1);
    add("get whose line is one byte longer than the stage reads",
        mc("get " + k250 + " " + k250 + "      \r\n"), 0);
    add("get whose line is longer than the stage reads",
        mc("get " + k250 + " " + k250 + " " + k250 + "\r\n"), 0);
    {
        auto [a, b] = keys_on(shards, true);
        add("multi-key get, one shard", mc("get " + a + " " + b + "\r\n"), 1);
        add("multi-key gets, one shard", mc("gets " + a + " " + b + " " + a + "\r\n"), 1);
    }
    if (shards > 1) {
        auto [a, b] = keys_on(shards, false);
        add("multi-key get spanning shards", mc("get " + a + " " + b + "\r\n"), 0);
        add("multi-key gets spanning shards", mc("gets " + a + " " + a + " " + b + "\r\n"), 0);
    }
    // Malformed, or not one whole command of a steered verb.
    add("get without a key", mc("get\r\n"), 0);
    add("get with only spaces", mc("get   \r\n"), 0);
    add("empty line", mc("\r\n"), 0);
    add("upper-case verb", mc("GET a\r\n"), 0);
    add("unknown verb", mc("incr a 1\r\n"), 0);
    add("verb longer than any", mc("getsgetsget a\r\n"), 0);
    add("no line end", mc("get a"), 0);
    add("\\r without \\n at the end", mc("get a\r"), 0);
    add("\\r inside the line", mc("get a\rb\n"), 0);
    add("tab instead of a space", mc("get\ta\r\n"), 0);
    add("control character in the key",
        mc("get a\x01"
           "b\r\n"),
        0);
    add("DEL in the key", mc("get a\x7f\r\n"), 0);
    add("high bytes in the key (UTF-8)", mc("get caf\xc3\xa9\r\n"), 1);
    add("two commands in one datagram", mc("get a\r\nget b\r\n"), 0);
    add("delete with too many arguments", mc("delete a 0 noreply x\r\n"), 0);
    add("delete then more bytes", mc("delete a\r\nx"), 0);
    add("set with too few arguments", mc("set a 0 0\r\n"), 0);
    add("set with too many arguments", mc("set a 0 0 1 noreply x\r\nx\r\n"), 0);
    add("cas with too few arguments", mc("cas a 0 0 1\r\nx\r\n"), 0);
    add("set whose <bytes> is not a number", mc("set a 0 0 x\r\nx\r\n"), 0);
    add("set whose <bytes> is negative", mc("set a 0 0 -1\r\n\r\n"), 0);
    add("set whose <bytes> is too large", mc("set a 0 0 99999999\r\nx\r\n"), 0);
    add("set, data shorter than <bytes>", mc("set a 0 0 5\r\nhell\r\n"), 0);
    add("set, data longer than <bytes>", mc("set a 0 0 5\r\nhello!\r\n"), 0);
    add("set, data not ended by \\r\\n", mc("set a 0 0 5\r\nhelloxx"), 0);
    add("set, then another command", mc("set a 0 0 1\r\nx\r\nget b\r\n"), 0);
    add("a message of two datagrams (total 2)", mc("get a\r\n", 2), 0);
    add("total 0", mc("get a\r\n", 0), 0);
    add("total 257 (high byte)", mc("get a\r\n", 257), 0);
    add("second datagram's sequence number, total 1", mc("get a\r\n", 1, 1), 1);
    add("payload of only the frame header", mc(""), 0);
    add("payload shorter than the frame header", "get a\r\n", 0);
    add("empty payload", "", 0);
    add("non-memcached text", "hello, world\n", 0);
    add("binary junk", std::string("\x80\x01\x00\x00\x00\x01\x00\x00get a\r\n", 15), 1);
    {
        // Negotiation is not a request even when it reads like one (negotiation.h).
        std::string neg = mc("get kkkkkkkkkkkkkkkkkkkk\r\n");
        neg[0] = char(0xC4), neg[1] = char(0x9B), neg[2] = char(0x1E), neg[3] = char(0xB7);
        REQUIRE(bertha_is_negotiation(reinterpret_cast<const unsigned char*>(neg.data()),
                                      unsigned(neg.size()), neg.data() + neg.size()));
        add("a negotiation datagram that parses as a get", neg, 0);
        std::string near = neg;
        near[3] = char(0xB6);
        add("the same with one magic bit wrong", near, 1);
    }
    // Other encapsulations.
    const std::string get_a = mc("get a\r\n");
    f.push_back(
        {"IPv6 get (steered)",
         Packet().eth(ETH_P_IPV6).ipv6(kPeer6, kUs6).udp(5000, kPort).payload(get_a).bytes(), 1});
    f.push_back({"IPv6 set with a hop-by-hop header (steered)",
                 Packet()
                     .eth(ETH_P_IPV6)
                     .ipv6(kPeer6, kUs6, IPPROTO_HOPOPTS)
                     .ipv6_ext(IPPROTO_HOPOPTS)
                     .udp(5000, kPort)
                     .payload(mc("set " + k250 + " 0 0 2\r\nab\r\n"))
                     .bytes(),
                 1});
    f.push_back({"one VLAN tag",
                 Packet()
                     .eth(ETH_P_8021Q)
                     .vlan(100, ETH_P_IP)
                     .ipv4(kPeer, kUs)
                     .udp(5000, kPort)
                     .payload(get_a)
                     .bytes(),
                 1});
    f.push_back({"two VLAN tags (QinQ)",
                 Packet()
                     .eth(ETH_P_8021AD)
                     .vlan(10, ETH_P_8021Q)
                     .vlan(20, ETH_P_IP)
                     .ipv4(kPeer, kUs)
                     .udp(5000, kPort)
                     .payload(get_a)
                     .bytes(),
                 1});
    f.push_back(
        {"IPv4 with 40 bytes of options",
         Packet().eth().ipv4(kPeer, kUs, IPPROTO_UDP, 10).udp(5000, kPort).payload(get_a).bytes(),
         1});
    {
        auto nock = udp4(get_a);
        nock[14 + 20 + 6] = 0, nock[14 + 20 + 7] = 0;
        f.push_back({"IPv4 without a UDP checksum (it stays 0)", nock, 1});
    }
    f.push_back(
        {"a fragment (the dispatcher passes it)",
         Packet().eth().ipv4(kPeer, kUs).udp(5000, kPort).payload(get_a).fragment(0, true).bytes(),
         0});
    f.push_back({"another port (not the flow)", udp4(get_a, kPort + 1), 0});
    return f;
}

} // namespace

TEST_CASE("shard: every fixture is steered or passed exactly as the C++ reference decides") {
    for (uint32_t shards : {1u, 4u, 16u, 256u}) {
        CAPTURE(shards);
        LoaderFixture fx;
        const uint32_t base = 12000;
        attach_shard(fx, kPort, shards, base);
        for (auto& fix : fixtures(shards)) {
            INFO("fixture: ", fix.what);
            auto want = expected_port(fix.frame, shards, base);
            if (fix.steer >= 0) REQUIRE(want.has_value() == (fix.steer == 1)); // the reference
            check_frame(fx, fix.frame, shards, base);
        }
    }
}

TEST_CASE("shard: a 1-byte and a 250-byte key go to the shard userspace computes") {
    LoaderFixture fx;
    attach_shard(fx, kPort, 7, 20000);
    for (const std::string& k :
         {std::string("a"), std::string(250, 'q'), std::string(249, 'q') + "r"}) {
        auto h = bertha_shard_hash(reinterpret_cast<const unsigned char*>(k.data()), k.size());
        auto s = explain(fx, udp4(mc("get " + k + "\r\n")));
        CHECK(s.did == "hit");
        REQUIRE(s.out.size() > 14 + 20 + 4);
        CHECK(uint16_t(s.out[14 + 20 + 2] << 8 | s.out[14 + 20 + 3]) ==
              20000 + bertha_shard_of(h, 7));
    }
    // The last byte of a 250-byte key decides: the hash covers every byte (keys that differ only
    // there land on different shards for some of them).
    std::set<uint32_t> seen;
    for (char c = 'a'; c <= 'z'; ++c) {
        auto s = explain(fx, udp4(mc("get " + std::string(249, 'q') + c + "\r\n")));
        CHECK(s.did == "hit");
        seen.insert(uint32_t(s.out[14 + 20 + 2] << 8 | s.out[14 + 20 + 3]));
    }
    CHECK(seen.size() > 1);
}

TEST_CASE("shard: every truncation of valid requests is passed or steered as the reference says") {
    LoaderFixture fx;
    const uint32_t shards = 16, base = 12000;
    attach_shard(fx, kPort, shards, base);
    const std::vector<std::string> reqs = {mc("get " + std::string(250, 'z') + "\r\n"),
                                           mc("gets a a\r\n"), mc("set key:1 0 0 5\r\nhello\r\n"),
                                           mc("cas key:1 0 0 5 9 noreply\r\nhello\r\n"),
                                           mc("delete key:1 0 noreply\r\n")};
    size_t steered = 0, runs = 0;
    for (auto& r : reqs) {
        const auto whole = udp4(r);
        for (size_t n = 14; n <= whole.size(); ++n) { // a frame cut short: the UDP length lies
            INFO("request ", r.substr(8, 12), "... frame cut to ", n, " of ", whole.size());
            auto f =
                Packet().eth().ipv4(kPeer, kUs).udp(5000, kPort).payload(r).truncate(n).bytes();
            check_frame(fx, f, shards, base);
            ++runs;
        }
        for (size_t n = 0; n <= r.size(); ++n) { // a whole datagram of the request's first n bytes
            INFO("request ", r.substr(8, 12), "... payload cut to ", n, " of ", r.size());
            auto f = udp4(r.substr(0, n));
            steered += expected_port(f, shards, base).has_value();
            check_frame(fx, f, shards, base);
            ++runs;
        }
    }
    CHECK(steered == reqs.size()); // only the whole requests are steered
    MESSAGE("truncations run: ", runs);
}

TEST_CASE("shard: another stage after it sees the steered packet; its counters say hit and pass") {
    LoaderFixture fx;
    attach_shard(fx, kPort, 4, 12000, true);
    auto ex = fx.loader().explain(LoaderFixture::kIf, Hook::xdp, udp4(mc("get a\r\n")));
    REQUIRE(ex);
    std::vector<std::string> did;
    for (auto& s : ex->steps) did.push_back(s.stage + ":" + s.did);
    CHECK(did == std::vector<std::string>{"dispatcher:hit", "shard:hit", "count:pass"});
    ex = fx.loader().explain(LoaderFixture::kIf, Hook::xdp, udp4("not memcached"));
    REQUIRE(ex);
    did.clear();
    for (auto& s : ex->steps) did.push_back(s.stage + ":" + s.did);
    CHECK(did == std::vector<std::string>{"dispatcher:hit", "shard:pass", "count:pass"});
    auto st = fx.loader().stats(LoaderFixture::kIf);
    REQUIRE(st);
    bool found = false;
    for (auto& row : *st) {
        if (row.stage != "shard") continue;
        found = true;
        CHECK(row.counters[BERTHA_C_HIT] == 1);
        CHECK(row.counters[BERTHA_C_PASS] == 1);
        CHECK(row.counters[BERTHA_C_ERROR] == 0);
    }
    CHECK(found);
    // The verifier's work for the stage (reported; the limit is 1M instructions).
    auto status = fx.loader().status(LoaderFixture::kIf);
    REQUIRE(status);
    REQUIRE(status->size() == 1);
    REQUIRE((*status)[0].chains.size() == 1);
    int pfd = bpf_prog_get_fd_by_id((*status)[0].chains[0].prog_ids[0]);
    REQUIRE(pfd >= 0);
    bpf_prog_info info{};
    uint32_t len = sizeof info;
    REQUIRE(bpf_obj_get_info_by_fd(pfd, &info, &len) == 0);
    ::close(pfd);
    MESSAGE("shard_steer: ", info.verified_insns, " instructions verified, ",
            info.xlated_prog_len / 8, " translated");
    CHECK(info.verified_insns < 1000000);
}

TEST_CASE("shard: a bad configuration is refused by name, leaving nothing") {
    LoaderFixture fx;
    struct Bad {
        std::string config, message;
    };
    const std::vector<Bad> bad = {
        {"shards=0,base=12000", "stage shard: shards=0: not a shard count (1 to 256)"},
        {"shards=257,base=12000", "stage shard: shards=257: not a shard count (1 to 256)"},
        {"shards=x,base=12000", "stage shard: shards=x: not a shard count (1 to 256)"},
        {"shards=-1,base=12000", "stage shard: shards=-1: not a shard count (1 to 256)"},
        {"shards=4,base=0", "stage shard: base=0: not a UDP port (1 to 65535)"},
        {"shards=4,base=65536", "stage shard: base=65536: not a UDP port (1 to 65535)"},
        {"shards=4", "stage shard: needs shards=N,base=PORT (shard i listens on UDP port PORT+i)"},
        {"", "stage shard: needs shards=N,base=PORT (shard i listens on UDP port PORT+i)"},
        {"shards=2,base=65535",
         "stage shard: base=65535 with shards=2: the last shard's port 65536 is above 65535"},
        {"shards=4,base=1,every=2", "stage shard: unknown key 'every' (it takes shards, base)"},
    };
    for (auto& b : bad) {
        CAPTURE(b.config);
        std::vector<load::StageSpec> st{{"shard", b.config}};
        auto r = fx.loader().attach(flow(kPort), st);
        REQUIRE_FALSE(r);
        CHECK(r.error().what() == b.message);
    }
    auto status = fx.loader().status(LoaderFixture::kIf);
    CHECK((!status || status->empty()));
    // The limits themselves are accepted.
    std::vector<load::StageSpec> max{{"shard", "shards=256,base=65280"}};
    CHECK(fx.loader().attach(flow(kPort), max));
    std::vector<load::StageSpec> tc{{"shard", "shards=1,base=1"}};
    load::FlowKey egress = flow(kPort + 1);
    egress.hook = Hook::tc_egress;
    CHECK_FALSE(fx.loader().attach(egress, tc)); // xdp only
}

TEST_CASE("shard: 100,000 random keys per shard count land where bertha_shard_of says") {
    LoaderFixture fx;
    const std::vector<uint32_t> counts = {1, 7, 16, 64, 256};
    const uint32_t base = 30000;
    for (size_t i = 0; i < counts.size(); ++i)
        attach_shard(fx, uint16_t(kPort + i), counts[i], uint32_t(base + 300 * i));
    int root = bpf_obj_get((fx.iface_dir() + "/xdp_root").c_str());
    REQUIRE(root >= 0);
    std::mt19937_64 rng(0x5eed5a4d);
    std::uniform_int_distribution<int> len(1, BERTHA_KV_MAX_KEY), byte(0x21, 0x7e);
    const char* verbs[] = {"get ", "gets ", "delete "};
    size_t mismatches = 0, runs = 0;
    auto t0 = std::chrono::steady_clock::now();
    for (int n = 0; n < 100000; ++n) {
        std::string key(size_t(len(rng)), 'x');
        for (auto& c : key) c = char(byte(rng));
        const auto h =
            bertha_shard_hash(reinterpret_cast<const unsigned char*>(key.data()), key.size());
        for (size_t i = 0; i < counts.size(); ++i) {
            const uint16_t port = uint16_t(kPort + i);
            auto f = udp4(mc(std::string(verbs[(n + i) % 3]) + key + "\r\n"), port);
            auto r = run_prog(root, f);
            REQUIRE(r.err == 0);
            ++runs;
            const uint16_t want = uint16_t(base + 300 * i + bertha_shard_of(h, counts[i]));
            const uint16_t got = uint16_t(r.out.size() > 38 ? r.out[36] << 8 | r.out[37] : 0);
            if (r.verdict != XDP_PASS || got != want || !udp_checksum_ok(r.out)) {
                if (++mismatches <= 5)
                    FAIL_CHECK("key of ", key.size(), " bytes, ", counts[i], " shards: port ", got,
                               ", want ", want);
            }
        }
    }
    // What a packet costs (kernel-measured, root + stage; reported only). BPF_PROG_TEST_RUN
    // repeats on the packet the previous run left, so this flow's one shard is its own port:
    // every run is steered (a hit that rewrites the port to itself).
    const uint16_t self = uint16_t(kPort + 10);
    attach_shard(fx, self, 1, self);
    for (size_t klen : {size_t(1), size_t(32), size_t(250)}) {
        auto f = udp4(mc("get " + std::string(klen, 'k') + "\r\n"), self);
        auto r = run_prog(root, f, 10000);
        REQUIRE(r.err == 0);
        CHECK(r.out == f);
        MESSAGE("get with a ", klen, "-byte key: ", r.duration_ns, " ns per packet");
    }
    auto miss = run_prog(root, udp4(mc("get k\r\n"), uint16_t(kPort + 11)), 10000);
    MESSAGE("the dispatcher alone (no flow): ", miss.duration_ns, " ns per packet");
    ::close(root);
    auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK(mismatches == 0);
    CHECK(runs == 500000);
    MESSAGE("differential: ", runs, " runs in ", secs, " s");
}

TEST_CASE("shard: 200,000 random request-like datagrams are decided as steer.hpp decides") {
    LoaderFixture fx;
    const uint32_t shards = 4, base = 40000;
    attach_shard(fx, kPort, shards, base);
    int root = bpf_obj_get((fx.iface_dir() + "/xdp_root").c_str());
    REQUIRE(root >= 0);
    std::mt19937_64 rng(0xfeedbeef);
    auto pick = [&](size_t n) { return size_t(rng() % n); };
    const std::vector<std::string> verbs = {"get",    "gets", "set",  "add",   "replace", "cas",
                                            "delete", "GET",  "incr", "getsx", "",        "ge"};
    const std::vector<std::string> seps = {" ", " ", " ", "  ", "\t", " \r", ""};
    const std::vector<std::string> ends = {"\r\n", "\r\n", "\n", "\r", "", "\r\r\n", " \r\n"};
    auto token = [&]() -> std::string {
        switch (pick(9)) {
        case 0:
            return std::string(1 + pick(3), char('a' + pick(3)));
        case 1:
            return "k" + std::to_string(pick(20));
        case 2:
            return std::string(249 + pick(3), 'x'); // 249, 250, 251 bytes
        case 3:
            return std::to_string(pick(12));
        case 4:
            return "noreply";
        case 5:
            return "-1";
        case 6:
            return std::string("a\x01", 2);
        case 7:
            return "\xc3\xa9t\xc3\xa9";
        default:
            return std::to_string(pick(70000));
        }
    };
    size_t hits = 0, runs = 0, mismatches = 0;
    for (int n = 0; n < 200000; ++n) {
        const bool clean = pick(2) == 0; // separators, line end and framing all valid
        std::string line = pick(10) == 0 ? " " : "";
        line += verbs[pick(clean ? 7 : verbs.size())];
        const size_t ntok = clean ? 1 + pick(6) : pick(8);
        std::string data;
        const bool storage_like = pick(2) == 0;
        for (size_t t = 0; t < ntok; ++t) {
            line += clean ? std::string(" ") : seps[pick(seps.size())];
            if (storage_like && t == 3) { // <bytes>, usually matching the data that follows
                const size_t len = pick(40);
                line += std::to_string(pick(8) == 0 ? len + pick(3) : len);
                data = std::string(len, char('d' + pick(3)));
                if (!data.empty() && pick(4) == 0) data[pick(data.size())] = '\n';
                continue;
            }
            line += token();
        }
        line += clean ? std::string("\r\n") : ends[pick(ends.size())];
        std::string payload = line;
        if (!data.empty() || storage_like) payload += data + (pick(6) == 0 ? "\n" : "\r\n");
        if (!clean && pick(10) == 0) payload += "get a\r\n"; // a second command
        const uint16_t total = !clean && pick(10) == 0 ? uint16_t(2) : uint16_t(1);
        auto f = udp4(mc(payload, total));
        auto want = expected_port(f, shards, base);
        auto r = run_prog(root, f);
        REQUIRE(r.err == 0);
        ++runs;
        std::vector<uint8_t> expect = f;
        if (want) {
            ++hits;
            expect[36] = uint8_t(*want >> 8), expect[37] = uint8_t(*want);
        }
        bool ok = r.verdict == XDP_PASS && r.out.size() == f.size() && udp_checksum_ok(r.out);
        for (size_t i = 0; ok && i < f.size(); ++i)
            if (i != 40 && i != 41 && r.out[i] != expect[i]) ok = false;
        if (!ok && ++mismatches <= 5) {
            std::string shown;
            for (char c : payload.substr(0, 80))
                shown += (c >= 0x20 && c < 0x7f) ? std::string(1, c)
                                                 : "\\x" + std::to_string(uint8_t(c));
            FAIL_CHECK("payload '", shown, "' total ", total, ": reference ",
                       want ? std::to_string(*want) : std::string("pass"), ", stage port ",
                       r.out.size() > 38 ? std::to_string(r.out[36] << 8 | r.out[37]) : "?");
        }
    }
    ::close(root);
    CHECK(mismatches == 0);
    CHECK(hits > runs / 20); // the generator reaches both outcomes
    CHECK(hits < runs);
    MESSAGE("random requests: ", runs, " run, ", hits, " steered");
}
