// negotiate: what does agreeing on a stack cost before the first message, and does one server
// keep up when 1,000 clients negotiate at once?
//
// (a) Time to first echoed message: one trial is connect + send one 64-byte message + receive
//     its echo, on a fresh connection, for three variants of the same stack:
//       prearranged  both ends built the stack beforehand; no negotiation (the baseline)
//       1rtt         the client offers, the server picks: one round trip before any data
//       0rtt         the client reuses its cached choice and sends data at once
//     each with the udp base's default pool (512+512 slots) and with a small one (16+16, the
//     '.s16' variants): the default pool's set-up dominates a fresh connection's cost. The six
//     variants alternate trial by trial (the order rotates), in repetitions after a warm-up;
//     every repetition also measures the echo RTT of an established connection, so that an
//     extra cost can be read in round trips.
// (b) Bursts: 1,000 clients (one thread each) released together, each connecting (1-RTT) to
//     one listener; all must succeed and then get an echo back. Connect-time percentiles, the
//     client's CPU per connect and the server's CPU per negotiation; three times: a fresh
//     server that sleeps when idle (the figure of record), the same server spinning, and a
//     flood from 8 threads that connect back to back.
//
// One binary, four roles, so that the two ends can run in different network namespaces:
//   negotiate                           server (a child process) and client over loopback
//   negotiate server --bind ADDR:PORT   listeners on PORT (negotiated), PORT+1 (pre-arranged),
//                                       PORT+2 (burst, negotiated), PORT+3 (control, plain UDP)
//   negotiate client --server ADDR:PORT the measurements against such a server
//   negotiate check  --server ADDR:PORT functional checks (selftests/net/negotiate_test.sh)
// selftests/bench/negotiate_veth.sh runs server and client across a veth pair. The benchmark
// reports; it never judges (check does, on values, never on times). Every wait is bounded:
// connects by negotiation's own retransmission limit, echoes by 1-5 s deadlines, the server by
// --seconds, the control channel by 5 x 300 ms.
#include "bench.hpp"
#include "test_chunnels.hpp" // Header<Tag>: an exact chunnel that puts one byte on the wire

#include "bertha/bertha.hpp"
#include "bertha/discovery.hpp"
#include "noop/noop.hpp"

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fcntl.h>
#include <latch>
#include <map>
#include <memory>
#include <optional>
#include <poll.h>
#include <span>
#include <string>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;
using bench::die;
using bertha::Addr;
using bertha::Clock;
using bertha::Msg;
namespace negotiation = bertha::negotiation;

// ---- the stack ---------------------------------------------------------------------------------

// A compositional chunnel shaped like a shard chunnel: one end runs it, and the server's
// implementation contributes a parameter table (32 bytes) to the answer. It hands messages
// through untouched: what is measured is the negotiation, not the chunnel.
template <char Tag, bertha::Where W> struct Steer {
    using Upper = Msg;
    using Lower = Msg;
    static constexpr char name[] = {'s', 't', 'e', 'e', 'r', '-', Tag, 0};
    static constexpr bertha::ChunnelInfo info{0xbe7c0002,
                                              "steer",
                                              name,
                                              "bench",
                                              bertha::Match::compositional,
                                              bertha::Scope::multilateral,
                                              bertha::Need::none,
                                              W};
    std::vector<uint8_t> params() const { return std::vector<uint8_t>(32, uint8_t(Tag)); }

    template <bertha::Connection Inner> struct Conn {
        using Data = Msg;
        Inner inner;
        bertha::Result<size_t> send(std::span<Msg> b) { return inner.send(b); }
        bertha::Result<size_t> recv(std::span<Msg> b, bertha::Deadline d) {
            return inner.recv(b, d);
        }
        bertha::Result<size_t> alloc(std::span<Msg> out) requires bertha::CanAlloc<Inner> {
            return inner.alloc(out);
        }
        void describe(std::vector<std::string>& out) const {
            out.push_back(bertha::name_of(info));
            inner.describe(out);
        }
        Inner into_inner() && { return std::move(inner); }
    };
    template <bertha::Connection Inner>
    bertha::Result<Conn<Inner>> connect_wrap(Inner&& inner, const bertha::ConnectContext&) const {
        return Conn<Inner>{std::move(inner)};
    }
};

// Two negotiated chunnels (an exact one with two implementations, a compositional one with
// parameters) and a unilateral noop over the udp base. `A`/`B` name the exact chunnel's
// implementations: a client with others than the server's is refused.
template <char A, char B> auto stack_with(bertha::UdpOptions o) {
    using namespace bertha;
    return make_stack(select(test::Header<A>{}, test::Header<B>{}),
                      select(Steer<'s', Where::server>{}, Steer<'c', Where::client>{}),
                      noop::Noop{}, Udp{o});
}
auto bench_stack(bertha::UdpOptions o = {}) {
    return stack_with<'a', 'b'>(o);
}
auto foreign_stack(bertha::UdpOptions o = {}) {
    return stack_with<'c', 'd'>(o);
}
using BenchStack = decltype(bench_stack());
using ClientConn = BenchStack::ClientConn;
constexpr const char* kExpectedStack =
    "header/header-a > steer/steer-s > noop/passthrough > udp/io_uring";

// Burst clients are many: each holds a socket, a ring and a pool of recv+send slots of 2 KiB.
bertha::UdpOptions burst_udp() {
    bertha::UdpOptions o;
    o.recv_slots = 16;
    o.send_slots = 16;
    o.socket_buffer = 256 << 10;
    return o;
}

// Time this thread spent runnable but not running (schedstat): a server that waits for a CPU
// answers late without using more CPU.
double runq_wait_ns() {
    FILE* f = std::fopen("/proc/thread-self/schedstat", "r");
    if (!f) return NAN;
    unsigned long long run = 0, wait = 0;
    int got = std::fscanf(f, "%llu %llu", &run, &wait);
    std::fclose(f);
    return got == 2 ? double(wait) : NAN;
}

int64_t my_cpu_ns() {
    return bench::cpu_ns(CLOCK_THREAD_CPUTIME_ID);
}
double us_since(Clock::time_point t0, Clock::time_point t1) {
    return std::chrono::duration<double, std::micro>(t1 - t0).count();
}

// Nearest-rank percentile of a copy (exact: these samples are few).
double pct(std::vector<double> v, double p) {
    std::erase_if(v, [](double x) { return std::isnan(x); });
    if (v.empty()) return NAN;
    std::sort(v.begin(), v.end());
    size_t k = size_t(std::ceil(p / 100.0 * double(v.size())));
    return v[std::clamp<size_t>(k, 1, v.size()) - 1];
}

Addr with_port(Addr a, int delta) {
    if (a.port() != 0) a.set_port(uint16_t(a.port() + delta));
    return a;
}

// Where a server listens: the negotiated listener's port and the next three.
struct Endpoints {
    Addr neg, pre, burst, control;
    static Endpoints from(const Addr& base) {
        return {base, with_port(base, 1), with_port(base, 2), with_port(base, 3)};
    }
};

// The message every trial sends: [kind | stamp u64 | filler]. Kind 'q' asks the server to
// forget the peer after echoing (clients never say goodbye over UDP, and a server that polls
// every peer it ever saw slows down); 'e' keeps it.
bool fill(Msg& m, char kind, uint64_t stamp, size_t size) {
    if (!m.resize(size)) return false;
    std::memset(m.data(), 0x5a, size);
    m.data()[0] = std::byte(kind);
    std::memcpy(m.data() + 1, &stamp, sizeof stamp);
    return true;
}
bool is_echo(const Msg& m, uint64_t stamp) {
    return m.size() >= 9 && std::memcmp(m.data() + 1, &stamp, sizeof stamp) == 0;
}

// Send one message and wait for its echo. "" on success, else what went wrong.
// `send_cpu_ns`: the CPU time of the send() call (zero-RTT bookkeeping happens there).
template <class C>
std::string ping(C& conn, char kind, uint64_t stamp, size_t size, Clock::time_point deadline,
                 int64_t* send_cpu_ns = nullptr) {
    Msg out[1];
    auto a = conn.alloc(std::span(out));
    if (!a || *a != 1) return "alloc: " + (a ? std::string("no buffer") : a.error().what());
    if (!fill(out[0], kind, stamp, size)) return "message size does not fit a slot";
    const int64_t c0 = send_cpu_ns ? my_cpu_ns() : 0;
    auto s = conn.send(std::span(out));
    if (send_cpu_ns) *send_cpu_ns = my_cpu_ns() - c0;
    if (!s) return "send: " + s.error().what();
    Msg in[4];
    for (int rounds = 0; rounds < 64; ++rounds) { // bounded; the deadline bounds the time
        auto n = conn.recv(std::span(in), deadline);
        if (!n) return "recv: " + n.error().what();
        if (*n == 0) return "no echo before the deadline";
        bool got = false;
        for (size_t i = 0; i < *n; ++i) {
            got = got || is_echo(in[i], stamp);
            in[i].release();
        }
        if (got) return "";
    }
    return "64 receives without the echo";
}

// ---- control: plain UDP text, outside Bertha --------------------------------------------------
// "stats" -> "key value" lines; "mode spin" / "mode block"; "stop". Asking for figures never
// goes through what is measured.

using Stats = std::map<std::string, std::string>;

Stats parse_stats(const std::string& text) {
    Stats s;
    size_t i = 0;
    while (i < text.size()) {
        size_t nl = text.find('\n', i);
        if (nl == std::string::npos) nl = text.size();
        std::string line = text.substr(i, nl - i);
        size_t sp = line.find(' ');
        if (sp != std::string::npos) s[line.substr(0, sp)] = line.substr(sp + 1);
        i = nl + 1;
    }
    return s;
}
double num(const Stats& s, const std::string& key) {
    auto it = s.find(key);
    if (it == s.end()) return NAN;
    char* end = nullptr;
    double v = std::strtod(it->second.c_str(), &end);
    return end == it->second.c_str() ? NAN : v;
}
double delta(const Stats& a, const Stats& b, const std::string& key) {
    return num(b, key) - num(a, key);
}

// One request, one answer; retried (5 x 300 ms) because it is UDP.
std::optional<std::string> ask(const Addr& control, const std::string& cmd) {
    int fd = socket(control.family(), SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return std::nullopt;
    std::optional<std::string> out;
    if (::connect(fd, control.sa(), control.len()) == 0) {
        std::vector<char> buf(65536);
        for (int attempt = 0; attempt < 5 && !out; ++attempt) {
            if (send(fd, cmd.data(), cmd.size(), 0) < 0) break;
            pollfd p{fd, POLLIN, 0};
            if (poll(&p, 1, 300) != 1) continue;
            ssize_t n = recv(fd, buf.data(), buf.size(), 0);
            if (n > 0) out.emplace(buf.data(), size_t(n));
            if (n < 0 && errno == ECONNREFUSED) break; // nobody there (any more)
        }
    }
    close(fd);
    return out;
}
Stats stats_of(const Addr& control) {
    auto r = ask(control, "stats");
    if (!r) die("the server's control port %s does not answer", control.to_string().c_str());
    return parse_stats(*r);
}

// ---- the server --------------------------------------------------------------------------------

// One thread: three listeners of the same stack and a control socket; echoes what accepted
// peers send. Two limits of the library shape it (both reported in selftests/bench/README.md):
// there is no call that waits for "a new peer or data for any accepted peer", and a look that
// finds nothing (accept or recv at a past deadline) is a timed io_uring wait that costs ~16 us
// here. So the loop looks at each listener's ring once per round (accept pumps the ring and
// files data for accepted peers into their queues), and reads its peers only when that ring
// has received something since their last reading. Two modes, switched over the control port:
//  - spin (the latency trials): the negotiated and pre-arranged listeners every round, never
//    sleeping: a reply waits at most one round (two looks) for the loop to come by;
//  - block (the burst): sleeps in the burst listener's accept() (1 ms slices) when idle, so
//    that the server's CPU time is its work; the other listeners are looked at once per ms.
class Server {
  public:
    using Listener = BenchStack::Listener;
    using Peer = Listener::PeerConn;
    enum class Mode { spin, block };

    explicit Server(const Addr& base) : cpu0_(my_cpu_ns()), batch_(32) {
        auto stack = bench_stack();
        const negotiation::Options opts[3] = {{}, bertha::prearranged, {}};
        for (int i = 0; i < 3; ++i) {
            Addr at = with_port(base, i);
            auto l = stack.listen(at, opts[i]);
            if (!l)
                die("server: listen on %s: %s", at.to_string().c_str(), l.error().what().c_str());
            sides_[i].l.emplace(std::move(*l));
        }
        Addr ctl = with_port(base, 3);
        ctl_ = socket(ctl.family(), SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (ctl_ < 0 || ::bind(ctl_, ctl.sa(), ctl.len()) != 0)
            die("server: control socket on %s: %s", ctl.to_string().c_str(), strerror(errno));
        sockaddr_in6 name{};
        socklen_t len = sizeof name;
        getsockname(ctl_, reinterpret_cast<sockaddr*>(&name), &len);
        at_ = {sides_[0].l->base().local(), sides_[1].l->base().local(),
               sides_[2].l->base().local(),
               Addr::from_sockaddr(reinterpret_cast<sockaddr*>(&name), len)};
    }
    ~Server() {
        if (ctl_ >= 0) close(ctl_);
    }
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    const Endpoints& at() const { return at_; }

    // Until "stop", SIGINT/SIGTERM, or `end`.
    void run(Clock::time_point end) {
        // The 1 us looks (poll_deadline) are timed waits, and a timed wait may overrun by the
        // thread's timer slack (50 us by default).
        prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
        auto last_sweep = Clock::now();
        Clock::time_point next_other{};
        while (!stop_ && !bench::stop_requested) {
            const auto now = Clock::now();
            if (now >= end) break;
            ++loops_;
            const bool other = now >= next_other; // what this mode looks at once per ms
            if (other) next_other = now + 1ms;
            bool busy = false;
            if (mode_ == Mode::spin || other) {
                busy |= serve(sides_[kNeg], poll_deadline(), now);
                busy |= serve(sides_[kPre], poll_deadline(), now);
            }
            if (mode_ == Mode::block || other) busy |= serve(sides_[kBurst], poll_deadline(), now);
            if (mode_ == Mode::spin || other) busy |= control();
            if (now - last_sweep >= 100ms) {
                sweep(now);
                last_sweep = now;
            }
            if (!busy && mode_ == Mode::block)
                serve(sides_[kBurst], Clock::now() + 1ms, Clock::now());
        }
    }

    // "key value" lines: every counter, for `stats` and for the exit report.
    std::string stats() {
        std::string s;
        auto put = [&](const std::string& k, const std::string& v) { s += k + " " + v + "\n"; };
        auto putn = [&](const std::string& k, double v) {
            char b[64];
            std::snprintf(b, sizeof b, "%.0f", v);
            put(k, b);
        };
        putn("cpu_ns", double(my_cpu_ns() - cpu0_));
        putn("runq_wait_ns", runq_wait_ns());
        putn("wall_ns", double((Clock::now() - t0_).count()));
        put("mode", mode_ == Mode::spin ? "spin" : "block");
        for (Side& d : sides_) {
            std::string p = std::string(d.name) + ".";
            putn(p + "accepted", double(d.accepted));
            putn(p + "accept_cpu_ns", double(d.peer_cpu_ns));
            putn(p + "accept_cpu_max_ns", double(d.peer_cpu_max_ns));
            putn(p + "calls", double(d.calls));
            putn(p + "calls_cpu_ns", double(d.calls_cpu_ns));
            putn(p + "refused", double(d.l->refused()));
            putn(p + "expired", double(d.l->expired()));
            putn(p + "negotiating", double(d.l->negotiating()));
            putn(p + "peers", double(d.peers.size()));
            const bertha::UdpStats& u = d.l->base().stats();
            putn(p + "rx", double(u.received));
            putn(p + "tx", double(u.sent));
            putn(p + "send_errors", double(u.send_errors));
            putn(p + "dropped_backlog", double(u.dropped_backlog));
            putn(p + "dropped_queue_full", double(u.dropped_queue_full));
        }
        putn("loops", double(loops_));
        putn("echoed", double(echoed_));
        putn("closed", double(closed_));
        putn("dropped_idle", double(dropped_idle_));
        putn("errors", double(errors_));
        put("last_error", last_error_.empty() ? "-" : last_error_);
        return s;
    }

  private:
    static constexpr int kNeg = 0, kPre = 1, kBurst = 2;
    struct Live {
        Peer conn;
        Clock::time_point last;
    };
    struct Side {
        const char* name;
        Clock::duration idle; // a peer silent this long is forgotten (see sweep)
        std::optional<Listener> l;
        std::vector<Live> peers;
        uint64_t peers_rx = ~uint64_t(0); // the ring's receive count when peers were last read
        Clock::time_point last_accept{};
        uint64_t accepted = 0, calls = 0;
        int64_t peer_cpu_ns = 0, peer_cpu_max_ns = 0, calls_cpu_ns = 0;
    };

    // One look at the listener that never waits.
    static bertha::Deadline poll_deadline() { return bertha::no_wait; }

    // One listener's round: accept, then read its peers if the ring received anything since.
    // Burst peers wait until the burst has been quiet for 20 ms: reading 1,000 idle peers
    // costs 1,000 looks, which must not show in the connect times being measured.
    bool serve(Side& d, bertha::Deadline deadline, Clock::time_point now) {
        bool busy = accept_all(d, deadline);
        if (d.peers.empty()) return busy;
        if (&d == &sides_[kBurst] && now - d.last_accept < 20ms) return busy;
        uint64_t rx = d.l->base().stats().received;
        if (rx == d.peers_rx) return busy;
        d.peers_rx = rx; // reading may receive more: then the count moves and the next round reads
        return echo(d.peers, now) || busy;
    }

    // Accept what is ready (at most 64: a flood must not starve the peers). The CPU time of a
    // call that returned a peer is that peer's negotiation as the server pays it: receiving
    // the offer, deciding, encoding and sending the answer, and building the stack.
    bool accept_all(Side& d, bertha::Deadline deadline) {
        bool any = false;
        for (int k = 0; k < 64; ++k) {
            const int64_t c0 = my_cpu_ns();
            auto r = d.l->accept(deadline);
            const int64_t used = my_cpu_ns() - c0;
            ++d.calls;
            d.calls_cpu_ns += used;
            if (!r) {
                note_error(std::string(d.name) + " accept: " + r.error().what());
                return any;
            }
            if (!*r) return any;
            ++d.accepted;
            d.peer_cpu_ns += used;
            d.peer_cpu_max_ns = std::max(d.peer_cpu_max_ns, used);
            d.last_accept = Clock::now();
            d.peers.push_back(Live{std::move(**r), d.last_accept});
            d.peers_rx = ~uint64_t(0); // the new peer may hold data already
            any = true;
            deadline = poll_deadline();
        }
        return any;
    }

    // Echo whatever the peers sent; forget a peer after a 'q' message or an error.
    bool echo(std::vector<Live>& peers, Clock::time_point now) {
        bool any = false;
        for (size_t i = 0; i < peers.size();) {
            Live& p = peers[i];
            bool forget = false;
            for (int round = 0; round < 4; ++round) { // bounded: one busy peer waits for others
                auto n = p.conn.recv(std::span(batch_), bertha::no_wait);
                if (!n) {
                    note_error("peer recv: " + n.error().what());
                    forget = true;
                    break;
                }
                if (*n == 0) break;
                any = true;
                p.last = now;
                for (size_t k = 0; k < *n; ++k)
                    if (batch_[k].size() && batch_[k].data()[0] == std::byte('q')) forget = true;
                auto s = p.conn.send(std::span(batch_).first(*n));
                if (!s) {
                    note_error("peer send: " + s.error().what());
                    forget = true;
                    break;
                }
                echoed_ += *n;
                if (*n < batch_.size()) break;
            }
            if (forget) {
                ++closed_;
                if (i + 1 != peers.size()) peers[i] = std::move(peers.back());
                peers.pop_back();
                continue;
            }
            ++i;
        }
        return any;
    }

    // Peers that never said 'q' (a client that failed mid-trial) go after a while.
    void sweep(Clock::time_point now) {
        for (Side& d : sides_) {
            for (size_t i = 0; i < d.peers.size();) {
                if (now - d.peers[i].last < d.idle) {
                    ++i;
                    continue;
                }
                ++dropped_idle_;
                if (i + 1 != d.peers.size()) d.peers[i] = std::move(d.peers.back());
                d.peers.pop_back();
            }
        }
    }

    bool control() {
        char buf[256];
        sockaddr_in6 from{};
        socklen_t len = sizeof from;
        ssize_t n =
            recvfrom(ctl_, buf, sizeof buf, MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from), &len);
        if (n <= 0) return false;
        std::string cmd(buf, size_t(n));
        while (!cmd.empty() && (cmd.back() == '\n' || cmd.back() == ' ')) cmd.pop_back();
        std::string reply = "ok";
        if (cmd == "stats")
            reply = stats();
        else if (cmd == "mode spin")
            mode_ = Mode::spin;
        else if (cmd == "mode block")
            mode_ = Mode::block;
        else if (cmd == "stop")
            stop_ = true;
        else
            reply = "error: unknown command '" + cmd + "'";
        sendto(ctl_, reply.data(), reply.size(), 0, reinterpret_cast<sockaddr*>(&from), len);
        return true;
    }

    void note_error(std::string what) {
        ++errors_;
        for (char& c : what)
            if (c == '\n') c = ' ';
        last_error_ = std::move(what);
    }

    const Clock::time_point t0_ = Clock::now();
    const int64_t cpu0_;
    Side sides_[3] = {{"neg", 2s, {}, {}}, {"pre", 2s, {}, {}}, {"burst", 30s, {}, {}}};
    Endpoints at_;
    int ctl_ = -1;
    Mode mode_ = Mode::spin;
    bool stop_ = false;
    std::vector<Msg> batch_;
    uint64_t loops_ = 0, echoed_ = 0, closed_ = 0, dropped_idle_ = 0, errors_ = 0;
    std::string last_error_;
};

// ---- configuration -----------------------------------------------------------------------------

struct Config : bench::Common { // reps, pin (folded into cpu), quick, out
    Config() { reps = 7; }
    std::string role; // "", "server", "client", "check"
    int trials = 150; // per variant and repetition
    int warmup = 30;  // per variant, before the first repetition
    int pings = 20;   // established-connection echoes per repetition (the RTT yardstick)
    size_t size = 64;
    size_t clients = 1000;
    size_t threads = 0; // 0: one per client
    int cpu = -2;       // -2: automatic; -1: no pinning
    bool stop_server = false;
    std::string label;
    std::string bind = "127.0.0.1:0";
    std::string server;
    double seconds = 300; // the server's own bound
};

Config parse(int argc, char** argv) {
    Config c;
    CLI::App app("negotiate [server|client|check] [OPTIONS]: the role, if any, comes first.\n"
                 "With no role: server (child process) and client over loopback.\n"
                 "server --bind ADDR:PORT [--seconds S] [--out FILE]\n"
                 "client --server ADDR:PORT [--label TEXT] [--stop-server] [options]\n"
                 "check  --server ADDR:PORT [--clients N]  functional checks; exit 1 on failure\n"
                 "The server listens on PORT (negotiated), PORT+1 (pre-arranged), PORT+2 (burst) "
                 "and\nPORT+3 (control: plain UDP text 'stats', 'mode spin|block', 'stop').",
                 "negotiate");
    app.footer("--quick: a smoke run (1 rep of 20 trials, 100 burst clients); numbers mean "
               "nothing.\nBaseline: the same stack pre-arranged at both ends (no negotiation).");
    bench::add_common(app, c);
    app.add_option("role", c.role, "server, client or check; none: both over loopback")
        ->check(CLI::IsMember({"server", "client", "check"}));
    app.add_option("--trials", c.trials, "per variant and repetition")->capture_default_str();
    app.add_option("--warmup", c.warmup, "per variant, before the first repetition")
        ->capture_default_str();
    app.add_option("--pings", c.pings, "established-connection echoes per repetition")
        ->capture_default_str();
    app.add_option("--size", c.size, "message size, bytes")->capture_default_str();
    app.add_option("--clients", c.clients, "burst clients (check: 200)")->capture_default_str();
    app.add_option("--burst-threads", c.threads, "0: one per client")->capture_default_str();
    app.add_option("--cpu", c.cpu, "the client's CPU (default: automatic)");
    app.add_option("--label", c.label, "what the run is, in the results");
    app.add_flag("--stop-server", c.stop_server, "client: stop the server at the end");
    app.add_option("--bind", c.bind, "server: ADDR:PORT to listen on")->capture_default_str();
    app.add_option("--server", c.server, "client, check: the server's ADDR:PORT");
    app.add_option("--seconds", c.seconds, "server: how long it may run")->capture_default_str();
    bench::parse(app, c, argc, argv);
    if (!c.role.empty() && c.role != argv[1])
        bench::usage_error("the role (%s) must come first", c.role.c_str());
    if (bench::last_given(app, {"--cpu", "--no-pin"}) == "--no-pin") c.cpu = -1;
    if (c.role == "check" && app.count("--clients") == 0) c.clients = 200;
    if (bench::quick_sets(app, "--trials")) c.trials = 20;
    if (bench::quick_sets(app, "--warmup")) c.warmup = 5;
    if (bench::quick_sets(app, "--pings")) c.pings = 10;
    if (bench::quick_sets(app, "--clients")) c.clients = std::min<size_t>(c.clients, 100);
    if (c.reps < 1 || c.trials < 1 || c.warmup < 0 || c.pings < 1)
        bench::usage_error("--reps, --trials and --pings must be >= 1, --warmup >= 0");
    if (c.size < 9 || c.size > 1400)
        bench::usage_error("--size must be 9..1400 bytes (a stamp; one slot)");
    if (c.clients < 1 || c.clients > 20000) bench::usage_error("--clients must be 1..20000");
    if (c.seconds <= 0) bench::usage_error("--seconds must be > 0");
    if (c.role == "client" && c.server.empty())
        bench::usage_error("client needs --server ADDR:PORT");
    if (c.role == "server" && c.bind == "127.0.0.1:0")
        bench::usage_error(
            "server needs --bind ADDR:PORT with a fixed port (the client finds PORT+1..3)");
    // A smoke run must not overwrite the results of a real one; the veth script names its own.
    if (c.role != "check" && c.role != "server")
        bench::resolve_out(c, c.role == "client" ? "negotiate" : "negotiate.loopback");
    if (c.label.empty())
        c.label = c.role.empty() ? "loopback 127.0.0.1, server and client in two processes"
                                 : "client role";
    return c;
}

Addr parse_addr(const std::string& text) {
    auto a = Addr::parse(text);
    if (!a) die("bad address '%s': %s", text.c_str(), a.error().what().c_str());
    return *a;
}

// Each burst client holds two descriptors (socket, ring); a few more come and go (netlink).
void raise_nofile(size_t clients) {
    rlimit r{};
    getrlimit(RLIMIT_NOFILE, &r);
    rlim_t want = rlim_t(clients) * 2 + 256;
    if (r.rlim_cur >= want) return;
    r.rlim_cur = std::min(std::max(want, r.rlim_cur), r.rlim_max);
    if (r.rlim_cur < want && geteuid() == 0) r.rlim_cur = r.rlim_max = want;
    if (setrlimit(RLIMIT_NOFILE, &r) != 0 || r.rlim_cur < want)
        die("%zu clients need %lu file descriptors; the limit is %lu (ulimit -n)", clients,
            (unsigned long)want, (unsigned long)r.rlim_cur);
}

// Server on the first allowed CPU, client (and all its threads) on the second.
struct Cpus {
    int server = -1, client = -1;
};
Cpus pick_cpus(int requested, bool is_server) {
    Cpus c;
    std::vector<int> allowed = bench::allowed_cpus();
    if (requested == -1) return c;
    if (requested >= 0) {
        (is_server ? c.server : c.client) = requested;
        return c;
    }
    if (allowed.size() >= 2) c = {allowed[0], allowed[1]};
    return c;
}

// ---- (a) time to first echo --------------------------------------------------------------------

struct Variant {
    std::string name;
    std::string text;
    const BenchStack* stack;
    negotiation::Options opts;
    Addr at;
    const char* expect; // ClientConn::negotiation() once the echo is back
    size_t baseline;    // index of the variant it is compared with
};

// The three ways to the first message, for each client stack given (each with its own pool
// size; `suffix` tells them apart). Every group's first variant is its baseline.
std::vector<Variant> variants_for(const Endpoints& at,
                                  std::vector<std::pair<std::string, const BenchStack*>> stacks) {
    std::vector<Variant> out;
    for (auto& [suffix, stack] : stacks) {
        const size_t base = out.size();
        auto add = [&](const char* name, const char* text, negotiation::Options opts,
                       const Addr& to, const char* expect) {
            out.push_back({name + suffix, text, stack, opts, to, expect, base});
        };
        add("prearranged", "the stack built at both ends beforehand, no negotiation (baseline)",
            bertha::prearranged, at.pre, "pre-arranged");
        add("1rtt", "negotiated: offer, then the server's pick, then data (zero_rtt=false)",
            negotiation::Options{.zero_rtt = false}, at.neg, "1-rtt");
        add("0rtt", "negotiated from the cached choice: data goes with the offer", {}, at.neg,
            "0-rtt (accepted)");
    }
    return out;
}

struct Trial {
    int rep = -1, variant = 0;
    bool ok = false;
    double first_us = NAN;       // connect() called -> echo received
    double connect_us = NAN;     // connect() call
    double cpu_connect_us = NAN; // client thread CPU in connect()
    double cpu_first_us = NAN;   // client thread CPU, connect() called -> echo received
    double cpu_send_us = NAN;    // client thread CPU in the first send()
    double wait_us = NAN;        // connect() time not spent on the CPU: waiting for the server
    double close_us = NAN;       // destroying the connection (not part of first_us)
};

template <class T> void destroy(T&& x) {
    T gone = std::move(x);
}

// One fresh connection: connect, one message, its echo. `error` says what went wrong.
Trial one_trial(const Variant& v, size_t size, uint64_t stamp, std::string& error,
                std::string* stack_text = nullptr) {
    Trial t;
    const int64_t c0 = my_cpu_ns();
    const auto t0 = Clock::now();
    auto conn = v.stack->connect(v.at, v.opts);
    const auto t1 = Clock::now();
    const int64_t c1 = my_cpu_ns();
    if (!conn) {
        error = "connect: " + conn.error().what();
        return t;
    }
    int64_t send_ns = 0;
    error = ping(*conn, 'q', stamp, size, t0 + 1s, &send_ns);
    const auto t2 = Clock::now();
    const int64_t c2 = my_cpu_ns();
    if (error.empty() && conn->negotiation() != v.expect)
        error = "negotiation() says '" + conn->negotiation() + "', expected '" + v.expect + "'";
    if (stack_text) *stack_text = bertha::describe(*conn);
    destroy(std::move(*conn));
    t.close_us = us_since(t2, Clock::now());
    t.ok = error.empty();
    t.first_us = us_since(t0, t2);
    t.connect_us = us_since(t0, t1);
    t.cpu_connect_us = double(c1 - c0) / 1e3;
    t.cpu_first_us = double(c2 - c0) / 1e3;
    t.cpu_send_us = double(send_ns) / 1e3;
    t.wait_us = std::max(0.0, t.connect_us - t.cpu_connect_us);
    return t;
}

// Echo RTTs on one established pre-arranged connection: what a round trip costs here.
std::vector<double> established_rtts(const BenchStack& stack, const Endpoints& at, int n,
                                     size_t size, uint64_t& stamp, std::string& error) {
    std::vector<double> out;
    auto conn = stack.connect(at.pre, bertha::prearranged);
    if (!conn) {
        error = "connect: " + conn.error().what();
        return out;
    }
    for (int i = 0; i <= n && error.empty(); ++i) {
        auto t0 = Clock::now();
        error = ping(*conn, i == n ? 'q' : 'e', ++stamp, size, t0 + 1s);
        if (error.empty() && i < n) out.push_back(us_since(t0, Clock::now()));
    }
    return out;
}

// Where a connect's client CPU goes, outside any trial: the route lookup discovery does for
// every connect, making and closing the udp base, and building the offer.
struct Phases {
    double probe_us = NAN, offer_us = NAN;
    double base_open_us[2] = {NAN, NAN}, base_close_us[2] = {NAN, NAN}; // default, small pool
};
Phases measure_phases(const BenchStack& stack, const Endpoints& at, int n) {
    Phases ph;
    int64_t c0 = my_cpu_ns();
    for (int i = 0; i < n; ++i) (void)bertha::probe(&at.neg);
    ph.probe_us = double(my_cpu_ns() - c0) / 1e3 / n;

    for (int k = 0; k < 2; ++k) {
        const bertha::Udp udp(k == 0 ? bertha::UdpOptions{} : burst_udp());
        std::vector<bertha::UdpConn> conns;
        conns.reserve(size_t(n));
        c0 = my_cpu_ns();
        for (int i = 0; i < n; ++i) {
            auto c = udp.connect(at.neg);
            if (!c) die("udp connect: %s", c.error().what().c_str());
            conns.push_back(std::move(*c));
        }
        int64_t c1 = my_cpu_ns();
        conns.clear();
        ph.base_open_us[k] = double(c1 - c0) / 1e3 / n;
        ph.base_close_us[k] = double(my_cpu_ns() - c1) / 1e3 / n;
    }

    const bertha::HostFacts& host = bertha::probe(&at.neg).facts;
    c0 = my_cpu_ns();
    size_t bytes = 0;
    for (int i = 0; i < n; ++i) {
        auto o = stack.offer(host, bertha::Side::client);
        if (!o) die("offer: %s", o.error().what().c_str());
        uint64_t fp = bertha::wire::fingerprint(*o);
        auto dgs = bertha::wire::frame(bertha::wire::Type::offer, 0, fp, bertha::wire::encode(*o));
        bytes += dgs.empty() ? 0 : dgs[0].size();
    }
    ph.offer_us = double(my_cpu_ns() - c0) / 1e3 / n;
    if (bytes == 0) die("the offer did not encode");
    return ph;
}

// ---- (b) the burst -----------------------------------------------------------------------------

struct Burst {
    std::string mode; // the server's: "block" (sleeps when idle) or "spin"
    size_t clients = 0, threads = 0, connected = 0, echoed = 0;
    std::map<std::string, size_t> errors; // distinct error -> how many clients
    std::vector<double> connect_us;       // each connect() call
    std::vector<double> done_ms;          // release -> that client connected
    std::vector<double> cpu_us;           // client thread CPU per connect()
    double wall_ms = NAN;                 // release -> the last connect() returned
    Stats before, after;                  // the server's counters around the connects
};

Burst run_burst(const Endpoints& at, size_t clients, size_t threads, size_t size,
                const std::string& mode) {
    Burst b;
    b.mode = mode;
    b.clients = clients;
    b.threads = threads == 0 ? clients : std::min(threads, clients);
    const auto stack = bench_stack(burst_udp());
    struct Out {
        std::vector<std::string> errors;
        std::vector<double> connect_us, done_ms, cpu_us;
        size_t echoed = 0;
    };
    std::vector<Out> outs(b.threads);
    std::latch ready(ptrdiff_t(b.threads)), go(1), connected(ptrdiff_t(b.threads)), verify(1);
    Clock::time_point release{};

    auto body = [&](size_t t) {
        Out& o = outs[t];
        const size_t first = t * clients / b.threads, last = (t + 1) * clients / b.threads;
        std::vector<ClientConn> conns;
        conns.reserve(last - first);
        ready.count_down();
        go.wait();
        for (size_t i = first; i < last; ++i) {
            const int64_t c0 = my_cpu_ns();
            const auto t0 = Clock::now();
            auto c = stack.connect(at.burst, negotiation::Options{.zero_rtt = false});
            const auto t1 = Clock::now();
            const int64_t c1 = my_cpu_ns();
            if (!c) {
                o.errors.push_back(c.error().what());
                continue;
            }
            if (c->negotiation() != "1-rtt") {
                o.errors.push_back("negotiation() says '" + c->negotiation() + "'");
                continue;
            }
            o.connect_us.push_back(us_since(t0, t1));
            o.done_ms.push_back(us_since(release, t1) / 1e3);
            o.cpu_us.push_back(double(c1 - c0) / 1e3);
            conns.push_back(std::move(*c));
        }
        connected.count_down();
        verify.wait();
        // Every connected client gets an echo through its negotiated stack (the server
        // forgets it after). All send first, then all wait, against one deadline.
        const auto deadline = Clock::now() + 5s;
        std::vector<bool> sent(conns.size());
        for (size_t k = 0; k < conns.size(); ++k) {
            Msg out[1];
            auto a = conns[k].alloc(std::span(out));
            if (!a || *a != 1 || !fill(out[0], 'q', first + k, size)) continue;
            sent[k] = bool(conns[k].send(std::span(out)));
        }
        for (size_t k = 0; k < conns.size(); ++k) {
            if (!sent[k]) {
                o.errors.push_back("verification: could not send");
                continue;
            }
            Msg in[4];
            bool got = false;
            for (int rounds = 0; rounds < 16 && !got; ++rounds) {
                auto n = conns[k].recv(std::span(in), deadline);
                if (!n || *n == 0) break;
                for (size_t i = 0; i < *n; ++i) got = got || is_echo(in[i], first + k);
            }
            if (got)
                ++o.echoed;
            else
                o.errors.push_back("verification: no echo within 5 s");
        }
    };

    std::vector<std::thread> pool;
    pool.reserve(b.threads);
    try {
        for (size_t t = 0; t < b.threads; ++t) pool.emplace_back(body, t);
    } catch (const std::system_error& e) {
        die("could not start %zu client threads (%s); try --burst-threads", b.threads, e.what());
    }
    ready.wait();
    if (!ask(at.control, "mode " + mode)) die("the server's control port does not answer");
    b.before = stats_of(at.control);
    release = Clock::now();
    go.count_down();
    connected.wait();
    const auto all_done = Clock::now();
    b.after = stats_of(at.control);
    verify.count_down();
    for (auto& th : pool) th.join();
    (void)ask(at.control, "mode spin");

    b.wall_ms = 0;
    for (Out& o : outs) {
        for (auto& e : o.errors) ++b.errors[e];
        b.connect_us.insert(b.connect_us.end(), o.connect_us.begin(), o.connect_us.end());
        b.done_ms.insert(b.done_ms.end(), o.done_ms.begin(), o.done_ms.end());
        b.cpu_us.insert(b.cpu_us.end(), o.cpu_us.begin(), o.cpu_us.end());
        b.echoed += o.echoed;
    }
    b.connected = b.connect_us.size();
    b.wall_ms = us_since(release, all_done) / 1e3;
    return b;
}

// ---- the client: measurements, table, JSON ---------------------------------------------------

struct VariantSummary {
    double p50 = NAN, p99 = NAN, max = NAN, ratio = NAN, extra_us = NAN;
    bench::Summary paired; // per repetition: median / the baseline's median
    double connect_p50 = NAN, connect_p99 = NAN, cpu_connect_p50 = NAN, cpu_first_p50 = NAN;
    double cpu_send_p50 = NAN, wait_p50 = NAN;
    double close_p50 = NAN;
    size_t ok = 0, failed = 0;
};

struct Results {
    std::string label;
    std::vector<Variant> vars;
    std::vector<Trial> trials;
    std::vector<std::vector<double>> rtt_by_rep;
    std::vector<double> rtts;
    std::map<std::string, size_t> trial_errors;
    std::vector<VariantSummary> sum;
    Phases phases;
    Stats srv_before, srv_after; // around the measured trials
    std::vector<Burst> bursts;
    double seconds = 0;
};

void summarize(Results& r, int reps) {
    const size_t V = r.vars.size();
    r.sum.assign(V, {});
    auto of = [&](size_t v, int rep, double Trial::*field) {
        std::vector<double> out;
        for (const Trial& t : r.trials)
            if (size_t(t.variant) == v && t.ok && (rep < 0 || t.rep == rep))
                out.push_back(t.*field);
        return out;
    };
    for (size_t v = 0; v < V; ++v) {
        VariantSummary& s = r.sum[v];
        auto first = of(v, -1, &Trial::first_us);
        s.p50 = pct(first, 50);
        s.p99 = pct(first, 99);
        s.max = pct(first, 100);
        s.connect_p50 = pct(of(v, -1, &Trial::connect_us), 50);
        s.connect_p99 = pct(of(v, -1, &Trial::connect_us), 99);
        s.cpu_connect_p50 = pct(of(v, -1, &Trial::cpu_connect_us), 50);
        s.cpu_first_p50 = pct(of(v, -1, &Trial::cpu_first_us), 50);
        s.cpu_send_p50 = pct(of(v, -1, &Trial::cpu_send_us), 50);
        s.wait_p50 = pct(of(v, -1, &Trial::wait_us), 50);
        s.close_p50 = pct(of(v, -1, &Trial::close_us), 50);
        for (const Trial& t : r.trials)
            if (size_t(t.variant) == v) (t.ok ? s.ok : s.failed) += 1;
        std::vector<double> paired;
        for (int rep = 0; rep < reps; ++rep)
            paired.push_back(pct(of(v, rep, &Trial::first_us), 50) /
                             pct(of(r.vars[v].baseline, rep, &Trial::first_us), 50));
        s.paired = bench::summarize(paired);
    }
    for (size_t v = 0; v < V; ++v) {
        const VariantSummary& base = r.sum[r.vars[v].baseline];
        r.sum[v].ratio = r.sum[v].p50 / base.p50;
        r.sum[v].extra_us = r.sum[v].p50 - base.p50;
    }
}

// Server CPU per accepted peer on one listener between two snapshots, in us.
double srv_cpu_per_peer(const Stats& a, const Stats& b, const std::string& side) {
    return delta(a, b, side + ".accept_cpu_ns") / 1e3 / delta(a, b, side + ".accepted");
}

void print_results(const Config& cfg, const Results& r) {
    std::printf("\nnegotiate: time to first echoed message (connect + send %zu B + receive the "
                "echo, fresh connection each trial)\n",
                cfg.size);
    std::printf("transport: %s; %d rep(s) x %d trials per variant after %d warm-up, variants "
                "alternated%s\n",
                r.label.c_str(), cfg.reps, cfg.trials, cfg.warmup,
                cfg.quick ? " [--quick: smoke run, not a measurement]" : "");
    std::printf("stack: %s (2 negotiated chunnels); client udp pool: default 512+512 slots, "
                "or '.s16' 16+16\n",
                kExpectedStack);
    std::printf("baseline: prearranged (the same stack at both ends, no negotiation; same pool); "
                "ratio: p50 / the baseline's p50;\npaired: the same within each repetition "
                "(median, min-max); +us: p50 minus the baseline's p50\n\n");
    std::printf("%-16s %7s %7s %7s %6s  %-19s %7s  %7s %7s %6s  %7s %7s %7s %7s  %s\n", "variant",
                "p50", "p99", "max", "ratio", "paired", "+p50", "conn", "conn99", "wait", "cpu",
                "cpu snd", "cpu all", "close", "failed");
    for (size_t v = 0; v < r.vars.size(); ++v) {
        const VariantSummary& s = r.sum[v];
        char paired[48];
        std::snprintf(paired, sizeof paired, "%.3f (%.3f-%.3f)", s.paired.median, s.paired.min,
                      s.paired.max);
        if (v && r.vars[v].baseline == v) std::printf("\n");
        std::printf("%-16s %7.1f %7.1f %7.1f %6.3f  %-19s %+7.1f  %7.1f %7.1f %6.1f  %7.1f %7.1f "
                    "%7.1f %7.1f  %zu/%zu\n",
                    r.vars[v].name.c_str(), s.p50, s.p99, s.max, s.ratio, paired, s.extra_us,
                    s.connect_p50, s.connect_p99, s.wait_p50, s.cpu_connect_p50, s.cpu_send_p50,
                    s.cpu_first_p50, s.close_p50, s.failed, s.ok + s.failed);
    }
    const double rtt50 = pct(r.rtts, 50), rtt99 = pct(r.rtts, 99);
    std::printf("\n(all in us, p50 unless named; conn: the connect() call; wait: its time off the "
                "CPU (waiting for the server);\n cpu: client thread CPU in connect(); cpu snd: in "
                "the first send(); cpu all: connect() to echo;\n close: destroying the "
                "connection, not part of the time to first echo)\n");
    std::printf("established-connection echo RTT (same stack, pre-arranged): p50 %.1f us, p99 "
                "%.1f us (%zu echoes)\n",
                rtt50, rtt99, r.rtts.size());
    // The round trip a 1-RTT connect waits for is its time off the CPU; 0-RTT should wait none.
    for (size_t g = 0; g + 2 < r.vars.size(); g += 3)
        std::printf("%-17s 1-RTT connect waits %.1f us for the answer (%.2f echo RTTs), first echo "
                    "%+.1f us;\n%-17s 0-RTT connect waits %.1f us, first echo %+.1f us\n",
                    (r.vars[g].name + ":").c_str(), r.sum[g + 1].wait_p50,
                    r.sum[g + 1].wait_p50 / rtt50, r.sum[g + 1].extra_us, "", r.sum[g + 2].wait_p50,
                    r.sum[g + 2].extra_us);

    const double srv_neg = srv_cpu_per_peer(r.srv_before, r.srv_after, "neg");
    const double srv_pre = srv_cpu_per_peer(r.srv_before, r.srv_after, "pre");
    std::printf("\nCPU-us per connection, p50 (server: mean over the trials)\n");
    std::printf("%-16s %10s %10s %10s   %10s\n", "client pool", "pre cli", "1-RTT cli", "0-RTT cli",
                "1-RTT extra");
    for (size_t g = 0; g + 2 < r.vars.size(); g += 3)
        std::printf("%-16s %10.1f %10.1f %10.1f   %+10.1f\n", r.vars[g].name.c_str(),
                    r.sum[g].cpu_connect_p50, r.sum[g + 1].cpu_connect_p50,
                    r.sum[g + 2].cpu_connect_p50,
                    r.sum[g + 1].cpu_connect_p50 - r.sum[g].cpu_connect_p50);
    std::printf("%-16s %10.1f %10.1f %10s   %+10.1f   (the accept() call that returned the "
                "peer)\n",
                "server", srv_pre, srv_neg, "(same)", srv_neg - srv_pre);
    std::printf("client connect() phases, CPU-us each: route lookup (discovery) %.1f; offer "
                "build+encode %.1f;\n  udp base open/close: default pool %.1f/%.1f, 16+16 pool "
                "%.1f/%.1f\n",
                r.phases.probe_us, r.phases.offer_us, r.phases.base_open_us[0],
                r.phases.base_close_us[0], r.phases.base_open_us[1], r.phases.base_close_us[1]);
    if (!r.trial_errors.empty()) {
        std::printf("trial errors:\n");
        for (auto& [e, n] : r.trial_errors) std::printf("  %zu x %s\n", n, e.c_str());
    }

    for (const Burst& b : r.bursts) {
        const double negs = delta(b.before, b.after, "burst.accepted");
        std::printf(
            "\nburst %zu: %zu clients released at once, %zu threads on the client CPU (pools "
            "of 16+16), server %s%s;\n  1-RTT connect to one listener, then one echo each\n",
            size_t(&b - r.bursts.data()) + 1, b.clients, b.threads,
            b.mode == "block" ? "sleeps when idle" : "spins",
            &b == r.bursts.data() ? " (fresh: its first burst)" : "");
        std::printf("  connected %zu/%zu, echoed %zu/%zu, %.1f ms from release to the last "
                    "connect\n",
                    b.connected, b.clients, b.echoed, b.clients, b.wall_ms);
        std::printf("  connect() call     p50 %8.2f ms  p99 %8.2f ms  max %8.2f ms\n",
                    pct(b.connect_us, 50) / 1e3, pct(b.connect_us, 99) / 1e3,
                    pct(b.connect_us, 100) / 1e3);
        std::printf("  release->connected p50 %8.2f ms  p99 %8.2f ms  max %8.2f ms\n",
                    pct(b.done_ms, 50), pct(b.done_ms, 99), pct(b.done_ms, 100));
        std::printf("  client CPU per connect p50 %.1f us (p99 %.1f)\n", pct(b.cpu_us, 50),
                    pct(b.cpu_us, 99));
        std::printf("  server: %.0f negotiations, CPU per negotiation %.1f us in accept()", negs,
                    delta(b.before, b.after, "burst.accept_cpu_ns") / 1e3 / negs);
        if (b.mode == "block")
            std::printf(", %.1f us all-in (thread CPU over the burst / negotiations)",
                        delta(b.before, b.after, "cpu_ns") / 1e3 / negs);
        std::printf("\n");
        std::printf("  server: waited %.1f ms for a CPU during the burst\n",
                    delta(b.before, b.after, "runq_wait_ns") / 1e6);
        std::printf(
            "  server: %.0f datagrams received for %.0f peers (%.0f retransmitted offers), "
            "dropped for a full backlog %.0f, refused %.0f, expired %.0f\n",
            delta(b.before, b.after, "burst.rx"), negs, delta(b.before, b.after, "burst.rx") - negs,
            delta(b.before, b.after, "burst.dropped_backlog"),
            delta(b.before, b.after, "burst.refused"), delta(b.before, b.after, "burst.expired"));
        for (auto& [e, n] : b.errors) std::printf("  FAILED %zu x %s\n", n, e.c_str());
    }
    std::printf("\n(Rust Bertha, for reference: 96-135 us to first data with zero-RTT, 80-90 us "
                "without negotiation, on loopback)\n\n");
    std::fflush(stdout);
}

void json_stats(bench::Json& j, const Stats& s) {
    j.raw("{");
    bool first = true;
    for (auto& [k, v] : s) {
        j.raw(first ? "" : ", ");
        first = false;
        j.key(k);
        // Counters are integers in the text; written as they are, not rounded to 6 digits.
        if (std::isnan(num(s, k)) || v.find_first_not_of("-0123456789") != std::string::npos)
            j.str(v);
        else
            j.raw(v);
    }
    j.raw("}");
}

void write_json(const Config& cfg, const Results& r) {
    if (cfg.out.empty()) return;
    std::string tmp = cfg.out + ".tmp";
    FILE* f = bench::open_output(tmp);
    bench::Json j(f);
    auto kv = [&](const char* k, double v, bool last = false) {
        j.key(k), j.num(v), j.raw(last ? "" : ", ");
    };
    utsname u{};
    uname(&u);
    j.raw("{\n  ");
    j.key("benchmark"), j.str("negotiate"), j.raw(",\n  ");
    j.key("what"), j.str("time to first echoed message on a fresh connection (connect + send + "
                         "echo), and 1,000 clients negotiating at once");
    j.raw(",\n  ");
    j.key("transport"), j.str(r.label), j.raw(",\n  ");
    j.key("baseline"), j.str("prearranged"), j.raw(",\n  ");
    j.key("stack"), j.str(kExpectedStack), j.raw(",\n  ");
    j.key("quick"), j.raw(cfg.quick ? "true" : "false"), j.raw(",\n  ");
    j.key("config"), j.raw("{");
    kv("reps", cfg.reps), kv("trials", cfg.trials), kv("warmup", cfg.warmup);
    kv("pings", cfg.pings), kv("size", double(cfg.size)), kv("clients", double(cfg.clients));
    kv("seconds", r.seconds, true);
    j.raw("},\n  ");
    j.key("host"), j.raw("{");
    j.key("kernel"), j.str(u.release), j.raw(", ");
    kv("cpus_online", double(sysconf(_SC_NPROCESSORS_ONLN)), true);
    j.raw("},\n  ");
    j.key("summary"), j.raw("[\n");
    for (size_t v = 0; v < r.vars.size(); ++v) {
        const VariantSummary& s = r.sum[v];
        j.raw("    {"), j.key("variant"), j.str(r.vars[v].name), j.raw(", ");
        j.key("baseline"), j.str(r.vars[r.vars[v].baseline].name), j.raw(", ");
        j.key("text"), j.str(r.vars[v].text), j.raw(", ");
        j.key("first_echo_us"), j.raw("{");
        kv("p50", s.p50), kv("p99", s.p99), kv("max", s.max, true);
        j.raw("}, ");
        kv("ratio", s.ratio);
        j.key("paired_ratio"), j.raw("{");
        kv("min", s.paired.min), kv("median", s.paired.median), kv("max", s.paired.max, true);
        j.raw("}, ");
        kv("extra_us", s.extra_us), kv("connect_p50_us", s.connect_p50);
        kv("connect_p99_us", s.connect_p99), kv("client_cpu_connect_us", s.cpu_connect_p50);
        kv("client_cpu_first_echo_us", s.cpu_first_p50), kv("close_p50_us", s.close_p50);
        kv("client_cpu_first_send_us", s.cpu_send_p50), kv("connect_wait_p50_us", s.wait_p50);
        kv("ok", double(s.ok)), kv("failed", double(s.failed), true);
        j.raw(v + 1 < r.vars.size() ? "},\n" : "}\n");
    }
    j.raw("  ],\n  ");
    j.key("established_rtt_us"), j.raw("{");
    kv("p50", pct(r.rtts, 50)), kv("p99", pct(r.rtts, 99)), kv("n", double(r.rtts.size()), true);
    j.raw("},\n  ");
    j.key("client_phases_cpu_us"), j.raw("{");
    kv("route_lookup", r.phases.probe_us), kv("offer_build", r.phases.offer_us);
    kv("udp_open_default_pool", r.phases.base_open_us[0]);
    kv("udp_close_default_pool", r.phases.base_close_us[0]);
    kv("udp_open_16_16_pool", r.phases.base_open_us[1]);
    kv("udp_close_16_16_pool", r.phases.base_close_us[1], true);
    j.raw("},\n  ");
    j.key("server_cpu_per_peer_us"), j.raw("{");
    kv("negotiated", srv_cpu_per_peer(r.srv_before, r.srv_after, "neg"));
    kv("prearranged", srv_cpu_per_peer(r.srv_before, r.srv_after, "pre"), true);
    j.raw("},\n  ");
    j.key("trial_errors"), j.raw("{");
    {
        bool first = true;
        for (auto& [e, n] : r.trial_errors) {
            j.raw(first ? "" : ", ");
            first = false;
            j.key(e), j.num(uint64_t(n));
        }
    }
    j.raw("},\n  ");
    j.key("bursts"), j.raw("[\n");
    for (size_t i = 0; i < r.bursts.size(); ++i) {
        const Burst& b = r.bursts[i];
        const double negs = delta(b.before, b.after, "burst.accepted");
        j.raw("    {"), j.key("server_mode"), j.str(b.mode), j.raw(", ");
        kv("clients", double(b.clients)), kv("threads", double(b.threads));
        kv("connected", double(b.connected)), kv("echoed", double(b.echoed));
        kv("wall_ms", b.wall_ms);
        j.key("connect_us"), j.raw("{");
        kv("p50", pct(b.connect_us, 50)), kv("p99", pct(b.connect_us, 99));
        kv("max", pct(b.connect_us, 100), true);
        j.raw("}, "), j.key("done_ms"), j.raw("{");
        kv("p50", pct(b.done_ms, 50)), kv("p99", pct(b.done_ms, 99));
        kv("max", pct(b.done_ms, 100), true);
        j.raw("}, ");
        kv("client_cpu_per_connect_us", pct(b.cpu_us, 50));
        kv("server_negotiations", negs);
        kv("server_cpu_per_negotiation_us",
           delta(b.before, b.after, "burst.accept_cpu_ns") / 1e3 / negs);
        // Spinning, the thread's CPU time is the burst's wall time: only accept() is its work.
        kv("server_cpu_all_in_per_negotiation_us",
           b.mode == "block" ? delta(b.before, b.after, "cpu_ns") / 1e3 / negs : NAN);
        kv("server_runq_wait_ms", delta(b.before, b.after, "runq_wait_ns") / 1e6);
        j.key("errors"), j.raw("{");
        bool first = true;
        for (auto& [e, n] : b.errors) {
            j.raw(first ? "" : ", ");
            first = false;
            j.key(e), j.num(uint64_t(n));
        }
        j.raw("}, "), j.key("server_before"), json_stats(j, b.before);
        j.raw(", "), j.key("server_after"), json_stats(j, b.after);
        j.raw(i + 1 < r.bursts.size() ? "},\n" : "}\n");
    }
    j.raw("  ],\n  ");
    j.key("server_before_trials"), json_stats(j, r.srv_before), j.raw(",\n  ");
    j.key("server_after_trials"), json_stats(j, r.srv_after), j.raw(",\n  ");
    j.key("trials"), j.raw("[\n");
    for (size_t i = 0; i < r.trials.size(); ++i) {
        const Trial& t = r.trials[i];
        j.raw("    {"), kv("rep", t.rep), j.key("variant"), j.str(r.vars[size_t(t.variant)].name);
        j.raw(", "), j.key("ok"), j.raw(t.ok ? "true, " : "false, ");
        kv("first_echo_us", t.first_us), kv("connect_us", t.connect_us);
        kv("client_cpu_connect_us", t.cpu_connect_us), kv("client_cpu_send_us", t.cpu_send_us);
        kv("client_cpu_first_echo_us", t.cpu_first_us), kv("close_us", t.close_us, true);
        j.raw(i + 1 < r.trials.size() ? "},\n" : "}\n");
    }
    j.raw("  ]\n}\n");
    if (std::fclose(f) != 0 || std::rename(tmp.c_str(), cfg.out.c_str()) != 0)
        die("cannot write %s: %s", cfg.out.c_str(), strerror(errno));
    std::printf("wrote %s\n", cfg.out.c_str());
}

// The plot's input, next to the JSON: one row per variant, time to first echo p50 and p99, and
// the paired ratio to its baseline with its min and max.
void write_tsv(const Config& cfg, const Results& r) {
    if (cfg.out.empty()) return;
    const std::string path = bench::sibling_path(cfg.out, ".tsv");
    FILE* f = bench::open_output(path);
    std::fprintf(f, "variant\tp50_us\tp99_us\tratio\tratio_lo\tratio_hi\n");
    for (size_t v = 0; v < r.vars.size(); ++v) {
        const VariantSummary& s = r.sum[v];
        std::fprintf(f, "%s\t%.1f\t%.1f\t%.4f\t%.4f\t%.4f\n", r.vars[v].name.c_str(), s.p50, s.p99,
                     s.paired.median, s.paired.min, s.paired.max);
    }
    if (std::fclose(f) != 0) die("cannot write %s: %s", path.c_str(), strerror(errno));
}

// The measurements against a running server (its own thread or another namespace).
int run_client(const Config& cfg, const Endpoints& at, const std::string& label) {
    const auto started = Clock::now();
    raise_nofile(cfg.clients);
    Results r;
    r.label = label;
    const auto stack = bench_stack(), small = bench_stack(burst_udp());
    r.vars = variants_for(at, {{"", &stack}, {".s16", &small}});
    negotiation::ZeroRttCache::instance().clear();
    uint64_t stamp = uint64_t(Clock::now().time_since_epoch().count());
    std::string err;

    // Fill the zero-RTT cache (and discovery's) with one negotiated connect.
    Variant prime = r.vars[1];
    prime.opts.zero_rtt = true;
    one_trial(prime, cfg.size, ++stamp, err);
    if (!err.empty())
        die("the first connect to %s failed: %s", at.neg.to_string().c_str(), err.c_str());
    const size_t V = r.vars.size();
    for (int w = 0; w < cfg.warmup; ++w)
        for (size_t v = 0; v < V; ++v) one_trial(r.vars[v], cfg.size, ++stamp, err);

    r.srv_before = stats_of(at.control);
    r.trials.reserve(size_t(cfg.reps * cfg.trials) * V);
    for (int rep = 0; rep < cfg.reps; ++rep) {
        auto rtts = established_rtts(stack, at, cfg.pings, cfg.size, stamp, err);
        if (!err.empty()) ++r.trial_errors["established echo: " + err];
        r.rtts.insert(r.rtts.end(), rtts.begin(), rtts.end());
        for (int i = 0; i < cfg.trials; ++i) {
            for (size_t k = 0; k < V; ++k) {
                size_t v = (k + size_t(i + rep)) % V; // each variant leads and follows in turn
                Trial t = one_trial(r.vars[v], cfg.size, ++stamp, err);
                t.rep = rep;
                t.variant = int(v);
                if (!t.ok) ++r.trial_errors[std::string(r.vars[v].name) + ": " + err];
                r.trials.push_back(t);
            }
        }
        std::fprintf(stderr, "negotiate: rep %d/%d done (%.1f s)\n", rep + 1, cfg.reps,
                     std::chrono::duration<double>(Clock::now() - started).count());
    }
    r.srv_after = stats_of(at.control);
    r.phases = measure_phases(stack, at, cfg.quick ? 10 : 50);
    summarize(r, cfg.reps);

    // 1. The figure of record: a server that has not seen a burst before, sleeping when idle
    //    (so that its CPU time is its work), and every client on its own thread.
    // 2. The same with the server spinning: no wake-ups inside accept(), and the per-peer
    //    queues the first burst allocated are reused.
    // 3. A flood rather than a herd: 8 threads, each connecting again as soon as it can.
    r.bursts.push_back(run_burst(at, cfg.clients, cfg.threads, cfg.size, "block"));
    if (!cfg.quick) {
        r.bursts.push_back(run_burst(at, cfg.clients, cfg.threads, cfg.size, "spin"));
        r.bursts.push_back(run_burst(at, cfg.clients, 8, cfg.size, "block"));
    }
    r.seconds = std::chrono::duration<double>(Clock::now() - started).count();
    print_results(cfg, r);
    write_json(cfg, r);
    write_tsv(cfg, r);
    return 0;
}

// ---- check: functional, across namespaces ------------------------------------------------------

int run_check(const Config& cfg, const Endpoints& at) {
    raise_nofile(cfg.clients);
    int failures = 0;
    auto verdict = [&](bool ok, const std::string& what, const std::string& why) {
        std::printf("%s  %s%s%s\n", ok ? "ok  " : "FAIL", what.c_str(), ok ? "" : ": ",
                    ok ? "" : why.c_str());
        std::fflush(stdout);
        failures += !ok;
    };
    negotiation::ZeroRttCache::instance().clear();
    const Stats s0 = stats_of(at.control);
    const auto stack = bench_stack();
    auto vars = variants_for(at, {{"", &stack}});
    uint64_t stamp = 1000;
    std::string err, text;

    one_trial(vars[0], cfg.size, ++stamp, err, &text);
    verdict(err.empty() && text == kExpectedStack, "pre-arranged connect and echo",
            err.empty() ? "the stack is '" + text + "'" : err);

    Variant first = vars[1];
    first.opts.zero_rtt = true; // the cache is empty: this must negotiate in one round trip
    one_trial(first, cfg.size, ++stamp, err, &text);
    verdict(err.empty() && text == kExpectedStack, "1-RTT connect and echo",
            err.empty() ? "the stack is '" + text + "', expected '" + kExpectedStack + "'" : err);

    one_trial(vars[2], cfg.size, ++stamp, err, &text);
    verdict(err.empty() && text == kExpectedStack, "0-RTT reconnect accepted, echo",
            err.empty() ? "the stack is '" + text + "'" : err);

    Burst b = run_burst(at, cfg.clients, cfg.threads, cfg.size, "block");
    std::string why;
    for (auto& [e, n] : b.errors) why += std::to_string(n) + " x " + e + "; ";
    const double accepted = delta(b.before, b.after, "burst.accepted");
    if (accepted != double(cfg.clients))
        why += "the server accepted " + std::to_string(accepted) + " peers";
    verdict(b.connected == cfg.clients && b.echoed == cfg.clients && accepted == cfg.clients,
            std::to_string(cfg.clients) + " simultaneous clients connect (1-RTT) and get an echo",
            std::to_string(b.connected) + " connected, " + std::to_string(b.echoed) + " echoed; " +
                why);

    auto bad = foreign_stack().connect(at.neg, negotiation::Options{.zero_rtt = false});
    std::string msg = bad ? "" : bad.error().what();
    verdict(!bad && bad.error().code == bertha::Errc::incompatible &&
                bad.error().component == "header" &&
                msg.find("chunnel 'header'") != std::string::npos &&
                msg.find("header-c, header-d") != std::string::npos &&
                msg.find("header-a, header-b") != std::string::npos,
            "an incompatible client is refused, naming the chunnel",
            bad ? "it connected (" + bad->negotiation() + ")" : "the error was: " + msg);
    if (!bad) std::printf("      refusal: %s\n", msg.c_str());

    const Stats s1 = stats_of(at.control);
    verdict(delta(s0, s1, "neg.refused") == 1, "the server counted exactly one refusal",
            "it counted " + std::to_string(delta(s0, s1, "neg.refused")));
    verdict(num(s1, "errors") == 0, "the server saw no errors",
            s1.count("last_error") ? s1.at("last_error") : "?");
    std::printf("%s\n", failures ? "negotiate check: FAILED" : "negotiate check: all passed");
    return failures ? 1 : 0;
}

// ---- roles
// ---------------------------------------------------------------------------------------

int run_server(const Config& cfg) {
    bench::stop_on_signals();
    Cpus cpus = pick_cpus(cfg.cpu, true);
    bench::pin_to(cpus.server);
    Server srv(parse_addr(cfg.bind));
    const Endpoints& at = srv.at();
    // On stderr: stdout carries only the exit report (JSON) when there is no --out.
    std::fprintf(stderr,
                 "negotiate server: listening on %s (negotiated), %s (pre-arranged), %s (burst), "
                 "%s (control); CPU %d; up to %.0f s\n",
                 at.neg.to_string().c_str(), at.pre.to_string().c_str(),
                 at.burst.to_string().c_str(), at.control.to_string().c_str(), cpus.server,
                 cfg.seconds);
    srv.run(Clock::now() + std::chrono::duration_cast<Clock::duration>(
                               std::chrono::duration<double>(cfg.seconds)));
    // The exit report: every counter, as one JSON object.
    Stats s = parse_stats(srv.stats());
    FILE* f = cfg.out.empty() ? stdout : std::fopen(cfg.out.c_str(), "w");
    if (!f) die("cannot write %s: %s", cfg.out.c_str(), strerror(errno));
    bench::Json j(f);
    json_stats(j, s);
    j.raw("\n");
    if (f != stdout) std::fclose(f);
    std::fflush(stdout);
    return 0;
}

// Server and client over loopback (the default, --quick, and check without --server). The
// server is a child process, not a thread: 1,000 client threads mapping their buffers would
// otherwise hold up the server on the address space's lock (mmap_lock), and the burst would
// measure that instead of negotiation. Forked before any thread exists; the child dies with us.
int run_local(const Config& cfg, bool check) {
    Cpus cpus = pick_cpus(cfg.cpu, false);
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) die("pipe: %s", strerror(errno));
    std::fflush(stdout);
    pid_t child = fork();
    if (child < 0) die("fork: %s", strerror(errno));
    if (child == 0) {
        close(fds[0]);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        bench::stop_on_signals();
        bench::pin_to(cpus.server);
        Server srv(parse_addr("127.0.0.1:0"));
        const Endpoints& at = srv.at();
        std::string line = at.neg.to_string() + " " + at.pre.to_string() + " " +
                           at.burst.to_string() + " " + at.control.to_string() + "\n";
        if (write(fds[1], line.data(), line.size()) != ssize_t(line.size())) _exit(1);
        close(fds[1]);
        srv.run(Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                   std::chrono::duration<double>(cfg.seconds)));
        _exit(0);
    }
    close(fds[1]);
    pollfd p{fds[0], POLLIN, 0};
    char buf[512];
    ssize_t n = poll(&p, 1, 5000) == 1 ? read(fds[0], buf, sizeof buf - 1) : -1;
    close(fds[0]);
    if (n <= 0) {
        kill(child, SIGKILL);
        waitpid(child, nullptr, 0);
        die("the server process did not start within 5 s");
    }
    buf[n] = 0;
    char a[4][128];
    if (std::sscanf(buf, "%127s %127s %127s %127s", a[0], a[1], a[2], a[3]) != 4)
        die("the server process said '%s'", buf);
    const Endpoints at{parse_addr(a[0]), parse_addr(a[1]), parse_addr(a[2]), parse_addr(a[3])};
    bench::pin_to(cpus.client); // burst threads inherit it
    int rc = check ? run_check(cfg, at) : run_client(cfg, at, cfg.label);
    (void)ask(at.control, "stop");
    for (int i = 0; i < 500; ++i) { // 5 s, then it is ended
        if (waitpid(child, nullptr, WNOHANG) == child) return rc;
        std::this_thread::sleep_for(10ms);
    }
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
    return rc;
}

} // namespace

int main(int argc, char** argv) {
    Config cfg = parse(argc, argv);
    if (cfg.role == "server") return run_server(cfg);
    if (cfg.role.empty()) return run_local(cfg, false);
    if (cfg.server.empty()) return run_local(cfg, true); // check with no --server: in-process
    Cpus cpus = pick_cpus(cfg.cpu, false);
    bench::pin_to(cpus.client);
    const Endpoints at = Endpoints::from(parse_addr(cfg.server));
    if (!ask(at.control, "stats"))
        die("no negotiate server answers at %s (control port)", at.control.to_string().c_str());
    int rc = cfg.role == "check" ? run_check(cfg, at) : run_client(cfg, at, cfg.label);
    if (cfg.stop_server) (void)ask(at.control, "stop");
    return rc;
}
