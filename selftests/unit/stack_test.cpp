// Composition: order of chunnels on the send and receive paths, select resolution, errors.
#include "bertha/bertha.hpp"
#include "noop/noop.hpp"
#include "test_chunnels.hpp"

#include <doctest/doctest.h>

#include <thread>

using namespace bertha;
using namespace bertha::test;
using namespace std::chrono_literals;

TEST_CASE("make_stack sends top-down and receives bottom-up") {
    // Raw receiver: sees exactly what the stack put on the wire.
    auto raw = make_stack(Udp{}).bind(loopback());
    REQUIRE(raw);
    auto conn = make_stack(Header<'a'>{}, Header<'b'>{}, Udp{}).connect(raw->local(), prearranged);
    REQUIRE(conn);
    CHECK(describe(*conn) == "header/header-a > header/header-b > udp/io_uring");

    std::vector<Msg> out(1);
    REQUIRE(conn->alloc(out) == 1);
    REQUIRE(put(out[0], "payload"));
    REQUIRE(conn->send(out) == 1);

    std::vector<Msg> in(4);
    auto n = raw->recv(in, after(2s));
    REQUIRE(n == 1);
    // 'a' (top) pushed first, 'b' below it pushed in front of it: the wire reads "ba...".
    CHECK(text(in[0]) == "bapayload");
    CHECK(in[0].headroom() == 128 - 0); // received payload starts at the configured head-room

    // Echo it back: the client's 'b' layer pulls 'b', then 'a' pulls 'a'.
    in[0].set_peer(in[0].peer());
    REQUIRE(raw->send(std::span(in.data(), 1)) == 1);
    std::vector<Msg> back(4);
    REQUIRE(conn->recv(back, after(2s)) == 1);
    CHECK(text(back[0]) == "payload");
}

TEST_CASE("a message without the expected header is rejected by that layer only") {
    auto raw = make_stack(Udp{}).bind(loopback());
    REQUIRE(raw);
    auto conn = make_stack(Header<'a'>{}, Udp{}).connect(raw->local(), prearranged);
    REQUIRE(conn);
    std::vector<Msg> out(1);
    REQUIRE(conn->alloc(out) == 1);
    REQUIRE(put(out[0], "hello"));
    REQUIRE(conn->send(out) == 1);
    std::vector<Msg> in(2);
    REQUIRE(raw->recv(in, after(2s)) == 1);
    Addr client = in[0].peer();
    REQUIRE(put(in[0], "zz-not-tagged"));
    REQUIRE(raw->alloc(std::span(in).subspan(1, 1)) == 1);
    REQUIRE(put(in[1], "aok"));
    in[1].set_peer(client);
    REQUIRE(raw->send(std::span(in.data(), 2)) == 2);

    std::vector<Msg> back(4);
    size_t got = 0;
    auto deadline = after(2s);
    while (got == 0 && Clock::now() < deadline) {
        auto n = conn->recv(back, deadline);
        REQUIRE(n);
        got = *n;
    }
    REQUIRE(got == 1);
    CHECK(text(back[0]) == "ok");
    CHECK(conn->inner().foreign == 1);
}

TEST_CASE("select picks the first implementation the host can run, in preference order") {
    auto raw = make_stack(Udp{}).bind(loopback());
    REQUIRE(raw);
    auto sel = select(Header<'x', Need::xdp>{}, Header<'p'>{});

    SUBCASE("host without xdp: the fallback is chosen") {
        HostFacts host = facts_with(Need::privilege);
        auto conn =
            make_stack(sel, Udp{}).connect(raw->local(), prearranged, ConnectContext{&host});
        REQUIRE(conn);
        CHECK(conn->inner().chosen() == 1);
        CHECK(describe(*conn) == "header/header-p > udp/io_uring");
    }
    SUBCASE("host with xdp: the preferred one is chosen") {
        HostFacts host = facts_with(Need::xdp);
        auto conn =
            make_stack(sel, Udp{}).connect(raw->local(), prearranged, ConnectContext{&host});
        REQUIRE(conn);
        CHECK(conn->inner().chosen() == 0);
        // The chosen implementation really runs: its header is on the wire.
        std::vector<Msg> out(1);
        REQUIRE(conn->alloc(out) == 1);
        REQUIRE(put(out[0], "m"));
        REQUIRE(conn->send(out) == 1);
        std::vector<Msg> in(1);
        REQUIRE(raw->recv(in, after(2s)) == 1);
        CHECK(text(in[0]) == "xm");
    }
}

TEST_CASE("select with no runnable implementation names the chunnel and every reason") {
    HostFacts host = facts_with(Need::none);
    host.deny(Need::xdp, "no XDP on eth9");
    host.deny(Need::af_xdp, "eth9 has no AF_XDP");
    auto conn = make_stack(select(Header<'x', Need::xdp>{}, Header<'y', Need::af_xdp>{}), Udp{})
                    .connect(loopback(9), ConnectContext{&host});
    REQUIRE_FALSE(conn);
    CHECK(conn.error().code == Errc::unavailable);
    CHECK(conn.error().component == "header");
    CHECK(conn.error().what() ==
          "header: no implementation of 'header' can run on this host: header/header-x needs "
          "xdp (no XDP on eth9); header/header-y needs af_xdp (eth9 has no AF_XDP)");
}

TEST_CASE("a select of bases resolves into the base connection and still lends buffers") {
    auto raw = make_stack(Udp{}).bind(loopback());
    REQUIRE(raw);
    auto conn = make_stack(noop::Noop{}, select(Udp{})).connect(raw->local(), prearranged);
    REQUIRE(conn);
    CHECK(describe(*conn) == "noop/passthrough > udp/io_uring");
    std::vector<Msg> out(2);
    CHECK(conn->alloc(out) == 2);
    auto listener = make_stack(select(Udp{})).listen(loopback());
    CHECK(listener);
}

TEST_CASE("noop reads every byte: its digest changes with the payload") {
    auto raw = make_stack(Udp{}).bind(loopback());
    REQUIRE(raw);
    auto conn = make_stack(noop::Noop{}, Udp{}).connect(raw->local(), prearranged);
    REQUIRE(conn);
    std::vector<Msg> out(1);
    REQUIRE(conn->alloc(out) == 1);
    std::string payload(1000, 'q');
    payload[999] = 'r'; // the last byte matters too
    REQUIRE(put(out[0], payload));
    REQUIRE(conn->send(out) == 1);
    CHECK(conn->inner().digest() == noop::fold(std::as_bytes(std::span(payload))));
    std::string other(1000, 'q');
    CHECK(conn->inner().digest() != noop::fold(std::as_bytes(std::span(other))));
}

TEST_CASE("errors say which component failed and why") {
    auto first = make_stack(Udp{}).bind(loopback());
    REQUIRE(first);
    auto second = make_stack(noop::Noop{}, Udp{}).bind(first->local());
    REQUIRE_FALSE(second);
    CHECK(second.error().code == Errc::system);
    CHECK(second.error().sys_errno == EADDRINUSE);
    CHECK(second.error().what() ==
          "udp: bind " + first->local().to_string() + " failed: Address already in use");

    auto bad = Addr::parse("198.18.0.1");
    REQUIRE_FALSE(bad);
    CHECK(bad.error().what() == "addr: '198.18.0.1' is not an address: no port (expected "
                                "198.18.0.1:7000 or [::1]:7000)");
}

TEST_CASE("addresses parse, print and compare in both families") {
    auto v4 = Addr::parse("198.18.0.1:7000");
    auto v6 = Addr::parse("[::1]:7000");
    REQUIRE(v4);
    REQUIRE(v6);
    CHECK(v4->to_string() == "198.18.0.1:7000");
    CHECK(v6->to_string() == "[::1]:7000");
    CHECK(v4->family() == AF_INET);
    CHECK(v6->family() == AF_INET6);
    CHECK(*v4 == *Addr::parse("198.18.0.1:7000"));
    CHECK_FALSE(*v4 == *Addr::parse("198.18.0.1:7001"));
    CHECK(v4->hash() == Addr::parse("198.18.0.1:7000")->hash());
    CHECK_FALSE(Addr::parse("[::1]7000"));
    CHECK_FALSE(Addr::parse("1.2.3.4:70000"));
    CHECK_FALSE(Addr::parse("host:80"));
}

TEST_CASE("a listener wraps every accepted peer in the stack, even from a temporary stack") {
    // The stack is a temporary here: the listener must carry its own copy of the chunnels.
    auto listener = make_stack(Header<'s'>{}, noop::Noop{}, Udp{}).listen(loopback());
    REQUIRE(listener);
    Addr at = listener->base().local();
    std::string server_side;
    std::string echoed;
    std::thread server([&] {
        auto peer = listener->accept(after(3s));
        if (!peer || !*peer) return;
        server_side = describe(**peer);
        std::vector<Msg> in(2);
        auto n = (*peer)->recv(in, after(3s));
        if (!n || *n != 1) return;
        echoed = text(in[0]); // the peer's header layer pulled the 's'
        (void)(*peer)->send(std::span(in).first(1));
    });
    auto cli = make_stack(Header<'s'>{}, Udp{}).connect(at);
    REQUIRE_MESSAGE(cli, (cli ? "" : cli.error().what()));
    std::vector<Msg> out(1);
    REQUIRE(cli->alloc(out) == 1);
    REQUIRE(put(out[0], "ping"));
    REQUIRE(cli->send(out) == 1);
    std::vector<Msg> back(2);
    auto n = cli->recv(back, after(3s));
    server.join();
    REQUIRE(n == 1);
    CHECK(text(back[0]) == "ping");
    CHECK(echoed == "ping");
    CHECK(server_side == "header/header-s > noop/passthrough > udp/io_uring");
}

TEST_CASE("accept(no_wait) looks at the socket: a waiting peer is accepted without blocking") {
    auto listener = make_stack(Udp{}).listen(loopback(), prearranged);
    REQUIRE(listener);
    auto cli = Udp{}.connect(listener->base().local());
    REQUIRE(cli);
    std::vector<Msg> out(1);
    REQUIRE(cli->alloc(out) == 1);
    REQUIRE(put(out[0], "knock"));
    REQUIRE(cli->send(out) == 1);
    bool accepted = false;
    for (int i = 0; i < 200 && !accepted; ++i) { // the datagram may need a moment to arrive
        auto got = listener->accept(no_wait);
        REQUIRE(got);
        accepted = got->has_value();
        if (!accepted) std::this_thread::sleep_for(1ms);
    }
    CHECK(accepted);
}
