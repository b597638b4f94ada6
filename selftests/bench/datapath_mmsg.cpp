// datapath_mmsg: the "mmsg" variant of the datapath benchmark (selftests/bench/datapath.sh), a
// plain blocking recvmmsg/sendmmsg UDP echo with no Bertha datapath code (bench::MmsgUdp), in
// the roles that benchmark starts in two network namespaces:
//   datapath_mmsg server --bind ADDR:PORT   echo every datagram back to its sender, a batch per
//                                           recvmmsg/sendmmsg, until SIGTERM or --seconds
//   datapath_mmsg client --server ADDR:PORT a closed loop of --window messages in flight for
//                                           --seconds; one JSON object on stdout, with the keys
//                                           of `examples/echo client --json`
//   datapath_mmsg                           both roles over loopback, threads pinned to two
//                                           CPUs: throughput and ping-pong at each size. What
//                                           `make bench` and the --quick smoke run of `make
//                                           test` start; writes datapath_mmsg.loopback.json
// Every wait is bounded: receives by SO_RCVTIMEO (--timeout-ms; a quiet receive counts the
// window lost and refills it), the client by --seconds and --count, the server by --seconds.
// It reports; it never judges.
#include "bench.hpp"
#include "mmsg_udp.hpp"

#include "bertha/histogram.hpp" // the echo client's histogram: the same percentiles

#include <atomic>
#include <chrono>
#include <csignal>
#include <memory>
#include <string>
#include <sys/utsname.h>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using bench::die;
using Clock = std::chrono::steady_clock;

struct Config : bench::Common {
    Config() { reps = 3; }
    std::string role; // "", "server", "client"
    std::string bind = "127.0.0.1:0", server;
    uint32_t size = 64;
    size_t window = 64;
    double seconds = 1.0; // client/loopback: per trial; server: its lifetime (default 600)
    double timeout_ms = 200;
    uint64_t count = uint64_t(1) << 40;
    std::vector<uint32_t> sizes{64, 1400};
};

Config parse(int argc, char** argv) {
    Config c;
    CLI::App app("datapath_mmsg [server|client] [OPTIONS]: the role, if any, comes first.\n"
                 "A blocking recvmmsg/sendmmsg UDP echo (no io_uring, no Bertha datapath): the "
                 "'mmsg' variant of\nselftests/bench/datapath.sh. With no role: server and "
                 "client threads over loopback.\n"
                 "server --bind ADDR:PORT [--seconds S]\n"
                 "client --server ADDR:PORT [--size B] [--window W] [--seconds S] (JSON on "
                 "stdout)",
                 "datapath_mmsg");
    app.footer("--quick (no role): 1 rep of 0.1 s trials, a smoke run; numbers mean nothing.");
    bench::add_common(app, c);
    std::string sizes = "64,1400";
    app.add_option("role", c.role, "server or client; none: both over loopback")
        ->check(CLI::IsMember({"server", "client"}));
    app.add_option("--bind", c.bind, "server: IPv4 ADDR:PORT to listen on");
    app.add_option("--server", c.server, "client: the server's IPv4 ADDR:PORT");
    app.add_option("--size", c.size, "client: bytes per message")->capture_default_str();
    app.add_option("--sizes", sizes, "loopback: message sizes")->capture_default_str();
    app.add_option("--window", c.window, "messages in flight (loopback: the throughput trials)")
        ->capture_default_str();
    app.add_option("--seconds", c.seconds, "per trial (server: how long it may run, 600)");
    app.add_option("--timeout-ms", c.timeout_ms, "a receive this quiet counts the window lost")
        ->capture_default_str();
    app.add_option("--count", c.count, "client: at most this many messages")->capture_default_str();
    bench::parse(app, c, argc, argv);
    if (!c.role.empty() && c.role != argv[1])
        bench::usage_error("the role (%s) must come first", c.role.c_str());
    if (c.role == "server" && app.count("--seconds") == 0) c.seconds = 600;
    if (c.role.empty() && bench::quick_sets(app, "--seconds")) c.seconds = 0.1;
    c.sizes.clear();
    for (size_t i = 0; i <= sizes.size();) {
        size_t j = std::min(sizes.find(',', i), sizes.size());
        if (j > i) c.sizes.push_back(uint32_t(std::strtoul(sizes.substr(i, j - i).c_str(), 0, 10)));
        i = j + 1;
    }
    for (uint32_t s : c.sizes)
        if (s < 8 || s > 1472) bench::usage_error("--sizes must be 8..1472 bytes");
    if (c.size < 8 || c.size > 1472) bench::usage_error("--size must be 8..1472 bytes (a stamp)");
    if (c.window < 1 || c.window > 4096) bench::usage_error("--window must be 1..4096");
    if (c.seconds <= 0 || c.timeout_ms <= 0 || c.reps < 1 || c.count < 1)
        bench::usage_error("--seconds, --timeout-ms, --reps and --count must be > 0");
    if (c.role == "server" && c.bind == "127.0.0.1:0")
        bench::usage_error("server needs --bind ADDR:PORT");
    if (c.role == "client" && c.server.empty()) bench::usage_error("client needs --server");
    if (c.role.empty()) bench::resolve_out(c, "datapath_mmsg.loopback");
    return c;
}

sockaddr_in parse_addr(const std::string& text) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    auto colon = text.rfind(':');
    std::string host = text.substr(0, colon);
    if (colon == std::string::npos || inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1)
        bench::usage_error("'%s' is not an IPv4 ADDR:PORT", text.c_str());
    a.sin_port = htons(uint16_t(std::strtoul(text.c_str() + colon + 1, nullptr, 10)));
    return a;
}

std::chrono::microseconds timeout_of(const Config& c) {
    return std::chrono::microseconds(int64_t(c.timeout_ms * 1000));
}

// ---- the two ends ------------------------------------------------------------------------------

struct ServerCounts {
    uint64_t echoed = 0, batches = 0, short_sends = 0;
};

// Receive a batch, send it back: until `stop`, a signal or `end`.
void serve(bench::MmsgUdp& u, const std::atomic<bool>& stop, Clock::time_point end,
           ServerCounts& n) {
    while (!stop.load(std::memory_order_relaxed) && !bench::stop_requested &&
           Clock::now() < end) {
        size_t got = u.recv(bench::MmsgUdp::kBatch);
        if (got == 0) continue;
        size_t sent = u.echo(got);
        ++n.batches;
        n.echoed += sent;
        n.short_sends += sent < got;
    }
}

struct Result {
    uint32_t size = 0;
    size_t window = 0;
    uint64_t sent = 0, received = 0, lost = 0, errors = 0, timeouts = 0;
    double seconds = 0;
    bool timed_out = false;
    bertha::Histogram rtt; // ns

    double msgs_per_s() const { return seconds > 0 ? double(received) / seconds : 0; }
    double us(double p) const { return double(rtt.percentile(p)) / 1e3; }
};

// The closed loop: keep `window` in flight, each stamped with its send time; every echo makes
// room for one more. A receive that times out declares the window lost and refills it.
void drive(bench::MmsgUdp& u, const Config& c, uint32_t size, size_t window, Result& r) {
    r.size = size;
    r.window = window;
    r.sent = r.received = r.lost = r.errors = r.timeouts = 0;
    r.rtt.clear();
    const auto t0 = Clock::now();
    const auto end =
        t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(c.seconds));
    uint64_t inflight = 0;
    auto now = t0;
    while (now < end && r.sent < c.count) {
        const uint64_t stamp = uint64_t(now.time_since_epoch().count());
        while (inflight < window && r.sent < c.count) {
            size_t want = size_t(
                std::min<uint64_t>({window - inflight, bench::MmsgUdp::kBatch, c.count - r.sent}));
            size_t k = u.send_new(want, size, stamp);
            r.sent += k;
            inflight += k;
            if (k < want) break;
        }
        size_t got = u.recv(bench::MmsgUdp::kBatch);
        now = Clock::now();
        if (got == 0) {
            ++r.timeouts;
            r.lost += inflight;
            inflight = 0;
            continue;
        }
        const uint64_t at = uint64_t(now.time_since_epoch().count());
        for (size_t i = 0; i < got; ++i) {
            uint64_t s = 0;
            if (u.rx_len(i) != size) {
                ++r.errors;
                continue;
            }
            std::memcpy(&s, u.rx_data(i), sizeof s);
            ++r.received;
            r.rtt.record(at - std::min(at, s));
        }
        inflight -= std::min<uint64_t>(got, inflight);
    }
    r.timed_out = now >= end;
    r.seconds = std::chrono::duration<double>(now - t0).count();
}

// One JSON object with the keys of `echo client --json` (what datapath_report.py reads).
void print_result(FILE* f, const Result& r, const std::string& server) {
    bench::Json j(f);
    j.raw("{");
    j.key("server"), j.str(server), j.raw(", ");
    j.key("stack"), j.str("recvmmsg/sendmmsg (blocking, batches of 32)"), j.raw(", ");
    j.key("size"), j.num(uint64_t(r.size)), j.raw(", ");
    j.key("window"), j.num(uint64_t(r.window)), j.raw(", ");
    j.key("sent"), j.num(r.sent), j.raw(", ");
    j.key("received"), j.num(r.received), j.raw(", ");
    j.key("lost"), j.num(r.lost), j.raw(", ");
    j.key("errors"), j.num(r.errors), j.raw(", ");
    j.key("timeouts"), j.num(r.timeouts), j.raw(", ");
    j.key("seconds"), j.num(r.seconds), j.raw(", ");
    j.key("timed_out"), j.raw(r.timed_out ? "true" : "false"), j.raw(", ");
    j.key("msgs_per_s"), j.num(r.msgs_per_s()), j.raw(", ");
    j.key("rtt_us"), j.raw("{");
    j.key("min"), j.num(double(r.rtt.min()) / 1e3), j.raw(", ");
    j.key("p50"), j.num(r.us(50)), j.raw(", ");
    j.key("p90"), j.num(r.us(90)), j.raw(", ");
    j.key("p99"), j.num(r.us(99)), j.raw(", ");
    j.key("p99_9"), j.num(r.us(99.9)), j.raw(", ");
    j.key("max"), j.num(double(r.rtt.max()) / 1e3), j.raw("}}\n");
}

// ---- roles -------------------------------------------------------------------------------------

int run_server(const Config& c) {
    bench::stop_on_signals();
    bench::MmsgUdp u(parse_addr(c.bind), false, 100ms); // SO_RCVTIMEO: how soon a signal shows
    std::fprintf(stderr, "datapath_mmsg server: listening on %s, up to %.0f s\n", c.bind.c_str(),
                 c.seconds);
    ServerCounts n;
    std::atomic<bool> never{false};
    serve(u, never,
          Clock::now() +
              std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(c.seconds)),
          n);
    std::printf("datapath_mmsg server: echoed %llu messages in %llu batches (%.1f per batch), "
                "%llu short sends\n",
                (unsigned long long)n.echoed, (unsigned long long)n.batches,
                n.batches ? double(n.echoed) / double(n.batches) : 0.0,
                (unsigned long long)n.short_sends);
    std::fflush(stdout);
    return 0;
}

int run_client(const Config& c) {
    auto r = std::make_unique<Result>(); // the histogram is ~35 KB
    {
        bench::MmsgUdp u(parse_addr(c.server), true, timeout_of(c));
        drive(u, c, c.size, c.window, *r);
    }
    print_result(stdout, *r, c.server);
    return r->received > 0 && r->errors == 0 ? 0 : 1;
}

// Loopback: a server thread on the first allowed CPU, the client on the second; per rep and
// size a throughput trial (--window) and a ping-pong trial (window 1).
int run_local(const Config& c) {
    std::vector<int> cpus = bench::allowed_cpus();
    const int srv_cpu = c.pin && cpus.size() >= 2 ? cpus[0] : -1;
    const int cli_cpu = c.pin && cpus.size() >= 2 ? cpus[1] : -1;
    std::atomic<bool> stop{false};
    std::atomic<int> port{0};
    ServerCounts counts;
    std::thread server([&] {
        bench::pin_to(srv_cpu);
        bench::MmsgUdp u(parse_addr("127.0.0.1:0"), false, 50ms);
        port.store(u.port(), std::memory_order_release);
        serve(u, stop, Clock::now() + 600s, counts);
    });
    bench::pin_to(cli_cpu);
    for (int i = 0; i < 500 && port.load(std::memory_order_acquire) == 0; ++i)
        std::this_thread::sleep_for(10ms);
    if (port.load() == 0) die("the loopback server did not start within 5 s");
    const std::string at = "127.0.0.1:" + std::to_string(port.load());

    struct Row {
        int rep;
        uint32_t size;
        size_t window;
        double msgs_per_s, p50, p99;
        uint64_t received, lost;
    };
    std::vector<Row> rows;
    auto r = std::make_unique<Result>();
    std::printf("datapath_mmsg: recvmmsg/sendmmsg echo over 127.0.0.1 (server CPU %d, client "
                "CPU %d), %d rep(s) x %.2f s%s\n",
                srv_cpu, cli_cpu, c.reps, c.seconds,
                c.quick ? " [--quick: a smoke run, not a measurement]" : "");
    std::printf("%4s %6s %7s %10s %9s %9s %9s\n", "rep", "size", "window", "msgs/s", "p50 us",
                "p99 us", "lost");
    for (int rep = 0; rep < c.reps; ++rep)
        for (uint32_t size : c.sizes)
            for (size_t window : {c.window, size_t(1)}) {
                bench::MmsgUdp u(parse_addr(at), true, timeout_of(c));
                drive(u, c, size, window, *r);
                rows.push_back({rep, size, window, r->msgs_per_s(), r->us(50), r->us(99),
                                r->received, r->lost});
                std::printf("%4d %6u %7zu %10.0f %9.1f %9.1f %9llu\n", rep, size, window,
                            r->msgs_per_s(), r->us(50), r->us(99), (unsigned long long)r->lost);
            }
    stop.store(true);
    server.join();
    std::printf("server: echoed %llu in %llu batches\n", (unsigned long long)counts.echoed,
                (unsigned long long)counts.batches);

    if (!c.out.empty()) {
        FILE* f = bench::open_output(c.out);
        bench::Json j(f);
        utsname u{};
        uname(&u);
        j.raw("{\n  ");
        j.key("benchmark"), j.str("datapath_mmsg"), j.raw(",\n  ");
        j.key("what"), j.str("recvmmsg/sendmmsg UDP echo over 127.0.0.1 (the loopback run of "
                             "datapath's mmsg variant; datapath.sh runs it across veth)");
        j.raw(",\n  ");
        j.key("quick"), j.raw(c.quick ? "true" : "false"), j.raw(",\n  ");
        j.key("config"), j.raw("{");
        j.key("reps"), j.num(uint64_t(c.reps)), j.raw(", ");
        j.key("seconds"), j.num(c.seconds), j.raw(", ");
        j.key("window"), j.num(uint64_t(c.window)), j.raw(", ");
        j.key("server_cpu"), j.num(double(srv_cpu)), j.raw(", ");
        j.key("client_cpu"), j.num(double(cli_cpu)), j.raw("},\n  ");
        j.key("host"), j.raw("{");
        j.key("kernel"), j.str(u.release), j.raw(", ");
        j.key("cpus_online"), j.num(uint64_t(sysconf(_SC_NPROCESSORS_ONLN))), j.raw("},\n  ");
        j.key("trials"), j.raw("[\n");
        for (size_t i = 0; i < rows.size(); ++i) {
            const Row& w = rows[i];
            j.raw("    {");
            j.key("rep"), j.num(uint64_t(w.rep)), j.raw(", ");
            j.key("size"), j.num(uint64_t(w.size)), j.raw(", ");
            j.key("window"), j.num(uint64_t(w.window)), j.raw(", ");
            j.key("msgs_per_s"), j.num(w.msgs_per_s), j.raw(", ");
            j.key("rtt_p50_us"), j.num(w.p50), j.raw(", ");
            j.key("rtt_p99_us"), j.num(w.p99), j.raw(", ");
            j.key("received"), j.num(w.received), j.raw(", ");
            j.key("lost"), j.num(w.lost), j.raw(i + 1 < rows.size() ? "},\n" : "}\n");
        }
        j.raw("  ]\n}\n");
        std::fclose(f);
        std::printf("wrote %s\n", c.out.c_str());
    }
    for (const Row& w : rows)
        if (w.received == 0) {
            std::fprintf(stderr, "bench: no echo came back (size %u, window %zu)\n", w.size,
                         w.window);
            return 1;
        }
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    Config c = parse(argc, argv);
    if (c.role == "server") return run_server(c);
    if (c.role == "client") return run_client(c);
    return run_local(c);
}
