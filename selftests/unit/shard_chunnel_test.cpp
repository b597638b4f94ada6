// The shard chunnel over loopback, without interfaces or BPF: negotiation's pick (xdp where the
// server can, proxy where it cannot, client when the client prefers it), every implementation
// reaching each key's shard and merging a get that spans shards, the relay's request ids, and
// the one shard choice (kv::RouterCore, the client's and the proxy's) against steer.hpp, the
// XDP stage's reference, for 100,000 random keys. shard/xdp runs against a stand-in loader
// here (nothing is steered, so its relay carries everything); selftests/net/shard_chunnel_test.sh
// runs it with the real stage.
#include "bertha/bertha.hpp"
#include "fake_backend.hpp"
#include "kv/protocol.hpp"
#include "kv/router_core.hpp"
#include "shard/shard.hpp"
#include "shard/steer.hpp"
#include "test_chunnels.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <map>
#include <netinet/in.h>
#include <poll.h>
#include <random>
#include <set>
#include <sys/socket.h>
#include <thread>

using namespace bertha;
using namespace bertha::test;
using namespace std::chrono_literals;

namespace {

// N shards on consecutive loopback ports. Shard i answers a get of any key with the value "i"
// (so a reply says which shard answered), a set with STORED, anything else with ERROR.
class FakeShards {
  public:
    explicit FakeShards(uint16_t n) {
        std::mt19937 rng(std::random_device{}());
        for (int attempt = 0; attempt < 50 && fds_.empty(); ++attempt) {
            base_ = uint16_t(20000 + rng() % 40000);
            for (uint16_t i = 0; i < n; ++i) {
                Fd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
                Addr a = loopback(uint16_t(base_ + i));
                if (::bind(fd.get(), a.sa(), a.len()) != 0) {
                    fds_.clear();
                    break;
                }
                fds_.push_back(std::move(fd));
            }
        }
        REQUIRE(fds_.size() == n);
        thread_ = std::thread([this] { serve(); });
    }
    ~FakeShards() {
        stop_ = true;
        thread_.join();
    }
    uint16_t base() const { return base_; }
    uint64_t requests(size_t i) const { return counts_[i].load(); }

  private:
    void serve() {
        std::vector<pollfd> p;
        for (auto& fd : fds_) p.push_back({fd.get(), POLLIN, 0});
        std::vector<char> in(65536), out(65536);
        while (!stop_) {
            if (::poll(p.data(), p.size(), 20) <= 0) continue;
            for (size_t i = 0; i < p.size(); ++i) {
                if (!(p[i].revents & POLLIN)) continue;
                sockaddr_storage from{};
                socklen_t fl = sizeof from;
                ssize_t n = ::recvfrom(p[i].fd, in.data(), in.size(), MSG_DONTWAIT,
                                       reinterpret_cast<sockaddr*>(&from), &fl);
                if (n <= 0) continue;
                ++counts_[i];
                auto f = kv::parse_frame({in.data(), size_t(n)});
                if (!f) continue;
                kv::Writer w(out);
                kv::put_frame_header(w, f->request_id);
                auto r = kv::parse_request(f->body);
                if (r && kv::is_retrieval(r->verb)) {
                    for (auto key : r->key_list()) {
                        w.put("VALUE ");
                        w.put(key);
                        w.put(" 0 " + std::to_string(std::to_string(i).size()) + "\r\n" +
                              std::to_string(i) + "\r\n");
                    }
                    w.put("END\r\n");
                } else if (r && r->verb == kv::Verb::set) {
                    w.put("STORED\r\n");
                } else {
                    w.put("ERROR\r\n");
                }
                ::sendto(p[i].fd, out.data(), w.size(), 0, reinterpret_cast<sockaddr*>(&from), fl);
            }
        }
    }

    uint16_t base_ = 0;
    std::vector<Fd> fds_;
    std::array<std::atomic<uint64_t>, 16> counts_{};
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

std::string datagram(uint16_t id, std::string_view body) {
    std::string out(kv::kHeaderSize + body.size(), '\0');
    kv::Writer w(out);
    kv::put_frame_header(w, id);
    w.put(body);
    return out;
}

uint32_t shard_of(std::string_view key, uint32_t n) {
    return bertha_shard_of(
        bertha_shard_hash(reinterpret_cast<const unsigned char*>(key.data()), key.size()), n);
}

// A server for one client: accepts it, then relays until told to stop.
template <class Stack> class Server {
  public:
    Server(const Stack& stack, const HostFacts& facts) {
        auto l = stack.listen(loopback(), ConnectContext{&facts});
        REQUIRE_MESSAGE(l, (l ? "" : l.error().what()));
        listener_.emplace(std::move(*l));
        at_ = listener_->base().local();
        thread_ = std::thread([this] {
            std::array<Msg, 32> scratch;
            while (!stop_) {
                if (!conn_) {
                    auto got = listener_->accept(after(20ms));
                    if (got && *got) {
                        std::lock_guard g(mu_);
                        conn_.emplace(std::move(**got));
                        name_ = describe(*conn_);
                    }
                    continue;
                }
                auto r = conn_->recv(scratch, after(20ms));
                if (!r) error_ = r.error().what();
            }
        });
    }
    ~Server() {
        stop_ = true;
        thread_.join();
    }
    Addr at() const { return at_; }
    std::string name() {
        std::lock_guard g(mu_);
        return name_;
    }
    std::string error() const { return error_; }

  private:
    using Listener = std::decay_t<decltype(*std::declval<const Stack&>().listen(Addr{}))>;
    std::optional<Listener> listener_;
    std::optional<typename Listener::PeerConn> conn_;
    Addr at_;
    std::mutex mu_;
    std::string name_, error_;
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

// One request through a client connection, its reply's body (or "" after 2 s).
template <class Conn> std::string exchange(Conn& conn, uint16_t id, std::string_view body) {
    std::vector<Msg> out(1);
    auto a = conn.alloc(out);
    REQUIRE((a && *a == 1));
    REQUIRE(put(out[0], datagram(id, body)));
    auto s = conn.send(out);
    REQUIRE_MESSAGE(s, (s ? "" : s.error().what()));
    std::vector<Msg> in(8);
    const auto until = after(2s);
    while (Clock::now() < until) {
        auto n = conn.recv(in, until);
        REQUIRE_MESSAGE(n, (n ? "" : n.error().what()));
        for (size_t i = 0; i < *n; ++i) {
            const std::string t = text(in[i]);
            auto f = kv::parse_frame(t);
            if (f && f->request_id == id) return std::string(f->body);
        }
    }
    return {};
}

shard::Config server_config(uint16_t base, uint16_t n) {
    shard::Config c;
    c.table = {base, n};
    c.shards_at = loopback();
    return c;
}

} // namespace

TEST_CASE("shard: negotiation picks xdp where the server can, proxy where it cannot, client "
          "when the client prefers it") {
    FakeShards shards(4);
    auto fake = std::make_shared<FakeBackend>();
    UseBackend use(fake);
    const auto cfg = server_config(shards.base(), 4);
    const HostFacts can_xdp = facts_with(Need::xdp | Need::privilege);
    const HostFacts cannot = facts_with(Need::none);
    const HostFacts plain = facts_with(Need::none);
    const auto server_stack = make_stack(shard::chunnel(cfg), Udp{});

    SUBCASE("the server can: shard/xdp, its stage attached for the service port") {
        Server srv(server_stack, can_xdp);
        auto cli = make_stack(shard::chunnel(), Udp{}).connect(srv.at(), ConnectContext{&plain});
        REQUIRE_MESSAGE(cli, (cli ? "" : cli.error().what()));
        CHECK(describe(*cli) == "shard/xdp (the server runs it) > udp/io_uring");
        CHECK(exchange(*cli, 1, "get a\r\n").starts_with("VALUE a 0 1\r\n"));
        CHECK(srv.name().starts_with("shard/xdp (4 shards on ports "));
        CHECK(fake->last_stages ==
              std::vector<load::StageSpec>{
                  {"shard", "shards=4,base=" + std::to_string(shards.base())}});
        CHECK(fake->last.port == srv.at().port());
        CHECK_FALSE(fake->last.peer); // the service's flow: one chain for every xdp client
    }
    SUBCASE("the server cannot: shard/proxy, nothing attached") {
        Server srv(server_stack, cannot);
        auto cli = make_stack(shard::chunnel(), Udp{}).connect(srv.at(), ConnectContext{&plain});
        REQUIRE_MESSAGE(cli, (cli ? "" : cli.error().what()));
        CHECK(describe(*cli) == "shard/proxy (the server runs it) > udp/io_uring");
        CHECK(exchange(*cli, 1, "get a\r\n").starts_with("VALUE a 0 1\r\n"));
        CHECK(srv.name().starts_with("shard/proxy (4 shards"));
        CHECK(fake->attaches == 0);
    }
    SUBCASE("the client prefers shard/client: it gets it, with the table from the answer") {
        Server srv(server_stack, can_xdp);
        auto cli = make_stack(shard::chunnel_client_first(), Udp{})
                       .connect(srv.at(), ConnectContext{&plain});
        REQUIRE_MESSAGE(cli, (cli ? "" : cli.error().what()));
        CHECK(describe(*cli) == "shard/client (4 shards on ports " + std::to_string(shards.base()) +
                                    ".." + std::to_string(shards.base() + 3) +
                                    ") > udp/io_uring");
        CHECK(exchange(*cli, 1, "get a\r\n").starts_with("VALUE a 0 1\r\n"));
        CHECK(srv.name().starts_with("shard/client (the client runs it)"));
        CHECK(fake->attaches == 0);
    }
    SUBCASE("a client that insists on shard/xdp is refused by a server that cannot, by name") {
        Server srv(server_stack, cannot);
        auto cli = make_stack(shard::Xdp{}, Udp{}).connect(srv.at(), ConnectContext{&plain});
        REQUIRE_FALSE(cli);
        CHECK(cli.error().component == "shard");
        CHECK_MESSAGE(cli.error().what().find("this client offered xdp; the server accepts proxy, "
                                              "client") != std::string::npos,
                      cli.error().what());
    }
}

TEST_CASE("shard: every implementation reaches each key's shard, and merges a get over shards") {
    FakeShards shards(5);
    auto fake = std::make_shared<FakeBackend>();
    UseBackend use(fake);
    const auto cfg = server_config(shards.base(), 5);
    const HostFacts plain = facts_with(Need::none);
    std::mt19937 rng(7);
    auto run = [&](auto client_stack, const HostFacts& server_facts, std::string_view want) {
        Server srv(make_stack(shard::chunnel(cfg), Udp{}), server_facts);
        auto cli = client_stack.connect(srv.at(), ConnectContext{&plain});
        REQUIRE_MESSAGE(cli, (cli ? "" : cli.error().what()));
        REQUIRE(describe(*cli).starts_with(want));
        std::set<uint32_t> seen;
        for (uint16_t id = 1; id <= 200; ++id) {
            std::string key = "k" + std::to_string(rng()) + std::string(rng() % 40, 'x');
            const uint32_t s = shard_of(key, 5);
            seen.insert(s);
            const std::string reply = exchange(*cli, id, "get " + key + "\r\n");
            REQUIRE_MESSAGE(reply == "VALUE " + key + " 0 1\r\n" + std::to_string(s) + "\r\nEND\r\n",
                            "key " << key << " reply " << reply);
        }
        CHECK(seen.size() == 5);
        // A get over every shard: one reply, each key's value from its own shard, one END.
        std::string body = "get";
        std::map<std::string, uint32_t> keys;
        for (int i = 0; i < 12; ++i) {
            std::string key = "multi" + std::to_string(i);
            keys[key] = shard_of(key, 5);
            body += " " + key;
        }
        const std::string reply = exchange(*cli, 999, body + "\r\n");
        size_t values = 0;
        for (auto& [key, s] : keys)
            if (reply.find("VALUE " + key + " 0 1\r\n" + std::to_string(s) + "\r\n") !=
                std::string::npos)
                ++values;
        CHECK_MESSAGE(values == keys.size(), reply);
        CHECK(reply.ends_with("END\r\n"));
        CHECK(reply.find("END") == reply.size() - 5);
        auto st = shard::stats(*cli);
        if (std::string_view(want).starts_with("shard/client")) {
            REQUIRE(st);
            CHECK(st->relay.split == 1);
            CHECK(st->relay.merged == 1);
            CHECK(st->relay.forwarded == 200);
        } else {
            CHECK_FALSE(st); // the server runs it
        }
        CHECK(srv.error() == "");
    };
    SUBCASE("shard/proxy") { run(make_stack(shard::chunnel(), Udp{}), facts_with(Need::none), "shard/proxy"); }
    SUBCASE("shard/xdp's relay (nothing steered: a stand-in loader)") {
        run(make_stack(shard::chunnel(), Udp{}), facts_with(Need::xdp | Need::privilege),
            "shard/xdp");
    }
    SUBCASE("shard/client") {
        run(make_stack(shard::chunnel_client_first(), Udp{}), facts_with(Need::none),
            "shard/client");
    }
}

TEST_CASE("shard: the shard chosen by the relay and the client is steer.hpp's (the XDP stage's "
          "reference) for 100,000 random keys") {
    struct Null : kv::RouterSink {
        void to_shard(std::string_view, uint32_t) override {}
        void to_client(std::string_view, const Addr&) override {}
    } sink;
    std::mt19937_64 rng(42);
    const char alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_-.";
    const uint32_t counts[] = {1, 2, 7, 16, 64, 256};
    for (uint32_t n : counts) {
        auto core = kv::RouterCore::make({.shards = n, .ids = 65536});
        REQUIRE(core);
        const int keys = n == 16 ? 100000 : 5000;
        for (int i = 0; i < keys; ++i) {
            std::string key(1 + rng() % BERTHA_KV_MAX_KEY, 'x');
            for (char& c : key) c = alphabet[rng() % (sizeof alphabet - 1)];
            const char* verbs[] = {"get ", "gets ", "delete "};
            std::string body = verbs[rng() % 3] + key + "\r\n";
            if (rng() % 4 == 0) body = "set " + key + " 0 0 2\r\nhi\r\n";
            std::string d = datagram(uint16_t(i), body);
            auto want = shard::steer(std::span(reinterpret_cast<const uint8_t*>(d.data()), d.size()), n);
            REQUIRE(want);
            REQUIRE(*want == shard_of(key, n));
            auto got = core->request(d.data(), d.size(), Addr{}, sink);
            REQUIRE(got);
            REQUIRE(*got == *want);
            // a whole reply frees the id again
            std::string r = datagram(kv::parse_frame(d)->request_id, "END\r\n");
            REQUIRE(core->reply(r.data(), r.size(), sink));
        }
    }
}

TEST_CASE("shard: the relay restores the client's request id and forgets the unanswered") {
    struct Parts : kv::RouterSink {
        std::vector<std::pair<std::string, uint32_t>> to_shards;
        std::vector<std::string> to_clients;
        void to_shard(std::string_view d, uint32_t s) override { to_shards.emplace_back(d, s); }
        void to_client(std::string_view d, const Addr&) override { to_clients.emplace_back(d); }
    } sink;
    auto core = kv::RouterCore::make({.shards = 4, .timeout = 1ms, .ids = 8});
    REQUIRE(core);
    const Addr client = loopback(5555);
    std::string d = datagram(0xabcd, "get k\r\n");
    auto s = core->request(d.data(), d.size(), client, sink);
    REQUIRE(s);
    CHECK(*s == shard_of("k", 4));
    auto up = kv::parse_frame(d);
    REQUIRE(up);
    CHECK(up->request_id != 0xabcd); // an upstream id of the core's
    std::string reply = datagram(up->request_id, "END\r\n");
    auto to = core->reply(reply.data(), reply.size(), sink);
    REQUIRE(to);
    CHECK(*to == client);
    CHECK(kv::parse_frame(reply)->request_id == 0xabcd);
    CHECK_FALSE(core->reply(reply.data(), reply.size(), sink)); // answered already: stray
    CHECK(core->stats().stray == 1);
    // A reply over several datagrams (memcached: one per item, each "0 of 1") ends at its END,
    // found by the items' lengths (a value may itself read "END").
    {
        std::string j = "j0";
        for (int n = 1; shard_of(j, 4) != shard_of("k", 4); ++n) // on k's shard: not split
            j = "j" + std::to_string(n);
        std::string q = datagram(0x1234, "get k " + j + "\r\n");
        REQUIRE(core->request(q.data(), q.size(), client, sink));
        const uint16_t id = kv::parse_frame(q)->request_id;
        for (std::string part : {std::string("VALUE k 0 3\r\nEND\r\n"), std::string(),
                                 "VALUE " + j + " 0 5\r\nab\r\nc\r\n"}) {
            std::string r = datagram(id, part);
            CHECK(core->reply(r.data(), r.size(), sink)); // relayed, the request still open
        }
        std::string end = datagram(id, "END\r\n");
        CHECK(core->reply(end.data(), end.size(), sink));
        CHECK_FALSE(core->reply(end.data(), end.size(), sink)); // now it is over
        CHECK(core->stats().stray == 2);
        // an item cut short by the datagram's end is not the reply's end
        std::string q2 = datagram(0x1235, "get k\r\n");
        REQUIRE(core->request(q2.data(), q2.size(), client, sink));
        const uint16_t id2 = kv::parse_frame(q2)->request_id;
        std::string cut = datagram(id2, "VALUE k 0 10\r\nEND\r\n");
        CHECK(core->reply(cut.data(), cut.size(), sink));
        std::string end2 = datagram(id2, "END\r\n");
        CHECK(core->reply(end2.data(), end2.size(), sink));
        CHECK(core->stats().stray == 2);
    }
    // 8 ids: a ninth outstanding request is refused, until the sweep forgets the old ones.
    for (int i = 0; i < 8; ++i) {
        std::string q = datagram(uint16_t(i), "get k\r\n");
        REQUIRE(core->request(q.data(), q.size(), client, sink));
    }
    std::string q = datagram(9, "get k\r\n");
    CHECK_FALSE(core->request(q.data(), q.size(), client, sink));
    CHECK(core->stats().busy == 1);
    std::this_thread::sleep_for(5ms);
    core->sweep();
    CHECK(core->stats().expired == 8);
    CHECK(core->request(q.data(), q.size(), client, sink));
    // A datagram shorter than the frame header is dropped, counted.
    char tiny[3] = {1, 2, 3};
    CHECK_FALSE(core->request(tiny, 3, client, sink));
    CHECK(core->stats().malformed == 1);
}

TEST_CASE("shard: the relay takes any bytes from clients and shards (mutated and random "
          "datagrams)") {
    // Both sides of the relay read the network: clients' requests and shards' replies. Every
    // datagram is one of: a valid request or reply, mutated (bytes flipped, cut short, grown),
    // or random. Nothing may crash; a request goes to a shard in range or nowhere; a reply goes
    // to the one client that asked, or nowhere; the counters add up.
    struct Count : kv::RouterSink {
        size_t parts = 0, merged = 0;
        uint32_t shards = 0;
        void to_shard(std::string_view d, uint32_t s) override {
            REQUIRE(s < shards);
            REQUIRE(d.size() >= kv::kHeaderSize);
            ++parts;
        }
        void to_client(std::string_view d, const Addr&) override {
            REQUIRE(d.size() >= kv::kHeaderSize);
            ++merged;
        }
    } sink;
    std::mt19937_64 rng(2026);
    const std::vector<std::string> bodies = {
        "get a\r\n", "get a b c d e f g\r\n", "gets k1 k2\r\n", "set k 0 0 2\r\nhi\r\n",
        "delete k\r\n", "VALUE a 0 1\r\nx\r\nEND\r\n", "END\r\n", "STORED\r\n", "ERROR\r\n",
        "VALUE a 0 3\r\nEND\r\nVALUE b 0 1\r\ny\r\nEND\r\n", "get " + std::string(250, 'k') + "\r\n"};
    for (uint32_t shards : {1u, 3u, 16u}) {
        auto core = kv::RouterCore::make({.shards = shards, .timeout = 1ms, .ids = 64, .groups = 4});
        REQUIRE(core);
        sink.shards = shards;
        const Addr client = loopback(4000);
        for (int i = 0; i < 60000; ++i) {
            std::string d;
            switch (rng() % 4) {
            case 0: // random bytes
                d.resize(rng() % 64);
                for (char& c : d) c = char(rng());
                break;
            default: { // a datagram, then mutated
                d = datagram(uint16_t(rng() % 80), bodies[rng() % bodies.size()]);
                const int flips = int(rng() % 4);
                for (int k = 0; k < flips && !d.empty(); ++k) d[rng() % d.size()] = char(rng());
                if (rng() % 3 == 0) d.resize(rng() % (d.size() + 1));
                if (rng() % 5 == 0) d += std::string(rng() % 20, char(rng()));
            }
            }
            if (rng() % 2) {
                auto s = core->request(d.data(), d.size(), client, sink);
                if (s) REQUIRE(*s < shards);
            } else {
                auto to = core->reply(d.data(), d.size(), sink);
                if (to) REQUIRE(*to == client);
            }
            if (i % 3000 == 0) { // past the timeout and the 20 ms linger: the sweep frees all
                std::this_thread::sleep_for(21ms);
                core->sweep();
            }
        }
        const auto& st = core->stats();
        CHECK(st.requests > 0);
        CHECK(st.forwarded + st.split + st.busy + st.malformed <= st.requests);
        MESSAGE(shards << " shards: " << st.requests << " requests, " << st.forwarded
                       << " forwarded, " << st.split << " split, " << st.replies << " replies, "
                       << st.stray << " stray, " << st.expired << " expired, " << st.busy
                       << " busy; " << sink.parts << " parts, " << sink.merged << " merged");
    }
}
