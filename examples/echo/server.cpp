// The echo server: one bound connection that talks to any peer. Each received message carries
// its sender, so echoing is sending the very same batch back: the payload never moves, and the
// kernel's receive buffers go straight back to it once the sends complete.
#include "echo.hpp"
#include "stacks.hpp"

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <vector>

namespace bertha::echo {

namespace {

using namespace std::chrono_literals;

std::atomic<bool> g_stop{false};

void on_stop_signal(int) {
    g_stop.store(true, std::memory_order_relaxed);
}

// SIGINT/SIGTERM only set a flag: the loop's receive deadline (kPoll) bounds how long it takes
// to notice, and the loop then prints its summary and closes the connection cleanly.
void install_stop_signals() {
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
}

constexpr auto kPoll = 100ms;

template <class Stack> int serve(const Stack& stack, const Addr& local, const ServerOptions& o) {
    auto conn = stack.bind(local);
    if (!conn) {
        std::fprintf(stderr, "echo server: %s\n", conn.error().what().c_str());
        return 1;
    }
    auto& base = base_of(*conn);
    std::printf("echo server: listening on %s, stack %s\n", base.local().to_string().c_str(),
                describe(*conn).c_str());
    std::fflush(stdout);

    std::vector<Msg> batch(o.batch);
    uint64_t echoed = 0, batches = 0, send_failures = 0;
    int rc = 0;
    const Deadline end = o.duration_s > 0
                             ? Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                  std::chrono::duration<double>(o.duration_s))
                             : Deadline::max();
    while (!g_stop.load(std::memory_order_relaxed)) {
        auto now = Clock::now();
        if (now >= end) break;
        auto n = conn->recv(batch, std::min(now + kPoll, end));
        if (!n) {
            std::fprintf(stderr, "echo server: %s\n", n.error().what().c_str());
            rc = 1;
            break;
        }
        if (*n == 0) continue;
        ++batches;
        auto sent = conn->send(std::span(batch).first(*n));
        if (sent) {
            echoed += *sent;
        } else if (send_failures++ == 0) {
            // A peer that went away must not stop the server; say so once, count the rest.
            std::fprintf(stderr, "echo server: %s (further send errors are only counted)\n",
                         sent.error().what().c_str());
        }
    }

    std::printf("echo server: echoed %llu messages in %llu batches (%.1f per batch); %s\n",
                (unsigned long long)echoed, (unsigned long long)batches,
                batches ? double(echoed) / double(batches) : 0.0, base_summary(base).c_str());
    std::fflush(stdout);
    return rc;
}

} // namespace

int run_server(const ServerOptions& o) {
    auto local = Addr::parse(o.bind);
    if (!local) {
        std::fprintf(stderr, "echo server: %s\n", local.error().what().c_str());
        return 2;
    }
    install_stop_signals();
    auto serve_stack = [&](const auto& stack) { return serve(stack, *local, o); };
    return with_stack(o.noops, o.base, UdpOptions{}, serve_stack, 2);
}

} // namespace bertha::echo
