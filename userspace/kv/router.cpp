#include "kv/router.hpp"

#include "kv/protocol.hpp"
#include "shard/steer.hpp"

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
constexpr size_t kIds = 65536;       // upstream request ids: one per outstanding request
constexpr size_t kGroups = 1024;     // split gets in flight
constexpr size_t kSweep = 256;       // pending entries looked at for expiry per round
constexpr size_t kReplyChunk = 1400; // merged replies go out in datagrams this big, as memcached's
constexpr uint16_t kNoGroup = 0xffff;

uint16_t get16(const char* p) { return uint16_t(uint8_t(p[0]) << 8 | uint8_t(p[1])); }
void put16(char* p, uint16_t v) { p[0] = char(v >> 8), p[1] = char(v & 0xff); }

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

struct Router::Impl {
    RouterOptions o;
    Fd svc, up;
    Addr local;
    RouterStats stats;
    Inbox from_clients, from_shards;
    Outbox to_shards, to_clients;

    struct Pending {
        bool used = false;
        uint16_t group = kNoGroup; // a part of a split get, or a request forwarded whole
        uint16_t client_id = 0;
        uint16_t seen = 0; // reply datagrams relayed or collected so far
        Addr client;
        Clock::time_point expires{};
        std::string part; // a split get's part: its reply's text so far
    };
    struct Group {
        bool used = false, failed = false;
        uint16_t client_id = 0, parts_left = 0;
        Addr client;
        std::string body; // merged VALUE items (or the first part's error reply)
    };
    std::vector<Pending> pending = std::vector<Pending>(kIds);
    std::vector<Group> groups = std::vector<Group>(kGroups);
    uint16_t next_id = 0;
    size_t next_group = 0, sweep_at = 0;

    Addr shard_addr(uint32_t s) const { return with_port(o.shards_at, uint16_t(o.base + s)); }
    uint32_t shard_of(std::string_view key) const {
        return bertha_shard_of(
            bertha_shard_hash(reinterpret_cast<const unsigned char*>(key.data()), key.size()),
            o.shards);
    }

    std::optional<uint16_t> take_id() {
        for (size_t k = 0; k < kIds; ++k) {
            uint16_t id = next_id++;
            if (!pending[id].used) return id;
        }
        return std::nullopt;
    }
    void release(uint16_t id) {
        Pending& p = pending[id];
        p.used = false;
        p.group = kNoGroup;
        p.part.clear();
    }

    // A request datagram from a client (its bytes are ours to rewrite in place).
    void from_client(char* d, size_t len, const Addr& client) {
        ++stats.requests;
        const std::string_view dg(d, len);
        auto frame = parse_frame(dg);
        if (!frame) return; // shorter than the frame header: memcached drops it too
        const auto bytes = std::span(reinterpret_cast<const uint8_t*>(d), len);
        if (auto s = shard::steer(bytes, o.shards)) return forward(d, len, client, *s);
        std::optional<Request> req;
        if (require_single(*frame))
            if (auto r = parse_request(frame->body)) req = *r;
        if (req && is_retrieval(req->verb) && req->wire_size == frame->body.size() &&
            req->nkeys > 1)
            return split(*frame, *req, client);
        // Not the steering rule's, and not a get to split: one shard answers it as memcached.
        uint32_t s = req && req->nkeys > 0 ? shard_of(req->key()) : 0;
        forward(d, len, client, s);
    }

    void forward(char* d, size_t len, const Addr& client, uint32_t shard) {
        auto id = take_id();
        if (!id) {
            ++stats.busy;
            return;
        }
        Pending& p = pending[*id];
        p.used = true;
        p.group = kNoGroup;
        p.client_id = get16(d);
        p.seen = 0;
        p.client = client;
        p.expires = Clock::now() + o.timeout;
        put16(d, *id); // the upstream id; the client's goes back on the reply
        if (to_shards.full()) to_shards.flush(up.get());
        to_shards.add(d, len, shard_addr(shard));
        ++stats.forwarded;
    }

    // A get/gets over several shards: one get per shard, their VALUE items merged. The slow
    // path: the parts are built in their own buffers and sent at once.
    void split(const Frame& f, const Request& req, const Addr& client) {
        size_t g = kGroups;
        for (size_t k = 0; k < kGroups && g == kGroups; ++k) {
            size_t i = (next_group + k) % kGroups;
            if (!groups[i].used) g = i;
        }
        if (g == kGroups) {
            ++stats.busy;
            return;
        }
        next_group = (g + 1) % kGroups;
        std::array<std::vector<std::string_view>, BERTHA_SHARD_MAX> by_shard_small{};
        std::vector<uint32_t> used_shards;
        for (auto key : req.key_list()) {
            uint32_t s = shard_of(key);
            if (by_shard_small[s].empty()) used_shards.push_back(s);
            by_shard_small[s].push_back(key);
        }
        Group& grp = groups[g];
        grp = Group{true, false, f.request_id, 0, client, {}};
        const auto expires = Clock::now() + o.timeout;
        std::array<char, kMaxDatagram> buf;
        for (uint32_t s : used_shards) {
            auto id = take_id();
            if (!id) { // give the whole get up: nothing half-answered goes back
                ++stats.busy;
                for (auto& p : pending)
                    if (p.used && p.group == g) p.used = false, p.group = kNoGroup;
                grp.used = false;
                return;
            }
            Pending& p = pending[*id];
            p.used = true;
            p.group = uint16_t(g);
            p.seen = 0;
            p.client = client;
            p.expires = expires;
            p.part.clear();
            Request part;
            part.verb = req.verb;
            part.nkeys = uint8_t(by_shard_small[s].size());
            for (size_t k = 0; k < part.nkeys; ++k) part.keys[k] = by_shard_small[s][k];
            Writer w(buf);
            put_frame_header(w, *id);
            if (!build_request(w, part) || !w.ok()) continue; // cannot happen: keys were valid
            ::sendto(up.get(), buf.data(), w.size(), 0, shard_addr(s).sa(), shard_addr(s).len());
            ++grp.parts_left;
        }
        ++stats.split;
    }

    // A reply datagram from a shard.
    void from_shard(char* d, size_t len) {
        auto frame = parse_frame(std::string_view(d, len));
        if (!frame) return;
        Pending& p = pending[frame->request_id];
        if (!p.used) {
            ++stats.stray;
            return;
        }
        ++p.seen;
        const bool last = p.seen >= frame->total;
        if (p.group == kNoGroup) {
            put16(d, p.client_id);
            if (to_clients.full()) to_clients.flush(svc.get());
            to_clients.add(d, len, p.client);
            ++stats.replies;
            if (last) release(frame->request_id);
            return;
        }
        p.part.append(frame->body); // memcached sends a reply's datagrams in order
        if (!last) return;
        Group& grp = groups[p.group];
        std::string_view text = p.part;
        if (text.ends_with("END\r\n")) {
            text.remove_suffix(5);
            grp.body.append(text);
        } else if (!grp.failed) { // an error from one shard is the whole get's answer
            grp.failed = true;
            grp.body.assign(text);
        }
        release(frame->request_id);
        if (--grp.parts_left == 0) finish(grp);
    }

    void finish(Group& grp) {
        if (!grp.failed) grp.body.append("END\r\n");
        const size_t chunk = kReplyChunk - kHeaderSize;
        const size_t total = (grp.body.size() + chunk - 1) / chunk;
        std::array<char, kReplyChunk> buf;
        for (size_t i = 0; i < total; ++i) {
            Writer w(buf);
            put_frame_header(w, grp.client_id, uint16_t(i), uint16_t(total));
            w.put(std::string_view(grp.body).substr(i * chunk, chunk));
            ::sendto(svc.get(), buf.data(), w.size(), 0, grp.client.sa(), grp.client.len());
            ++stats.replies;
        }
        ++stats.merged;
        grp.used = false;
        grp.body.clear();
    }

    // Forget what was not answered in time, a slice of the table per round.
    void sweep() {
        const auto now = Clock::now();
        for (size_t k = 0; k < kSweep; ++k) {
            size_t id = sweep_at++ % kIds;
            Pending& p = pending[id];
            if (!p.used || p.expires > now) continue;
            if (p.group != kNoGroup) {
                Group& grp = groups[p.group];
                grp.used = false; // its other parts find no group and are dropped
                grp.body.clear();
                for (auto& q : pending)
                    if (q.used && q.group == p.group && &q != &p) q.used = false, q.group = kNoGroup;
            }
            release(uint16_t(id));
            ++stats.expired;
        }
    }

    Result<size_t> round(Deadline deadline) {
        pollfd fds[2] = {{svc.get(), POLLIN, 0}, {up.get(), POLLIN, 0}};
        auto now = Clock::now();
        int ms = deadline <= now ? 0
                                 : int(std::min<int64_t>(
                                       100, std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count()));
        if (::poll(fds, 2, ms) < 0 && errno != EINTR) return fail_sys(std::string(kWho), "poll", errno);
        size_t handled = 0;
        auto c = from_clients.take(svc.get());
        if (!c) return std::unexpected(c.error());
        for (size_t i = 0; i < *c; ++i)
            from_client(from_clients.raw(i), from_clients.msgs[i].msg_len, from_clients.peer(i));
        to_shards.flush(up.get());
        auto s = from_shards.take(up.get());
        if (!s) return std::unexpected(s.error());
        for (size_t i = 0; i < *s; ++i) from_shard(from_shards.raw(i), from_shards.msgs[i].msg_len);
        to_clients.flush(svc.get());
        handled = *c + *s;
        sweep();
        return handled;
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
    auto p = std::make_unique<Impl>();
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
const RouterStats& Router::stats() const { return p_->stats; }

} // namespace bertha::kv
