// Offloads from a connection's point of view, without interfaces or BPF: the flow facts the
// stack hands to connect_wrap (connect, accept, bind on loopback), the count chunnel's fallback
// and its selection, and OffloadHandle's reference semantics against a stand-in backend.
#include "bertha/bertha.hpp"
#include "bertha/offload.hpp"
#include "count/count.hpp"
#include "packet.hpp"
#include "fake_backend.hpp"
#include "test_chunnels.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>

using namespace bertha;
using namespace bertha::test;
using namespace std::chrono_literals;

namespace {

// Records the context each side wrapped it with; passes messages through.
struct FlowSpy {
    using Upper = Msg;
    using Lower = Msg;
    static constexpr ChunnelInfo info{
        300, "flowspy", "spy", "test", Match::compositional, Scope::unilateral, Need::none};
    static inline std::mutex mu;
    static inline std::map<Side, FlowFacts> seen;

    template <Connection Inner> struct Conn {
        using Data = Msg;
        Inner inner;
        Result<size_t> send(std::span<Msg> b) { return inner.send(b); }
        Result<size_t> recv(std::span<Msg> b, Deadline d) { return inner.recv(b, d); }
        Result<size_t> alloc(std::span<Msg> out) requires CanAlloc<Inner> {
            return inner.alloc(out);
        }
        void describe(std::vector<std::string>& out) const { inner.describe(out); }
        Inner into_inner() && { return std::move(inner); }
    };
    template <Connection Inner>
    Result<Conn<Inner>> connect_wrap(Inner&& inner, const ConnectContext& ctx) const {
        std::lock_guard g(mu);
        seen[ctx.side] = ctx.flow;
        return Conn<Inner>{std::move(inner)};
    }
    static FlowFacts of(Side s) {
        std::lock_guard g(mu);
        return seen[s];
    }
};

OffloadFlow flow_on(uint16_t port, std::optional<Addr> peer = std::nullopt) {
    return OffloadFlow{"count/xdp", "veth0", load::Hook::xdp, port, std::move(peer), {}};
}

const load::StageSpec kCount{"count", ""};

bool send_text(auto& conn, std::string_view s) {
    std::vector<Msg> out(1);
    auto a = conn.alloc(out);
    if (!a || *a != 1 || !put(out[0], s)) return false;
    auto n = conn.send(out);
    return n && *n == 1;
}

// Receive until `want` messages arrived or the deadline passed; returns how many.
size_t recv_n(auto& conn, size_t want, Deadline deadline) {
    size_t got = 0;
    std::vector<Msg> in(16);
    while (got < want && Clock::now() < deadline) {
        auto n = conn.recv(in, deadline);
        if (!n) break;
        got += *n;
    }
    return got;
}

} // namespace

TEST_CASE("connect fills the flow facts: local address, the peer, the interface towards it") {
    auto raw = make_stack(Udp{}).bind(loopback());
    REQUIRE(raw);
    auto conn = make_stack(FlowSpy{}, Udp{}).connect(raw->local(), prearranged);
    REQUIRE(conn);
    FlowFacts f = FlowSpy::of(Side::client);
    CHECK(f.peer == raw->local());
    CHECK(f.ifname == "lo");
    REQUIRE_FALSE(f.local.empty());
    CHECK(f.local.to_string().starts_with("127.0.0.1:"));
    CHECK(f.local.port() != 0);
    // The facts are the socket's: the server sees the datagram come from that very address.
    REQUIRE(send_text(*conn, "hello"));
    std::vector<Msg> in(1);
    REQUIRE(raw->recv(in, after(2s)) == 1);
    CHECK(in[0].peer() == f.local);
}

TEST_CASE("accept fills the flow facts: the listener's address, the peer, the interface") {
    auto listener = make_stack(FlowSpy{}, Udp{}).listen(loopback());
    REQUIRE(listener);
    Addr at = listener->base().local();
    bool accepted = false;
    std::thread server([&] {
        auto peer = listener->accept(after(3s));
        accepted = peer && *peer;
    });
    auto cli = make_stack(FlowSpy{}, Udp{}).connect(at);
    server.join();
    REQUIRE_MESSAGE(cli, (cli ? "" : cli.error().what()));
    REQUIRE(accepted);
    FlowFacts s = FlowSpy::of(Side::server), c = FlowSpy::of(Side::client);
    CHECK(s.local == at);
    CHECK(s.peer == c.local); // the client's own socket address
    CHECK(s.ifname == "lo");  // the listener's (FlowSpy works on no interface: no route lookup)
    CHECK(c.peer == at);
}

TEST_CASE("bind fills the flow facts: the bound port (0 resolved), no peer, the interface") {
    auto conn = make_stack(FlowSpy{}, Udp{}).bind(loopback(0));
    REQUIRE(conn);
    FlowFacts f = FlowSpy::of(Side::server);
    CHECK(f.peer.empty());
    CHECK(f.ifname == "lo");
    REQUIRE_FALSE(f.local.empty());
    CHECK(f.local.port() != 0);
    CHECK(f.local.to_string().starts_with("127.0.0.1:"));

    SUBCASE("a wildcard address names no interface, and an offload says what it lacks") {
        auto any = make_stack(FlowSpy{}, Udp{}).bind(*Addr::parse("0.0.0.0:0"));
        REQUIRE(any);
        FlowFacts w = FlowSpy::of(Side::server);
        CHECK(w.ifname.empty());
        CHECK(w.local.port() != 0);
        ConnectContext ctx;
        ctx.flow = w;
        auto flow = OffloadFlow::of(ctx, load::Hook::xdp, "count/xdp");
        REQUIRE_FALSE(flow);
        CHECK(flow.error().component == "count/xdp");
        CHECK(flow.error().message.find("the interface it runs on") != std::string::npos);
    }
}

TEST_CASE("OffloadFlow of a context: interface, hook, local port, and the peer if any") {
    ConnectContext ctx;
    ctx.flow.local = *Addr::parse("198.18.0.1:7000");
    ctx.flow.ifname = "veth0";
    auto bound = OffloadFlow::of(ctx, load::Hook::xdp, "count/xdp");
    REQUIRE(bound);
    CHECK(bound->port == 7000);
    CHECK_FALSE(bound->peer);
    CHECK(bound->text() == "count/xdp on veth0 xdp udp/7000");
    ctx.flow.peer = *Addr::parse("198.18.0.2:5000");
    auto peer = OffloadFlow::of(ctx, load::Hook::xdp, "count/xdp");
    REQUIRE(peer);
    REQUIRE(peer->peer);
    CHECK(peer->key().text() == "veth0 xdp udp/7000 from 198.18.0.2:5000");
}

TEST_CASE("a flow that an AF_XDP base receives: XDP chains end in the base's sockets") {
    // An accepted peer of an xsk listener (FlowFacts::redirect_chain = the listener's chain):
    // its offload's chain gets the xsk stage appended, borrowing the listener's sockets, or its
    // packets would go to the kernel, where nothing reads them. TC egress chains are left alone.
    ConnectContext ctx;
    ctx.flow.local = *Addr::parse("198.18.0.1:7000");
    ctx.flow.peer = *Addr::parse("198.18.0.2:5000");
    ctx.flow.ifname = "veth0";
    ctx.flow.redirect_chain = 3;
    auto fake = std::make_shared<FakeBackend>();
    auto xdp = OffloadFlow::of(ctx, load::Hook::xdp, "count/xdp");
    REQUIRE(xdp);
    CHECK(xdp->redirect_chain == 3u);
    auto h = attach_offload(fake, *xdp, std::span(&kCount, 1));
    REQUIRE(h);
    CHECK(fake->last_stages ==
          std::vector<load::StageSpec>{kCount, load::StageSpec{"xsk", "sockets=3"}});
    auto tc = OffloadFlow::of(ctx, load::Hook::tc_egress, "count/tc");
    REQUIRE(tc);
    auto t = attach_offload(fake, *tc, std::span(&kCount, 1));
    REQUIRE(t);
    CHECK(fake->last_stages == std::vector<load::StageSpec>{kCount});
    ctx.flow.redirect_chain.reset(); // the kernel's socket receives it: nothing appended
    auto plain = OffloadFlow::of(ctx, load::Hook::xdp, "count/xdp");
    REQUIRE(plain);
    auto p = attach_offload(fake, *plain, std::span(&kCount, 1));
    REQUIRE(p);
    CHECK(fake->last_stages == std::vector<load::StageSpec>{kCount});
}

TEST_CASE("OffloadHandle: one reference each; moves carry it, destruction drops it") {
    auto fake = std::make_shared<FakeBackend>();
    const std::string key = "veth0 xdp udp/7000";
    {
        auto a = attach_offload(fake, flow_on(7000), std::span(&kCount, 1));
        REQUIRE(a);
        CHECK(bool(*a));
        CHECK(a->path() == "fake backend");
        CHECK(fake->refs_of(key) == 1);
        CHECK(fake->last_stages == std::vector<load::StageSpec>{kCount});

        OffloadHandle b(std::move(*a)); // moved: still one reference, held by b
        CHECK_FALSE(bool(*a));
        CHECK(a->path().empty());
        CHECK(fake->refs_of(key) == 1);

        auto c = attach_offload(fake, flow_on(7000), std::span(&kCount, 1)); // the same flow
        REQUIRE(c);
        CHECK(c->chain() == b.chain()); // shares the chain
        CHECK(fake->refs_of(key) == 2);

        auto d = attach_offload(fake, flow_on(7001), std::span(&kCount, 1));
        REQUIRE(d);
        CHECK(fake->flows() == 2);
        b = std::move(*d); // b's old reference is dropped, d's moves in
        CHECK(fake->refs_of(key) == 1);
        CHECK(fake->refs_of("veth0 xdp udp/7001") == 1);
        CHECK(fake->detaches == 1);
    } // b and c go: everything is dropped, exactly once each
    CHECK(fake->flows() == 0);
    CHECK(fake->detaches == 3);
}

TEST_CASE("OffloadHandle: a failing detach is reported by release() and only logged by reset") {
    auto fake = std::make_shared<FakeBackend>();
    auto h = attach_offload(fake, flow_on(7002), std::span(&kCount, 1));
    REQUIRE(h);
    fake->refuse_detach = true;
    auto r = h->release();
    REQUIRE_FALSE(r);
    CHECK(r.error().component == "count/xdp");
    CHECK(r.error().message.find("refused by test") != std::string::npos);
    CHECK_FALSE(bool(*h)); // empty all the same: no second attempt from the destructor
    CHECK(fake->detaches == 1);

    auto g = attach_offload(fake, flow_on(7003), std::span(&kCount, 1));
    REQUIRE(g);
    g->reset(); // logs at warn level, does not throw
    CHECK_FALSE(bool(*g));
    CHECK(fake->detaches == 2);
}

TEST_CASE("attach_offload: a refusal names the chunnel, the flow, the path and why") {
    auto fake = std::make_shared<FakeBackend>();
    fake->refuse_attach = true;
    auto h =
        attach_offload(fake, flow_on(7004, *Addr::parse("198.18.0.2:5000")), std::span(&kCount, 1));
    REQUIRE_FALSE(h);
    CHECK(h.error().component == "count/xdp");
    CHECK(h.error().what().find("veth0 xdp udp/7004 from 198.18.0.2:5000") != std::string::npos);
    CHECK(h.error().what().find("fake backend") != std::string::npos);
    CHECK(h.error().what().find("refused by test") != std::string::npos);
}

TEST_CASE("count: select falls back to the userspace fallback when the host has no xdp") {
    HostFacts no_xdp = facts_with(Need::privilege);
    no_xdp.deny(Need::xdp, "lo: no native XDP");
    auto conn = make_stack(count::chunnel(), Udp{}).bind(loopback(), ConnectContext{&no_xdp});
    REQUIRE(conn);
    CHECK(conn->chosen() == 1);
    CHECK(describe(*conn) == "count/userspace > udp/io_uring");

    HostFacts unprivileged = facts_with(Need::xdp);
    auto conn2 =
        make_stack(count::chunnel(), Udp{}).bind(loopback(), ConnectContext{&unprivileged});
    REQUIRE(conn2);
    CHECK(conn2->chosen() == 1);
}

TEST_CASE("count: the fallback counts what the serving end receives and sends") {
    HostFacts no_xdp = facts_with(Need::privilege);
    auto listener = make_stack(count::chunnel(), Udp{}).listen(loopback(), ConnectContext{&no_xdp});
    REQUIRE(listener);
    Addr at = listener->base().local();
    std::optional<count::Counts> server_counts;
    std::string server_stack;
    std::thread server([&] {
        auto peer = listener->accept(after(3s));
        if (!peer || !*peer) return;
        auto& c = **peer;
        server_stack = describe(c);
        if (recv_n(c, 5, after(3s)) != 5) return;
        for (int i = 0; i < 2; ++i)
            if (!send_text(c, "back")) return;
        if (auto n = count::counts(c)) server_counts = *n;
    });
    HostFacts client_facts = facts_with(Need::none); // the client runs neither implementation
    auto cli = make_stack(count::chunnel(), Udp{}).connect(at, ConnectContext{&client_facts});
    REQUIRE_MESSAGE(cli, (cli ? "" : cli.error().what()));
    for (int i = 0; i < 5; ++i) REQUIRE(send_text(*cli, "m" + std::to_string(i)));
    CHECK(recv_n(*cli, 2, after(3s)) == 2);
    server.join();
    CHECK(server_stack == "count/userspace > udp/io_uring");
    CHECK(describe(*cli) == "count/userspace (peer runs it) > udp/io_uring");
    REQUIRE(server_counts);
    CHECK(server_counts->received == 5);
    CHECK(server_counts->sent == 2);
    auto mine = count::counts(*cli); // the client passes through and says who counts
    REQUIRE_FALSE(mine);
    CHECK(mine.error().message.find("the peer counts") != std::string::npos);
}

TEST_CASE("count: the counting rule on frames (the fallback's, stated per packet)") {
    count::Rule any{7000, {}};
    count::Rule one{7000, *Addr::parse("198.18.0.2:5000")};
    count::Rule any_port{7000, *Addr::parse("198.18.0.2:0")};
    auto from = [](const char* src, uint16_t sport, uint16_t dport) {
        return Packet().eth().ipv4(src, "198.18.0.1").udp(sport, dport).payload("x").bytes();
    };
    CHECK(any.counts(from("198.18.0.2", 5000, 7000)));
    CHECK(any.counts(from("198.18.0.9", 1, 7000)));
    CHECK_FALSE(any.counts(from("198.18.0.2", 5000, 7001)));
    CHECK(one.counts(from("198.18.0.2", 5000, 7000)));
    CHECK_FALSE(one.counts(from("198.18.0.2", 5001, 7000)));
    CHECK_FALSE(one.counts(from("198.18.0.3", 5000, 7000)));
    CHECK(any_port.counts(from("198.18.0.2", 5001, 7000)));
    CHECK_FALSE(any.counts(
        Packet().eth().ipv4("198.18.0.2", "198.18.0.1").udp(5000, 7000).truncate(30).bytes()));
}

TEST_CASE("count/xdp attaches for the serving end's flow and detaches when it closes") {
    auto fake = std::make_shared<FakeBackend>();
    UseBackend use(fake);
    HostFacts xdp = facts_with(Need::xdp | Need::privilege);

    SUBCASE("bind: the bound port, any peer") {
        {
            auto conn = make_stack(count::chunnel(), Udp{}).bind(loopback(), ConnectContext{&xdp});
            REQUIRE_MESSAGE(conn, (conn ? "" : conn.error().what()));
            CHECK(conn->chosen() == 0);
            CHECK(describe(*conn) == "count/xdp > udp/io_uring");
            CHECK(fake->last.ifname == "lo");
            CHECK(fake->last.port == conn->local().port());
            CHECK_FALSE(fake->last.peer);
            CHECK(fake->last_stages == std::vector<load::StageSpec>{kCount});
            CHECK(fake->flows() == 1);
            auto c = count::counts(*conn); // the fake serves no counters: an error, said so
            REQUIRE_FALSE(c);
            CHECK(c.error().message == "no counters");
        }
        CHECK(fake->flows() == 0);
        CHECK(fake->detaches == 1);
    }
    SUBCASE("accept: the listener's port and the peer; the client attaches nothing") {
        // A wildcard listener: only the route towards the peer names the interface.
        auto listener = make_stack(count::chunnel(), Udp{})
                            .listen(*Addr::parse("0.0.0.0:0"), ConnectContext{&xdp});
        REQUIRE(listener);
        Addr at = loopback(listener->base().local().port());
        std::optional<std::decay_t<decltype(**listener->accept(no_wait))>> peer;
        std::thread server([&] {
            auto got = listener->accept(after(3s));
            if (got && *got) peer.emplace(std::move(**got));
        });
        HostFacts plain = facts_with(Need::none);
        auto cli = make_stack(count::chunnel(), Udp{}).connect(at, ConnectContext{&plain});
        server.join();
        REQUIRE_MESSAGE(cli, (cli ? "" : cli.error().what()));
        REQUIRE(peer);
        CHECK(describe(*peer) == "count/xdp > udp/io_uring");
        CHECK(describe(*cli) == "count/xdp (peer runs it) > udp/io_uring");
        CHECK(fake->attaches == 1);
        CHECK(fake->last.ifname == "lo");
        CHECK(fake->last.port == at.port());
        REQUIRE(fake->last.peer);
        CHECK(fake->last.peer->to_string().starts_with("127.0.0.1:"));
        CHECK(fake->last.peer->port() != 0);
        CHECK(fake->flows() == 1);
        peer.reset(); // the server closes the connection
        CHECK(fake->flows() == 0);
    }
}

TEST_CASE("count/xdp that cannot attach: the client is refused with the reason, not hung") {
    auto fake = std::make_shared<FakeBackend>();
    fake->refuse_attach = true;
    UseBackend use(fake);
    HostFacts xdp = facts_with(Need::xdp | Need::privilege);
    auto listener = make_stack(count::chunnel(), Udp{}).listen(loopback(), ConnectContext{&xdp});
    REQUIRE(listener);
    Addr at = listener->base().local();
    std::atomic<bool> stop{false};
    std::optional<Error> server_error;
    bool accepted = false;
    std::thread server([&] {
        while (!stop) { // the listener carries on after refusing that peer
            auto got = listener->accept(after(20ms));
            if (!got) server_error = got.error();
            if (got && *got) accepted = true;
        }
    });
    HostFacts plain = facts_with(Need::none);
    auto cli = make_stack(count::chunnel(), Udp{}).connect(at, ConnectContext{&plain});
    stop = true;
    server.join();
    REQUIRE_FALSE(cli);
    CHECK(cli.error().code == Errc::incompatible);
    CHECK(cli.error().component == "count");
    CHECK(cli.error().what().find("could not set up") != std::string::npos);
    CHECK(cli.error().what().find("count/xdp") != std::string::npos);
    CHECK(cli.error().what().find("refused by test") != std::string::npos);
    CHECK_FALSE(server_error);
    CHECK_FALSE(accepted);
    CHECK(listener->refused() >= 1); // 2 if a retransmitted offer overtook the refusal
    CHECK(fake->flows() == 0);
}
