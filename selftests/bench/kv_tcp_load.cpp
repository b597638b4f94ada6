// kv_tcp_load: `kv load` over TCP, for servers that speak memcached's text protocol only over
// TCP (twemproxy/nutcracker; memcached's -p port). selftests/bench/shard.sh drives nutcracker
// with it as the outside reference of the shard benchmark; `kv load` (UDP) drives the others.
//
//   kv_tcp_load --server ADDR:PORT [--connections C] [--mode closed|open] [--window W]
//               [--rate R] [--keys K] [--dist uniform|zipf] [--key-size B] ... [--json]
//   kv_tcp_load [--quick]      no --server: starts memcached on 127.0.0.1 (a free TCP port),
//                              preloads, runs a closed and an open loop, writes
//                              kv_tcp_load.loopback.json (--quick: .quick.json) next to itself
//                              (what `make bench` and `make test`'s smoke run start)
//
// The request model is kv load's (examples/kv/load_model.hpp): key n of --keys, uniform or Zipf,
// exactly --key-size bytes ("key:000000000042"), --get-ratio gets, sets of --value-size bytes,
// one seed for everything. The JSON has kv load --json's field names (plus "connections"), so a
// report reads both alike.
//
// How: one thread, C non-blocking TCP connections (TCP_NODELAY), ppoll over them. Requests are
// pipelined: each connection keeps a FIFO of what it asked, and memcached (and nutcracker) answer
// in order on a connection, so a reply is matched to the FIFO's head. Closed loop: --window
// requests in flight over all connections, each reply (or loss) sends the next, connections
// taken in turn. Open loop: Poisson arrivals at --rate, each on the next connection in turn;
// latency runs from the intended send time, so a stalled client or server shows in the tail
// (no coordinated omission); send_lag_us says how far behind its schedule the client wrote.
// A request unanswered after --timeout-ms is counted lost; its reply, when it comes, is `late`
// (TCP loses nothing, so a loss here means the server is more than the timeout behind).
// Latencies go into bertha::Histogram (at most 0.8% above the exact value). Every wait is
// bounded: ppoll by the next arrival, expiry or 10 ms; the run by --warmup-s + --duration-s +
// --timeout-ms; the preload by 30 s.
#include "bench.hpp"

#include "bertha/addr.hpp"
#include "bertha/fd.hpp"
#include "bertha/histogram.hpp"
#include "examples/kv/load_model.hpp"

#include <fcntl.h>
#include <memory>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

namespace {

using namespace bertha::kv::load;
using bertha::Fd;
using bertha::Histogram;

constexpr uint64_t kMs = 1000000;
constexpr size_t kRxBuf = 256 * 1024;
constexpr size_t kTxMax = 4 << 20; // bytes waiting for a connection's socket; beyond: unsent

uint64_t now_ns() noexcept {
    timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

struct Options {
    std::string server;
    uint32_t connections = 8;
    bool open_loop = false;
    uint32_t window = 16;
    double rate = 10000;
    uint64_t keys = 10000;
    bool zipf = false;
    double zipf_s = 0.99;
    uint32_t key_size = 16, value_size = 32;
    double get_ratio = 0.9;
    double warmup_s = 1, duration_s = 5;
    uint32_t timeout_ms = 500;
    uint64_t seed = 1;
    bool preload = false, json = false, quick = false;
    std::string out; // the smoke run's JSON (default: next to the binary)
};

enum class Op : uint8_t { get, set };
enum class Kind : uint8_t { hit, miss, stored, error };

struct Req {
    uint64_t t_ns = 0; // intended (open loop) or actual (closed loop) send time
    uint64_t key = 0;
    Op op = Op::get;
    bool measured = false;
    bool lost = false; // expired: its reply, when it comes, is late
};

struct Counts {
    uint64_t sent = 0, replies = 0, gets = 0, hits = 0, misses = 0, sets = 0, errors = 0, lost = 0;
};

// One TCP connection: the FIFO of requests it carries (a ring), bytes not yet written, bytes
// read but not yet parsed.
struct Conn {
    Fd fd;
    std::vector<Req> ring;
    size_t head = 0, count = 0; // ring[head .. head+count) in order of sending
    size_t unexpired = 0;       // ring index offset from head of the first request not lost
    std::vector<char> tx;
    size_t tx_off = 0;
    std::vector<char> rx;
    size_t rx_len = 0;
    bool dead = false;

    Req& at(size_t i) { return ring[(head + i) & (ring.size() - 1)]; }
    bool full() const { return count == ring.size(); }
};

class Engine {
  public:
    Engine(const Options& o, std::vector<Fd> fds)
        : o_(o), hist_(std::make_unique<Histogram>()), lag_(std::make_unique<Histogram>()),
          keys_(o.keys, o.zipf, o.zipf_s), rng_(o.seed) {
        // Room for everything that may be in flight on a connection: the window, or the
        // arrivals of one timeout (twice, for the requests kept until their late replies).
        const double span = o.open_loop ? o.rate * o.timeout_ms / 1000.0 : o.window;
        const size_t ring =
            std::bit_ceil(std::max<size_t>(4096, size_t(2 * span / double(fds.size())) + 1024));
        conns_.resize(fds.size());
        for (size_t i = 0; i < fds.size(); ++i) {
            conns_[i].fd = std::move(fds[i]);
            conns_[i].ring.resize(ring);
            conns_[i].tx.reserve(1 << 20);
            conns_[i].rx.resize(kRxBuf);
        }
        pfds_.resize(conns_.size());
        get_ = "get " + std::string(o.key_size, 'k') + "\r\n";
        std::string v(o.value_size, 'v');
        for (size_t i = 0; i < v.size(); ++i) v[i] = char('a' + i % 26);
        set_ = "set " + std::string(o.key_size, 'k') + " 0 0 " + std::to_string(o.value_size) +
               "\r\n" + v + "\r\n";
        expected_key_.resize(o.key_size);
        lag_t_.reserve(4096);
    }

    // Sets every key once, a window of sets in flight. Returns the keys not stored.
    uint64_t preload() {
        preloading_ = true;
        preload_next_ = 0;
        stored_ = 0;
        warm_end_ = end_ = 0;
        const uint32_t window = std::max<uint32_t>(o_.window, 64);
        refill_ = window;
        const uint64_t deadline = now_ns() + 30000 * kMs;
        for (uint64_t pass = 0; pass < 100000000; ++pass) {
            const uint64_t now = now_ns();
            if (now >= deadline || alive() == 0) break;
            expire(now);
            for (; refill_ > 0 && preload_next_ < o_.keys; --refill_)
                if (!queue(preload_next_, Op::set, now, false)) break;
            if (preload_next_ == o_.keys && inflight_ == 0) break;
            flush_all();
            wait(now, now + 10 * kMs);
        }
        preloading_ = false;
        drop_outstanding();
        return o_.keys - stored_;
    }

    void run() {
        const uint64_t t0 = now_ns();
        warm_end_ = t0 + uint64_t(o_.warmup_s * 1e9);
        end_ = warm_end_ + uint64_t(o_.duration_s * 1e9);
        const uint64_t stop = end_ + o_.timeout_ms * kMs + 100 * kMs;
        PoissonArrivals arrivals(o_.open_loop ? o_.rate : 1.0, t0, o_.seed + 1);
        refill_ = o_.open_loop ? 0 : o_.window;
        // Bounded by `stop` (time) and by a pass count no run reaches.
        for (uint64_t pass = 0; pass < 4000000000ull; ++pass) {
            const uint64_t now = now_ns();
            if (now >= stop || alive() == 0) break;
            expire(now);
            uint64_t wake = stop;
            if (now < end_) {
                if (o_.open_loop) {
                    // Everything due, up to 128 a pass: if the client falls behind, the intended
                    // times stay and the latency shows it.
                    for (uint32_t n = 0; arrivals.next_ns() <= now && n < 128; ++n) {
                        issue(arrivals.next_ns());
                        arrivals.advance();
                    }
                    wake = std::min(wake, arrivals.next_ns());
                } else {
                    for (uint32_t n = 0; refill_ > 0 && n < o_.window; ++n, --refill_) issue(now);
                }
                wake = std::min(wake, end_);
            } else if (inflight_ == 0) {
                break;
            }
            flush_all();
            wait(now, wake);
        }
        unanswered_ = drop_outstanding();
    }

    const Counts& measured() const { return m_; }
    const Histogram& latency() const { return *hist_; }
    const Histogram& send_lag() const { return *lag_; }
    uint64_t window_replies() const { return window_replies_; }
    uint64_t late() const { return late_; }
    uint64_t unsent() const { return unsent_; }
    uint64_t dead() const { return conns_.size() - alive(); }

  private:
    size_t alive() const {
        size_t n = 0;
        for (const Conn& c : conns_) n += !c.dead;
        return n;
    }

    void issue(uint64_t t_ns) {
        const uint64_t key = keys_.draw(rng_);
        const Op op = rng_.unit() < o_.get_ratio ? Op::get : Op::set;
        const bool measured = t_ns >= warm_end_ && t_ns < end_;
        if (!queue(key, op, t_ns, measured)) {
            ++unsent_;
            if (!o_.open_loop) ++refill_; // the slot is not used: nothing will free it
        }
    }

    // Appends one request to the next live connection's output. False: nowhere to put it.
    bool queue(uint64_t key, Op op, uint64_t t_ns, bool measured) {
        Conn* c = nullptr;
        for (size_t n = 0; n < conns_.size(); ++n) {
            Conn& k = conns_[rr_++ % conns_.size()];
            if (!k.dead && !k.full() && k.tx.size() - k.tx_off < kTxMax) {
                c = &k;
                break;
            }
        }
        if (!c) return false;
        const std::string& tmpl = op == Op::get ? get_ : set_;
        const size_t at = c->tx.size();
        c->tx.insert(c->tx.end(), tmpl.begin(), tmpl.end());
        format_key(&c->tx[at + 4], o_.key_size, key);
        c->at(c->count++) = Req{t_ns, key, op, measured, false};
        ++inflight_;
        if (measured) ++m_.sent;
        if (preloading_) ++preload_next_;
        if (measured && o_.open_loop) lag_t_.push_back(t_ns);
        return true;
    }

    void flush_all() {
        for (Conn& c : conns_)
            if (!c.dead) flush(c);
        if (!lag_t_.empty()) { // how far behind its Poisson schedule the client wrote
            const uint64_t now = now_ns();
            for (uint64_t t : lag_t_) lag_->record(now - std::min(now, t));
            lag_t_.clear();
        }
    }

    void flush(Conn& c) {
        while (c.tx_off < c.tx.size()) {
            ssize_t r = ::send(c.fd.get(), c.tx.data() + c.tx_off, c.tx.size() - c.tx_off,
                               MSG_DONTWAIT | MSG_NOSIGNAL);
            if (r < 0) {
                if (errno == EINTR) continue;
                if (errno != EAGAIN) kill(c, "send");
                break;
            }
            c.tx_off += size_t(r);
        }
        if (c.tx_off == c.tx.size()) {
            c.tx.clear();
            c.tx_off = 0;
        } else if (c.tx_off > (1 << 20)) { // keep the pending bytes at the front
            c.tx.erase(c.tx.begin(), c.tx.begin() + ptrdiff_t(c.tx_off));
            c.tx_off = 0;
        }
    }

    void expire(uint64_t now) {
        const uint64_t timeout = o_.timeout_ms * kMs;
        for (Conn& c : conns_) {
            for (; c.unexpired < c.count; ++c.unexpired) {
                Req& r = c.at(c.unexpired);
                if (now < r.t_ns + timeout) break; // send times grow along a connection
                lose(r);
            }
        }
    }

    void lose(Req& r) {
        r.lost = true;
        --inflight_;
        if (r.measured) ++m_.lost;
        if (!o_.open_loop || preloading_) ++refill_;
    }

    uint64_t drop_outstanding() {
        uint64_t n = 0;
        for (Conn& c : conns_) {
            for (; c.unexpired < c.count; ++c.unexpired, ++n) lose(c.at(c.unexpired));
            c.head = (c.head + c.count) & (c.ring.size() - 1);
            c.count = c.unexpired = 0;
            c.tx.clear();
            c.tx_off = 0;
            c.rx_len = 0;
        }
        refill_ = 0;
        return n;
    }

    // A connection that failed: what it carried is lost; it is not used again.
    void kill(Conn& c, const char* what) {
        if (!c.dead)
            std::fprintf(stderr, "kv_tcp_load: a connection failed (%s: %s)\n", what,
                         errno ? std::strerror(errno) : "closed by the server");
        for (; c.unexpired < c.count; ++c.unexpired) lose(c.at(c.unexpired));
        c.count = c.unexpired = 0;
        c.dead = true;
        c.fd.reset();
    }

    // Sleeps until a connection is readable (or writable, with bytes waiting), `wake`, or the
    // oldest request's expiry (at most 10 ms); then reads and writes what is ready.
    void wait(uint64_t now, uint64_t wake) {
        wake = std::min(wake, now + 10 * kMs);
        for (Conn& c : conns_)
            if (c.unexpired < c.count)
                wake = std::min(wake, c.at(c.unexpired).t_ns + o_.timeout_ms * kMs);
        const uint64_t d = wake > now ? wake - now : 0;
        timespec ts{time_t(d / 1000000000ull), long(d % 1000000000ull)};
        for (size_t i = 0; i < conns_.size(); ++i) {
            const Conn& c = conns_[i];
            pfds_[i] = {c.dead ? -1 : c.fd.get(),
                        short(POLLIN | (c.tx_off < c.tx.size() ? POLLOUT : 0)), 0};
        }
        if (::ppoll(pfds_.data(), pfds_.size(), &ts, nullptr) <= 0) return;
        for (size_t i = 0; i < conns_.size(); ++i) {
            if (conns_[i].dead) continue;
            if (pfds_[i].revents & (POLLIN | POLLERR | POLLHUP)) receive(conns_[i]);
            if (!conns_[i].dead && (pfds_[i].revents & POLLOUT)) flush(conns_[i]);
        }
    }

    void receive(Conn& c) {
        for (int round = 0; round < 8 && !c.dead; ++round) {
            if (c.rx_len == c.rx.size()) return kill(c, "a reply larger than the buffer");
            ssize_t r =
                ::recv(c.fd.get(), c.rx.data() + c.rx_len, c.rx.size() - c.rx_len, MSG_DONTWAIT);
            if (r == 0) {
                errno = 0;
                return kill(c, "recv");
            }
            if (r < 0) {
                if (errno == EINTR) continue;
                if (errno != EAGAIN) kill(c, "recv");
                return;
            }
            c.rx_len += size_t(r);
            const uint64_t now = now_ns();
            size_t off = 0;
            while (!c.dead) {
                size_t used = reply(c, std::string_view(c.rx.data() + off, c.rx_len - off), now);
                if (used == 0) break;
                off += used;
            }
            if (c.dead) return;
            std::memmove(c.rx.data(), c.rx.data() + off, c.rx_len - off);
            c.rx_len -= off;
            if (size_t(r) < c.rx.size() / 2) return; // drained the socket, most likely
        }
    }

    // Parses one reply at the start of `b` and completes the connection's oldest request with
    // it. Returns the bytes it took; 0 when the reply is not complete yet.
    size_t reply(Conn& c, std::string_view b, uint64_t now) {
        const size_t nl = b.find('\n');
        if (nl == std::string_view::npos) return 0;
        std::string_view line = b.substr(0, nl);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        size_t used = nl + 1;
        Kind k = Kind::error;
        if (c.count == 0) { // a reply nobody asked for
            ++m_.errors;
            kill(c, "an unexpected reply");
            return 0;
        }
        Req& r = c.at(0);
        if (line == "END") {
            k = r.op == Op::get ? Kind::miss : Kind::error;
        } else if (line == "STORED") {
            k = r.op == Op::set ? Kind::stored : Kind::error;
        } else if (line.starts_with("VALUE ")) {
            // VALUE <key> <flags> <bytes>[ <cas>]\r\n<data>\r\nEND\r\n (one key per get)
            std::string_view rest = line.substr(6);
            const size_t sp1 = rest.find(' ');
            const std::string_view key = rest.substr(0, sp1);
            rest = sp1 == std::string_view::npos ? std::string_view{} : rest.substr(sp1 + 1);
            const size_t sp2 = rest.find(' ');
            rest = sp2 == std::string_view::npos ? std::string_view{} : rest.substr(sp2 + 1);
            uint64_t bytes = 0;
            auto [p, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), bytes);
            if (ec != std::errc{} || bytes > (1 << 20)) {
                kill(c, "an unreadable VALUE line");
                return 0;
            }
            (void)p;
            const size_t need = used + bytes + 2 + 5;
            if (b.size() < need) return 0;
            const bool framed = b.substr(used + bytes, 7) == "\r\nEND\r\n";
            format_key(expected_key_.data(), o_.key_size, r.key);
            const bool ok = framed && r.op == Op::get && bytes == o_.value_size &&
                            key == std::string_view(expected_key_.data(), expected_key_.size());
            k = ok ? Kind::hit : Kind::error;
            used = need;
        }
        // Anything else (ERROR, CLIENT_ERROR, SERVER_ERROR, NOT_STORED): one line, an error.
        complete(c, k, now);
        return used;
    }

    void complete(Conn& c, Kind k, uint64_t now) {
        Req r = c.at(0);
        c.head = (c.head + 1) & (c.ring.size() - 1);
        --c.count;
        if (c.unexpired > 0) { // its request was counted lost: a late reply
            --c.unexpired;
            ++late_;
            return;
        }
        --inflight_;
        if (!o_.open_loop || preloading_) ++refill_;
        if (preloading_) {
            stored_ += k == Kind::stored;
            return;
        }
        if (now >= warm_end_ && now < end_) ++window_replies_;
        if (!r.measured) return;
        ++m_.replies;
        switch (k) {
        case Kind::hit:
            ++m_.gets, ++m_.hits;
            break;
        case Kind::miss:
            ++m_.gets, ++m_.misses;
            break;
        case Kind::stored:
            ++m_.sets;
            break;
        case Kind::error:
            ++m_.errors;
            break;
        }
        if (k != Kind::error) hist_->record(now - std::min(now, r.t_ns));
    }

    const Options& o_;
    std::vector<Conn> conns_;
    std::vector<pollfd> pfds_;
    std::unique_ptr<Histogram> hist_, lag_;
    KeyChooser keys_;
    Rng rng_;
    std::string get_, set_, expected_key_;
    std::vector<uint64_t> lag_t_; // intended times of the requests written in this pass
    size_t rr_ = 0;
    uint64_t inflight_ = 0, refill_ = 0, warm_end_ = 0, end_ = 0;
    Counts m_{};
    uint64_t window_replies_ = 0, late_ = 0, unsent_ = 0, unanswered_ = 0;
    bool preloading_ = false;
    uint64_t preload_next_ = 0, stored_ = 0;
};

// C connections to `addr`, each connected within 2 s, then non-blocking with TCP_NODELAY.
std::vector<Fd> connect_all(const bertha::Addr& addr, uint32_t n, std::string& err) {
    std::vector<Fd> fds;
    for (uint32_t i = 0; i < n; ++i) {
        Fd fd(::socket(addr.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (!fd) return err = std::string("socket: ") + std::strerror(errno), std::vector<Fd>{};
        timeval tv{2, 0};
        ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (::connect(fd.get(), addr.sa(), addr.len()) != 0)
            return err = "connect " + addr.to_string() + ": " + std::strerror(errno),
                   std::vector<Fd>{};
        int one = 1;
        ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) | O_NONBLOCK);
        fds.push_back(std::move(fd));
    }
    return fds;
}

double us(uint64_t ns) {
    return double(ns) / 1000.0;
}

// One run against o.server: the JSON object (kv load --json's fields) or the table on `out`.
// Returns kv load's exit codes: 0, 1 (no replies or errors), 2 (could not start).
int run_one(const Options& o, FILE* out) {
    auto addr = bertha::Addr::parse(o.server);
    if (!addr) {
        std::fprintf(stderr, "kv_tcp_load: %s\n", addr.error().what().c_str());
        return 2;
    }
    if (o.key_size < min_key_size(o.keys) || o.key_size > 250) {
        std::fprintf(stderr, "kv_tcp_load: --key-size must be %zu..250 for %llu keys\n",
                     min_key_size(o.keys), (unsigned long long)o.keys);
        return 2;
    }
    std::string err;
    auto fds = connect_all(*addr, o.connections, err);
    if (fds.empty()) {
        std::fprintf(stderr, "kv_tcp_load: %s\n", err.c_str());
        return 2;
    }
    ::prctl(PR_SET_TIMERSLACK, 1000UL); // ppoll wakes within ~1 us of an arrival
    auto engine = std::make_unique<Engine>(o, std::move(fds));
    if (o.preload) {
        if (uint64_t missing = engine->preload(); missing > 0) {
            std::fprintf(stderr, "kv_tcp_load: preload: %llu of %llu keys not stored at %s\n",
                         (unsigned long long)missing, (unsigned long long)o.keys, o.server.c_str());
            return 2;
        }
    }
    engine->run();
    const Counts& c = engine->measured();
    const Histogram& h = engine->latency();
    const Histogram& lag = engine->send_lag();
    const double tput = double(engine->window_replies()) / o.duration_s;
    if (o.json) {
        std::fprintf(
            out,
            "{\"server\":\"%s\",\"transport\":\"tcp\",\"connections\":%u,\"mode\":\"%s\","
            "\"window\":%u,\"rate\":%.1f,\"keys\":%llu,\"dist\":\"%s\",\"zipf_s\":%.3f,"
            "\"key_size\":%u,\"value_size\":%u,\"get_ratio\":%.3f,\"warmup_s\":%.3f,"
            "\"duration_s\":%.3f,\"timeout_ms\":%u,\"seed\":%llu,\"preload\":%s,"
            "\"sent\":%llu,\"replies\":%llu,\"gets\":%llu,\"hits\":%llu,\"misses\":%llu,"
            "\"sets\":%llu,\"errors\":%llu,\"lost\":%llu,\"late\":%llu,\"unsent\":%llu,"
            "\"dead_connections\":%llu,\"throughput_rps\":%.1f,\"latency_us\":{\"count\":%llu,"
            "\"min\":%.3f,\"p50\":%.3f,\"p95\":%.3f,\"p99\":%.3f,\"p99_9\":%.3f,\"max\":%.3f},"
            "\"send_lag_us\":{\"p50\":%.3f,\"p99\":%.3f,\"max\":%.3f}}\n",
            addr->to_string().c_str(), o.connections, o.open_loop ? "open" : "closed", o.window,
            o.rate, (unsigned long long)o.keys, o.zipf ? "zipf" : "uniform", o.zipf_s, o.key_size,
            o.value_size, o.get_ratio, o.warmup_s, o.duration_s, o.timeout_ms,
            (unsigned long long)o.seed, o.preload ? "true" : "false", (unsigned long long)c.sent,
            (unsigned long long)c.replies, (unsigned long long)c.gets, (unsigned long long)c.hits,
            (unsigned long long)c.misses, (unsigned long long)c.sets, (unsigned long long)c.errors,
            (unsigned long long)c.lost, (unsigned long long)engine->late(),
            (unsigned long long)engine->unsent(), (unsigned long long)engine->dead(), tput,
            (unsigned long long)h.count(), us(h.min()), us(h.percentile(50)), us(h.percentile(95)),
            us(h.percentile(99)), us(h.percentile(99.9)), us(h.max()), us(lag.percentile(50)),
            us(lag.percentile(99)), us(lag.max()));
    } else {
        std::fprintf(out, "kv_tcp_load -> %s, %u TCP connections\n", addr->to_string().c_str(),
                     o.connections);
        if (o.open_loop)
            std::fprintf(out, "  workload    open loop at %.0f req/s", o.rate);
        else
            std::fprintf(out, "  workload    closed loop, window %u", o.window);
        std::fprintf(out, ", %llu keys %s, %u-byte keys, %u-byte values, %.0f%% gets%s\n",
                     (unsigned long long)o.keys, o.zipf ? "zipf" : "uniform", o.key_size,
                     o.value_size, o.get_ratio * 100, o.preload ? ", preloaded" : "");
        std::fprintf(out, "  window      %.1f s warm-up, then %.1f s measured (timeout %u ms)\n",
                     o.warmup_s, o.duration_s, o.timeout_ms);
        std::fprintf(out,
                     "  requests    %llu sent, %llu replies, %llu lost, %llu errors, %llu "
                     "late, %llu unsent\n",
                     (unsigned long long)c.sent, (unsigned long long)c.replies,
                     (unsigned long long)c.lost, (unsigned long long)c.errors,
                     (unsigned long long)engine->late(), (unsigned long long)engine->unsent());
        std::fprintf(out, "  gets        %llu (%llu hits, %llu misses); sets %llu\n",
                     (unsigned long long)c.gets, (unsigned long long)c.hits,
                     (unsigned long long)c.misses, (unsigned long long)c.sets);
        std::fprintf(out, "  throughput  %.0f replies/s\n", tput);
        std::fprintf(out, "  latency us  p50 %.1f  p95 %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n",
                     us(h.percentile(50)), us(h.percentile(95)), us(h.percentile(99)),
                     us(h.percentile(99.9)), us(h.max()));
        if (o.open_loop)
            std::fprintf(out, "  send lag us p50 %.1f  p99 %.1f  max %.1f\n",
                         us(lag.percentile(50)), us(lag.percentile(99)), us(lag.max()));
    }
    if (c.replies == 0) {
        std::fprintf(stderr, "kv_tcp_load: no replies from %s\n", o.server.c_str());
        return 1;
    }
    if (c.errors > 0) {
        std::fprintf(stderr, "kv_tcp_load: %llu unexpected replies from %s\n",
                     (unsigned long long)c.errors, o.server.c_str());
        return 1;
    }
    return 0;
}

// No --server: memcached on 127.0.0.1, a closed and an open loop against it (a smoke run; the
// numbers are loopback's, not a benchmark's). Skipped, with exit 0, without memcached.
int run_local(Options o) {
    // A free port: bind port 0, read it, close (memcached binds it a moment later).
    uint16_t port = 0;
    {
        Fd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof a;
        if (!s || ::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
            ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0)
            bench::die("kv_tcp_load: no free loopback port: %s", std::strerror(errno));
        port = ntohs(a.sin_port);
    }
    const std::string p = std::to_string(port);
    const pid_t pid = ::fork();
    if (pid < 0) bench::die("kv_tcp_load: fork: %s", std::strerror(errno));
    if (pid == 0) {
        int null = ::open("/dev/null", O_WRONLY);
        if (null >= 0) ::dup2(null, 1), ::dup2(null, 2);
        if (::getuid() == 0)
            ::execlp("memcached", "memcached", "-l", "127.0.0.1", "-p", p.c_str(), "-U", "0", "-t",
                     "1", "-u", "nobody", (char*)nullptr);
        else
            ::execlp("memcached", "memcached", "-l", "127.0.0.1", "-p", p.c_str(), "-U", "0", "-t",
                     "1", (char*)nullptr);
        ::_exit(127);
    }
    o.server = "127.0.0.1:" + p;
    // Wait (at most 3 s) for it to accept a connection.
    bool up = false;
    for (int i = 0; i < 60 && !up; ++i) {
        int st = 0;
        if (::waitpid(pid, &st, WNOHANG) == pid) {
            std::printf("kv_tcp_load: memcached is not installed or did not start (exit %d); "
                        "nothing to run (make deps installs it)\n",
                        WIFEXITED(st) ? WEXITSTATUS(st) : -1);
            return 0;
        }
        std::string err;
        auto probe = bertha::Addr::parse(o.server);
        up = probe && !connect_all(*probe, 1, err).empty();
        if (!up) ::usleep(50000);
    }
    int rc = 2;
    if (up) {
        const std::string path =
            !o.out.empty() ? o.out
                           : bench::exe_dir() + (o.quick ? "/kv_tcp_load.quick.json"
                                                         : "/kv_tcp_load.loopback.json");
        FILE* f = std::fopen(path.c_str(), "w");
        if (!f) bench::die("kv_tcp_load: cannot write %s: %s", path.c_str(), std::strerror(errno));
        o.json = true;
        o.zipf = true;
        o.warmup_s = o.quick ? 0.1 : 0.5;
        o.duration_s = o.quick ? 0.2 : 1.0;
        o.connections = 4;
        std::fputs("[\n", f);
        o.preload = true;
        o.window = 32;
        rc = run_one(o, f);
        std::fputs(",\n", f);
        o.preload = false;
        o.open_loop = true;
        o.rate = 5000;
        rc = std::max(rc, run_one(o, f));
        std::fputs("]\n", f);
        std::fclose(f);
        std::printf("kv_tcp_load: closed loop and open loop (5000/s) against memcached on %s, "
                    "over 4 TCP connections: %s\nwrote %s\n",
                    o.server.c_str(), rc == 0 ? "ok" : "FAILED", path.c_str());
    } else {
        std::fprintf(stderr, "kv_tcp_load: memcached never accepted a connection on %s\n",
                     o.server.c_str());
    }
    ::kill(pid, SIGTERM);
    for (int i = 0; i < 60; ++i) {
        if (::waitpid(pid, nullptr, WNOHANG) == pid) return rc;
        ::usleep(50000);
    }
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return rc;
}

} // namespace

int main(int argc, char** argv) {
    Options o;
    std::string mode = "closed", dist = "uniform";
    CLI::App app("kv_tcp_load: kv load's workload over TCP (memcached text protocol, pipelined "
                 "on C connections).\nWith no --server: a smoke run against memcached on "
                 "127.0.0.1.",
                 "kv_tcp_load");
    app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    app.add_option("--server", o.server, "ADDR:PORT of a memcached-protocol TCP server");
    app.add_option("--connections", o.connections, "TCP connections")
        ->check(CLI::Range(1, 256))
        ->capture_default_str();
    app.add_option("--mode", mode, "closed | open")
        ->check(CLI::IsMember({"closed", "open"}))
        ->capture_default_str();
    app.add_option("--window", o.window, "closed loop: requests in flight, all connections")
        ->check(CLI::Range(1, 16384))
        ->capture_default_str();
    app.add_option("--rate", o.rate, "open loop: requests/s (Poisson)")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    app.add_option("--keys", o.keys)->check(CLI::Range(1, 10000000))->capture_default_str();
    app.add_option("--dist", dist)
        ->check(CLI::IsMember({"uniform", "zipf"}))
        ->capture_default_str();
    app.add_option("--zipf-s", o.zipf_s)->capture_default_str();
    app.add_option("--key-size", o.key_size)->check(CLI::Range(1, 250))->capture_default_str();
    app.add_option("--value-size", o.value_size)
        ->check(CLI::Range(0, 65000))
        ->capture_default_str();
    app.add_option("--get-ratio", o.get_ratio)->check(CLI::Range(0.0, 1.0))->capture_default_str();
    app.add_option("--warmup-s", o.warmup_s)->check(CLI::Range(0.0, 600.0))->capture_default_str();
    app.add_option("--duration-s", o.duration_s)
        ->check(CLI::Range(0.01, 3600.0))
        ->capture_default_str();
    app.add_option("--timeout-ms", o.timeout_ms)
        ->check(CLI::Range(1, 60000))
        ->capture_default_str();
    app.add_option("--seed", o.seed)->capture_default_str();
    app.add_flag("--preload", o.preload, "set every key once first");
    app.add_flag("--json", o.json, "one JSON object (kv load --json's fields)");
    app.add_flag("--quick", o.quick, "no --server: the short smoke run");
    app.add_option("--out", o.out, "no --server: where the smoke run's JSON goes");
    CLI11_PARSE(app, argc, argv);
    o.open_loop = mode == "open";
    o.zipf = dist == "zipf";
    if (o.server.empty()) return run_local(o);
    return run_one(o, stdout);
}
