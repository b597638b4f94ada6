// stack_overhead: what does composing chunnels cost? UDP echo throughput over loopback with
// 0, 1, 3 and 5 noop chunnels on the udp base, against the inline io_uring loop (the same
// kernel technique written out by hand, no chunnel code) and against a plain
// recvmmsg/sendmmsg loop. Both ends of a trial run the same variant, each on its own thread
// (server pinned to the first allowed CPU, client to the second): the framework's cost appears
// on both sides, as it would between two Bertha hosts.
//
// The client is a closed loop: it keeps `window` messages in flight, sends at most `batch` per
// call, and counts echoes during a measured interval that follows a warm-up. Every receive has
// a deadline; a receive that times out counts as loss and refills the window, so a trial always
// ends on time. Variants alternate inside each repetition (the order rotates per repetition),
// so slow drifts of a shared machine hit all of them alike. It reports; it never judges.
#include "bench.hpp"
#include "inline_uring.hpp"
#include "mmsg_udp.hpp"

#include "bertha/bertha.hpp"
#include "bertha/histogram.hpp"
#include "noop/noop.hpp"

#include <arpa/inet.h>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <span>
#include <string>
#include <sys/utsname.h>
#include <thread>
#include <utility>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using bench::die;

constexpr size_t kMaxBatch = 32;

// ---- the variants ----------------------------------------------------------------------------
// Each variant supplies a Server (receive up to a batch, send it straight back) and a Client
// (send fresh stamped messages, receive echoes and report their stamps). Both hold all their
// buffers from construction on: nothing on these paths allocates.

sockaddr_in loopback(uint16_t port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

uint64_t stamp_of(const std::byte* p, size_t len) {
    uint64_t s = 0;
    if (len >= sizeof s) std::memcpy(&s, p, sizeof s);
    return s;
}

struct InlineServer {
    explicit InlineServer(std::chrono::microseconds) : u(loopback(0), false) {}
    uint16_t port() const { return u.port(); }
    std::string describe() const { return "inline io_uring loop"; }
    size_t serve(Clock::time_point deadline) {
        size_t n = u.recv(rx.data(), rx.size(), deadline);
        if (n) u.echo(rx.data(), n);
        return n;
    }
    bench::InlineUdp u;
    std::array<bench::InlineUdp::Rx, kMaxBatch> rx;
};

struct InlineClient {
    InlineClient(uint16_t port, std::chrono::microseconds) : u(loopback(port), true) {}
    size_t send(size_t n, uint32_t size, uint64_t stamp) { return u.send_new(n, size, stamp); }
    size_t recv(Clock::time_point deadline, uint64_t* stamps) {
        size_t n = u.recv(rx.data(), rx.size(), deadline);
        for (size_t i = 0; i < n; ++i) stamps[i] = stamp_of(rx[i].payload, rx[i].len);
        u.give_back(rx.data(), n);
        return n;
    }
    bench::InlineUdp u;
    std::array<bench::InlineUdp::Rx, kMaxBatch> rx;
};

struct MmsgServer {
    explicit MmsgServer(std::chrono::microseconds poll) : u(loopback(0), false, poll) {}
    uint16_t port() const { return u.port(); }
    std::string describe() const { return "recvmmsg/sendmmsg loop"; }
    size_t serve(Clock::time_point) {
        size_t n = u.recv(kMaxBatch);
        if (n) u.echo(n);
        return n;
    }
    bench::MmsgUdp u;
};

struct MmsgClient {
    MmsgClient(uint16_t port, std::chrono::microseconds loss) : u(loopback(port), true, loss) {}
    size_t send(size_t n, uint32_t size, uint64_t stamp) { return u.send_new(n, size, stamp); }
    size_t recv(Clock::time_point, uint64_t* stamps) {
        size_t n = u.recv(kMaxBatch);
        for (size_t i = 0; i < n; ++i) stamps[i] = stamp_of(u.rx_data(i), u.rx_len(i));
        return n;
    }
    bench::MmsgUdp u;
};

// A chunnel that hands batches through without reading them. Five of these (pass5) measure
// what composition itself costs (one more call, span and Result per batch and layer), apart
// from the noop's deliberate read of every byte.
namespace pass {
using namespace bertha;
struct Pass {
    using Upper = Msg;
    using Lower = Msg;
    static constexpr ChunnelInfo info{.type_id = 0xbe7c0001,
                                      .chunnel = "pass",
                                      .impl = "forward",
                                      .labels = "bench",
                                      .match = Match::compositional,
                                      .scope = Scope::unilateral,
                                      .needs = Need::none};
    template <Connection Inner> class Conn {
      public:
        using Data = Msg;
        explicit Conn(Inner&& inner) : inner_(std::move(inner)) {}
        Result<size_t> send(std::span<Msg> batch) { return inner_.send(batch); }
        Result<size_t> recv(std::span<Msg> batch, Deadline d) { return inner_.recv(batch, d); }
        Result<size_t> alloc(std::span<Msg> out) { return inner_.alloc(out); }
        void describe(std::vector<std::string>& out) const {
            out.push_back(name_of(info));
            inner_.describe(out);
        }
        Inner& inner() noexcept { return inner_; }

      private:
        Inner inner_;
    };
    template <Connection Inner>
    Result<Conn<Inner>> connect_wrap(Inner&& inner, const ConnectContext&) const {
        return Conn<Inner>(std::move(inner));
    }
};
} // namespace pass
using pass::Pass;

// K chunnels of type Ch over the udp base, top first: make_stack(Ch{}, ..., Udp{}).
template <class Ch, size_t... I> auto chunnel_stack(std::index_sequence<I...>) {
    return bertha::make_stack((void(I), Ch{})..., bertha::Udp{});
}
template <class Ch, size_t K> auto chunnel_stack() {
    return chunnel_stack<Ch>(std::make_index_sequence<K>{});
}

template <class T> T must(bertha::Result<T>&& r, const char* what) {
    if (!r) die("%s: %s", what, r.error().what().c_str());
    return std::move(*r);
}

template <class Ch, size_t K> struct StackServer {
    using Conn = typename decltype(chunnel_stack<Ch, K>())::BoundConn;
    explicit StackServer(std::chrono::microseconds)
        : conn(must(chunnel_stack<Ch, K>().bind(*bertha::Addr::parse("127.0.0.1:0")), "bind")) {}
    uint16_t port() { return base(conn).local().port(); }
    std::string describe() const { return bertha::describe(conn); }
    size_t serve(Clock::time_point deadline) {
        size_t n = must(conn.recv(std::span(b), deadline), "server recv");
        if (n) must(conn.send(std::span(b.data(), n)), "server send");
        return n;
    }
    // The udp connection at the bottom of the wrapped ones (Noop::Conn::inner() is not const).
    template <class C> static auto& base(C& c) {
        if constexpr (requires { c.inner(); })
            return base(c.inner());
        else
            return c;
    }
    Conn conn;
    std::array<bertha::Msg, kMaxBatch> b;
};

template <class Ch, size_t K> struct StackClient {
    using Conn = typename decltype(chunnel_stack<Ch, K>())::ClientConn;
    StackClient(uint16_t port, std::chrono::microseconds)
        : conn(must(chunnel_stack<Ch, K>().connect(
                        *bertha::Addr::parse("127.0.0.1:" + std::to_string(port)),
                        bertha::prearranged), // the echo server is bound: pre-arranged stack
                    "connect")) {}
    size_t send(size_t n, uint32_t size, uint64_t stamp) {
        size_t got = must(conn.alloc(std::span(b.data(), n)), "alloc");
        for (size_t i = 0; i < got; ++i) {
            b[i].resize(size);
            std::memcpy(b[i].data(), &stamp, sizeof stamp);
        }
        return must(conn.send(std::span(b.data(), got)), "client send");
    }
    size_t recv(Clock::time_point deadline, uint64_t* stamps) {
        size_t n = must(conn.recv(std::span(r), deadline), "client recv");
        for (size_t i = 0; i < n; ++i) {
            stamps[i] = stamp_of(r[i].data(), r[i].size());
            r[i].release(); // the slot goes back to the kernel's ring
        }
        return n;
    }
    Conn conn;
    std::array<bertha::Msg, kMaxBatch> b, r;
};

// ---- configuration ---------------------------------------------------------------------------

struct Config : bench::Common { // reps, pin, quick, out
    Config() { reps = 7; }
    double seconds = 0.6; // measured interval per trial (a default run takes ~2.3 minutes)
    double warmup = 0.1;  // before it, per trial: rings, caches and the window settle
    std::vector<uint32_t> sizes{64, 128, 512, 1400};
    std::vector<std::string> variants{"inline", "stack0", "stack1", "stack3",
                                      "stack5", "pass5",  "mmsg"};
    size_t window = 128;
    size_t batch = 32;
    std::chrono::microseconds loss_timeout = 20ms; // a recv this quiet means messages were lost
    std::chrono::microseconds server_poll = 10ms;  // how often the server looks at `stop`
};

const char* kBaseline = "inline";
const char* kBaselineText = "inline io_uring loop";

template <class T> std::vector<T> split(const std::string& s, T (*conv)(const std::string&)) {
    std::vector<T> out;
    size_t i = 0;
    while (i <= s.size()) {
        size_t j = s.find(',', i);
        if (j == std::string::npos) j = s.size();
        if (j > i) out.push_back(conv(s.substr(i, j - i)));
        i = j + 1;
    }
    return out;
}

Config parse(int argc, char** argv) {
    Config c;
    CLI::App app(std::string("UDP echo throughput over loopback, both ends running the variant; "
                             "baseline: ") +
                     kBaselineText +
                     ".\nstackN: N noop chunnels (each reads every byte) over udp; pass5: 5 "
                     "chunnels that only\nhand batches on; mmsg: a recvmmsg/sendmmsg loop without "
                     "io_uring.",
                 "stack_overhead");
    app.footer("--quick: 1 rep of short trials (a smoke run; numbers are not meaningful).");
    bench::add_common(app, c);
    std::string sizes = "64,128,512,1400",
                variants = "inline,stack0,stack1,stack3,stack5,pass5,mmsg";
    app.add_option("--seconds", c.seconds, "measured interval per trial")->capture_default_str();
    app.add_option("--warmup", c.warmup, "warm-up per trial, seconds")->capture_default_str();
    app.add_option("--sizes", sizes, "message sizes, bytes")->type_name("64,128,...");
    app.add_option("--variants", variants, "the variants to run (the baseline always runs)")
        ->type_name(variants);
    app.add_option("--window", c.window, "messages in flight")->capture_default_str();
    app.add_option("--batch", c.batch, "messages per send")->capture_default_str();
    bench::parse(app, c, argc, argv);
    if (bench::quick_sets(app, "--seconds")) c.seconds = 0.05;
    if (bench::quick_sets(app, "--warmup")) c.warmup = 0.02;
    try {
        c.sizes =
            split<uint32_t>(sizes, [](const std::string& s) { return uint32_t(std::stoul(s)); });
    } catch (const std::exception&) {
        bench::usage_error("--sizes: '%s' is not a list of numbers", sizes.c_str());
    }
    c.variants = split<std::string>(variants, [](const std::string& s) { return s; });
    bench::resolve_out(c, "stack_overhead"); // a smoke run must not overwrite a real one
    if (c.reps < 1 || c.seconds <= 0 || c.warmup < 0)
        bench::usage_error("--reps >= 1 and --seconds > 0, please");
    if (c.batch < 1 || c.batch > kMaxBatch) bench::usage_error("--batch must be 1..%zu", kMaxBatch);
    if (c.window < c.batch || c.window > 256)
        bench::usage_error(
            "--window must be in [batch, 256]: the engines have 512 receive slots per side");
    for (uint32_t s : c.sizes)
        if (s < 8 || s > 1400)
            bench::usage_error("sizes must be 8..1400 bytes (a stamp; one MTU-sized slot)");
    return c;
}

// ---- one trial -------------------------------------------------------------------------------

struct Trial {
    int rep = 0;
    size_t order = 0; // position inside its repetition
    uint32_t size = 0;
    std::string variant;
    double msgs_per_s = NAN;
    double rtt_p50_us = NAN, rtt_p99_us = NAN;
    double srv_cpu_us = NAN, cli_cpu_us = NAN; // CPU-µs per echoed message, each thread
    uint64_t received = 0, timeouts = 0;
    double measured_s = 0;
};

// The client's closed loop on the calling thread. Returns the measured figures.
template <class Client>
void drive(Client& c, const Config& cfg, uint32_t size, clockid_t srv_clock, Trial& t,
           bertha::Histogram& rtt) {
    const auto t0 = Clock::now();
    const auto t_measure =
        t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(cfg.warmup));
    const auto t_end = t_measure + std::chrono::duration_cast<Clock::duration>(
                                       std::chrono::duration<double>(cfg.seconds));
    const clockid_t my_clock = bench::thread_cpu_clock(pthread_self());
    uint64_t stamps[kMaxBatch];
    size_t inflight = 0;
    bool measuring = false;
    uint64_t received = 0, timeouts = 0;
    int64_t srv0 = 0, cli0 = 0;
    Clock::time_point m0{};
    rtt.clear();

    auto now = t0;
    for (;;) {
        if (!measuring && now >= t_measure) {
            measuring = true;
            m0 = now;
            srv0 = bench::cpu_ns(srv_clock);
            cli0 = bench::cpu_ns(my_clock);
            received = timeouts = 0;
        }
        if (now >= t_end) break;
        const uint64_t stamp = uint64_t((now - t0).count());
        while (inflight < cfg.window) {
            size_t want = std::min(cfg.batch, cfg.window - inflight);
            size_t sent = c.send(want, size, stamp);
            inflight += sent;
            if (sent < want) break;
        }
        size_t got = c.recv(now + cfg.loss_timeout, stamps);
        now = Clock::now();
        if (got == 0) { // lost: start the window afresh rather than wait for ghosts
            ++timeouts;
            inflight = 0;
            continue;
        }
        inflight -= std::min(got, inflight);
        if (measuring) {
            received += got;
            const uint64_t at = uint64_t((now - t0).count());
            for (size_t i = 0; i < got; ++i) rtt.record(at - std::min(at, stamps[i]));
        }
    }
    const int64_t srv1 = bench::cpu_ns(srv_clock), cli1 = bench::cpu_ns(my_clock);
    t.measured_s = std::chrono::duration<double>(now - m0).count();
    t.received = received;
    t.timeouts = timeouts;
    if (received) {
        t.msgs_per_s = double(received) / t.measured_s;
        t.srv_cpu_us = double(srv1 - srv0) / 1e3 / double(received);
        t.cli_cpu_us = double(cli1 - cli0) / 1e3 / double(received);
        t.rtt_p50_us = double(rtt.percentile(50.0)) / 1e3;
        t.rtt_p99_us = double(rtt.percentile(99.0)) / 1e3;
    }
}

struct Cpus {
    int server = -1, client = -1;
};

// Server thread + client thread for one variant and size. The server is built on its own
// thread (its ring and standing receive belong there), the client on the client thread.
template <class Server, class Client>
Trial run_trial(const Config& cfg, uint32_t size, Cpus cpus, std::string& describe,
                bertha::Histogram& rtt) {
    Trial t;
    std::atomic<int> port{0}; // 0 until the server listens (it dies on failure)
    std::atomic<bool> stop{false};
    std::thread server([&] {
        if (cfg.pin) bench::pin_to(cpus.server);
        Server s(cfg.server_poll);
        if (describe.empty()) describe = s.describe();
        port.store(s.port(), std::memory_order_release);
        while (!stop.load(std::memory_order_relaxed)) s.serve(Clock::now() + cfg.server_poll);
    });
    std::thread client([&] {
        if (cfg.pin) bench::pin_to(cpus.client);
        auto give_up = Clock::now() + 5s;
        while (port.load(std::memory_order_acquire) == 0) {
            if (Clock::now() > give_up) die("the echo server did not start within 5 s");
            std::this_thread::sleep_for(100us);
        }
        {
            Client c(uint16_t(port.load()), cfg.loss_timeout);
            drive(c, cfg, size, bench::thread_cpu_clock(server.native_handle()), t, rtt);
        }
        stop.store(true, std::memory_order_relaxed);
    });
    client.join();
    server.join();
    return t;
}

using TrialFn = Trial (*)(const Config&, uint32_t, Cpus, std::string&, bertha::Histogram&);

struct Variant {
    const char* name;
    TrialFn run;
    std::string describe; // filled by the first trial: the resolved stack, top first
};

using Noop = bertha::noop::Noop;

std::vector<Variant> all_variants() {
    return {
        {"inline", &run_trial<InlineServer, InlineClient>, {}},
        {"stack0", &run_trial<StackServer<Noop, 0>, StackClient<Noop, 0>>, {}},
        {"stack1", &run_trial<StackServer<Noop, 1>, StackClient<Noop, 1>>, {}},
        {"stack3", &run_trial<StackServer<Noop, 3>, StackClient<Noop, 3>>, {}},
        {"stack5", &run_trial<StackServer<Noop, 5>, StackClient<Noop, 5>>, {}},
        {"pass5", &run_trial<StackServer<Pass, 5>, StackClient<Pass, 5>>, {}},
        {"mmsg", &run_trial<MmsgServer, MmsgClient>, {}},
    };
}

// ---- summary and output ------------------------------------------------------------------------

struct Cell {
    uint32_t size = 0;
    const Variant* v = nullptr;
    bench::Summary rate, paired; // msgs/s over reps; per-rep ratio to the baseline's same rep
    double ratio = NAN;          // median(variant) / median(baseline)
    double rtt_p99_us = NAN, srv_cpu_us = NAN, cli_cpu_us = NAN; // medians over reps
    // (server + client CPU per message) / the baseline's: steal time on a shared VM lowers
    // msgs/s but not CPU-µs, so this is the steadier view of the same overhead.
    double cpu_ratio = NAN;
    bench::Summary cpu_paired; // the same within each rep
    uint64_t timeouts = 0;
};

std::vector<Cell> summarize(const Config& cfg, const std::vector<Variant>& vars,
                            const std::vector<Trial>& trials) {
    std::vector<Cell> cells;
    for (uint32_t size : cfg.sizes) {
        auto of = [&](const std::string& name, auto field) {
            std::vector<double> v(size_t(cfg.reps), NAN);
            for (const Trial& t : trials)
                if (t.size == size && t.variant == name) v[size_t(t.rep)] = field(t);
            return v;
        };
        auto rate = [](const Trial& t) { return t.msgs_per_s; };
        std::vector<double> base = of(kBaseline, rate);
        double base_median = bench::median_of(base);
        for (const Variant& var : vars) {
            Cell c;
            c.size = size;
            c.v = &var;
            std::vector<double> r = of(var.name, rate);
            c.rate = bench::summarize(r);
            c.ratio = c.rate.median / base_median;
            std::vector<double> paired(r.size());
            for (size_t i = 0; i < r.size(); ++i) paired[i] = r[i] / base[i];
            c.paired = bench::summarize(paired);
            auto cpu = [](const Trial& t) { return t.srv_cpu_us + t.cli_cpu_us; };
            std::vector<double> cpu_v = of(var.name, cpu), cpu_b = of(kBaseline, cpu);
            for (size_t i = 0; i < cpu_v.size(); ++i) cpu_v[i] /= cpu_b[i];
            c.cpu_paired = bench::summarize(cpu_v);
            c.rtt_p99_us =
                bench::median_of(of(var.name, [](const Trial& t) { return t.rtt_p99_us; }));
            c.srv_cpu_us =
                bench::median_of(of(var.name, [](const Trial& t) { return t.srv_cpu_us; }));
            c.cli_cpu_us =
                bench::median_of(of(var.name, [](const Trial& t) { return t.cli_cpu_us; }));
            for (const Trial& t : trials)
                if (t.size == size && t.variant == var.name) c.timeouts += t.timeouts;
            cells.push_back(c);
        }
        const Cell& base_cell = cells[cells.size() - vars.size()]; // the baseline comes first
        for (size_t i = cells.size() - vars.size(); i < cells.size(); ++i) {
            Cell& c = cells[i];
            c.cpu_ratio =
                (c.srv_cpu_us + c.cli_cpu_us) / (base_cell.srv_cpu_us + base_cell.cli_cpu_us);
        }
    }
    return cells;
}

void print_table(const Config& cfg, const std::vector<Variant>& vars,
                 const std::vector<Cell>& cells, Cpus cpus) {
    std::printf("\nstack_overhead: UDP echo over 127.0.0.1, both ends run the variant "
                "(server CPU %d, client CPU %d)\n",
                cpus.server, cpus.client);
    std::printf("window %zu in flight, <= %zu per send; %d rep(s) x %.2f s after %.2f s warm-up, "
                "variants alternated%s\n",
                cfg.window, cfg.batch, cfg.reps, cfg.seconds, cfg.warmup,
                cfg.quick ? " [--quick: smoke run, not a measurement]" : "");
    std::printf("baseline: %s (its own ring, multishot recvmsg into a provided-buffer ring, "
                "sendmsg batch in one submit; no chunnel code)\n",
                kBaselineText);
    std::printf("ratio: median msgs/s / the baseline's median; paired: the ratio within each rep "
                "(median, min-max);\np99 RTT: median over reps; srv/cli CPU: CPU-us per echoed "
                "message on each thread;\nCPU x: (srv + cli CPU) / the baseline's, the steadier "
                "view on a shared machine (host-side\nstalls lower msgs/s, not CPU-us)\n\n");
    std::printf("%5s  %-7s %9s %9s %9s  %6s  %-19s  %8s  %7s %7s  %6s\n", "size", "variant",
                "msgs/s", "min", "max", "ratio", "paired", "p99 RTT", "srv CPU", "cli CPU",
                "CPU x");
    uint32_t last = 0;
    for (const Cell& c : cells) {
        if (c.size != last && last) std::printf("\n");
        last = c.size;
        char paired[40];
        std::snprintf(paired, sizeof paired, "%.3f (%.3f-%.3f)", c.paired.median, c.paired.min,
                      c.paired.max);
        std::printf("%5u  %-7s %9.0f %9.0f %9.0f  %6.3f  %-19s  %6.0fus  %7.3f %7.3f  %6.3f%s\n",
                    c.size, c.v->name, c.rate.median, c.rate.min, c.rate.max, c.ratio, paired,
                    c.rtt_p99_us, c.srv_cpu_us, c.cli_cpu_us, c.cpu_ratio,
                    c.timeouts ? "  (timeouts)" : "");
    }
    std::printf("\nvariants:\n");
    for (const Variant& v : vars) std::printf("  %-7s %s\n", v.name, v.describe.c_str());
    std::printf("\n");
    std::fflush(stdout);
}

void write_json(const Config& cfg, const std::vector<Variant>& vars,
                const std::vector<Trial>& trials, const std::vector<Cell>& cells, Cpus cpus) {
    if (cfg.out.empty()) return;
    std::string tmp = cfg.out + ".tmp";
    FILE* f = bench::open_output(tmp);
    bench::Json j(f);
    utsname u{};
    uname(&u);
    j.raw("{\n  ");
    j.key("benchmark"), j.str("stack_overhead"), j.raw(",\n  ");
    j.key("what"), j.str("UDP echo msgs/s over 127.0.0.1, both ends running the variant");
    j.raw(",\n  ");
    j.key("baseline"), j.str(kBaseline), j.raw(",\n  ");
    j.key("baseline_text"), j.str(kBaselineText), j.raw(",\n  ");
    j.key("quick"), j.raw(cfg.quick ? "true" : "false"), j.raw(",\n  ");
    j.key("config"), j.raw("{");
    j.key("reps"), j.num(uint64_t(cfg.reps)), j.raw(", ");
    j.key("seconds"), j.num(cfg.seconds), j.raw(", ");
    j.key("warmup_s"), j.num(cfg.warmup), j.raw(", ");
    j.key("window"), j.num(uint64_t(cfg.window)), j.raw(", ");
    j.key("batch"), j.num(uint64_t(cfg.batch)), j.raw(", ");
    j.key("loss_timeout_us"), j.num(uint64_t(cfg.loss_timeout.count())), j.raw(", ");
    j.key("pinned"), j.raw(cfg.pin ? "true" : "false"), j.raw(", ");
    j.key("server_cpu"), j.num(double(cpus.server)), j.raw(", ");
    j.key("client_cpu"), j.num(double(cpus.client)), j.raw(", ");
    j.key("sizes"), j.raw("[");
    for (size_t i = 0; i < cfg.sizes.size(); ++i)
        j.raw(i ? ", " : ""), j.num(uint64_t(cfg.sizes[i]));
    j.raw("]},\n  ");
    j.key("host"), j.raw("{");
    j.key("kernel"), j.str(u.release), j.raw(", ");
    j.key("cpus_online"), j.num(uint64_t(sysconf(_SC_NPROCESSORS_ONLN))), j.raw(", ");
    j.key("udp_multishot"), j.raw(bertha::Udp::kernel_has_multishot() ? "true" : "false");
    j.raw("},\n  ");
    j.key("variants"), j.raw("{");
    for (size_t i = 0; i < vars.size(); ++i)
        j.raw(i ? ", " : ""), j.key(vars[i].name), j.str(vars[i].describe);
    j.raw("},\n  ");
    j.key("summary"), j.raw("[\n");
    for (size_t i = 0; i < cells.size(); ++i) {
        const Cell& c = cells[i];
        j.raw("    {"), j.key("size"), j.num(uint64_t(c.size)), j.raw(", ");
        j.key("variant"), j.str(c.v->name), j.raw(", ");
        j.key("msgs_per_s"), j.raw("{"), j.key("min"), j.num(c.rate.min), j.raw(", ");
        j.key("median"), j.num(c.rate.median), j.raw(", "), j.key("max"), j.num(c.rate.max);
        j.raw("}, "), j.key("ratio"), j.num(c.ratio), j.raw(", ");
        j.key("paired_ratio"), j.raw("{"), j.key("min"), j.num(c.paired.min), j.raw(", ");
        j.key("median"), j.num(c.paired.median), j.raw(", "), j.key("max"), j.num(c.paired.max);
        j.raw("}, "), j.key("rtt_p99_us"), j.num(c.rtt_p99_us), j.raw(", ");
        j.key("srv_cpu_us_per_msg"), j.num(c.srv_cpu_us), j.raw(", ");
        j.key("cli_cpu_us_per_msg"), j.num(c.cli_cpu_us), j.raw(", ");
        j.key("cpu_ratio"), j.num(c.cpu_ratio), j.raw(", ");
        j.key("cpu_paired_ratio"), j.raw("{"), j.key("min"), j.num(c.cpu_paired.min), j.raw(", ");
        j.key("median"), j.num(c.cpu_paired.median), j.raw(", ");
        j.key("max"), j.num(c.cpu_paired.max), j.raw("}, ");
        j.key("timeouts"), j.num(c.timeouts), j.raw(i + 1 < cells.size() ? "},\n" : "}\n");
    }
    j.raw("  ],\n  ");
    j.key("trials"), j.raw("[\n");
    for (size_t i = 0; i < trials.size(); ++i) {
        const Trial& t = trials[i];
        j.raw("    {"), j.key("rep"), j.num(uint64_t(t.rep)), j.raw(", ");
        j.key("order"), j.num(uint64_t(t.order)), j.raw(", ");
        j.key("size"), j.num(uint64_t(t.size)), j.raw(", ");
        j.key("variant"), j.str(t.variant), j.raw(", ");
        j.key("msgs_per_s"), j.num(t.msgs_per_s), j.raw(", ");
        j.key("rtt_p50_us"), j.num(t.rtt_p50_us), j.raw(", ");
        j.key("rtt_p99_us"), j.num(t.rtt_p99_us), j.raw(", ");
        j.key("srv_cpu_us_per_msg"), j.num(t.srv_cpu_us), j.raw(", ");
        j.key("cli_cpu_us_per_msg"), j.num(t.cli_cpu_us), j.raw(", ");
        j.key("received"), j.num(t.received), j.raw(", ");
        j.key("timeouts"), j.num(t.timeouts), j.raw(", ");
        j.key("measured_s"), j.num(t.measured_s), j.raw(i + 1 < trials.size() ? "},\n" : "}\n");
    }
    j.raw("  ]\n}\n");
    if (std::fclose(f) != 0 || std::rename(tmp.c_str(), cfg.out.c_str()) != 0)
        die("cannot write %s: %s", cfg.out.c_str(), strerror(errno));
    std::printf("wrote %s\n", cfg.out.c_str());
}

// The plot's input, next to the JSON: one row per size, and for every variant but the
// baseline its paired msgs/s ratio and paired CPU ratio (median over repetitions of variant /
// baseline in the same repetition: robust to the slow phases of a shared machine, which hit a
// whole repetition), each with the paired min and max (gnuplot's histogram error bars).
void write_tsv(const Config& cfg, const std::vector<Variant>& vars,
               const std::vector<Cell>& cells) {
    if (cfg.out.empty()) return;
    const std::string path = bench::sibling_path(cfg.out, ".tsv");
    FILE* f = bench::open_output(path);
    std::fprintf(f, "size");
    for (size_t i = 1; i < vars.size(); ++i)
        std::fprintf(f, "\t%s\t%s_lo\t%s_hi\t%s_cpu\t%s_cpu_lo\t%s_cpu_hi", vars[i].name,
                     vars[i].name, vars[i].name, vars[i].name, vars[i].name, vars[i].name);
    std::fprintf(f, "\n");
    for (size_t row = 0; row < cells.size(); row += vars.size()) {
        std::fprintf(f, "%u", cells[row].size);
        for (size_t i = 1; i < vars.size(); ++i) {
            const Cell& c = cells[row + i];
            std::fprintf(f, "\t%.4f\t%.4f\t%.4f\t%.4f\t%.4f\t%.4f", c.paired.median, c.paired.min,
                         c.paired.max, c.cpu_paired.median, c.cpu_paired.min, c.cpu_paired.max);
        }
        std::fprintf(f, "\n");
    }
    if (std::fclose(f) != 0) die("cannot write %s: %s", path.c_str(), strerror(errno));
}

} // namespace

int main(int argc, char** argv) {
    Config cfg = parse(argc, argv);

    std::vector<Variant> vars;
    for (const std::string& name : cfg.variants) {
        bool found = false;
        for (Variant& v : all_variants())
            if (name == v.name) vars.push_back(std::move(v)), found = true;
        if (!found) bench::usage_error("unknown variant '%s'", name.c_str());
    }
    if (vars.empty() || std::string(vars.front().name) != kBaseline) {
        std::erase_if(vars, [](const Variant& v) { return std::string(v.name) == kBaseline; });
        vars.insert(vars.begin(), all_variants().front()); // every ratio needs its baseline
    }

    Cpus cpus;
    std::vector<int> allowed = bench::allowed_cpus();
    if (cfg.pin && allowed.size() >= 2)
        cpus = {allowed[0], allowed[1]};
    else
        cfg.pin = false; // one CPU: pinning both threads to it would only add contention

    // Allocated once: the histogram is large and the client thread reuses it trial after trial.
    auto rtt = std::make_unique<bertha::Histogram>();
    std::vector<Trial> trials;
    trials.reserve(size_t(cfg.reps) * cfg.sizes.size() * vars.size());
    const auto started = Clock::now();
    for (int rep = 0; rep < cfg.reps; ++rep) {
        for (uint32_t size : cfg.sizes) {
            for (size_t k = 0; k < vars.size(); ++k) {
                Variant& v = vars[(k + size_t(rep)) % vars.size()];
                Trial t = v.run(cfg, size, cpus, v.describe, *rtt);
                t.rep = rep;
                t.order = k;
                t.size = size;
                t.variant = v.name;
                trials.push_back(t);
            }
        }
        std::fprintf(stderr, "stack_overhead: rep %d/%d done (%.0f s)\n", rep + 1, cfg.reps,
                     std::chrono::duration<double>(Clock::now() - started).count());
    }

    auto cells = summarize(cfg, vars, trials);
    print_table(cfg, vars, cells, cpus);
    write_json(cfg, vars, trials, cells, cpus);
    write_tsv(cfg, vars, cells);
    return 0;
}
