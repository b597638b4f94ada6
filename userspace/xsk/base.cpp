#include "xsk/base.hpp"

#include "bertha/discovery.hpp"
#include "bertha/log.hpp"
#include "bertha/peer_table.hpp"

#include <cerrno>
#include <cstring>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

namespace bertha {

namespace {

constexpr std::string_view kComponent = "xsk";
constexpr auto kSendPatience = std::chrono::milliseconds(200); // a full TX ring, at most

// "AF_XDP cannot run here" in every form: a select then falls back to the next base.
std::unexpected<Error> cannot(const std::string& ifname, const std::string& why) {
    return fail(Errc::unavailable, std::string(kComponent),
                "AF_XDP on " + (ifname.empty() ? std::string("(no interface)") : ifname) + ": " +
                    why);
}

// The kernel socket that holds the port: bound to `local` (if given), connected to `peer` (if
// given), so the kernel picks the source address and an ephemeral port. Returns the local
// address it ended up with.
Result<Addr> hold_port(Fd& out, const Addr& local, const Addr& peer) {
    int family = !peer.empty() ? peer.family() : local.family();
    Fd fd(::socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd) return fail_sys(std::string(kComponent), "socket", errno);
    int small = 1; // never read: packets before the redirect, if any, are dropped here
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    if (!local.empty() && ::bind(fd.get(), local.sa(), local.len()) != 0)
        return fail_sys(std::string(kComponent), "bind " + local.to_string(), errno);
    if (!peer.empty() && ::connect(fd.get(), peer.sa(), peer.len()) != 0)
        return fail_sys(std::string(kComponent), "connect " + peer.to_string(), errno);
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len) != 0)
        return fail_sys(std::string(kComponent), "getsockname", errno);
    out = std::move(fd);
    return Addr::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

} // namespace

XskConn::~XskConn() = default;

Result<XskConn> XskConn::open(const XskBaseOptions& o, const std::string& ifname,
                              const Addr& local, const Addr& peer) {
    if (ifname.empty())
        return cannot(ifname, "no interface is known for this flow (" +
                                  (peer.empty() ? "a wildcard local address"
                                                : "no route to " + peer.to_string()) +
                                  "): name the local address");
    XskConn c;
    c.ifname_ = ifname;
    c.peer_ = peer;
    auto bound = hold_port(c.port_, local, peer);
    if (!bound) return std::unexpected(bound.error());
    c.local_ = *bound;

    // Copy or zero-copy, as discovery found the interface (cached per interface): where the
    // driver does not advertise zero-copy, the socket binds in copy mode without trying.
    XskMode mode = o.mode;
    if (mode == XskMode::automatic) {
        const ProbeReport& r = probe_interface(ifname);
        if (r.interface && !r.interface->xsk_zerocopy.yes) {
            mode = XskMode::copy;
            log(LogLevel::debug, kComponent,
                ifname + ": copy mode (discovery: " + r.interface->xsk_zerocopy.why + ")");
        }
    }

    auto queues = XskSocket::queues(ifname);
    if (!queues) return cannot(ifname, queues.error().what());
    if (*queues == 0 || *queues > BERTHA_XSK_QUEUES)
        return cannot(ifname, std::to_string(*queues) + " RX queues (a flow's sockets cover 1 to " +
                                  std::to_string(BERTHA_XSK_QUEUES) + ")");
    for (uint32_t q = 0; q < *queues; ++q) {
        XskOptions xo;
        xo.ifname = ifname;
        xo.queue = q;
        xo.local = c.local_;
        xo.peer = peer;
        xo.mode = mode;
        xo.fill_size = xo.comp_size = xo.rx_size = xo.tx_size = o.ring_size;
        auto s = XskSocket::open(xo); // it waits out a queue still busy from a closed socket
        if (!s) return cannot(ifname, s.error().what());
        c.socks_.push_back(std::move(*s));
        c.pfds_.push_back({c.socks_.back().fd(), POLLIN, 0});
    }

    OffloadFlow flow;
    flow.chunnel = "xsk/af_xdp";
    flow.ifname = ifname;
    flow.hook = load::Hook::xdp;
    flow.port = c.local_.port();
    if (!peer.empty()) flow.peer = peer;
    const load::StageSpec stages[] = {{"xsk", ""}};
    auto h = attach_offload(flow, stages);
    if (!h) return cannot(ifname, h.error().what());
    c.offload_ = std::move(*h);
    for (uint32_t q = 0; q < c.socks_.size(); ++q)
        if (auto r = c.offload_.set_xsk(q, c.socks_[q].fd()); !r)
            return cannot(ifname, r.error().what());
    log(LogLevel::debug, kComponent,
        flow.text() + ": " + std::to_string(c.socks_.size()) + " AF_XDP socket(s), " +
            std::string(to_string(c.mode())) + " mode, chain " +
            std::to_string(c.offload_.chain()));
    return c;
}

Result<size_t> XskConn::send(std::span<Msg> batch) {
    if (socks_.empty()) return fail(Errc::closed, std::string(kComponent), "connection closed");
    // Like udp, take the whole batch: a TX ring that stays full (the socket waits a little for
    // room each time) is asked again, for a bounded time, before the count comes back short.
    size_t done = 0;
    const Deadline until = after(kSendPatience);
    while (done < batch.size()) {
        auto n = socks_[0].send(batch.subspan(done));
        if (!n) {
            if (done) break; // what went out is reported; the error comes back on the next call
            return n;
        }
        done += *n;
        if (*n == 0 && Clock::now() >= until) break;
    }
    sent_ += done;
    return done;
}

Result<size_t> XskConn::recv(std::span<Msg> batch, Deadline deadline) {
    if (socks_.empty()) return fail(Errc::closed, std::string(kComponent), "connection closed");
    if (batch.empty()) return size_t(0);
    if (socks_.size() == 1) {
        auto n = socks_[0].recv(batch, deadline);
        if (n) received_ += *n;
        return n;
    }
    // Several queues: take what is ready on each, starting where the last call stopped, and
    // wait on all of them together only when none had anything.
    for (;;) {
        size_t got = 0;
        for (size_t i = 0; i < socks_.size() && got < batch.size(); ++i) {
            auto& s = socks_[(next_ + i) % socks_.size()];
            auto n = s.recv(batch.subspan(got), no_wait);
            if (!n) return std::unexpected(n.error());
            got += *n;
        }
        next_ = (next_ + 1) % socks_.size();
        if (got > 0) {
            received_ += got;
            return got;
        }
        auto now = Clock::now();
        if (deadline == no_wait || now >= deadline) return size_t(0);
        auto ms = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
        if (::poll(pfds_.data(), pfds_.size(), int(std::min<int64_t>(ms, 1000))) < 0 &&
            errno != EINTR)
            return fail_sys(std::string(kComponent), "poll", errno);
    }
}

Result<size_t> XskConn::alloc(std::span<Msg> out) {
    if (socks_.empty()) return fail(Errc::closed, std::string(kComponent), "connection closed");
    return socks_[0].alloc(out);
}

void XskConn::describe(std::vector<std::string>& out) const {
    out.push_back("xsk/af_xdp (" + std::string(to_string(mode())) + ", " +
                  std::to_string(socks_.size()) + " queue" + (socks_.size() == 1 ? "" : "s") +
                  " on " + ifname_ + ")");
}

int XskConn::wait_fd() const { return socks_.size() == 1 ? socks_[0].fd() : -1; }

XskMode XskConn::mode() const { return socks_.empty() ? XskMode::automatic : socks_[0].mode(); }

XskConnStats XskConn::stats() const { return {sent_, received_, uint32_t(socks_.size())}; }

Result<XskConn> Xsk::connect(const Addr& peer, const ConnectContext& ctx) const {
    if (ctx.peer_any_port)
        return fail(Errc::unavailable, std::string(kComponent),
                    "a connection to every port of its peer (the stack has shard/client or "
                    "shard/xdp) is not supported on xsk yet");
    return XskConn::open(opts_, ctx.flow.ifname, Addr{}, peer);
}

Result<XskConn> Xsk::bind(const Addr& local, const ConnectContext& ctx) const {
    return XskConn::open(opts_, ctx.flow.ifname, local, Addr{});
}

} // namespace bertha

// ---------------------------------------------------------------------------------------------
// The listener: the bound connection's datagrams, one queue per peer (bertha/peer_table.hpp).

namespace bertha {

class XskDemux {
  public:
    static constexpr size_t kBatch = 64;
    XskDemux(XskConn c, uint32_t peer_queue, uint32_t backlog)
        : conn(std::move(c)), table(peer_queue, backlog), scratch(kBatch) {}

    // Receive one batch (waiting until the deadline) and route it; returns how many arrived.
    Result<size_t> pump(Deadline deadline) {
        auto n = conn.recv(scratch, deadline);
        if (!n) return n;
        for (size_t i = 0; i < *n; ++i) route(std::move(scratch[i]));
        return n;
    }
    void route(Msg&& m) {
        switch (table.route(std::move(m))) {
        case PeerTable::Routed::queue_full: ++stats.dropped_queue_full; break;
        case PeerTable::Routed::backlog_full: ++stats.dropped_backlog; break;
        default: break;
        }
    }

    XskConn conn;
    PeerTable table;
    std::vector<Msg> scratch; // the pump's batch: allocated once
    XskListenerStats stats;
};

XskPeerConn::XskPeerConn(std::shared_ptr<XskDemux> d, uint32_t queue, const Addr& peer)
    : d_(std::move(d)), queue_(queue), peer_(peer) {}
XskPeerConn::XskPeerConn(XskPeerConn&&) noexcept = default;
XskPeerConn& XskPeerConn::operator=(XskPeerConn&& o) noexcept {
    if (this != &o) {
        if (d_) d_->table.close(queue_);
        d_ = std::move(o.d_);
        queue_ = o.queue_;
        peer_ = o.peer_;
    }
    return *this;
}

int XskPeerConn::wait_fd() const { return d_ ? d_->conn.wait_fd() : -1; }
XskPeerConn::~XskPeerConn() {
    if (d_) d_->table.close(queue_);
}

namespace {
std::unexpected<Error> peer_gone(const Addr& peer) {
    return fail(Errc::closed, "xsk " + peer.to_string(),
                "the peer started a new connection from the same address; this one is closed");
}
} // namespace

Result<size_t> XskPeerConn::send(std::span<Msg> batch) {
    if (!d_) return peer_gone(peer_);
    for (auto& m : batch) m.set_peer(peer_);
    return d_->conn.send(batch);
}

Result<size_t> XskPeerConn::recv(std::span<Msg> batch, Deadline deadline) {
    if (!d_) return peer_gone(peer_);
    return recv_queued(d_->table.queue(queue_), batch, deadline,
                       [&](Deadline d) { return d_->pump(d); });
}

Result<size_t> XskPeerConn::alloc(std::span<Msg> out) {
    if (!d_) return peer_gone(peer_);
    return d_->conn.alloc(out);
}

void XskPeerConn::describe(std::vector<std::string>& out) const {
    if (d_)
        d_->conn.describe(out);
    else
        out.push_back(name_of(XskConn::info));
}

Addr XskPeerConn::local() const { return d_ ? d_->conn.local() : Addr{}; }

std::optional<uint32_t> XskPeerConn::redirect_chain() const {
    if (!d_ || !d_->conn.offload()) return std::nullopt;
    return d_->conn.offload().chain();
}

void XskPeerConn::restart(Msg&& first) {
    if (!d_) return;
    d_->table.close(queue_);
    d_->route(std::move(first)); // an unknown peer again: it lands in the accept backlog
    d_.reset();
}

XskListener::XskListener(std::shared_ptr<XskDemux> d) : d_(std::move(d)) {}
XskListener::XskListener(XskListener&&) noexcept = default;
XskListener& XskListener::operator=(XskListener&&) noexcept = default;
XskListener::~XskListener() = default;

Result<std::optional<XskPeerConn>> XskListener::accept(Deadline deadline) {
    auto q = accept_queued(d_->table, deadline, [&](Deadline d) { return d_->pump(d); });
    if (!q) return std::unexpected(std::move(q.error()));
    if (!*q) return std::optional<XskPeerConn>{};
    return std::optional<XskPeerConn>(XskPeerConn(d_, **q, d_->table.peer(**q)));
}

Addr XskListener::local() const { return d_->conn.local(); }
XskListenerStats XskListener::stats() const { return d_->stats; }
const XskConn& XskListener::bound() const { return d_->conn; }

Result<XskListener> Xsk::listen(const Addr& local, const ConnectContext& ctx) const {
    auto c = XskConn::open(opts_, ctx.flow.ifname, local, Addr{});
    if (!c) return std::unexpected(c.error());
    return XskListener(std::make_shared<XskDemux>(std::move(*c), opts_.peer_queue,
                                                  opts_.accept_backlog));
}

} // namespace bertha
