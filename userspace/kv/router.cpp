#include "kv/router.hpp"

#include "bertha/kv.h"


#include <array>
#include <cerrno>
#include <cstring>
#include <optional>
#include <netinet/in.h>
#include <poll.h>
#include <string_view>
#include <sys/socket.h>
#include <vector>

namespace bertha::kv {

namespace {

constexpr std::string_view kWho = "kv router";
constexpr size_t kBatch = 32;        // datagrams per recvmmsg / sendmmsg
constexpr size_t kMaxDatagram = 65536;


Addr with_port(const Addr& a, uint16_t port) {
    sockaddr_storage ss{};
    std::memcpy(&ss, a.sa(), a.len());
    if (ss.ss_family == AF_INET)
        reinterpret_cast<sockaddr_in*>(&ss)->sin_port = htons(port);
    else
        reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port = htons(port);
    return Addr::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), a.len());
}

// One socket's receive side: kBatch buffers, received into with one recvmmsg.
struct Inbox {
    std::vector<char> mem = std::vector<char>(kBatch * kMaxDatagram);
    std::array<mmsghdr, kBatch> msgs{};
    std::array<iovec, kBatch> iov{};
    std::array<sockaddr_storage, kBatch> from{};
    Inbox() {
        for (size_t i = 0; i < kBatch; ++i) {
            iov[i] = {mem.data() + i * kMaxDatagram, kMaxDatagram};
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = &from[i];
        }
    }
    // Non-blocking: what is there now.
    Result<size_t> take(int fd) {
        for (size_t i = 0; i < kBatch; ++i) msgs[i].msg_hdr.msg_namelen = sizeof from[i];
        int n = ::recvmmsg(fd, msgs.data(), kBatch, MSG_DONTWAIT, nullptr);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return size_t(0);
            return fail_sys(std::string(kWho), "recvmmsg", errno);
        }
        return size_t(n);
    }
    std::string_view data(size_t i) const { return {mem.data() + i * kMaxDatagram, msgs[i].msg_len}; }
    char* raw(size_t i) { return mem.data() + i * kMaxDatagram; }
    Addr peer(size_t i) const {
        return Addr::from_sockaddr(reinterpret_cast<const sockaddr*>(&from[i]),
                                   msgs[i].msg_hdr.msg_namelen);
    }
};

// Datagrams to send on one socket, flushed with one sendmmsg. They point into an Inbox's
// buffers, so a round flushes before it receives again.
struct Outbox {
    std::array<mmsghdr, kBatch> msgs{};
    std::array<iovec, kBatch> iov{};
    std::array<sockaddr_storage, kBatch> to{};
    size_t n = 0;
    bool full() const { return n == kBatch; }
    void add(const char* p, size_t len, const Addr& dst) {
        iov[n] = {const_cast<char*>(p), len};
        std::memcpy(&to[n], dst.sa(), dst.len());
        msgs[n] = {};
        msgs[n].msg_hdr.msg_iov = &iov[n];
        msgs[n].msg_hdr.msg_iovlen = 1;
        msgs[n].msg_hdr.msg_name = &to[n];
        msgs[n].msg_hdr.msg_namelen = dst.len();
        ++n;
    }
    // Best effort, like UDP: a datagram the kernel refuses is dropped (the client retries).
    void flush(int fd) {
        size_t done = 0;
        for (int tries = 0; done < n && tries < 4; ++tries) {
            int k = ::sendmmsg(fd, msgs.data() + done, unsigned(n - done), 0);
            if (k <= 0) {
                if (k < 0 && errno != EAGAIN && errno != EINTR) ++done; // skip the one refused
                continue;
            }
            done += size_t(k);
        }
        n = 0;
    }
};

} // namespace

struct Router::Impl final : RouterSink {
    RouterOptions o;
    Fd svc, up;
    Addr local;
    RouterCore core;
    Inbox from_clients, from_shards;
    Outbox to_shards, to_clients;

    explicit Impl(RouterCore c) : core(std::move(c)) {}

    Addr shard_addr(uint32_t s) const { return with_port(o.shards_at, uint16_t(o.base + s)); }

    // The core's own datagrams (a split get's parts, a merged reply): sent at once, since
    // they live in the core's buffer only during the call.
    void to_shard(std::string_view dg, uint32_t s) override {
        const Addr a = shard_addr(s);
        ::sendto(up.get(), dg.data(), dg.size(), 0, a.sa(), a.len());
    }
    void to_client(std::string_view dg, const Addr& client) override {
        ::sendto(svc.get(), dg.data(), dg.size(), 0, client.sa(), client.len());
    }

    Result<size_t> round(Deadline deadline) {
        pollfd fds[2] = {{svc.get(), POLLIN, 0}, {up.get(), POLLIN, 0}};
        auto now = Clock::now();
        int ms = deadline <= now ? 0
                                 : int(std::min<int64_t>(
                                       100, std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count()));
        if (::poll(fds, 2, ms) < 0 && errno != EINTR) return fail_sys(std::string(kWho), "poll", errno);
        auto c = from_clients.take(svc.get());
        if (!c) return std::unexpected(c.error());
        for (size_t i = 0; i < *c; ++i) {
            char* d = from_clients.raw(i);
            const size_t len = from_clients.msgs[i].msg_len;
            if (auto s = core.request(d, len, from_clients.peer(i), *this)) {
                if (to_shards.full()) to_shards.flush(up.get());
                to_shards.add(d, len, shard_addr(*s));
            }
        }
        to_shards.flush(up.get());
        auto s = from_shards.take(up.get());
        if (!s) return std::unexpected(s.error());
        for (size_t i = 0; i < *s; ++i) {
            char* d = from_shards.raw(i);
            const size_t len = from_shards.msgs[i].msg_len;
            if (auto client = core.reply(d, len, *this)) {
                if (to_clients.full()) to_clients.flush(svc.get());
                to_clients.add(d, len, *client);
            }
        }
        to_clients.flush(svc.get());
        core.sweep();
        return *c + *s;
    }
};

Result<Router> Router::open(const RouterOptions& o) {
    if (o.shards < 1 || o.shards > BERTHA_SHARD_MAX)
        return fail(bertha::Errc::invalid_argument, std::string(kWho),
                    "shards must be 1 to " + std::to_string(BERTHA_SHARD_MAX));
    if (o.base == 0 || o.base + o.shards - 1 > 65535)
        return fail(bertha::Errc::invalid_argument, std::string(kWho), "shard ports out of range");
    if (o.listen.empty() || o.shards_at.empty() || o.listen.family() != o.shards_at.family())
        return fail(bertha::Errc::invalid_argument, std::string(kWho),
                    "needs a listen address and the shards' address, of one family");
    auto core = RouterCore::make({.shards = o.shards, .timeout = o.timeout});
    if (!core) return std::unexpected(std::move(core.error()));
    auto p = std::make_unique<Impl>(std::move(*core));
    p->o = o;
    p->svc = Fd(::socket(o.listen.family(), SOCK_DGRAM | SOCK_CLOEXEC, 0));
    p->up = Fd(::socket(o.listen.family(), SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!p->svc || !p->up) return fail_sys(std::string(kWho), "socket", errno);
    int sz = 4 << 20;
    for (int fd : {p->svc.get(), p->up.get()}) {
        ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
        ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    }
    if (::bind(p->svc.get(), o.listen.sa(), o.listen.len()) != 0)
        return fail_sys(std::string(kWho), "bind " + o.listen.to_string(), errno);
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    ::getsockname(p->svc.get(), reinterpret_cast<sockaddr*>(&ss), &len);
    p->local = Addr::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
    return Router(std::move(p));
}

Router::Router(std::unique_ptr<Impl> p) : p_(std::move(p)) {}
Router::Router(Router&&) noexcept = default;
Router& Router::operator=(Router&&) noexcept = default;
Router::~Router() = default;

Result<size_t> Router::poll_once(Deadline deadline) { return p_->round(deadline); }

Result<void> Router::run(const std::atomic<bool>& stop, Deadline until) {
    while (!stop.load(std::memory_order_relaxed) && Clock::now() < until)
        if (auto r = p_->round(std::min(until, Clock::now() + std::chrono::milliseconds(100))); !r)
            return std::unexpected(r.error());
    return {};
}

Addr Router::local() const { return p_->local; }
const RouterStats& Router::stats() const { return p_->core.stats(); }

} // namespace bertha::kv
