// Negotiation over loopback: a real listener in a thread and real clients, checking which
// implementations both ends end up running, what errors say, and that no negotiation datagram
// ever reaches the application, also through a lossy, duplicating, reordering relay.
#include "bertha/bertha.hpp"
#include "noop/noop.hpp"
#include "test_chunnels.hpp"

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <atomic>
#include <map>
#include <mutex>
#include <poll.h>
#include <random>
#include <thread>
#include <unistd.h>

using namespace bertha;
using namespace bertha::test;
using namespace std::chrono_literals;

namespace {

// A listener in its own thread: accepts peers and echoes everything each one sends, recording
// what it saw. Stops (and joins) on destruction.
template <class S> class EchoServer {
  public:
    explicit EchoServer(const S& stack, negotiation::Options opts = {},
                        const HostFacts* host = nullptr) {
        ConnectContext ctx;
        ctx.host = host;
        auto l = host ? stack.listen(loopback(), opts, ctx) : stack.listen(loopback(), opts);
        REQUIRE_MESSAGE(l, (l ? "" : l.error().what()));
        listener_.emplace(std::move(*l));
        at = listener_->base().local();
        thread_ = std::thread([this] { run(); });
    }
    ~EchoServer() {
        stop_ = true;
        thread_.join();
    }

    Addr at;
    std::vector<std::string> stacks() {
        std::lock_guard g(mu_);
        return stacks_;
    }
    std::vector<std::string> received() {
        std::lock_guard g(mu_);
        return received_;
    }
    size_t accepted() {
        std::lock_guard g(mu_);
        return stacks_.size();
    }
    uint64_t refused() const { return refused_; }

  private:
    using Listener = typename S::Listener;
    using Peer = typename Listener::PeerConn;

    void run() {
        std::vector<Peer> peers;
        std::vector<Msg> batch(32);
        while (!stop_) {
            auto got = listener_->accept(after(peers.empty() ? 5ms : 1ms));
            if (got && *got) {
                std::lock_guard g(mu_);
                stacks_.push_back(describe(**got));
                peers.push_back(std::move(**got));
            }
            refused_ = listener_->refused();
            for (auto& p : peers) {
                auto n = p.recv(batch, no_wait);
                if (!n || *n == 0) continue;
                {
                    std::lock_guard g(mu_);
                    for (size_t i = 0; i < *n; ++i) received_.push_back(text(batch[i]));
                }
                (void)p.send(std::span(batch).first(*n));
            }
        }
    }

    std::optional<Listener> listener_;
    std::thread thread_;
    std::atomic<bool> stop_{false};
    std::atomic<uint64_t> refused_{0};
    std::mutex mu_;
    std::vector<std::string> stacks_, received_;
};

// Send `texts` as one batch and collect as many echoes (or stop after 3 s).
template <class C> std::vector<std::string> round_trip(C& conn, std::vector<std::string> texts) {
    std::vector<Msg> out(texts.size());
    auto n = conn.alloc(out);
    REQUIRE(n);
    REQUIRE(*n == texts.size());
    for (size_t i = 0; i < texts.size(); ++i) REQUIRE(put(out[i], texts[i]));
    auto s = conn.send(out);
    REQUIRE_MESSAGE(s, (s ? "" : s.error().what()));
    std::vector<std::string> back;
    std::vector<Msg> in(32);
    auto deadline = after(3s);
    while (back.size() < texts.size() && Clock::now() < deadline) {
        auto got = conn.recv(in, deadline);
        REQUIRE_MESSAGE(got, (got ? "" : got.error().what()));
        for (size_t i = 0; i < *got; ++i) back.push_back(text(in[i]));
    }
    return back;
}

std::vector<std::string> numbered(const std::string& prefix, size_t n) {
    std::vector<std::string> v;
    for (size_t i = 0; i < n; ++i) v.push_back(prefix + std::to_string(i));
    return v;
}

} // namespace

TEST_CASE("negotiation: compatible stacks agree, and the client's preference wins") {
    negotiation::ZeroRttCache::instance().clear();
    EchoServer srv(make_stack(select(Header<'b'>{}, Header<'a'>{}), Udp{}));
    auto conn = make_stack(select(Header<'a'>{}, Header<'b'>{}), Udp{})
                    .connect(srv.at, negotiation::Options{.zero_rtt = false});
    REQUIRE_MESSAGE(conn, (conn ? "" : conn.error().what()));
    CHECK(conn->negotiation() == "1-rtt");
    CHECK(describe(*conn) == "header/header-a > udp/io_uring");
    CHECK(round_trip(*conn, {"x", "y"}) == std::vector<std::string>{"x", "y"});
    REQUIRE(srv.stacks().size() == 1);
    CHECK(srv.stacks()[0] == "header/header-a > udp/io_uring");  // the server runs it too
    CHECK(srv.received() == std::vector<std::string>{"x", "y"}); // no negotiation bytes leaked
}

TEST_CASE("negotiation: equal client ranks (select_any) are decided by the server's order") {
    EchoServer srv(make_stack(select(Header<'b'>{}, Header<'a'>{}), Udp{}));
    auto conn = make_stack(select_any(Header<'a'>{}, Header<'b'>{}), Udp{})
                    .connect(srv.at, negotiation::Options{.zero_rtt = false});
    REQUIRE_MESSAGE(conn, (conn ? "" : conn.error().what()));
    CHECK(describe(*conn) == "header/header-b > udp/io_uring");
}

TEST_CASE("negotiation: incompatible stacks fail with an error naming the chunnel") {
    EchoServer srv(make_stack(Header<'b'>{}, Udp{}));
    auto conn = make_stack(select(Header<'a'>{}, Header<'c'>{}), Udp{}).connect(srv.at);
    REQUIRE_FALSE(conn);
    CHECK(conn.error().code == Errc::incompatible);
    CHECK(conn.error().component == "header");
    CHECK(conn.error().what() ==
          "header: negotiation with " + srv.at.to_string() +
              " refused (no compatible implementation): chunnel 'header': this client offered "
              "header-a, header-c; the server accepts header-b: no implementation of 'header' is "
              "accepted by both ends");
    for (int i = 0; i < 200 && srv.refused() == 0; ++i) std::this_thread::sleep_for(5ms);
    CHECK(srv.refused() == 1);
    CHECK(srv.accepted() == 0);
}

TEST_CASE("negotiation: stacks with different chunnels are refused as a mismatch") {
    EchoServer srv(make_stack(Tally<'s', Where::server>{}, Udp{}));
    auto conn = make_stack(Header<'a'>{}, Udp{}).connect(srv.at);
    REQUIRE_FALSE(conn);
    CHECK(conn.error().code == Errc::incompatible);
    CHECK(conn.error().what().find("the stacks differ") != std::string::npos);
    CHECK(conn.error().what().find("'header' at the client but 'tally' at the server") !=
          std::string::npos);
}

TEST_CASE("negotiation: a compositional chunnel runs at the end the answer names") {
    auto server_stack =
        make_stack(select(Tally<'s', Where::server>{}, Tally<'c', Where::client>{}), Udp{});
    EchoServer srv(server_stack);

    SUBCASE("client prefers the server-side implementation") {
        Tally<'s', Where::server>::reset();
        auto conn =
            make_stack(select(Tally<'s', Where::server>{}, Tally<'c', Where::client>{}), Udp{})
                .connect(srv.at, negotiation::Options{.zero_rtt = false});
        REQUIRE_MESSAGE(conn, (conn ? "" : conn.error().what()));
        REQUIRE(conn->pick().choices.size() == 1);
        CHECK(conn->pick().choices[0].runs_at == wire::RunsAt::server);
        CHECK(describe(*conn) == "tally/tally-s (peer runs it) > udp/io_uring");
        CHECK(round_trip(*conn, {"1", "2", "3"}).size() == 3);
        CHECK(Tally<'s', Where::server>::counted[int(Side::client)] == 0);
        CHECK(Tally<'s', Where::server>::counted[int(Side::server)] == 6); // 3 in, 3 echoed
        // The server's implementation contributed its parameters; the client received them.
        CHECK(Tally<'s', Where::server>::params_seen[int(Side::client)] ==
              std::vector<uint8_t>{'p', 's'});
    }
    SUBCASE("client prefers running it itself") {
        Tally<'c', Where::client>::reset();
        auto conn =
            make_stack(select(Tally<'c', Where::client>{}, Tally<'s', Where::server>{}), Udp{})
                .connect(srv.at, negotiation::Options{.zero_rtt = false});
        REQUIRE_MESSAGE(conn, (conn ? "" : conn.error().what()));
        CHECK(conn->pick().choices[0].runs_at == wire::RunsAt::client);
        CHECK(round_trip(*conn, {"1", "2"}).size() == 2);
        CHECK(Tally<'c', Where::client>::counted[int(Side::client)] == 4);
        CHECK(Tally<'c', Where::client>::counted[int(Side::server)] == 0);
    }
}

TEST_CASE("negotiation: an implementation the host cannot run is never offered or chosen") {
    HostFacts server_host = facts_with(Need::xdp);
    auto sel = select(Header<'x', Need::xdp>{}, Header<'p'>{});
    EchoServer srv(make_stack(sel, Udp{}), {}, &server_host);
    HostFacts client_host = facts_with(Need::none);
    client_host.deny(Need::xdp, "no XDP here");
    auto stack = make_stack(sel, Udp{});
    auto offer = stack.offer(client_host, Side::client);
    REQUIRE(offer);
    REQUIRE(offer->slots.size() == 1);
    REQUIRE(offer->slots[0].alts.size() == 1);
    CHECK(offer->slots[0].alts[0].impl == "header-p");
    auto conn = stack.connect(srv.at, negotiation::Options{.zero_rtt = false},
                              ConnectContext{&client_host});
    REQUIRE_MESSAGE(conn, (conn ? "" : conn.error().what()));
    CHECK(describe(*conn) == "header/header-p > udp/io_uring");
}

TEST_CASE("negotiation: ten selects make ten slots; five negotiate in one round trip") {
    auto s = [] { return select(Header<'a'>{}, Header<'b'>{}); };
    // The offer of a stack of ten selects: 10 slots of 2, not 2^10 stacks. Only the offer: a
    // connection type nests every select's variant, so its name doubles with each select, and
    // ten of them cost the compiler gigabytes of debug strings for no more coverage than five.
    auto ten = make_stack(s(), s(), s(), s(), s(), s(), s(), s(), s(), s(), Udp{});
    auto offer = ten.offer(HostFacts::local(), Side::client);
    REQUIRE(offer);
    CHECK(offer->slots.size() == 10);
    auto stack = make_stack(s(), s(), s(), s(), s(), Udp{});
    EchoServer srv(stack);
    auto conn = stack.connect(srv.at, negotiation::Options{.zero_rtt = false});
    REQUIRE_MESSAGE(conn, (conn ? "" : conn.error().what()));
    CHECK(conn->pick().choices.size() == 5);
    for (auto& c : conn->pick().choices) CHECK(c.impl == "header-a");
    CHECK(round_trip(*conn, {"five"}) == std::vector<std::string>{"five"});
}

TEST_CASE("zero-RTT: a returning client sends data at once and the server accepts it") {
    negotiation::ZeroRttCache::instance().clear();
    auto stack = make_stack(select(Header<'a'>{}, Header<'b'>{}), noop::Noop{}, Udp{});
    EchoServer srv(stack);
    {
        auto first = stack.connect(srv.at);
        REQUIRE_MESSAGE(first, (first ? "" : first.error().what()));
        CHECK(first->negotiation() == "1-rtt");
        CHECK(round_trip(*first, {"one"}).size() == 1);
    }
    auto again = stack.connect(srv.at);
    REQUIRE_MESSAGE(again, (again ? "" : again.error().what()));
    CHECK(again->negotiation() == "0-rtt (awaiting the server)");
    auto back = round_trip(*again, numbered("z", 5));
    CHECK(back == numbered("z", 5));
    CHECK(again->negotiation() == "0-rtt (accepted)");
    auto got = srv.received();
    CHECK(std::count(got.begin(), got.end(), "z0") == 1); // delivered once, tag stripped
    CHECK(got.size() == 6);
}

TEST_CASE("zero-RTT: a stale choice is refused, adopted, and the data sent again, once") {
    negotiation::ZeroRttCache::instance().clear();
    auto client_stack = make_stack(select(Header<'a'>{}, Header<'b'>{}), Udp{});
    Addr at;
    {
        // The first server accepts both; the client's preference 'a' is cached.
        EchoServer first(make_stack(select(Header<'a'>{}, Header<'b'>{}), Udp{}));
        at = first.at;
        auto c = client_stack.connect(at);
        REQUIRE_MESSAGE(c, (c ? "" : c.error().what()));
        CHECK(describe(*c) == "header/header-a > udp/io_uring");
    }
    // A new server on the same address accepts only 'b': the cached choice is stale.
    auto l = make_stack(Header<'b'>{}, Udp{}).listen(at);
    REQUIRE_MESSAGE(l, (l ? "" : l.error().what()));
    std::vector<std::string> seen;
    std::string server_stack;
    std::thread server([&] {
        auto peer = l->accept(after(3s));
        if (!peer || !*peer) return;
        server_stack = describe(**peer);
        std::vector<Msg> in(32);
        auto deadline = after(3s);
        while (seen.size() < 10 && Clock::now() < deadline) {
            auto n = (*peer)->recv(in, deadline);
            if (!n) return;
            for (size_t i = 0; i < *n; ++i) seen.push_back(text(in[i]));
            (void)(*peer)->send(std::span(in).first(*n));
        }
    });
    auto conn = client_stack.connect(at);
    REQUIRE_MESSAGE(conn, (conn ? "" : conn.error().what()));
    CHECK(conn->negotiation() == "0-rtt (awaiting the server)");
    auto back = round_trip(*conn, numbered("d", 10)); // sent at once, under the stale choice
    server.join();
    CHECK(back == numbered("d", 10));
    CHECK(seen == numbered("d", 10)); // every message once, in order, decoded under 'b'
    CHECK(server_stack == "header/header-b > udp/io_uring");
    CHECK(describe(*conn) == "header/header-b > udp/io_uring");
    CHECK(conn->negotiation() == "0-rtt (refused, re-sent)");
    // The cache now holds the fresh choice.
    auto offer = client_stack.offer(HostFacts::local(), Side::client);
    auto cached = negotiation::ZeroRttCache::instance().lookup(at, wire::fingerprint(*offer));
    REQUIRE(cached);
    CHECK(cached->choices[0].impl == "header-b");
}

TEST_CASE("negotiation: a peer that never answers gives a timeout within the bound") {
    auto silent = make_stack(Udp{}).bind(loopback());
    REQUIRE(silent);
    negotiation::Options opts;
    opts.first_timeout = 2ms;
    opts.tries = 3; // 2 + 4 + 8 = 14 ms
    auto t0 = Clock::now();
    auto conn = make_stack(Header<'a'>{}, Udp{}).connect(silent->local(), opts);
    auto took = Clock::now() - t0;
    REQUIRE_FALSE(conn);
    CHECK(conn.error().sys_errno == ETIMEDOUT);
    CHECK(conn.error().what().find("no answer from " + silent->local().to_string() +
                                   " after 3 tries over 14 ms") != std::string::npos);
    CHECK(took >= 14ms);
    CHECK(took < 2s); // generous: the bound, not a speed
    // The silent end saw exactly the three offers.
    std::vector<Msg> in(8);
    size_t offers = 0;
    while (auto n = silent->recv(in, after(50ms))) {
        if (*n == 0) break;
        for (size_t i = 0; i < *n; ++i) offers += wire::looks_like_negotiation(in[i].bytes());
    }
    CHECK(offers == 3);
}

namespace {

// Sends raw datagrams to `to` and returns the decoded refusal the server answers with.
std::optional<wire::Refuse> refusal_for(const Addr& to,
                                        const std::vector<std::vector<uint8_t>>& datagrams) {
    auto raw = Udp{}.connect(to); // the bare base: no layer that filters negotiation out
    REQUIRE(raw);
    REQUIRE(negotiation::send_datagrams(*raw, datagrams));
    std::vector<Msg> in(4);
    auto n = raw->recv(in, after(2s));
    if (!n || *n == 0) return std::nullopt;
    wire::Header h;
    wire::Error err;
    auto d = negotiation::bytes_of(in[0]);
    if (!wire::parse_header(d, h, err) || h.type != wire::Type::refuse) return std::nullopt;
    wire::Refuse r;
    if (!wire::decode(d.subspan(wire::kHeaderSize), r, err)) return std::nullopt;
    return r;
}

std::vector<uint8_t> reseal(std::vector<uint8_t> d) { // recompute the CRC after an edit
    d[12] = d[13] = d[14] = d[15] = 0;
    uint32_t crc = wire::crc32c(d);
    d[12] = uint8_t(crc >> 24), d[13] = uint8_t(crc >> 16), d[14] = uint8_t(crc >> 8),
    d[15] = uint8_t(crc);
    return d;
}

} // namespace

TEST_CASE("negotiation: the server refuses other versions and malformed offers, and carries on") {
    auto stack = make_stack(Header<'a'>{}, Udp{});
    EchoServer srv(stack);
    auto offer = stack.offer(HostFacts::local(), Side::client);
    REQUIRE(offer);

    auto v2 = wire::frame(wire::Type::offer, 0, 77, wire::encode(*offer));
    v2[0][4] = 2;
    v2[0] = reseal(v2[0]);
    auto r = refusal_for(srv.at, v2);
    REQUIRE(r);
    CHECK(r->reason == wire::RefuseReason::bad_version);
    CHECK(r->message == "the offer is negotiation version 2; this server speaks version 1");

    auto body = wire::encode(*offer);
    body.push_back(0xff); // one trailing byte: not a valid offer
    r = refusal_for(srv.at, wire::frame(wire::Type::offer, 0, 78, body));
    REQUIRE(r);
    CHECK(r->reason == wire::RefuseReason::malformed);
    CHECK(r->message.find("after the end of the message") != std::string::npos);

    // Truncated and corrupted datagrams get no answer at all; the server still serves others.
    auto cut = wire::frame(wire::Type::offer, 0, 79, wire::encode(*offer))[0];
    cut.resize(cut.size() - 3);
    CHECK_FALSE(refusal_for(srv.at, {cut}));
    auto conn = stack.connect(srv.at);
    REQUIRE_MESSAGE(conn, (conn ? "" : conn.error().what()));
    CHECK(round_trip(*conn, {"still here"}) == std::vector<std::string>{"still here"});
}

TEST_CASE("negotiation: one listener negotiates with many clients at once") {
    negotiation::ZeroRttCache::instance().clear();
    auto stack = make_stack(select(Header<'a'>{}, Header<'b'>{}), Udp{});
    EchoServer srv(stack);
    constexpr int kThreads = 4, kEach = 25;
    std::atomic<int> ok{0};
    std::vector<std::string> errors;
    std::mutex mu;
    std::vector<std::thread> clients;
    for (int t = 0; t < kThreads; ++t)
        clients.emplace_back([&, t] {
            for (int i = 0; i < kEach; ++i) {
                auto c = stack.connect(srv.at, negotiation::Options{.zero_rtt = false});
                if (!c) {
                    std::lock_guard g(mu);
                    errors.push_back(c.error().what());
                    continue;
                }
                std::string msg = "t" + std::to_string(t) + "c" + std::to_string(i);
                std::vector<Msg> out(1);
                if (c->alloc(out) != 1 || !put(out[0], msg) || !c->send(out)) continue;
                std::vector<Msg> in(2);
                auto n = c->recv(in, after(3s));
                if (n && *n == 1 && text(in[0]) == msg) ++ok;
            }
        });
    for (auto& c : clients) c.join();
    CHECK_MESSAGE(errors.empty(), (errors.empty() ? "" : errors.front()));
    CHECK(ok == kThreads * kEach);
    CHECK(srv.accepted() == size_t(kThreads * kEach));
}

// ---- a lossy path ------------------------------------------------------------------------------

namespace {

// A UDP relay on loopback between clients and one server that drops, duplicates and reorders
// datagrams in both directions (seeded, so a failure can be replayed). One upstream socket per
// client, so the server sees each client as its own peer.
class LossyRelay {
  public:
    LossyRelay(const Addr& server, double drop, double dup, double reorder, uint32_t seed)
        : server_(server), drop_(drop), dup_(dup), reorder_(reorder), rng_(seed) {
        front_ = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        Addr a = loopback();
        REQUIRE(::bind(front_, a.sa(), a.len()) == 0);
        sockaddr_in6 name{};
        socklen_t len = sizeof name;
        getsockname(front_, reinterpret_cast<sockaddr*>(&name), &len);
        at = Addr::from_sockaddr(reinterpret_cast<sockaddr*>(&name), len);
        thread_ = std::thread([this] { run(); });
    }
    ~LossyRelay() {
        stop_ = true;
        thread_.join();
        close(front_);
        for (auto& [addr, fd] : up_) close(fd);
    }
    Addr at;
    std::atomic<uint64_t> dropped{0}, duplicated{0}, reordered{0};

  private:
    struct Held {
        int fd = -1;
        Addr to;
        std::vector<uint8_t> data;
    };

    void emit(int fd, const Addr& to, const std::vector<uint8_t>& d) {
        std::uniform_real_distribution<double> u(0, 1);
        if (u(rng_) < drop_) {
            ++dropped;
            return;
        }
        if (held_.fd < 0 && u(rng_) < reorder_) { // keep it back: it goes after the next one
            held_ = Held{fd, to, d};
            ++reordered;
            return;
        }
        sendto(fd, d.data(), d.size(), 0, to.sa(), to.len());
        if (u(rng_) < dup_) {
            sendto(fd, d.data(), d.size(), 0, to.sa(), to.len());
            ++duplicated;
        }
        if (held_.fd >= 0) {
            sendto(held_.fd, held_.data.data(), held_.data.size(), 0, held_.to.sa(),
                   held_.to.len());
            held_.fd = -1;
        }
    }

    void run() {
        std::vector<uint8_t> buf(2048);
        while (!stop_) {
            std::vector<pollfd> fds{{front_, POLLIN, 0}};
            for (auto& [client, fd] : up_) fds.push_back({fd, POLLIN, 0});
            if (poll(fds.data(), fds.size(), 2) <= 0) {
                if (held_.fd >= 0) { // nothing followed: release what was held back
                    sendto(held_.fd, held_.data.data(), held_.data.size(), 0, held_.to.sa(),
                           held_.to.len());
                    held_.fd = -1;
                }
                continue;
            }
            for (size_t i = 0; i < fds.size(); ++i) {
                if (!(fds[i].revents & POLLIN)) continue;
                sockaddr_in6 from{};
                socklen_t len = sizeof from;
                ssize_t n = recvfrom(fds[i].fd, buf.data(), buf.size(), 0,
                                     reinterpret_cast<sockaddr*>(&from), &len);
                if (n < 0) continue;
                std::vector<uint8_t> d(buf.begin(), buf.begin() + n);
                if (i == 0) { // client -> server, through this client's upstream socket
                    Addr client = Addr::from_sockaddr(reinterpret_cast<sockaddr*>(&from), len);
                    auto it = up_.find(client.to_string());
                    if (it == up_.end()) {
                        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
                        it = up_.emplace(client.to_string(), fd).first;
                        clients_[fd] = client;
                    }
                    emit(it->second, server_, d);
                } else { // server -> the client that owns this upstream socket
                    emit(front_, clients_[fds[i].fd], d);
                }
            }
        }
    }

    Addr server_;
    double drop_, dup_, reorder_;
    std::mt19937 rng_;
    int front_ = -1;
    std::map<std::string, int> up_;
    std::map<int, Addr> clients_;
    Held held_;
    std::thread thread_;
    std::atomic<bool> stop_{false};
};

} // namespace

TEST_CASE("negotiation survives 20% loss, duplication and reordering; nothing leaks") {
    negotiation::ZeroRttCache::instance().clear();
    auto stack = make_stack(select(Header<'a'>{}, Header<'b'>{}), Udp{});
    EchoServer srv(stack);
    LossyRelay relay(srv.at, 0.20, 0.10, 0.10, 20261128);
    negotiation::Options opts;
    opts.tries = 12; // at 20% loss each way a try fails 36% of the time: 12 tries, 1 in 200k
    opts.zero_rtt = false;
    constexpr int kClients = 20;
    int connected = 0;
    size_t echoed = 0, leaked = 0;
    for (int c = 0; c < kClients; ++c) {
        auto conn = stack.connect(relay.at, opts);
        REQUIRE_MESSAGE(conn, (conn ? "" : conn.error().what()));
        ++connected;
        // Data too: what comes back must be data, never a negotiation datagram.
        for (int round = 0; round < 5; ++round) {
            std::vector<Msg> out(1);
            REQUIRE(conn->alloc(out) == 1);
            REQUIRE(put(out[0], "c" + std::to_string(c)));
            REQUIRE(conn->send(out));
            std::vector<Msg> in(8);
            auto n = conn->recv(in, after(30ms));
            REQUIRE(n);
            for (size_t i = 0; i < *n; ++i) {
                ++echoed;
                if (text(in[i]) != "c" + std::to_string(c)) ++leaked;
            }
        }
    }
    CHECK(connected == kClients);
    CHECK(leaked == 0);
    CHECK(echoed > 0);
    for (auto& s : srv.received()) CHECK(s.starts_with("c")); // the server's app saw only data
    CHECK(relay.dropped > 0);
    CHECK(relay.duplicated > 0);
    CHECK(relay.reordered > 0);
}

TEST_CASE("negotiation: a new client on a finished client's address and port is a new peer") {
    auto stack = make_stack(Header<'a'>{}, Udp{});
    EchoServer srv(stack);
    auto offer = stack.offer(HostFacts::local(), Side::client);
    REQUIRE(offer);
    // Two plain sockets bound to the same port, one after the other (what ephemeral port
    // reuse does to real clients). Each must get its own answer and its own connection.
    uint16_t port = 0;
    for (uint64_t conv : {1001u, 1002u}) {
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        Addr local = loopback(port);
        REQUIRE(::bind(fd, local.sa(), local.len()) == 0);
        sockaddr_in name{};
        socklen_t len = sizeof name;
        getsockname(fd, reinterpret_cast<sockaddr*>(&name), &len);
        port = ntohs(name.sin_port);
        auto d = wire::frame(wire::Type::offer, 0, conv, wire::encode(*offer))[0];
        REQUIRE(sendto(fd, d.data(), d.size(), 0, srv.at.sa(), srv.at.len()) == ssize_t(d.size()));
        pollfd p{fd, POLLIN, 0};
        REQUIRE(poll(&p, 1, 2000) == 1);
        uint8_t buf[1500];
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        REQUIRE(n > 0);
        wire::Header h;
        wire::Error err;
        REQUIRE(wire::parse_header(std::span(buf, size_t(n)), h, err));
        CHECK(h.type == wire::Type::pick);
        CHECK(h.conv == conv);
        close(fd);
    }
    for (int i = 0; i < 200 && srv.accepted() < 2; ++i) std::this_thread::sleep_for(5ms);
    CHECK(srv.accepted() == 2);
}

TEST_CASE("zero-RTT: data that overtakes the zero-rtt message is held, then delivered once") {
    negotiation::ZeroRttCache::instance().clear();
    auto stack = make_stack(Header<'a'>{}, Udp{});
    EchoServer srv(stack);
    uint64_t nonce;
    {
        auto first = stack.connect(srv.at, negotiation::Options{.zero_rtt = false});
        REQUIRE_MESSAGE(first, (first ? "" : first.error().what()));
        nonce = first->pick().nonce;
    }
    auto offer = stack.offer(HostFacts::local(), Side::client);
    REQUIRE(offer);
    // A raw client forces the order: two data datagrams first (one under the accepted nonce,
    // one under a stale one), then the zero-rtt message.
    auto raw = Udp{}.connect(srv.at);
    REQUIRE(raw);
    std::vector<Msg> data(2);
    REQUIRE(raw->alloc(data) == 2);
    REQUIRE(put(data[0], "aearly")); // 'a': the header layer's byte, then the payload
    REQUIRE(put(data[1], "astale"));
    REQUIRE(negotiation::push_prefix(data[0], nonce));
    REQUIRE(negotiation::push_prefix(data[1], nonce ^ 1));
    REQUIRE(raw->send(data) == 2);
    std::this_thread::sleep_for(20ms); // the data is at the server, waiting
    REQUIRE(
        negotiation::send_datagrams(*raw, wire::frame(wire::Type::zero_rtt, 0, 4242,
                                                      wire::encode(wire::ZeroRtt{nonce, *offer}))));

    bool acked = false;
    std::vector<std::string> echoed;
    std::vector<Msg> in(8);
    auto deadline = after(2s);
    while ((!acked || echoed.empty()) && Clock::now() < deadline) {
        auto n = raw->recv(in, deadline);
        REQUIRE(n);
        for (size_t i = 0; i < *n; ++i) {
            auto d = negotiation::bytes_of(in[i]);
            wire::Header h;
            wire::Error err;
            if (wire::parse_header(d, h, err))
                acked |= h.type == wire::Type::ack;
            else
                echoed.push_back(text(in[i]));
        }
    }
    CHECK(acked);
    CHECK(echoed == std::vector<std::string>{"aearly"}); // echoed under the header, tag gone
    std::this_thread::sleep_for(20ms);
    auto got = srv.received();
    CHECK(std::count(got.begin(), got.end(), "early") == 1);
    CHECK(std::count(got.begin(), got.end(), "stale") == 0); // stale tag: dropped, not misread
}

TEST_CASE("negotiation: an offer larger than one datagram is split, reassembled and answered") {
    // Wide rather than deep: a connection type nests every select's variant, so its size (and
    // the compiler's debug strings) grows as alternatives ^ selects. Six selects of five took
    // 15 GB and 2 GB of object to compile; two of fifteen make an offer as large.
    auto s = [] {
        return select(LongName<'a'>{}, LongName<'b'>{}, LongName<'c'>{}, LongName<'d'>{},
                      LongName<'e'>{}, LongName<'f'>{}, LongName<'g'>{}, LongName<'h'>{},
                      LongName<'i'>{}, LongName<'j'>{}, LongName<'k'>{}, LongName<'l'>{},
                      LongName<'m'>{}, LongName<'n'>{}, LongName<'o'>{});
    };
    auto stack = make_stack(s(), s(), Udp{});
    auto offer = stack.offer(HostFacts::local(), Side::client);
    REQUIRE(offer);
    auto parts = wire::frame(wire::Type::offer, 0, 1, wire::encode(*offer));
    CHECK(parts.size() >= 2); // it really is split
    EchoServer srv(stack);
    auto conn = stack.connect(srv.at, negotiation::Options{.zero_rtt = false});
    REQUIRE_MESSAGE(conn, (conn ? "" : conn.error().what()));
    REQUIRE(conn->pick().choices.size() == 2);
    for (auto& c : conn->pick().choices) CHECK(c.impl == std::string(LongName<'a'>::name));
    CHECK(round_trip(*conn, {"big"}) == std::vector<std::string>{"big"});
}
