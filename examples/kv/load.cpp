// `kv load` (load.hpp). One thread, one link (link.hpp: an unconnected UDP socket, or a shard
// chunnel connection with --shard). Each pass of the loop: expire
// requests older than the timeout, queue what is due (open loop: every Poisson arrival whose
// intended time has come; closed loop: one request per reply or loss since the last pass),
// send the queue with one sendmmsg, sleep in ppoll until a reply, the next arrival or the next
// expiry, and take replies with recvmmsg. Requests carry sequential 16-bit memcached request
// ids; the table of all 65536 ids says what each outstanding one asked and when.
#include "load.hpp"

#include "bertha/addr.hpp"
#include "bertha/fd.hpp"
#include "bertha/histogram.hpp"
#include "bertha/kv.h"
#include "kv/protocol.hpp"
#include "link.hpp"
#include "load_model.hpp"

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <netinet/in.h>
#include <poll.h>
#include <random>
#include <string_view>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <vector>

namespace bertha::kv {

namespace {

using namespace load;

constexpr const char* kComp = "kv load";
constexpr size_t kIds = 65536;
// Never let the ids in flight span more than this: the id about to be reused is lost first.
constexpr uint16_t kMaxSpan = 65000;
constexpr size_t kRxBuf = 65536;
constexpr uint64_t kMs = 1000000;

uint64_t now_ns() noexcept {
    timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

enum class Op : uint8_t { get, set };
enum class Kind : uint8_t { hit, miss, stored, error };

struct Pending {
    uint64_t t_ns = 0; // intended (open loop) or actual (closed loop) send time
    uint64_t key = 0;
    bool outstanding = false;
    Op op = Op::get;
    bool measured = false;
    bool hit = false;      // a reply over several datagrams: the first said VALUE <our key>
    bool end_seen = false; // ... and the last ended with END
    uint8_t parts = 0;     // datagrams of the reply so far
};

struct Counts {
    uint64_t sent = 0, replies = 0, gets = 0, hits = 0, misses = 0, sets = 0, errors = 0, lost = 0;
};

bool starts_with(std::string_view s, std::string_view p) {
    return s.substr(0, p.size()) == p;
}
bool ends_with(std::string_view s, std::string_view p) {
    return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

class Engine {
  public:
    Engine(const LoadOptions& o, std::unique_ptr<Link> link, Addr server)
        : o_(o), link_(std::move(link)), server_(server), table_(kIds),
          hist_(std::make_unique<Histogram>()), lag_(std::make_unique<Histogram>()),
          keys_(o.keys, o.zipf, o.zipf_s), rng_(o.seed) {
        next_id_ = oldest_ = uint16_t(std::random_device{}());
        // Templates, built once: only the request id and the key digits change per request.
        std::string get = "get " + std::string(o.key_size, 'k') + "\r\n";
        std::string set = "set " + std::string(o.key_size, 'k') + " 0 0 " +
                          std::to_string(o.value_size) + "\r\n" + value(o.value_size) + "\r\n";
        get_len_ = kHeaderSize + get.size();
        set_len_ = kHeaderSize + set.size();
        const size_t b = o.batch;
        get_bufs_.assign(b * get_len_, 0);
        set_bufs_.assign(b * set_len_, 0);
        for (size_t i = 0; i < b; ++i) {
            std::memcpy(&get_bufs_[i * get_len_ + kHeaderSize], get.data(), get.size());
            std::memcpy(&set_bufs_[i * set_len_ + kHeaderSize], set.data(), set.size());
            for (char* h : {&get_bufs_[i * get_len_], &set_bufs_[i * set_len_]}) {
                h[5] = 1; // seq 0, total 1 (big-endian), reserved 0
            }
        }
        tx_iov_.resize(b);
        tx_msgs_.resize(b);
        tx_ids_.resize(b);
        rx_bufs_.assign(b * kRxBuf, 0);
        rx_iov_.resize(b);
        rx_msgs_.resize(b);
        tx_to_.resize(b);
        for (size_t i = 0; i < b; ++i) {
            // Each slot's own destination: the server, or (--shards) the key's shard's port.
            std::memcpy(&tx_to_[i], server_.sa(), server_.len());
            tx_msgs_[i].msg_hdr.msg_name = &tx_to_[i];
            tx_msgs_[i].msg_hdr.msg_namelen = server_.len();
            tx_msgs_[i].msg_hdr.msg_iov = &tx_iov_[i];
            tx_msgs_[i].msg_hdr.msg_iovlen = 1;
            rx_iov_[i] = {&rx_bufs_[i * kRxBuf], kRxBuf};
            rx_msgs_[i].msg_hdr.msg_iov = &rx_iov_[i];
            rx_msgs_[i].msg_hdr.msg_iovlen = 1;
        }
        expected_key_.resize(o.key_size);
    }

    // Sets every key once, a window of sets in flight; keys whose set was lost are tried again
    // (three rounds). Returns the keys never stored.
    uint64_t preload() {
        std::vector<uint64_t> todo(o_.keys);
        for (uint64_t k = 0; k < o_.keys; ++k) todo[k] = k;
        const uint32_t window = std::max<uint32_t>(o_.window, 32);
        for (int round = 0; round < 3 && !todo.empty(); ++round) {
            lost_keys_.clear();
            lost_keys_.reserve(todo.size());
            preloading_ = true;
            size_t next = 0;
            refill_ = window;
            const uint64_t deadline = now_ns() + 30000 * kMs + todo.size() * 100000;
            for (uint64_t pass = 0; pass < 100000000; ++pass) {
                uint64_t now = now_ns();
                if (now >= deadline) break;
                expire(now);
                // At most a window a pass: a failed send gives its slot back (refill_).
                for (uint32_t n = 0; refill_ > 0 && next < todo.size() && n < window;
                     ++n, --refill_)
                    queue(todo[next++], Op::set, now, false);
                flush();
                if (next == todo.size() && inflight_ == 0) break;
                wait(now, now + 10 * kMs);
                receive();
            }
            drop_outstanding();
            lost_keys_.insert(lost_keys_.end(), todo.begin() + ptrdiff_t(next), todo.end());
            preloading_ = false;
            todo.assign(lost_keys_.begin(), lost_keys_.end());
        }
        return todo.size();
    }

    void run() {
        const uint64_t t0 = now_ns();
        warm_end_ = t0 + uint64_t(o_.warmup_s * 1e9);
        end_ = warm_end_ + uint64_t(o_.duration_s * 1e9);
        const uint64_t stop = end_ + o_.timeout_ms * kMs + 100 * kMs;
        PoissonArrivals arrivals(o_.open_loop ? o_.rate : 1.0, t0, o_.seed + 1);
        refill_ = o_.open_loop ? 0 : o_.window;
        all_ = {};
        uint64_t next_progress = t0 + 1000 * kMs;
        Counts last{};
        // Bounded by `stop` (time) and by a pass count no run reaches (each pass is >= 1 syscall).
        for (uint64_t pass = 0; pass < 4000000000ull; ++pass) {
            uint64_t now = now_ns();
            if (now >= stop) break;
            expire(now);
            const bool sending = now < end_;
            uint64_t wake = stop;
            if (sending) {
                if (o_.open_loop) {
                    // Everything due, up to a few batches a pass: if the client falls behind,
                    // the intended times stay and the latency shows it.
                    for (uint32_t n = 0; arrivals.next_ns() <= now && n < 4 * o_.batch; ++n) {
                        issue(arrivals.next_ns());
                        arrivals.advance();
                    }
                    wake = std::min(wake, arrivals.next_ns());
                } else {
                    // At most a window a pass: a failed send gives its slot back (refill_).
                    for (uint32_t n = 0; refill_ > 0 && n < o_.window; ++n, --refill_) issue(now);
                }
                flush();
                wake = std::min(wake, end_);
            } else if (inflight_ == 0) {
                break;
            }
            wait(now, wake);
            receive();
            if (o_.progress && now >= next_progress) {
                std::fprintf(stderr,
                             "kv load: %4.0f s  %s  sent %llu  replies %llu  lost %llu  errors "
                             "%llu  (%llu replies/s)\n",
                             double(now - t0) / 1e9, now < warm_end_ ? "warm-up " : "measured",
                             (unsigned long long)all_.sent, (unsigned long long)all_.replies,
                             (unsigned long long)all_.lost, (unsigned long long)all_.errors,
                             (unsigned long long)(all_.replies - last.replies));
                last = all_;
                next_progress += 1000 * kMs;
            }
        }
        unanswered_ = drop_outstanding();
    }

    const Counts& measured() const { return m_; }
    const Histogram& latency() const { return *hist_; }
    const Histogram& send_lag() const { return *lag_; }
    uint64_t window_replies() const { return window_replies_; }
    uint64_t late() const { return late_; }
    uint64_t unsent() const { return unsent_; }
    uint64_t unanswered() const { return unanswered_; }
    std::string send_error() const {
        std::string e = link_->last_error();
        return e.empty() ? std::string(std::strerror(send_errno_)) : e;
    }

  private:
    static std::string value(size_t n) {
        std::string v(n, 'v');
        for (size_t i = 0; i < n; ++i) v[i] = char('a' + i % 26);
        return v;
    }

    void issue(uint64_t t_ns) {
        const uint64_t key = keys_.draw(rng_);
        const Op op = rng_.unit() < o_.get_ratio ? Op::get : Op::set;
        queue(key, op, t_ns, t_ns >= warm_end_ && t_ns < end_);
    }

    void queue(uint64_t key, Op op, uint64_t t_ns, bool measured) {
        if (nq_ == o_.batch) flush();
        if (uint16_t(next_id_ - oldest_) >= kMaxSpan) {
            // 65000 requests went out since the oldest one: it is lost, its id is needed.
            Pending& old = table_[oldest_];
            if (old.outstanding) lose(old);
            ++oldest_;
        }
        const uint16_t id = next_id_++;
        const bool get = op == Op::get;
        char* buf = get ? &get_bufs_[nq_ * get_len_] : &set_bufs_[nq_ * set_len_];
        buf[0] = char(id >> 8);
        buf[1] = char(id & 0xff);
        format_key(buf + kHeaderSize + 4, o_.key_size, key);
        if (o_.shards) { // client-side sharding: straight to the key's shard, as shard/client
            auto* k = reinterpret_cast<const unsigned char*>(buf + kHeaderSize + 4);
            uint16_t port = uint16_t(o_.base + bertha_shard_of(bertha_shard_hash(k, o_.key_size),
                                                               o_.shards));
            auto& to = tx_to_[nq_];
            if (to.ss_family == AF_INET)
                reinterpret_cast<sockaddr_in*>(&to)->sin_port = htons(port);
            else
                reinterpret_cast<sockaddr_in6*>(&to)->sin6_port = htons(port);
        }
        tx_iov_[nq_] = {buf, get ? get_len_ : set_len_};
        tx_ids_[nq_] = id;
        table_[id] = Pending{t_ns, key, true, op, measured, false, false, 0};
        ++inflight_;
        ++all_.sent;
        if (measured) ++m_.sent;
        ++nq_;
    }

    void flush() {
        size_t done = 0;
        for (int tries = 0; done < nq_ && tries < 8; ++tries) {
            int r = link_->send(std::span(&tx_msgs_[done], nq_ - done));
            if (r < 0) {
                if (errno == EINTR || errno == EAGAIN || errno == ENOBUFS) continue;
                send_errno_ = errno; // e.g. ECONNREFUSED from an earlier ICMP error
                if (errno == ECONNREFUSED) continue;
                break;
            }
            done += size_t(r);
        }
        if (o_.open_loop && done > 0) { // how far behind its Poisson schedule the client sends
            const uint64_t now = now_ns();
            for (size_t i = 0; i < done; ++i) {
                const Pending& e = table_[tx_ids_[i]];
                if (e.measured) lag_->record(now - std::min(now, e.t_ns));
            }
        }
        for (size_t i = done; i < nq_; ++i) { // not sent: as if never asked
            Pending& e = table_[tx_ids_[i]];
            e.outstanding = false;
            --inflight_;
            --all_.sent;
            if (e.measured) --m_.sent;
            ++unsent_;
            if (preloading_) lost_keys_.push_back(e.key); // tried again in the next round
            ++refill_;
        }
        nq_ = 0;
    }

    void expire(uint64_t now) {
        const uint64_t timeout = o_.timeout_ms * kMs;
        for (size_t n = 0; n < kIds && oldest_ != next_id_; ++n) {
            Pending& e = table_[oldest_];
            if (e.outstanding) {
                if (now < e.t_ns + timeout) break; // send times grow with the id
                lose(e);
            }
            ++oldest_;
        }
    }

    void lose(Pending& e) {
        e.outstanding = false;
        --inflight_;
        ++all_.lost;
        if (e.measured) ++m_.lost;
        if (preloading_) lost_keys_.push_back(e.key);
        ++refill_;
    }

    uint64_t drop_outstanding() {
        uint64_t n = 0;
        for (size_t i = 0; i < kIds && oldest_ != next_id_; ++i, ++oldest_) {
            Pending& e = table_[oldest_];
            if (!e.outstanding) continue;
            lose(e);
            ++n;
        }
        refill_ = 0;
        return n;
    }

    // Sleeps until a reply arrives, `wake`, or the oldest request's expiry (at most 10 ms).
    void wait(uint64_t now, uint64_t wake) {
        if (inflight_ > 0) wake = std::min(wake, table_[oldest_].t_ns + o_.timeout_ms * kMs);
        wake = std::min(wake, now + 10 * kMs);
        if (wake <= now) return;
        // --spin-us: an event this close is waited for by polling (the loop comes straight
        // back), not by sleeping: a sleeping thread wakes tens of microseconds late.
        if (wake - now <= uint64_t(o_.spin_us) * 1000) return;
        link_->wait(std::chrono::nanoseconds(wake - now));
    }

    void receive() {
        for (int round = 0; round < 8; ++round) {
            int r = link_->recv(std::span(rx_msgs_.data(), o_.batch));
            if (r <= 0) return; // EAGAIN; ECONNREFUSED (an ICMP error) is noticed as loss
            const uint64_t now = now_ns();
            for (int i = 0; i < r; ++i)
                on_datagram({&rx_bufs_[size_t(i) * kRxBuf], rx_msgs_[i].msg_len}, now);
            if (unsigned(r) < o_.batch) return;
        }
    }

    void on_datagram(std::string_view d, uint64_t now) {
        auto f = parse_frame(d);
        if (!f) { // shorter than a frame header: nobody's reply
            ++all_.errors;
            if (now >= warm_end_ && now < end_) ++m_.errors;
            return;
        }
        Pending& e = table_[f->request_id];
        if (!e.outstanding) { // a reply after its request timed out, or not ours
            ++late_;
            return;
        }
        const std::string_view body = f->body;
        if (e.op == Op::set)
            return complete(e, body == "STORED\r\n" ? Kind::stored : Kind::error, now);
        if (f->total == 0 || f->seq >= f->total || e.parts >= 64)
            return complete(e, Kind::error, now);
        format_key(expected_key_.data(), o_.key_size, e.key);
        const std::string_view key(expected_key_.data(), expected_key_.size());
        if (f->total == 1 && e.parts == 0) {
            auto r = parse_response(body);
            if (r && r->wire_size == body.size() && r->status == Status::values) {
                if (r->nvalues == 0) return complete(e, Kind::miss, now);
                bool ok = r->nvalues == 1 && r->values[0].key == key &&
                          r->values[0].data.size() == o_.value_size;
                return complete(e, ok ? Kind::hit : Kind::error, now);
            }
        }
        // A reply over several datagrams: numbered (seq of total, as memcached sends values
        // over 1400 bytes), or several marked 0 of 1 (memcached's reply line groups).
        if ((f->total > 1 ? f->seq == 0 : e.parts == 0)) {
            if (!starts_with(body, "VALUE ") || !starts_with(body.substr(6), key) ||
                body.size() <= 6 + key.size() || body[6 + key.size()] != ' ')
                return complete(e, Kind::error, now);
            e.hit = true;
        }
        ++e.parts;
        if (f->total > 1) {
            if (f->seq == f->total - 1) e.end_seen = ends_with(body, "END\r\n");
            if (e.parts == f->total)
                complete(e, e.hit && e.end_seen ? Kind::hit : Kind::error, now);
        } else if (ends_with(body, "END\r\n")) {
            complete(e, e.hit ? Kind::hit : Kind::error, now);
        }
    }

    void complete(Pending& e, Kind k, uint64_t now) {
        e.outstanding = false;
        --inflight_;
        ++refill_;
        if (now >= warm_end_ && now < end_) ++window_replies_;
        for (Counts* c : {&all_, e.measured ? &m_ : nullptr}) {
            if (!c) continue;
            ++c->replies;
            switch (k) {
            case Kind::hit:
                ++c->gets, ++c->hits;
                break;
            case Kind::miss:
                ++c->gets, ++c->misses;
                break;
            case Kind::stored:
                ++c->sets;
                break;
            case Kind::error:
                ++c->errors;
                break;
            }
        }
        if (e.measured && k != Kind::error) hist_->record(now - std::min(now, e.t_ns));
        if (preloading_ && k != Kind::stored) lost_keys_.push_back(e.key);
    }

    const LoadOptions& o_;
    std::unique_ptr<Link> link_;
    Addr server_;
    std::vector<Pending> table_; // by request id
    std::unique_ptr<Histogram> hist_;
    std::unique_ptr<Histogram> lag_; // open loop: send time - intended send time
    KeyChooser keys_;
    Rng rng_;
    uint16_t next_id_ = 0; // the next id to use
    uint16_t oldest_ = 0;  // ids in [oldest_, next_id_) may be outstanding
    uint64_t inflight_ = 0;
    uint64_t refill_ = 0; // closed loop: replies and losses since the last pass
    uint64_t warm_end_ = 0, end_ = 0;

    size_t get_len_ = 0, set_len_ = 0;
    std::vector<char> get_bufs_, set_bufs_, rx_bufs_, expected_key_;
    std::vector<iovec> tx_iov_, rx_iov_;
    std::vector<mmsghdr> tx_msgs_, rx_msgs_;
    std::vector<sockaddr_storage> tx_to_;
    std::vector<uint16_t> tx_ids_;
    size_t nq_ = 0;

    Counts all_{}, m_{};
    uint64_t window_replies_ = 0, late_ = 0, unsent_ = 0, unanswered_ = 0;
    int send_errno_ = 0;
    bool preloading_ = false;
    std::vector<uint64_t> lost_keys_;
};

double us(uint64_t ns) {
    return double(ns) / 1000.0;
}

std::string describe(const LoadOptions& o) {
    char buf[256];
    std::snprintf(
        buf, sizeof buf, "%s, %llu keys %s, %u-byte keys, %u-byte values, %.0f%% gets",
        o.open_loop ? ("open loop at " + std::to_string(uint64_t(o.rate)) + " req/s").c_str()
                    : ("closed loop, window " + std::to_string(o.window)).c_str(),
        (unsigned long long)o.keys,
        o.zipf ? ("zipf(" + std::to_string(o.zipf_s).substr(0, 4) + ")").c_str() : "uniform",
        o.key_size, o.value_size, o.get_ratio * 100);
    return buf;
}

} // namespace

int run_load(const LoadOptions& o) {
    auto addr = Addr::parse(o.server);
    if (!addr) {
        std::fprintf(stderr, "%s\n", addr.error().what().c_str());
        return 2;
    }
    auto usage = [](const std::string& m) {
        std::fprintf(stderr, "%s: %s\n", kComp, m.c_str());
        return 2;
    };
    if (o.key_size < 1 || o.key_size > kMaxKey) return usage("--key-size must be 1..250");
    if (o.key_size < min_key_size(o.keys))
        return usage("--key-size " + std::to_string(o.key_size) + " cannot name " +
                     std::to_string(o.keys) + " keys: it needs " +
                     std::to_string(min_key_size(o.keys)) + " digits");
    if (o.zipf && o.keys > 10000000)
        return usage("--dist zipf keeps a CDF of 8 bytes per key: at most 10000000 keys");
    if (o.value_size > kMaxValue) return usage("--value-size is at most 65000");
    if (o.open_loop && o.rate * o.timeout_ms / 1000.0 > kMaxSpan)
        return usage("--rate x --timeout-ms would keep over 65000 requests in flight, more than "
                     "memcached's 16-bit request ids name: lower one of them");

    if (o.shard != ShardPref::none && o.shards)
        return usage("--shard (negotiated) and --shards (client-side by hand) exclude each other");
    auto link = o.shard == ShardPref::none ? socket_link(addr->family()) : shard_link(*addr, o.shard);
    if (!link) return usage(link.error().what());
    const std::string via = (*link)->describe();
    ::prctl(PR_SET_TIMERSLACK, 1000UL); // ppoll wakes within ~1 us of an arrival, not 50 us

    auto engine = std::make_unique<Engine>(o, std::move(*link), *addr);
    if (o.preload) {
        uint64_t missing = engine->preload();
        if (missing > 0)
            return usage("preload: " + std::to_string(missing) + " of " + std::to_string(o.keys) +
                         " keys were not stored (lost or refused) at " + o.server);
    }
    engine->run();

    const Counts& c = engine->measured();
    const Histogram& h = engine->latency();
    const Histogram& lag = engine->send_lag();
    const double tput = double(engine->window_replies()) / o.duration_s;
    const uint64_t p50 = h.percentile(50), p95 = h.percentile(95), p99 = h.percentile(99),
                   p999 = h.percentile(99.9);
    if (o.json) {
        std::printf(
            "{\"server\":\"%s\",\"via\":\"%s\",\"mode\":\"%s\",\"window\":%u,\"rate\":%.1f,\"keys\":%llu,"
            "\"dist\":\"%s\",\"zipf_s\":%.3f,\"key_size\":%u,\"value_size\":%u,"
            "\"get_ratio\":%.3f,\"warmup_s\":%.3f,\"duration_s\":%.3f,\"timeout_ms\":%u,"
            "\"seed\":%llu,\"preload\":%s,"
            "\"sent\":%llu,\"replies\":%llu,\"gets\":%llu,\"hits\":%llu,\"misses\":%llu,"
            "\"sets\":%llu,\"errors\":%llu,\"lost\":%llu,\"late\":%llu,\"unsent\":%llu,"
            "\"throughput_rps\":%.1f,\"latency_us\":{\"count\":%llu,\"min\":%.3f,\"p50\":%.3f,"
            "\"p95\":%.3f,\"p99\":%.3f,\"p99_9\":%.3f,\"max\":%.3f},"
            "\"send_lag_us\":{\"p50\":%.3f,\"p99\":%.3f,\"max\":%.3f}}\n",
            addr->to_string().c_str(), via.c_str(), o.open_loop ? "open" : "closed", o.window, o.rate,
            (unsigned long long)o.keys, o.zipf ? "zipf" : "uniform", o.zipf_s, o.key_size,
            o.value_size, o.get_ratio, o.warmup_s, o.duration_s, o.timeout_ms,
            (unsigned long long)o.seed, o.preload ? "true" : "false", (unsigned long long)c.sent,
            (unsigned long long)c.replies, (unsigned long long)c.gets, (unsigned long long)c.hits,
            (unsigned long long)c.misses, (unsigned long long)c.sets, (unsigned long long)c.errors,
            (unsigned long long)c.lost, (unsigned long long)engine->late(),
            (unsigned long long)engine->unsent(), tput, (unsigned long long)h.count(), us(h.min()),
            us(p50), us(p95), us(p99), us(p999), us(h.max()), us(lag.percentile(50)),
            us(lag.percentile(99)), us(lag.max()));
    } else {
        std::printf("kv load -> %s\n", addr->to_string().c_str());
        std::printf("  via         %s\n", via.c_str());
        std::printf("  workload    %s%s\n", describe(o).c_str(), o.preload ? ", preloaded" : "");
        std::printf("  window      %.1f s warm-up, then %.1f s measured (timeout %u ms)\n",
                    o.warmup_s, o.duration_s, o.timeout_ms);
        std::printf("  requests    %llu sent, %llu replies, %llu lost, %llu errors, %llu late\n",
                    (unsigned long long)c.sent, (unsigned long long)c.replies,
                    (unsigned long long)c.lost, (unsigned long long)c.errors,
                    (unsigned long long)engine->late());
        std::printf("  gets        %llu (%llu hits, %llu misses); sets %llu\n",
                    (unsigned long long)c.gets, (unsigned long long)c.hits,
                    (unsigned long long)c.misses, (unsigned long long)c.sets);
        std::printf("  throughput  %.0f replies/s\n", tput);
        std::printf("  latency us  p50 %.1f  p95 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  "
                    "(%llu samples, each <= 0.8%% above the exact value)\n",
                    us(p50), us(p95), us(p99), us(p999), us(h.max()),
                    (unsigned long long)h.count());
        if (o.open_loop)
            std::printf("  send lag us p50 %.1f  p99 %.1f  max %.1f  (behind the Poisson schedule; "
                        "included in the latency)\n",
                        us(lag.percentile(50)), us(lag.percentile(99)), us(lag.max()));
        if (engine->unsent())
            std::printf("  unsent      %llu (send: %s)\n", (unsigned long long)engine->unsent(),
                        engine->send_error().c_str());
    }
    if (c.replies == 0) {
        std::fprintf(stderr, "%s: no replies from %s\n", kComp, o.server.c_str());
        return 1;
    }
    if (c.errors > 0) {
        std::fprintf(stderr, "%s: %llu unexpected replies from %s\n", kComp,
                     (unsigned long long)c.errors, o.server.c_str());
        return 1;
    }
    return 0;
}

} // namespace bertha::kv
