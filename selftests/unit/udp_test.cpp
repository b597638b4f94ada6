// The udp base chunnel over loopback: batch semantics, truncation, deadlines, IPv6, many peers,
// buffer lending. Every case runs on both receive paths (multishot with a provided-buffer
// ring, and plain recvmsg requests) since hosts differ in which one they get.
#include "bertha/bertha.hpp"
#include "test_chunnels.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <poll.h>
#include <set>

using namespace bertha;
using namespace bertha::test;
using namespace std::chrono_literals;

namespace {

using Mode = UdpOptions::RecvMode;

UdpOptions opts_for(Mode mode) {
    UdpOptions o;
    o.recv_mode = mode;
    return o;
}

Addr any_port(const char* host = "127.0.0.1") {
    return *Addr::parse(std::string(host[0] == ':' ? "[" : "") + host +
                        (host[0] == ':' ? "]" : "") + ":0");
}

// Fill `n` fresh messages with "<prefix><i>" and send them in one batch.
size_t send_numbered(auto& conn, size_t n, const std::string& prefix, const Addr* to = nullptr) {
    std::vector<Msg> out(n);
    auto got = conn.alloc(out);
    REQUIRE(got == n);
    for (size_t i = 0; i < n; ++i) {
        REQUIRE(put(out[i], prefix + std::to_string(i)));
        if (to) out[i].set_peer(*to);
    }
    auto sent = conn.send(out);
    REQUIRE_MESSAGE(sent, (sent ? "" : sent.error().what()));
    return *sent;
}

// Receive until `n` messages arrived or 2 s passed.
std::vector<std::string> recv_n(auto& conn, size_t n, std::vector<Addr>* peers = nullptr) {
    std::vector<std::string> texts;
    std::vector<Msg> in(64);
    auto deadline = after(2s);
    while (texts.size() < n && Clock::now() < deadline) {
        auto got = conn.recv(in, deadline);
        REQUIRE_MESSAGE(got, (got ? "" : got.error().what()));
        for (size_t i = 0; i < *got; ++i) {
            texts.push_back(text(in[i]));
            if (peers) peers->push_back(in[i].peer());
            in[i].release();
        }
    }
    return texts;
}

} // namespace

TEST_CASE("the receive path is the one asked for") {
    auto multi = Udp(opts_for(Mode::multishot)).bind(any_port());
    REQUIRE_MESSAGE(multi, (multi ? "" : multi.error().what()));
    CHECK(multi->multishot());
    auto plain = Udp(opts_for(Mode::plain)).bind(any_port());
    REQUIRE(plain);
    CHECK_FALSE(plain->multishot());
    CHECK(Udp(opts_for(Mode::automatic)).bind(any_port())->multishot() ==
          Udp::kernel_has_multishot());
}

TEST_CASE("a batch keeps its order and is one submission") {
    for (Mode mode : {Mode::multishot, Mode::plain}) {
        CAPTURE(int(mode));
        auto srv = Udp(opts_for(mode)).bind(any_port());
        REQUIRE(srv);
        auto cli = Udp(opts_for(mode)).connect(srv->local());
        REQUIRE(cli);
        uint64_t submits_before = cli->stats().submits;
        REQUIRE(send_numbered(*cli, 200, "m") == 200);
        CHECK(cli->stats().submits - submits_before == 1);
        auto got = recv_n(*srv, 200);
        REQUIRE(got.size() == 200);
        for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == "m" + std::to_string(i));
    }
}

TEST_CASE("a datagram larger than a buffer arrives truncated and says so") {
    for (Mode mode : {Mode::multishot, Mode::plain}) {
        CAPTURE(int(mode));
        UdpOptions o = opts_for(mode);
        o.slot_size = 1024;
        auto srv = Udp(o).bind(any_port());
        REQUIRE(srv);
        // A plain socket sends the oversized datagram: the client's own buffers cannot hold it.
        auto big = Udp().connect(srv->local());
        REQUIRE(big);
        std::vector<Msg> out(2);
        REQUIRE(big->alloc(out) == 2);
        REQUIRE(put(out[0], std::string(1800, 'x')));
        REQUIRE(put(out[1], "small"));
        REQUIRE(big->send(out) == 2);

        std::vector<Msg> in(4);
        size_t n = 0;
        auto deadline = after(2s);
        while (n < 2 && Clock::now() < deadline) {
            auto got = srv->recv(std::span(in).subspan(n), deadline);
            REQUIRE(got);
            n += *got;
        }
        REQUIRE(n == 2);
        CHECK(in[0].is_truncated());
        CHECK(in[0].size() == 1024 - 128); // what fits after the head-room
        CHECK_FALSE(in[1].is_truncated());
        CHECK(text(in[1]) == "small");
        CHECK(srv->stats().truncated == 1);
    }
}

TEST_CASE("recv honours its deadline and no_wait does not block") {
    for (Mode mode : {Mode::multishot, Mode::plain}) {
        CAPTURE(int(mode));
        auto srv = Udp(opts_for(mode)).bind(any_port());
        REQUIRE(srv);
        std::vector<Msg> in(4);
        auto t0 = Clock::now();
        auto got = srv->recv(in, t0 + 50ms);
        auto waited = Clock::now() - t0;
        REQUIRE(got == 0);
        CHECK(waited >= 50ms);
        CHECK(waited < 5s); // generous: it must return, not be fast

        t0 = Clock::now();
        CHECK(srv->recv(in, no_wait) == 0);
        CHECK(Clock::now() - t0 < 1s);
    }
}

TEST_CASE("IPv6 works end to end and the peer is reported") {
    for (Mode mode : {Mode::multishot, Mode::plain}) {
        CAPTURE(int(mode));
        auto srv = Udp(opts_for(mode)).bind(any_port("::1"));
        REQUIRE_MESSAGE(srv, (srv ? "" : srv.error().what()));
        auto cli = Udp(opts_for(mode)).connect(srv->local());
        REQUIRE(cli);
        REQUIRE(send_numbered(*cli, 3, "six") == 3);
        std::vector<Addr> peers;
        auto got = recv_n(*srv, 3, &peers);
        REQUIRE(got == std::vector<std::string>{"six0", "six1", "six2"});
        CHECK(peers[0] == cli->local());
        CHECK(peers[0].to_string().starts_with("[::1]:"));
    }
}

TEST_CASE("a listener gives each peer its own connection") {
    for (Mode mode : {Mode::multishot, Mode::plain}) {
        CAPTURE(int(mode));
        // Pre-arranged: these peers are plain udp sockets that do not negotiate.
        auto listener = make_stack(Udp(opts_for(mode))).listen(any_port(), prearranged);
        REQUIRE(listener);
        Addr at = listener->base().local();
        constexpr size_t kPeers = 20, kEach = 5;
        std::vector<UdpConn> clients;
        for (size_t c = 0; c < kPeers; ++c) {
            auto cli = Udp(opts_for(mode)).connect(at);
            REQUIRE(cli);
            clients.push_back(std::move(*cli));
        }
        // Interleave: every client sends one message per round.
        for (size_t round = 0; round < kEach; ++round)
            for (size_t c = 0; c < kPeers; ++c)
                send_numbered(clients[c], 1,
                              "c" + std::to_string(c) + "r" + std::to_string(round) + "-");

        std::vector<std::decay_t<decltype(**listener->accept(no_wait))>> peers;
        while (peers.size() < kPeers) {
            auto got = listener->accept(after(2s));
            REQUIRE(got);
            REQUIRE(*got); // nullopt would mean the deadline passed
            peers.push_back(std::move(**got));
        }
        std::set<Addr, decltype([](const Addr& a, const Addr& b) {
                     return a.to_string() < b.to_string();
                 })>
            distinct;
        for (auto& p : peers) {
            distinct.insert(p.inner().peer());
            size_t c = 0;
            while (c < kPeers && !(clients[c].local() == p.inner().peer())) ++c;
            REQUIRE(c < kPeers);
            auto got = recv_n(p, kEach);
            REQUIRE(got.size() == kEach);
            for (size_t r = 0; r < kEach; ++r)
                CHECK(got[r] == "c" + std::to_string(c) + "r" + std::to_string(r) + "-0");
            // The reply goes to that peer only.
            send_numbered(p, 1, "to" + std::to_string(c) + "-");
        }
        CHECK(distinct.size() == kPeers);
        CHECK(listener->accept(no_wait).value() == std::nullopt);
        for (size_t c = 0; c < kPeers; ++c)
            CHECK(recv_n(clients[c], 1) ==
                  std::vector<std::string>{"to" + std::to_string(c) + "-0"});
    }
}

TEST_CASE("buffers are lent and come back: many times the pool size passes through") {
    for (Mode mode : {Mode::multishot, Mode::plain}) {
        CAPTURE(int(mode));
        UdpOptions o = opts_for(mode);
        o.recv_slots = 16;
        o.send_slots = 16;
        auto srv = Udp(o).bind(any_port());
        REQUIRE(srv);
        auto cli = Udp(o).connect(srv->local());
        REQUIRE(cli);
        size_t received = 0;
        for (int round = 0; round < 100; ++round) { // 1600 messages through 16 + 16 buffers
            REQUIRE(send_numbered(*cli, 16, "r") == 16);
            received += recv_n(*srv, 16).size();
        }
        CHECK(received == 1600);
    }
}

TEST_CASE("an exhausted pool is an error that says what to do, and recovers") {
    UdpOptions o;
    o.send_slots = 8;
    o.recv_mode = Mode::multishot;
    auto cli = Udp(o).connect(*Addr::parse("127.0.0.1:9"));
    REQUIRE(cli);
    std::vector<Msg> held(8);
    REQUIRE(cli->alloc(held) == 8);
    std::vector<Msg> more(1);
    auto none = cli->alloc(more);
    REQUIRE_FALSE(none);
    CHECK(none.error().code == Errc::no_buffers);
    CHECK(none.error().what().find("buffers are lent out") != std::string::npos);
    held[3].release();
    CHECK(cli->alloc(more) == 1);
}

TEST_CASE("send refuses messages it cannot route") {
    auto srv = Udp().bind(any_port());
    REQUIRE(srv);
    std::vector<Msg> out(1);
    REQUIRE(srv->alloc(out) == 1);
    REQUIRE(put(out[0], "nowhere"));
    auto r = srv->send(out); // unconnected, and the message names no peer
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::invalid_argument);
    CHECK(r.error().what().find("no peer address") != std::string::npos);
    CHECK(out[0]); // a refused batch is not consumed

    std::vector<Msg> empty(1);
    auto e = srv->send(empty);
    REQUIRE_FALSE(e);
    CHECK(e.error().what().find("empty message") != std::string::npos);
}

TEST_CASE("head-room: headers are pushed and pulled in place, within bounds") {
    auto cli = Udp().connect(*Addr::parse("127.0.0.1:9"));
    REQUIRE(cli);
    std::vector<Msg> out(1);
    REQUIRE(cli->alloc(out) == 1);
    Msg& m = out[0];
    REQUIRE(put(m, "body"));
    std::byte* body = m.data();
    std::byte* h = m.push(4);
    REQUIRE(h == body - 4); // no copy: the header lands right in front
    std::memcpy(h, "HDR:", 4);
    CHECK(text(m) == "HDR:body");
    CHECK(m.pull(4));
    CHECK(text(m) == "body");
    CHECK(m.push(m.headroom() + 1) == nullptr);
    CHECK_FALSE(m.pull(5));
    CHECK_FALSE(m.resize(m.size() + m.tailroom() + 1));
}

TEST_CASE("a connection to every port of its peer: replies from any port, other hosts dropped") {
    // ConnectContext::peer_any_port (a stack with the shard chunnel asks for it): the socket is
    // not connected; messages without a peer go to the peer, others to their own; datagrams
    // from the peer's other ports come in, datagrams from another address (127.0.0.2, another
    // host on lo) are dropped and counted.
    for (Mode mode : {Mode::multishot, Mode::plain}) {
        CAPTURE(int(mode));
        auto a = Udp(opts_for(mode)).bind(any_port());
        auto b = Udp(opts_for(mode)).bind(any_port());
        auto other = Udp(opts_for(mode)).bind(any_port("127.0.0.2"));
        REQUIRE((a && b && other));
        ConnectContext ctx;
        ctx.peer_any_port = true;
        auto c = Udp(opts_for(mode)).connect(a->local(), ctx);
        REQUIRE_MESSAGE(c, (c ? "" : c.error().what()));
        CHECK(c->local().port() != 0);

        send_numbered(*c, 3, "to-a-");             // no peer on the messages: the connection's
        const Addr to_b = b->local();
        send_numbered(*c, 2, "to-b-", &to_b);      // their own peer: another port of that host
        std::vector<Addr> from_a, from_b;
        CHECK(recv_n(*a, 3, &from_a) == std::vector<std::string>{"to-a-0", "to-a-1", "to-a-2"});
        CHECK(recv_n(*b, 2, &from_b) == std::vector<std::string>{"to-b-0", "to-b-1"});
        REQUIRE(from_a.size() == 3);
        const Addr back = from_a[0]; // where c sends from

        send_numbered(*other, 2, "foreign-", &back); // dropped: not the peer's address
        send_numbered(*b, 2, "b-", &back);           // kept: the peer's host, another port
        send_numbered(*a, 1, "a-", &back);
        auto got = recv_n(*c, 3);
        std::sort(got.begin(), got.end());
        CHECK(got == std::vector<std::string>{"a-0", "b-0", "b-1"});
        std::vector<Msg> in(4);
        CHECK(c->recv(in, after(50ms)) == 0);
        CHECK(c->stats().foreign == 2);
    }
}

TEST_CASE("wait_fd polls readable when a datagram waits, for a connection and a listener") {
    for (Mode mode : {Mode::multishot, Mode::plain}) {
        CAPTURE(int(mode));
        auto srv = Udp(opts_for(mode)).bind(any_port());
        auto cli = Udp(opts_for(mode)).connect(srv->local());
        REQUIRE((srv && cli));
        std::vector<Msg> in(4);
        CHECK(srv->recv(in, no_wait) == 0);
        pollfd p{srv->wait_fd(), POLLIN, 0};
        CHECK(::poll(&p, 1, 0) == 0); // nothing yet
        send_numbered(*cli, 1, "x");
        p.revents = 0;
        CHECK(::poll(&p, 1, 2000) == 1);
        CHECK(recv_n(*srv, 1) == std::vector<std::string>{"x0"});
    }
}
