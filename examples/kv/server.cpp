// The kv server (server.hpp): per-shard threads over plain blocking UDP sockets, batched with
// recvmmsg/sendmmsg (or, with --backend memcached, memcached processes: memcached_shards.hpp).
// Plain sockets rather than bertha::Udp: a shard answers any peer from one socket, needs no
// per-peer demultiplexing, and must look exactly like a memcached UDP port.
#include "server.hpp"
#include "service.hpp"

#include "bertha/addr.hpp"
#include "bertha/fd.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <sys/socket.h>
#include <thread>
#include <vector>

namespace bertha::kv {

// ---- the table -------------------------------------------------------------------------------
namespace {
constexpr std::time_t kRelativeLimit = 60 * 60 * 24 * 30; // memcached: larger is a unix time

std::time_t expiry_of(int32_t exptime, std::time_t now) {
    if (exptime == 0) return 0;
    if (exptime < 0) return 1; // already expired
    if (exptime > kRelativeLimit) return exptime <= now ? 1 : exptime;
    return now + exptime;
}
} // namespace

Table::Item* Table::find(std::string_view key, std::time_t now) {
    auto it = items_.find(key);
    if (it == items_.end()) return nullptr;
    if (it->second.expires != 0 && it->second.expires <= now) {
        items_.erase(it);
        return nullptr;
    }
    return &it->second;
}

void Table::store(const Request& r, std::time_t now) {
    auto it = items_.find(r.key());
    if (it == items_.end()) it = items_.emplace(std::string(r.key()), Item{}).first;
    Item& item = it->second;
    item.data.assign(r.data);
    item.flags = r.flags;
    item.expires = expiry_of(r.exptime, now);
    item.cas = next_cas_++;
}

void Table::apply(const Request& r, Writer& w, std::time_t now) {
    switch (r.verb) {
    case Verb::get:
    case Verb::gets:
        for (auto key : r.key_list()) {
            if (const Item* item = find(key, now))
                put_value(w, Value{key, item->flags, item->data, r.verb == Verb::gets, item->cas});
        }
        put_end(w);
        return;
    case Verb::set:
    case Verb::add:
    case Verb::replace: {
        bool exists = find(r.key(), now) != nullptr;
        bool ok = r.verb == Verb::set || (r.verb == Verb::add) != exists;
        if (ok) store(r, now);
        if (!r.noreply) put_status(w, ok ? Status::stored : Status::not_stored);
        return;
    }
    case Verb::del: {
        bool exists = find(r.key(), now) != nullptr;
        if (exists) items_.erase(items_.find(r.key()));
        if (!r.noreply) put_status(w, exists ? Status::deleted : Status::not_found);
        return;
    }
    }
}

size_t answer(Table& t, std::string_view datagram, std::span<char> out, std::time_t now,
              AnswerStats& stats) {
    auto frame = parse_frame(datagram);
    if (!frame) return 0; // no header, no request id to answer to: memcached drops it too
    Writer w(out);
    put_frame_header(w, frame->request_id);
    const size_t header = w.size();
    if (auto single = require_single(*frame); !single) {
        ++stats.errors;
        put_error_reply(w, single.error());
        return w.size();
    }
    std::string_view body = frame->body;
    // Every command of the datagram; each takes at least one byte, so this ends.
    while (!body.empty()) {
        auto req = parse_request(body);
        if (!req) {
            // memcached's reply, then on where memcached would resynchronize (if anywhere)
            ++stats.errors;
            put_error_reply(w, req.error());
            if (req.error().resume == 0) break;
            body.remove_prefix(std::min(req.error().resume, body.size()));
            continue;
        }
        ++stats.commands;
        t.apply(*req, w, now);
        body.remove_prefix(req->wire_size);
    }
    if (!w.ok()) { // the replies do not fit one datagram
        Writer e(out);
        put_frame_header(e, frame->request_id);
        put_status(e, Status::server_error, "response too large for one datagram");
        return e.size();
    }
    return w.size() == header ? 0 : w.size();
}

// ---- the workers -----------------------------------------------------------------------------
namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) {
    g_stop.store(true, std::memory_order_relaxed);
}

constexpr size_t kDatagram = 65536;
constexpr size_t kMaxReply = 65507; // the largest UDP payload over IPv4

struct ShardStats {
    std::atomic<uint64_t> datagrams{0}, replies{0}, commands{0}, errors{0};
};

void run_shard(int fd, size_t batch, ShardStats& st) {
    Table table;
    std::vector<char> in(batch * kDatagram), out(batch * kDatagram);
    std::vector<mmsghdr> rmsg(batch), smsg(batch);
    std::vector<iovec> riov(batch), siov(batch);
    std::vector<sockaddr_storage> peers(batch);
    AnswerStats as;
    while (!g_stop.load(std::memory_order_relaxed)) {
        for (size_t i = 0; i < batch; ++i) {
            riov[i] = {in.data() + i * kDatagram, kDatagram};
            rmsg[i] = {};
            rmsg[i].msg_hdr.msg_iov = &riov[i];
            rmsg[i].msg_hdr.msg_iovlen = 1;
            rmsg[i].msg_hdr.msg_name = &peers[i];
            rmsg[i].msg_hdr.msg_namelen = sizeof(peers[i]);
        }
        // SO_RCVTIMEO bounds the wait, so the stop flag is seen within 100 ms.
        int n = ::recvmmsg(fd, rmsg.data(), unsigned(batch), MSG_WAITFORONE, nullptr);
        if (n <= 0) continue;
        std::time_t now = std::time(nullptr);
        size_t nsend = 0;
        for (int i = 0; i < n; ++i) {
            if (rmsg[i].msg_hdr.msg_flags & MSG_TRUNC) continue;
            std::string_view d(in.data() + size_t(i) * kDatagram, rmsg[i].msg_len);
            size_t len = answer(table, d, {out.data() + nsend * kDatagram, kMaxReply}, now, as);
            if (len == 0) continue;
            siov[nsend] = {out.data() + nsend * kDatagram, len};
            smsg[nsend] = {};
            smsg[nsend].msg_hdr.msg_iov = &siov[nsend];
            smsg[nsend].msg_hdr.msg_iovlen = 1;
            smsg[nsend].msg_hdr.msg_name = &peers[i];
            smsg[nsend].msg_hdr.msg_namelen = rmsg[i].msg_hdr.msg_namelen;
            ++nsend;
        }
        // A reply that cannot be sent (peer gone, buffer full) is dropped, as UDP allows.
        for (size_t sent = 0, tries = 0; sent < nsend && tries < 4; ++tries) {
            int m = ::sendmmsg(fd, smsg.data() + sent, unsigned(nsend - sent), 0);
            if (m > 0)
                sent += size_t(m);
            else if (errno != EINTR && errno != EAGAIN)
                ++sent; // skip the one that failed
        }
        st.datagrams.fetch_add(uint64_t(n), std::memory_order_relaxed);
        st.replies.fetch_add(nsend, std::memory_order_relaxed);
        st.commands.store(as.commands, std::memory_order_relaxed);
        st.errors.store(as.errors, std::memory_order_relaxed);
    }
}

Result<Fd> open_shard(const std::string& bind, uint16_t port) {
    std::string text = bind.find(':') != std::string::npos ? "[" + bind + "]" : bind;
    auto addr = Addr::parse(text + ":" + std::to_string(port));
    if (!addr) return std::unexpected(addr.error());
    Fd fd(::socket(addr->family(), SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd) return fail_sys("kv server", "socket", errno);
    int buf = 4 << 20;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
    ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
    timeval tv{0, 100 * 1000};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (::bind(fd.get(), addr->sa(), addr->len()) != 0)
        return fail_sys("kv server", "bind " + addr->to_string() + " failed", errno);
    return fd;
}

// SIGINT/SIGTERM set the stop flag (installed before any shard starts).
void on_stop_signals() {
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);
}

// Returns when the stop flag is set, after --duration-s, or when `alive` says a shard is gone.
template <class Alive> void wait_for_stop(const ServerOptions& o, Alive alive) {
    auto start = std::chrono::steady_clock::now();
    while (!g_stop.load(std::memory_order_relaxed)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        if (o.duration_s > 0 &&
            std::chrono::steady_clock::now() - start >= std::chrono::duration<double>(o.duration_s))
            g_stop.store(true);
        if (!alive()) g_stop.store(true);
    }
}

void print_listening(const ServerOptions& o) {
    std::printf("kv server: listening, %zu shards on ports %u-%u (service port %u: %s)\n",
                o.shards, unsigned(o.port + 1), unsigned(o.port + o.shards), unsigned(o.port),
                !o.service ? "left free (--no-service)"
                : o.xdp    ? "the shard chunnel: xdp where this host can, proxy, client"
                           : "the shard chunnel: proxy, client (--no-xdp)");
    std::fflush(stdout);
}

// The service port's thread (service.hpp): started once the shards answer, stopped with them.
// A failure there (the port taken) stops the server.
class ServiceThread {
  public:
    explicit ServiceThread(const ServerOptions& o) {
        if (!o.service) return;
        auto at = Addr::parse((o.bind.find(':') != std::string::npos ? "[" + o.bind + "]" : o.bind) +
                              ":" + std::to_string(o.port));
        if (!at) {
            std::fprintf(stderr, "kv server: %s\n", at.error().what().c_str());
            failed_ = true;
            return;
        }
        ServiceOptions so;
        so.listen = *at;
        so.base = uint16_t(o.port + 1);
        so.shards = uint32_t(o.shards);
        so.xdp = o.xdp;
        so.idle = std::chrono::seconds(o.idle_s);
        thread_ = std::thread([this, so] {
            if (run_service(so, g_stop) != 0) failed_ = true;
        });
    }
    ~ServiceThread() {
        if (thread_.joinable()) thread_.join(); // it returns once g_stop is set
    }
    bool alive() const { return !failed_.load(); }

  private:
    std::atomic<bool> failed_{false};
    std::thread thread_;
};

// --backend memcached: one memcached process per shard instead of the threads; same ports,
// same readiness line, same stop.
int run_memcached(const ServerOptions& o) {
    on_stop_signals();
    auto shards = MemcachedShards::start(o.bind, uint16_t(o.port + 1), o.shards, o.memcached);
    if (!shards) {
        std::fprintf(stderr, "%s\n", shards.error().what().c_str());
        return 1;
    }
    const auto& list = shards->shards();
    for (size_t i = 0; i < list.size(); ++i)
        std::printf("kv server: shard %zu on %s port %u (memcached pid %d)\n", i, o.bind.c_str(),
                    unsigned(list[i].port), int(list[i].pid));
    ServiceThread service(o);
    print_listening(o);

    std::string died;
    wait_for_stop(o, [&] {
        died = shards->check_exited();
        if (died.empty() && !service.alive()) died = "the service port failed";
        return died.empty();
    });
    int rc = 0;
    if (!died.empty()) {
        std::fprintf(stderr, "kv server: %s; stopping the others\n", died.c_str());
        rc = 1;
    }
    auto report = shards->stop();
    for (size_t i = 0; i < report.size(); ++i)
        std::printf("kv server: shard %zu: memcached %s\n", i, report[i].c_str());
    return rc;
}

// --backend external: the shards run already (someone else's memcached on P+1..P+N); this
// process is the service port alone.
int run_external(const ServerOptions& o) {
    if (!o.service) {
        std::fprintf(stderr, "kv server: --backend external with --no-service has nothing to do\n");
        return 2;
    }
    on_stop_signals();
    ServiceThread service(o);
    print_listening(o);
    wait_for_stop(o, [&] { return service.alive(); });
    return service.alive() ? 0 : 1;
}

} // namespace

int run_server(const ServerOptions& o) {
    if (o.shards == 0 || o.shards > BERTHA_SHARD_MAX || size_t(o.port) + o.shards > 65535) {
        std::fprintf(stderr,
                     "kv server: %zu shards from port %u do not fit (1..%d, ports <= "
                     "65535)\n",
                     o.shards, unsigned(o.port), BERTHA_SHARD_MAX);
        return 2;
    }
    if (o.backend == Backend::memcached) return run_memcached(o);
    if (o.backend == Backend::external) return run_external(o);
    std::vector<Fd> fds;
    for (size_t i = 0; i < o.shards; ++i) {
        auto fd = open_shard(o.bind, uint16_t(o.port + 1 + i));
        if (!fd) {
            std::fprintf(stderr, "kv server: shard %zu: %s\n", i, fd.error().what().c_str());
            return 1;
        }
        fds.push_back(std::move(*fd));
    }
    on_stop_signals();

    std::vector<ShardStats> stats(o.shards);
    std::vector<std::thread> workers;
    for (size_t i = 0; i < o.shards; ++i)
        workers.emplace_back(run_shard, fds[i].get(), std::max<size_t>(1, o.batch),
                             std::ref(stats[i]));
    for (size_t i = 0; i < o.shards; ++i)
        std::printf("kv server: shard %zu on %s port %u\n", i, o.bind.c_str(),
                    unsigned(o.port + 1 + i));
    ServiceThread service(o);
    print_listening(o);

    wait_for_stop(o, [&] { return service.alive(); });
    if (!service.alive()) std::fprintf(stderr, "kv server: the service port failed; stopping\n");
    for (auto& w : workers) w.join();
    for (size_t i = 0; i < o.shards; ++i)
        std::printf("kv server: shard %zu: %lu datagrams, %lu replies, %lu commands, %lu errors\n",
                    i, (unsigned long)stats[i].datagrams.load(),
                    (unsigned long)stats[i].replies.load(), (unsigned long)stats[i].commands.load(),
                    (unsigned long)stats[i].errors.load());
    return service.alive() ? 0 : 1;
}

} // namespace bertha::kv
