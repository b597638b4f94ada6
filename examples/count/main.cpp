// count: a server and a client over the `count` chunnel (chunnels/count), for trying the offload
// path by hand and for selftests/net/offload_conn_test.sh.
//
//   count server --listen 198.18.0.1:7300 [--base udp|xsk]
//                                              accepts peers, echoes every message, and prints
//                                              "conn PEER received N count M (IMPL)" after each
//                                              batch; SIGUSR1 closes every connection (their
//                                              offloads detach) and prints "closed K"; SIGTERM
//                                              or SIGINT ends it.
//   count client --server 198.18.0.1:7300 --messages 10 [--rounds 2]
//                                              sends N messages per round and waits for their
//                                              echoes; between rounds it waits for SIGUSR1
//                                              (at most a minute).
//
// The server's stack is make_stack(count::chunnel(), Udp{}): count/xdp where the host can run
// it (native XDP towards the peer, and privilege or the agent), else count/userspace; nothing
// in this file depends on which. With --base xsk the server receives over AF_XDP (the xsk base's
// listener): each accepted peer's count/xdp chain then ends in the listener's sockets
// (count -> xsk:sockets=CHAIN). Exit status: 0 done, 1 a connection failed, 2 bad arguments.
#include "bertha/bertha.hpp"
#include "count/count.hpp"
#include "xsk/base.hpp"

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using namespace bertha;
using namespace std::chrono_literals;

namespace {

std::atomic<bool> g_stop{false}, g_usr1{false};

void on_signal(int sig) {
    if (sig == SIGUSR1)
        g_usr1.store(true);
    else
        g_stop.store(true);
}

void install_signals() {
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (int s : {SIGUSR1, SIGTERM, SIGINT}) sigaction(s, &sa, nullptr);
}

std::string counts_text(auto& conn) {
    auto c = count::counts(conn);
    if (!c) return "? (" + c.error().what() + ")";
    return std::to_string(c->received);
}

std::string impl_of(const auto& conn) {
    std::vector<std::string> names;
    conn.describe(names);
    return names.empty() ? "?" : names.front();
}

template <class BaseCh> int serve(const Addr& at, const BaseCh& base) {
    auto stack = make_stack(count::chunnel(), base);
    auto listener = stack.listen(at);
    if (!listener) {
        std::fprintf(stderr, "count server: %s\n", listener.error().what().c_str());
        return 1;
    }
    using Peer = std::decay_t<decltype(**listener->accept(no_wait))>;
    struct Live {
        Peer conn;
        Addr peer; // learnt from its first message
        uint64_t received = 0;
    };
    std::vector<Live> live;
    std::printf("listening on %s\n", listener->base().local().to_string().c_str());
    std::fflush(stdout);
    std::vector<Msg> batch(32);
    while (!g_stop.load()) {
        if (g_usr1.exchange(false)) {
            size_t n = live.size();
            live.clear(); // each connection's offload handle detaches here
            std::printf("closed %zu\n", n);
            std::fflush(stdout);
        }
        auto got = listener->accept(after(live.empty() ? 50ms : 1ms));
        if (!got) {
            std::fprintf(stderr, "count server: accept: %s\n", got.error().what().c_str());
            return 1;
        }
        if (*got) {
            std::printf("accepted: %s\n", describe(**got).c_str());
            std::fflush(stdout);
            live.push_back(Live{std::move(**got), Addr{}});
        }
        for (auto& l : live) {
            auto n = l.conn.recv(batch, no_wait);
            if (!n) {
                std::fprintf(stderr, "count server: recv from %s: %s\n", l.peer.to_string().c_str(),
                             n.error().what().c_str());
                return 1;
            }
            if (*n == 0) continue;
            l.received += *n;
            if (l.peer.empty()) l.peer = batch[0].peer();
            if (auto s = l.conn.send(std::span(batch).first(*n)); !s)
                std::fprintf(stderr, "count server: echo: %s\n", s.error().what().c_str());
            std::printf("conn %s received %llu count %s (%s)\n", l.peer.to_string().c_str(),
                        (unsigned long long)l.received, counts_text(l.conn).c_str(),
                        impl_of(l.conn).c_str());
            std::fflush(stdout);
        }
    }
    return 0;
}

int client(const Addr& server, int messages, int rounds) {
    auto conn = make_stack(count::chunnel(), Udp{}).connect(server);
    if (!conn) {
        std::fprintf(stderr, "count client: %s\n", conn.error().what().c_str());
        return 1;
    }
    std::printf("connected %s\n", describe(*conn).c_str());
    std::fflush(stdout);
    std::vector<Msg> in(32);
    for (int r = 1; r <= rounds; ++r) {
        if (r > 1) { // at most a minute: a test that forgot us does not leave us behind
            std::printf("waiting\n");
            std::fflush(stdout);
            auto limit = after(60s);
            while (!g_usr1.exchange(false)) {
                if (g_stop.load() || Clock::now() > limit) {
                    std::fprintf(stderr, "count client: no SIGUSR1 for round %d\n", r);
                    return 1;
                }
                std::this_thread::sleep_for(10ms);
            }
        }
        for (int i = 0; i < messages; ++i) {
            std::vector<Msg> out(1);
            auto a = conn->alloc(out);
            std::string text = "round " + std::to_string(r) + " message " + std::to_string(i);
            if (!a || *a != 1 || !out[0].assign(std::as_bytes(std::span(text)))) {
                std::fprintf(stderr, "count client: no buffer\n");
                return 1;
            }
            if (auto s = conn->send(out); !s || *s != 1) {
                std::fprintf(stderr, "count client: send: %s\n",
                             s ? "not accepted" : s.error().what().c_str());
                return 1;
            }
        }
        int echoed = 0;
        auto deadline = after(5s);
        while (echoed < messages && Clock::now() < deadline) {
            auto n = conn->recv(in, deadline);
            if (!n) {
                std::fprintf(stderr, "count client: recv: %s\n", n.error().what().c_str());
                return 1;
            }
            echoed += int(*n);
        }
        std::printf("round %d: sent %d echoed %d\n", r, messages, echoed);
        std::fflush(stdout);
        if (echoed != messages) return 1;
    }
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    CLI::App app{"count: a server and a client over the count chunnel (XDP offload or fallback)"};
    app.require_subcommand(1);
    std::string listen_at, server_at, base = "udp";
    int messages = 10, rounds = 1;
    auto* srv = app.add_subcommand("server", "accept peers, echo, print the counts");
    srv->add_option("--listen", listen_at, "address:port to listen on")->required();
    srv->add_option("--base", base, "udp (io_uring) or xsk (AF_XDP)")
        ->check(CLI::IsMember({"udp", "xsk"}))
        ->capture_default_str();
    auto* cli = app.add_subcommand("client", "send messages and wait for their echoes");
    cli->add_option("--server", server_at, "the server's address:port")->required();
    cli->add_option("--messages", messages, "messages per round")->check(CLI::Range(1, 10000));
    cli->add_option("--rounds", rounds, "rounds (SIGUSR1 starts the next)")
        ->check(CLI::Range(1, 100));
    CLI11_PARSE(app, argc, argv);
    install_signals();
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    if (srv->parsed()) {
        auto at = Addr::parse(listen_at);
        if (!at) {
            std::fprintf(stderr, "count: %s\n", at.error().what().c_str());
            return 2;
        }
        return base == "xsk" ? serve(*at, Xsk{}) : serve(*at, Udp{});
    }
    auto at = Addr::parse(server_at);
    if (!at) {
        std::fprintf(stderr, "count: %s\n", at.error().what().c_str());
        return 2;
    }
    return client(*at, messages, rounds);
}
