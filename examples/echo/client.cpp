// The echo client: a closed loop with a fixed number of messages in flight. Each message
// carries its sequence number and send time (wire.hpp); each reply is checked against the
// ledger (ledger.hpp) and its round-trip time recorded (bertha/histogram.hpp). Everything the loop
// touches is allocated before it starts: the per-message work is a few stores and loads.
#include "echo.hpp"
#include "ledger.hpp"
#include "report.hpp"
#include "stacks.hpp"
#include "wire.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <memory>
#include <vector>

namespace bertha::echo {

namespace {

using namespace std::chrono_literals;

constexpr auto kProgressEvery = 500ms;

int64_t ns_of(Deadline t) {
    return t.time_since_epoch().count();
}
Deadline at_ns(int64_t ns) {
    return Deadline(Clock::duration(ns));
}
static_assert(std::is_same_v<Clock::duration, std::chrono::nanoseconds>,
              "timestamps on the wire are steady_clock nanoseconds");

std::string explain(const Error& e, const std::string& server) {
    std::string s = e.what();
    if (e.code == Errc::system && e.sys_errno == ECONNREFUSED)
        s += " (nothing answers on " + server + ": is the echo server running there?)";
    return s;
}

template <class Conn> void drive(Conn& conn, const ClientOptions& o, ClientResult& r) {
    const int64_t timeout_ns = int64_t(o.timeout_ms * 1e6);
    Ledger ledger(o.window);
    std::vector<Msg> tx(o.window), rx(o.window);
    uint64_t in_flight = 0;

    const Deadline start = Clock::now();
    const Deadline end = start + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(o.max_seconds));
    Deadline next_progress = start + kProgressEvery, last_progress = start;
    uint64_t last_received = 0;

    for (;;) {
        const Deadline now = Clock::now();
        uint64_t expired = ledger.expire(ns_of(now) - timeout_ns);
        r.lost += expired;
        in_flight -= expired;
        if (now >= end) {
            r.timed_out = in_flight > 0 || ledger.next() < o.count;
            break;
        }
        if (o.progress && now >= next_progress) {
            double dt = std::chrono::duration<double>(now - last_progress).count();
            std::fprintf(stderr, "  [%5.1f s] sent %llu, back %llu, lost %llu, %.0f msg/s\n",
                         std::chrono::duration<double>(now - start).count(),
                         (unsigned long long)r.sent, (unsigned long long)r.received,
                         (unsigned long long)r.lost, double(r.received - last_received) / dt);
            last_progress = now;
            last_received = r.received;
            next_progress = now + kProgressEvery;
        }

        // Refill the window: every reply (or loss) makes room for one new message.
        uint64_t want =
            std::min({uint64_t(o.window) - in_flight, o.count - ledger.next(), ledger.room()});
        if (want > 0) {
            auto got = conn.alloc(std::span(tx).first(want));
            if (!got && (got.error().code != Errc::no_buffers || in_flight == 0)) {
                r.error = got.error().what();
                break;
            }
            size_t n = got ? *got : 0; // no_buffers with messages out: receive, then retry
            const int64_t t = ns_of(Clock::now());
            for (size_t i = 0; i < n; ++i) {
                // The size was checked against the slot size before the loop.
                write_message(tx[i], o.size, {ledger.next(), t});
                ledger.sent(t);
            }
            if (n > 0) {
                auto s = conn.send(std::span(tx).first(n));
                r.sent += n;
                in_flight += n;
                if (!s) {
                    r.error = explain(s.error(), r.server);
                    break;
                }
            }
        }
        if (in_flight == 0) {
            if (ledger.next() >= o.count) break;
            continue;
        }

        // Wait for replies until the oldest message times out (or a progress line is due).
        Deadline deadline = std::min(end, at_ns(*ledger.oldest_in_flight() + timeout_ns));
        if (o.progress) deadline = std::min(deadline, next_progress);
        auto got = conn.recv(rx, deadline);
        if (!got) {
            r.error = explain(got.error(), r.server);
            break;
        }
        const int64_t t = ns_of(Clock::now());
        for (size_t i = 0; i < *got; ++i) {
            Stamp s;
            Ack a = read_message(rx[i], o.size, s) ? ledger.ack(s.seq, s.sent_ns) : Ack::mismatch;
            rx[i].release(); // the receive buffer goes back to the kernel now
            switch (a) {
            case Ack::fresh:
                --in_flight;
                ++r.received;
                r.rtt.record(uint64_t(t - s.sent_ns));
                break;
            case Ack::late: // its slot in the window was already refilled
                --r.lost;
                ++r.late;
                ++r.received;
                r.rtt.record(uint64_t(t - s.sent_ns));
                break;
            case Ack::stale: // too old to verify: as suspect as a duplicate
            case Ack::duplicate:
            case Ack::unknown:
            case Ack::mismatch:
                ++r.errors;
                break;
            }
        }
    }
    // Cut off by --max-seconds or an error: neither lost nor back, but still out.
    r.unanswered = ledger.expire(INT64_MAX);
    r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
}

template <class Stack>
int connect_and_drive(const Stack& stack, const Addr& server, const ClientOptions& o,
                      ClientResult& r) {
    // The echo server serves every client from one bound socket (Udp::bind): its stack is
    // pre-arranged, so the client skips negotiation.
    auto conn = stack.connect(server, bertha::prearranged);
    if (!conn) {
        r.error = conn.error().what();
        return 1;
    }
    r.stack = describe(*conn);
    drive(*conn, o, r);
    return 0;
}

} // namespace

int run_client(const ClientOptions& o) {
    auto server = Addr::parse(o.server);
    if (!server) {
        std::fprintf(stderr, "echo client: %s\n", server.error().what().c_str());
        return 2;
    }
    const UdpOptions udp{};
    if (o.size < kHeaderSize || o.size > kMaxSize) {
        std::fprintf(stderr, "echo client: --size must be from %zu to %zu bytes\n", kHeaderSize,
                     kMaxSize);
        return 2;
    }

    // The histogram is ~35 KB: on the heap, once.
    auto r = std::make_unique<ClientResult>();
    r->server = server->to_string();
    r->noops = o.noops;
    r->size = o.size;
    r->window = o.window;
    auto drive_stack = [&](const auto& stack) { return connect_and_drive(stack, *server, o, *r); };
    with_stack(o.noops, o.base, udp, drive_stack, 2);

    if (o.json)
        print_json(*r);
    else
        print_human(*r);
    if (!r->error.empty() && o.json) std::fprintf(stderr, "echo client: %s\n", r->error.c_str());
    bool ok = r->error.empty() && r->errors == 0 && r->received > 0;
    return ok ? 0 : 1;
}

} // namespace bertha::echo
