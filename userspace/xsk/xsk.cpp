#include "xsk/xsk.hpp"

#include "bertha/log.hpp"
#include "bertha/parse.h"
#include "xsk/frame.hpp"
#include "xsk/iface.hpp"
#include "xsk/neigh.hpp"
#include "xsk/umem.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <linux/if_xdp.h>
#include <optional>
#include <poll.h>
#include <sched.h>
#include <thread>
#include <sys/socket.h>
#include <unistd.h>
#include <xdp/xsk.h>

namespace bertha {

using xsk::FrameEnds;
using xsk::Interface;
using xsk::Neighbours;
using xsk::NextHop;
using xsk::UdpFrame;
using xsk::Umem;

std::string_view to_string(XskMode m) noexcept {
    switch (m) {
    case XskMode::automatic:
        return "automatic";
    case XskMode::copy:
        return "copy";
    case XskMode::zerocopy:
        return "zerocopy";
    }
    return "?";
}

namespace {

constexpr int kMaxRecvRounds = 1'000'000; // polls in one recv (each bounded by the deadline)
constexpr int kBusyTries = 25;             // x kBusyWait: how long a queue may stay busy after a
constexpr auto kBusyWait = std::chrono::milliseconds(20); // close before bind gives up
constexpr int kMaxWaitRounds = 10'000;    // polls while send waits for TX room
constexpr auto kPollSlice = std::chrono::seconds(1); // one poll's longest wait

bool pow2(uint32_t v) {
    return v && !(v & (v - 1));
}

bool is_wildcard(const Addr& a) {
    if (a.family() == AF_INET)
        return reinterpret_cast<const sockaddr_in*>(a.sa())->sin_addr.s_addr == 0;
    if (a.family() == AF_INET6)
        return IN6_IS_ADDR_UNSPECIFIED(&reinterpret_cast<const sockaddr_in6*>(a.sa())->sin6_addr);
    return false;
}

timespec to_timespec(Clock::duration d) {
    if (d < Clock::duration::zero()) d = Clock::duration::zero();
    if (d > kPollSlice) d = kPollSlice;
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
    return timespec{time_t(ns / 1'000'000'000), long(ns % 1'000'000'000)};
}

} // namespace

// ---------------------------------------------------------------------------------------------

struct XskSocket::Impl {
    XskOptions o;
    std::string who; // "xsk on veth0 queue 0"
    Interface iface;
    std::optional<Neighbours> neigh;
    bool wildcard = false;

    // Declared before everything that holds a Msg or a frame: destroyed after them.
    std::unique_ptr<BufferPool> pool;
    std::byte* base = nullptr; // the UMEM mapping
    size_t umem_bytes = 0;
    uint32_t rx_frames = 0;
    std::vector<Msg> inflight; // by slot: frames on the TX ring until their completion
    uint32_t in_flight = 0;
    std::vector<uint32_t> refill; // RX frames given back, waiting for room on the fill ring
    std::unique_ptr<Umem> umem;
    xsk_socket* sock = nullptr;
    xsk_ring_cons rx{};
    xsk_ring_prod tx{};
    int fd = -1;
    XskMode mode = XskMode::copy;

    size_t hdr_len = 0;
    size_t max_payload = 0;
    uint16_t ip_id = 0;
    bool filled_once = false;
    XskStats stats;

    ~Impl() {
        if (pool) pool->set_recycle(nullptr, nullptr);
        if (sock) xsk_socket__delete(sock); // the kernel lets go of every frame
        sock = nullptr;
        umem.reset();
        inflight.clear(); // back to the pool's free list (no recycle hook any more)
    }

    // A received frame given back (its Msg dropped): straight onto the fill ring, so that the
    // kernel can receive into it again at once; to the refill list if the ring is full.
    static void recycle(void* self, uint32_t slot) noexcept {
        auto* s = static_cast<Impl*>(self);
        uint32_t idx = 0;
        if (s->umem && s->refill.empty()) {
            if (xsk_prod_nb_free(&s->umem->fill, s->o.fill_size) == s->o.fill_size)
                ++s->stats.fill_empty; // the kernel had taken every frame it was given
            if (xsk_ring_prod__reserve(&s->umem->fill, 1, &idx) == 1) {
                *xsk_ring_prod__fill_addr(&s->umem->fill, idx) = s->umem->addr_of(slot);
                xsk_ring_prod__submit(&s->umem->fill, 1);
                return;
            }
        }
        s->refill.push_back(slot); // reserved: never allocates
    }

    Result<void> bind(XskMode m);
    void refill_fill();
    void reap();
    uint32_t tx_pending() const;
    Result<void> kick_tx();
    bool wait_for_room(bool need_frame);
    size_t harvest(std::span<Msg> batch);
    bool owns(const Msg& m) const { return m.data() >= base && m.data() < base + umem_bytes; }
    bool mine(const UdpFrame& f) const {
        return f.vlans == 0 && f.dst.family() == o.local.family() &&
               f.dst.port() == o.local.port() && (wildcard || same_host(f.dst, o.local));
    }
    const Addr& destination(const Msg& m) const { return m.peer().empty() ? o.peer : m.peer(); }
};

Result<void> XskSocket::Impl::bind(XskMode m) {
    auto u = Umem::create(*pool, o.fill_size, o.comp_size, who);
    if (!u) return std::unexpected(std::move(u.error()));
    xsk_socket_config cfg{};
    cfg.rx_size = o.rx_size;
    cfg.tx_size = o.tx_size;
    cfg.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD; // the caller's program redirects
    cfg.xdp_flags = 0;
    cfg.bind_flags =
        uint16_t(XDP_USE_NEED_WAKEUP | (m == XskMode::zerocopy ? XDP_ZEROCOPY : XDP_COPY));
    rx = {};
    tx = {};
    xsk_socket* s = nullptr;
    int err = xsk_socket__create(&s, o.ifname.c_str(), o.queue, (*u)->get(), &rx, &tx, &cfg);
    // A socket closed a moment ago on this queue (discovery's AF_XDP probe, a previous
    // connection) frees its buffer pool in a kernel work item, and until then the queue is
    // busy: ask again for a bounded time (a queue really in use stays busy, and is refused).
    for (int tries = 0; err == -EBUSY && tries < kBusyTries; ++tries) {
        std::this_thread::sleep_for(kBusyWait);
        rx = {};
        tx = {};
        err = xsk_socket__create(&s, o.ifname.c_str(), o.queue, (*u)->get(), &rx, &tx, &cfg);
    }
    if (err) {
        // "bind in zero-copy mode: Operation not supported (the driver has no ...)"
        std::string why =
            std::string(m == XskMode::zerocopy ? "bind in zero-copy mode" : "bind in copy mode") +
            ": " + std::strerror(-err);
        if (-err == EOPNOTSUPP && m == XskMode::zerocopy)
            why += " (the driver has no AF_XDP zero-copy support)";
        else if (-err == EBUSY)
            why += " (another AF_XDP socket is bound to this queue, or the UMEM is in use)";
        else if (-err == EINVAL)
            why += " (no such queue, or ring sizes the kernel refuses)";
        // Unavailable (AF_XDP cannot be had here), with the errno kept; the message already
        // says it in words.
        return std::unexpected(Error{Errc::unavailable, who, std::move(why), -err});
    }
    umem = std::move(*u);
    sock = s;
    fd = xsk_socket__fd(sock);
    mode = m;
    xdp_options opts{};
    socklen_t len = sizeof opts;
    if (::getsockopt(fd, SOL_XDP, XDP_OPTIONS, &opts, &len) == 0)
        mode = (opts.flags & XDP_OPTIONS_ZEROCOPY) ? XskMode::zerocopy : XskMode::copy;
    return {};
}

// Give the kernel every frame it can take.
void XskSocket::Impl::refill_fill() {
    if (refill.empty()) return;
    const uint32_t want = uint32_t(refill.size());
    uint32_t room = xsk_prod_nb_free(&umem->fill, want);
    if (filled_once && room == o.fill_size) ++stats.fill_empty; // the kernel took them all
    filled_once = true;
    const uint32_t n = std::min(want, room);
    uint32_t idx = 0;
    if (n == 0 || xsk_ring_prod__reserve(&umem->fill, n, &idx) != n) return;
    for (uint32_t i = 0; i < n; ++i) {
        *xsk_ring_prod__fill_addr(&umem->fill, idx + i) = umem->addr_of(refill.back());
        refill.pop_back();
    }
    xsk_ring_prod__submit(&umem->fill, n);
}

// Completed sends: their frames go back (send frames to the free list, echoed RX frames to
// the fill ring through the recycle hook).
void XskSocket::Impl::reap() {
    uint32_t idx = 0;
    uint32_t n = xsk_ring_cons__peek(&umem->comp, o.comp_size, &idx);
    for (uint32_t i = 0; i < n; ++i) {
        uint32_t slot = umem->slot_of(*xsk_ring_cons__comp_addr(&umem->comp, idx + i));
        if (slot < inflight.size() && inflight[slot]) {
            inflight[slot].release();
            --in_flight;
            ++stats.tx;
        }
    }
    if (n) xsk_ring_cons__release(&umem->comp, n);
}

// Descriptors on the TX ring the kernel has not taken yet.
uint32_t XskSocket::Impl::tx_pending() const {
    return *tx.producer - __atomic_load_n(tx.consumer, __ATOMIC_ACQUIRE);
}

// Wake the kernel to transmit, only when it says it needs it. In copy mode one sendto sends at
// most a small batch (32 frames) and answers EAGAIN while more wait: go on while it makes
// progress, bounded by the ring's size.
Result<void> XskSocket::Impl::kick_tx() {
    uint32_t pending = tx_pending();
    if (pending == 0 || !xsk_ring_prod__needs_wakeup(&tx)) return {};
    const uint32_t max_kicks = o.tx_size / 16 + 4;
    for (uint32_t k = 0; k < max_kicks; ++k) {
        ++stats.wakeups;
        ssize_t r = ::sendto(fd, nullptr, 0, MSG_DONTWAIT, nullptr, 0);
        int e = r < 0 ? errno : 0;
        if (e == 0) return {}; // everything taken (copy), or the driver is awake (zero-copy)
        if (e == EINTR) continue;
        if (e == EAGAIN || e == EBUSY) { // more to send, the completion ring full, or a drop
            reap();
            uint32_t now = tx_pending();
            if (now == 0 || now >= pending) return {}; // done, or no progress: retry later
            pending = now;
            continue;
        }
        if (e == ENOBUFS || e == ENETDOWN) return {}; // transient: the frames stay queued
        return fail_sys(who, "sendto (waking the kernel to transmit)", e);
    }
    return {};
}

// The TX ring is full (or no send frame is free): wake the kernel, reap, and wait for room,
// bounded by tx_wait and a number of rounds.
bool XskSocket::Impl::wait_for_room(bool need_frame) {
    ++stats.tx_ring_full;
    const auto deadline = Clock::now() + o.tx_wait;
    for (int round = 0; round < kMaxWaitRounds; ++round) {
        (void)kick_tx();
        reap();
        const bool ring = xsk_prod_nb_free(&tx, 1) >= 1;
        const bool frame = !need_frame || pool->free_count() > 0;
        if (ring && frame) return true;
        auto now = Clock::now();
        if (now >= deadline) return false;
        if (!ring) {
            pollfd p{fd, POLLOUT, 0};
            timespec ts = to_timespec(
                std::min<Clock::duration>(deadline - now, std::chrono::milliseconds(1)));
            ::ppoll(&p, 1, &ts, nullptr);
        } else { // room on the ring, but every frame is in flight: completions are coming
            timespec ts = to_timespec(
                std::min<Clock::duration>(deadline - now, std::chrono::microseconds(50)));
            ::nanosleep(&ts, nullptr);
        }
    }
    return false;
}

// Take what the RX ring holds (at most batch.size()): whole UDP datagrams to us become Msgs,
// anything else is counted and its frame goes straight back.
size_t XskSocket::Impl::harvest(std::span<Msg> batch) {
    uint32_t idx = 0;
    uint32_t got =
        xsk_ring_cons__peek(&rx, uint32_t(std::min<size_t>(batch.size(), o.rx_size)), &idx);
    size_t n = 0;
    const uint32_t chunk = umem->chunk_size();
    for (uint32_t i = 0; i < got; ++i) {
        const xdp_desc* d = xsk_ring_cons__rx_desc(&rx, idx + i);
        const uint32_t slot = umem->slot_of(d->addr);
        const uint64_t off = d->addr - umem->addr_of(slot);
        if (slot >= rx_frames || off + d->len > chunk) { // not a frame we gave: never happens
            ++stats.invalid;
            continue;
        }
        std::span<const std::byte> frame(pool->slot(slot) + off, d->len);
        UdpFrame f;
        if (xsk::parse_udp_frame(frame, f) != BERTHA_PARSE_OK || !mine(f) ||
            (o.verify_udp_checksum && !xsk::udp_checksum_ok(frame, f))) {
            ++stats.invalid;
            recycle(this, slot);
            continue;
        }
        Msg m(pool.get(), slot, uint32_t(off + f.payload_off), f.payload_len);
        if (f.src.family() == AF_INET6) {
            auto* sa6 = reinterpret_cast<sockaddr_in6*>(f.src.sa());
            if (IN6_IS_ADDR_LINKLOCAL(&sa6->sin6_addr))
                sa6->sin6_scope_id = uint32_t(iface.ifindex);
        }
        m.set_peer(f.src);
        batch[n++] = std::move(m);
    }
    if (got) xsk_ring_cons__release(&rx, got);
    stats.rx += n;
    return n;
}

// ---------------------------------------------------------------------------------------------

XskSocket::XskSocket(std::unique_ptr<Impl> impl) : p_(std::move(impl)) {}
XskSocket::XskSocket(XskSocket&&) noexcept = default;
XskSocket& XskSocket::operator=(XskSocket&&) noexcept = default;
XskSocket::~XskSocket() = default;

Result<XskSocket> XskSocket::open(const XskOptions& o) {
    const std::string who = "xsk on " + (o.ifname.empty() ? std::string("?") : o.ifname) +
                            " queue " + std::to_string(o.queue);
    auto bad = [&](const std::string& why) { return fail(Errc::invalid_argument, who, why); };
    if (o.ifname.empty()) return bad("no interface given");
    if (o.local.family() != AF_INET && o.local.family() != AF_INET6)
        return bad("no local address given (IPv4 or IPv6 address and UDP port)");
    if (o.local.port() == 0)
        return bad("the local address " + o.local.to_string() +
                   " has no port: frames are matched by it");
    if (!o.peer.empty() && o.peer.family() != o.local.family())
        return bad("the default peer " + o.peer.to_string() + " and the local address " +
                   o.local.to_string() + " are of different families");
    for (uint32_t v : {o.fill_size, o.comp_size, o.rx_size, o.tx_size})
        if (!pow2(v) || v < 8 || v > (1u << 20))
            return bad("ring sizes must be powers of two from 8 to 1048576 (fill " +
                       std::to_string(o.fill_size) + ", completion " + std::to_string(o.comp_size) +
                       ", rx " + std::to_string(o.rx_size) + ", tx " + std::to_string(o.tx_size) +
                       ")");
    if (o.frame_size != 2048 && o.frame_size != 4096)
        return bad("frame_size must be 2048 or 4096, not " + std::to_string(o.frame_size));
    const uint32_t rx_frames = o.rx_frames ? o.rx_frames : 2 * o.fill_size;
    const uint32_t tx_frames = o.tx_frames ? o.tx_frames : o.tx_size;
    if (uint64_t(rx_frames) + tx_frames > (1u << 20)) return bad("at most 1048576 UMEM frames");

    auto impl = std::make_unique<Impl>();
    Impl& s = *impl;
    s.o = o;
    s.who = who;
    s.wildcard = is_wildcard(o.local);
    auto iface = xsk::interface_info(o.ifname);
    if (!iface) return std::unexpected(std::move(iface.error()));
    s.iface = std::move(*iface);
    if (auto nq = xsk::rx_queue_count(o.ifname); nq && o.queue >= *nq)
        return bad("queue " + std::to_string(o.queue) + " does not exist: " + o.ifname + " has " +
                   std::to_string(*nq) + " RX queue(s)");
    auto neigh = Neighbours::open(s.iface, o.resolve_timeout);
    if (!neigh) return std::unexpected(std::move(neigh.error()));
    s.neigh.emplace(std::move(*neigh));

    auto pool = BufferPool::create(rx_frames + tx_frames, o.frame_size, rx_frames);
    if (!pool) return std::unexpected(std::move(pool.error()));
    s.pool = std::move(*pool);
    s.base = s.pool->slot(0);
    s.umem_bytes = size_t(s.pool->slots()) * o.frame_size;
    s.rx_frames = rx_frames;
    s.pool->set_recycle(&Impl::recycle, impl.get());
    s.inflight.resize(s.pool->slots());
    s.refill.reserve(rx_frames);
    for (uint32_t slot = rx_frames; slot-- > 0;) s.refill.push_back(slot);

    if (o.mode == XskMode::automatic) {
        auto zc = s.bind(XskMode::zerocopy);
        if (!zc) {
            log(LogLevel::debug, who,
                "no zero-copy, falling back to copy mode: " + zc.error().what());
            auto cp = s.bind(XskMode::copy);
            if (!cp) {
                Error e = std::move(cp.error());
                e.message += "; zero-copy, tried first: " + zc.error().message;
                return std::unexpected(std::move(e));
            }
        }
    } else if (auto r = s.bind(o.mode); !r) {
        return std::unexpected(std::move(r.error()));
    }

    const size_t ip_udp = s.hdr_len = xsk::udp_headers_len(o.local.family());
    const size_t mtu_payload =
        s.iface.mtu > ip_udp - xsk::kEthHeader ? s.iface.mtu - (ip_udp - xsk::kEthHeader) : 0;
    s.max_payload = std::min(mtu_payload, size_t(o.frame_size) - s.hdr_len);
    s.ip_id = uint16_t(uint32_t(::getpid()) * 2654435761u ^
                       uint32_t(Clock::now().time_since_epoch().count()));
    s.refill_fill(); // the whole fill ring at once
    log(LogLevel::debug, who,
        "bound in " + std::string(to_string(s.mode)) + " mode, " + std::to_string(rx_frames) +
            " receive and " + std::to_string(tx_frames) + " send frames of " +
            std::to_string(o.frame_size) + " bytes");
    return XskSocket(std::move(impl));
}

Result<uint32_t> XskSocket::queues(std::string_view ifname) {
    return xsk::rx_queue_count(ifname);
}

int XskSocket::fd() const {
    return p_->fd;
}
XskMode XskSocket::mode() const {
    return p_->mode;
}

Result<size_t> XskSocket::recv(std::span<Msg> batch, Deadline deadline) {
    Impl& s = *p_;
    if (batch.empty()) return size_t(0);
    bool woke = false, spun = false;
    for (int round = 0; round < kMaxRecvRounds; ++round) {
        s.refill_fill();
        if (s.in_flight) {
            if (auto k = s.kick_tx(); !k) return std::unexpected(std::move(k.error()));
            s.reap();
        }
        size_t n = s.harvest(batch);
        if (n) return n;
        auto now = Clock::now();
        if (!spun && now < deadline && s.o.busy_poll.count() > 0) {
            // Look again for a little while before sleeping (XskOptions::busy_poll).
            spun = true;
            const auto until = std::min<Deadline>(deadline, now + s.o.busy_poll);
            while (Clock::now() < until) {
                if (xsk_cons_nb_avail(&s.rx, 1)) break;
                ::sched_yield(); // a peer on this CPU gets to run
            }
            continue;
        }
        if (now >= deadline) {
            // Not waiting: still wake a driver that waits for fill-ring entries, and look once
            // more.
            if (!woke && xsk_ring_prod__needs_wakeup(&s.umem->fill)) {
                woke = true;
                ++s.stats.wakeups;
                ::recvfrom(s.fd, nullptr, 0, MSG_DONTWAIT, nullptr, nullptr);
                continue;
            }
            return size_t(0);
        }
        // poll() also wakes a zero-copy driver that needs it, and drives copy-mode TX.
        pollfd p{s.fd, POLLIN, 0};
        timespec ts = to_timespec(deadline - now);
        int r = ::ppoll(&p, 1, &ts, nullptr);
        if (r < 0 && errno != EINTR) return fail_sys(s.who, "poll", errno);
        if (r > 0 && (p.revents & (POLLERR | POLLNVAL)))
            return fail(Errc::system, s.who, "poll reported an error on the socket");
    }
    return size_t(0);
}

Result<size_t> XskSocket::send(std::span<Msg> batch) {
    Impl& s = *p_;
    if (batch.empty()) return size_t(0);
    // Everything is checked, and every next hop resolved, before anything is queued.
    for (const Msg& m : batch) {
        if (!m)
            return fail(Errc::invalid_argument, s.who,
                        "send was given an empty message (already sent or released)");
        const Addr& dst = s.destination(m);
        if (dst.empty())
            return fail(Errc::invalid_argument, s.who,
                        "a message has no peer() and the socket no default peer");
        if (dst.family() != s.o.local.family() || dst.port() == 0)
            return fail(Errc::invalid_argument, s.who,
                        "cannot send to " + dst.to_string() + " from " + s.o.local.to_string() +
                            " (another address family, or no port)");
        if (m.size() > s.max_payload)
            return fail(Errc::invalid_argument, s.who,
                        "a UDP payload of " + std::to_string(m.size()) +
                            " bytes is over the largest this socket sends, " +
                            std::to_string(s.max_payload) + " (MTU " + std::to_string(s.iface.mtu) +
                            ", frames of " + std::to_string(s.o.frame_size) + " bytes)");
        auto hop = s.neigh->lookup(dst);
        if (!hop) return std::unexpected(std::move(hop.error()));
        if (s.wildcard && (*hop)->source.empty())
            return fail(Errc::unavailable, s.who,
                        "the local address is a wildcard and the route to " + dst.to_string() +
                            " names no source address");
    }

    s.reap();
    size_t queued = 0;
    uint32_t unsubmitted = 0;
    auto submit = [&] {
        if (unsubmitted) xsk_ring_prod__submit(&s.tx, unsubmitted);
        unsubmitted = 0;
    };
    for (; queued < batch.size(); ++queued) {
        Msg& m = batch[queued];
        const Addr dst = s.destination(m);
        auto hop = s.neigh->lookup(dst); // cached by the checks above
        if (!hop) {
            if (queued) break;
            return std::unexpected(std::move(hop.error()));
        }
        const bool in_place = s.owns(m) && m.headroom() >= s.hdr_len;
        int64_t slot = -1;
        if (!in_place) {
            slot = s.pool->take();
            if (slot < 0) {
                submit();
                if (!s.wait_for_room(true)) break;
                slot = s.pool->take();
                if (slot < 0) break;
            }
        }
        uint32_t idx = 0;
        if (xsk_ring_prod__reserve(&s.tx, 1, &idx) != 1) {
            submit();
            if (!s.wait_for_room(false) || xsk_ring_prod__reserve(&s.tx, 1, &idx) != 1) {
                if (slot >= 0) s.pool->give_back(uint32_t(slot));
                break;
            }
        }
        Msg frame;
        if (in_place) {
            frame = std::move(m);
        } else {
            const uint32_t off =
                uint32_t(std::min<size_t>(kAllocHeadroom, s.o.frame_size - m.size()));
            frame = Msg(s.pool.get(), uint32_t(slot), off, 0);
            frame.assign(m.bytes());
            m.release();
            ++s.stats.copied;
        }
        FrameEnds ends{s.iface.mac, (*hop)->mac, s.o.local, dst};
        if (s.wildcard) {
            ends.src = (*hop)->source;
            ends.src.set_port(s.o.local.port());
        }
        // Checked above: the head-room and the length fit, the families match.
        (void)xsk::push_udp_headers(frame, ends, s.ip_id++);
        xdp_desc* d = xsk_ring_prod__tx_desc(&s.tx, idx);
        d->addr = uint64_t(frame.data() - s.base);
        d->len = uint32_t(frame.size());
        d->options = 0;
        const uint32_t fslot = frame.slot();
        s.inflight[fslot] = std::move(frame);
        ++s.in_flight;
        ++unsubmitted;
    }
    submit();
    if (auto k = s.kick_tx(); !k && queued == 0) return std::unexpected(std::move(k.error()));
    s.reap();
    return queued;
}

Result<size_t> XskSocket::alloc(std::span<Msg> out) {
    Impl& s = *p_;
    size_t n = 0;
    for (; n < out.size(); ++n) {
        int64_t slot = s.pool->take();
        if (slot < 0 && s.in_flight) {
            s.reap();
            slot = s.pool->take();
        }
        if (slot < 0) break;
        out[n] = Msg(s.pool.get(), uint32_t(slot), kAllocHeadroom, 0);
    }
    if (n == 0 && !out.empty())
        return fail(Errc::no_buffers, s.who,
                    "all " + std::to_string(s.pool->slots() - s.rx_frames) +
                        " send frames are lent out or in flight: send or drop messages first");
    return n;
}

Result<uint32_t> XskSocket::flush(Deadline deadline) {
    Impl& s = *p_;
    for (int round = 0; round < kMaxWaitRounds; ++round) {
        if (auto k = s.kick_tx(); !k) return std::unexpected(std::move(k.error()));
        s.reap();
        if (s.in_flight == 0) return 0u;
        auto now = Clock::now();
        if (now >= deadline) break;
        timespec ts =
            to_timespec(std::min<Clock::duration>(deadline - now, std::chrono::microseconds(100)));
        ::nanosleep(&ts, nullptr);
    }
    return s.in_flight;
}

void XskSocket::describe(std::vector<std::string>& out) const {
    out.push_back("xsk/" + std::string(to_string(p_->mode)));
}
const Addr& XskSocket::local() const {
    return p_->o.local;
}
const Addr& XskSocket::peer() const {
    return p_->o.peer;
}
const std::string& XskSocket::ifname() const {
    return p_->o.ifname;
}
uint32_t XskSocket::queue() const {
    return p_->o.queue;
}
size_t XskSocket::max_payload() const {
    return p_->max_payload;
}
const XskStats& XskSocket::stats() const {
    return p_->stats;
}

Result<XskKernelStats> XskSocket::kernel_stats() const {
    xdp_statistics st{};
    socklen_t len = sizeof st;
    if (::getsockopt(p_->fd, SOL_XDP, XDP_STATISTICS, &st, &len) != 0)
        return fail_sys(p_->who, "getsockopt XDP_STATISTICS", errno);
    XskKernelStats k;
    k.rx_dropped = st.rx_dropped;
    k.rx_invalid_descs = st.rx_invalid_descs;
    k.tx_invalid_descs = st.tx_invalid_descs;
    k.rx_ring_full = st.rx_ring_full;
    k.rx_fill_ring_empty_descs = st.rx_fill_ring_empty_descs;
    k.tx_ring_empty_descs = st.tx_ring_empty_descs;
    return k;
}

} // namespace bertha
