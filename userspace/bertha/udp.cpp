#include "bertha/udp.hpp"

#include "bertha/peer_table.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <liburing.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>

namespace bertha {

namespace {

// io_uring user_data: the kind of request in the top byte, an index below it.
constexpr uint64_t kSend = 1ull << 56;
constexpr uint64_t kRecvMultishot = 2ull << 56;
constexpr uint64_t kRecvPlain = 3ull << 56;
constexpr uint64_t kCancel = 4ull << 56;
constexpr uint64_t kKindMask = 0xffull << 56;
constexpr uint16_t kBufferGroup = 0;
constexpr uint32_t kPlainRecvs = 64; // standing recvmsg requests when there is no multishot

uint32_t next_pow2(uint32_t v) {
    uint32_t p = 1;
    while (p < v) p <<= 1;
    return p;
}

} // namespace

// ---------------------------------------------------------------------------------------------
// UdpEngine: the socket, the ring and the buffers behind every udp connection shape.

class UdpEngine {
  public:
    static Result<std::unique_ptr<UdpEngine>> create(const Addr& addr, bool connect_to,
                                                     const UdpOptions& o);
    ~UdpEngine();

    // Deliver received messages to `sink(Msg&&) -> bool`; what it refuses goes to the stash.
    // A sink must leave a message it refuses untouched (move from it only when accepting).
    // Waits (one io_uring_enter) until at least one message is delivered or the deadline
    // passes. Returns the number delivered.
    template <class Sink> Result<size_t> wait_into(Sink&& sink, Deadline deadline);
    Result<size_t> send(std::span<Msg> batch, const Addr* to);
    Result<size_t> alloc(std::span<Msg> out);

    bool connected() const { return connected_; }
    bool multishot() const { return multishot_; }
    int ring_fd() const { return ring_.ring_fd; }
    const Addr& local() const { return local_; }
    UdpStats stats;

  private:
    UdpEngine(const UdpOptions& o) : opts_(o), stash_(o.recv_slots + o.send_slots) {}
    Result<void> setup_ring();
    bool setup_buf_ring();
    void refill();
    template <class Sink> size_t harvest(Sink& sink);
    template <class Sink> void handle(io_uring_cqe* cqe, Sink& sink, size_t& delivered);
    io_uring_sqe* sqe_or_flush();
    void quiesce();
    static void recycle(void* self, uint32_t slot) noexcept;
    std::string who() const { return "udp " + local_.to_string(); }

    UdpOptions opts_;
    int fd_ = -1;
    io_uring ring_{};
    bool ring_ok_ = false;
    bool connected_ = false;
    bool multishot_ = false;
    bool armed_ = false;
    bool received_any_ = false;
    Addr local_;
    std::optional<Error> send_error_, recv_error_;

    // Declared before everything that holds a Msg, so that it is destroyed after them.
    std::unique_ptr<BufferPool> pool_;
    io_uring_buf_ring* br_ = nullptr;
    size_t br_len_ = 0;
    uint32_t br_mask_ = 0;
    uint32_t in_kernel_ = 0; // buffers currently in the provided-buffer ring
    uint32_t payload_off_ = 0;
    msghdr ms_hdr_{}; // layout template for multishot recvmsg (name + control sizes)

    struct PlainRecv {
        msghdr mh{};
        iovec iov{};
        sockaddr_in6 name{};
        int64_t slot = -1;
    };
    std::vector<PlainRecv> plain_;
    std::vector<uint32_t> plain_idle_;

    struct SendSlot {
        msghdr mh{};
        iovec iov{};
        Msg msg;
    };
    std::vector<SendSlot> sends_;
    std::vector<uint32_t> send_free_;
    MsgRing stash_; // received but not yet handed to the application
};

Result<std::unique_ptr<UdpEngine>> UdpEngine::create(const Addr& addr, bool connect_to,
                                                     const UdpOptions& o) {
    if (addr.empty()) return fail(Errc::invalid_argument, "udp", "no address given");
    if (o.headroom < sizeof(io_uring_recvmsg_out) + Addr::capacity() ||
        o.headroom + 64 > o.slot_size)
        return fail(Errc::invalid_argument, "udp",
                    "headroom must hold at least " +
                        std::to_string(sizeof(io_uring_recvmsg_out) + Addr::capacity()) +
                        " bytes and leave 64 bytes of payload in a slot");
    if (o.recv_slots == 0 || o.recv_slots > 32768 || (o.recv_slots & (o.recv_slots - 1)))
        return fail(Errc::invalid_argument, "udp", "recv_slots must be a power of two <= 32768");

    std::unique_ptr<UdpEngine> e(new UdpEngine(o));
    e->connected_ = connect_to;
    e->fd_ = socket(addr.family(), SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (e->fd_ < 0) return fail_sys("udp", "socket() failed", errno);
    int sz = o.socket_buffer;
    // FORCE variants lift the sysctl cap when privileged; otherwise the capped request stands.
    if (setsockopt(e->fd_, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof sz) != 0)
        setsockopt(e->fd_, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    if (setsockopt(e->fd_, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof sz) != 0)
        setsockopt(e->fd_, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    if (connect_to) {
        if (::connect(e->fd_, addr.sa(), addr.len()) != 0)
            return fail_sys("udp", "connect to " + addr.to_string() + " failed", errno);
    } else if (::bind(e->fd_, addr.sa(), addr.len()) != 0) {
        return fail_sys("udp", "bind " + addr.to_string() + " failed", errno);
    }
    sockaddr_in6 name{};
    socklen_t len = sizeof name;
    getsockname(e->fd_, reinterpret_cast<sockaddr*>(&name), &len);
    e->local_ = Addr::from_sockaddr(reinterpret_cast<sockaddr*>(&name), len);

    if (auto r = e->setup_ring(); !r) return std::unexpected(std::move(r.error()));
    return e;
}

Result<void> UdpEngine::setup_ring() {
    io_uring_params p{};
    p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL;
    p.cq_entries = next_pow2(opts_.recv_slots + opts_.send_slots + kPlainRecvs) * 2;
    uint32_t sq_entries = 256;
    int rc = io_uring_queue_init_params(sq_entries, &ring_, &p);
    if (rc == -EINVAL) { // older kernel: no COOP_TASKRUN / SUBMIT_ALL
        p = {};
        p.flags = IORING_SETUP_CQSIZE;
        p.cq_entries = next_pow2(opts_.recv_slots + opts_.send_slots + kPlainRecvs) * 2;
        rc = io_uring_queue_init_params(sq_entries, &ring_, &p);
    }
    if (rc < 0) return fail_sys(who(), "io_uring_queue_init failed", -rc);
    ring_ok_ = true;

    bool want_multishot =
        opts_.recv_mode != UdpOptions::RecvMode::plain &&
        (opts_.recv_mode == UdpOptions::RecvMode::multishot || Udp::kernel_has_multishot());
    uint32_t kernel_slots = want_multishot ? opts_.recv_slots : 0;
    auto pool =
        BufferPool::create(opts_.recv_slots + opts_.send_slots, opts_.slot_size, kernel_slots);
    if (!pool) return std::unexpected(std::move(pool.error()));
    pool_ = std::move(*pool);
    payload_off_ = opts_.headroom;

    if (want_multishot && setup_buf_ring()) {
        multishot_ = true;
        pool_->set_recycle(&UdpEngine::recycle, this);
    } else if (opts_.recv_mode == UdpOptions::RecvMode::multishot) {
        return fail(Errc::unavailable, who(),
                    "multishot receive was required but this kernel has no provided-buffer "
                    "rings (needs Linux 5.19+ and 6.0+ for multishot recvmsg)");
    } else if (want_multishot) {
        // Registration refused: the kernel slots become ordinary free slots.
        auto plain_pool =
            BufferPool::create(opts_.recv_slots + opts_.send_slots, opts_.slot_size, 0);
        if (!plain_pool) return std::unexpected(std::move(plain_pool.error()));
        pool_ = std::move(*plain_pool);
    }

    plain_.resize(multishot_ ? 0 : std::min(kPlainRecvs, opts_.recv_slots));
    for (uint32_t i = plain_.size(); i-- > 0;) plain_idle_.push_back(i);
    sends_.resize(opts_.send_slots);
    for (uint32_t i = opts_.send_slots; i-- > 0;) send_free_.push_back(i);
    refill();
    io_uring_submit(&ring_);
    return {};
}

// The multishot layout puts [recvmsg_out | name | control | payload] in each buffer. We ask
// for no control messages but reserve the control area so that the payload starts exactly at
// `headroom`: the bytes in front of it are the head-room chunnels push headers into.
bool UdpEngine::setup_buf_ring() {
    uint32_t entries = opts_.recv_slots;
    br_len_ = (size_t(entries) * sizeof(io_uring_buf) + 4095) & ~size_t(4095);
    void* mem = mmap(nullptr, br_len_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return false;
    br_ = static_cast<io_uring_buf_ring*>(mem);
    io_uring_buf_ring_init(br_);
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<uint64_t>(br_);
    reg.ring_entries = entries;
    reg.bgid = kBufferGroup;
    if (io_uring_register_buf_ring(&ring_, &reg, 0) != 0) {
        munmap(br_, br_len_);
        br_ = nullptr;
        return false;
    }
    br_mask_ = io_uring_buf_ring_mask(entries);
    for (uint32_t id = 0; id < entries; ++id)
        io_uring_buf_ring_add(br_, pool_->slot(id), pool_->slot_size(), id, br_mask_, id);
    io_uring_buf_ring_advance(br_, entries);
    in_kernel_ = entries;
    ms_hdr_ = {};
    ms_hdr_.msg_namelen = Addr::capacity();
    ms_hdr_.msg_controllen = opts_.headroom - sizeof(io_uring_recvmsg_out) - Addr::capacity();
    return true;
}

void UdpEngine::recycle(void* self, uint32_t slot) noexcept {
    auto* e = static_cast<UdpEngine*>(self);
    io_uring_buf_ring_add(e->br_, e->pool_->slot(slot), e->pool_->slot_size(), slot, e->br_mask_,
                          0);
    io_uring_buf_ring_advance(e->br_, 1);
    ++e->in_kernel_;
}

UdpEngine::~UdpEngine() {
    stash_.clear();
    if (ring_ok_) quiesce();
    for (auto& s : sends_) s.msg.release();
    if (ring_ok_) io_uring_queue_exit(&ring_);
    if (pool_) pool_->set_recycle(nullptr, nullptr);
    for (auto& pr : plain_)
        if (pr.slot >= 0) pool_->give_back(uint32_t(pr.slot));
    if (br_) munmap(br_, br_len_);
    if (fd_ >= 0) close(fd_);
}

// Cancel the standing receives and reap every request before the ring goes: each request holds
// a reference to the socket, and io_uring_queue_exit alone drops them later, from a kernel
// worker, so the port would stay bound for a while after close(). Bounded to 200 ms.
void UdpEngine::quiesce() {
    io_uring_sqe* sqe = sqe_or_flush();
    if (!sqe) return;
    io_uring_prep_cancel_fd(sqe, fd_, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, kCancel);
    io_uring_submit(&ring_);
    auto drop = [](Msg&&) { return true; }; // accepted and destroyed: the slot goes back
    auto deadline = Clock::now() + std::chrono::milliseconds(200);
    auto busy = [&] {
        size_t plain_out = plain_.size() - plain_idle_.size();
        return armed_ || plain_out > 0 || send_free_.size() < sends_.size();
    };
    while (busy() && Clock::now() < deadline) {
        __kernel_timespec ts{0, 10'000'000};
        io_uring_cqe* cqe = nullptr;
        io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
        harvest(drop);
        stash_.clear();
    }
}

io_uring_sqe* UdpEngine::sqe_or_flush() {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (!sqe) {
        io_uring_submit(&ring_);
        ++stats.submits;
        sqe = io_uring_get_sqe(&ring_);
    }
    return sqe;
}

// Keep receives standing: re-arm the multishot request, or top up the plain ones.
void UdpEngine::refill() {
    if (multishot_) {
        if (armed_ || in_kernel_ == 0) return; // without buffers it would end at once (ENOBUFS)
        io_uring_sqe* sqe = sqe_or_flush();
        io_uring_prep_recvmsg_multishot(sqe, fd_, &ms_hdr_, MSG_TRUNC);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = kBufferGroup;
        io_uring_sqe_set_data64(sqe, kRecvMultishot);
        armed_ = true;
        return;
    }
    while (!plain_idle_.empty()) {
        int64_t slot = pool_->take();
        if (slot < 0) return;
        uint32_t idx = plain_idle_.back();
        plain_idle_.pop_back();
        PlainRecv& pr = plain_[idx];
        pr.slot = slot;
        pr.iov = {pool_->slot(uint32_t(slot)) + payload_off_, opts_.slot_size - payload_off_};
        pr.mh = {};
        pr.mh.msg_name = &pr.name;
        pr.mh.msg_namelen = sizeof pr.name;
        pr.mh.msg_iov = &pr.iov;
        pr.mh.msg_iovlen = 1;
        io_uring_sqe* sqe = sqe_or_flush();
        // MSG_TRUNC: the result is the datagram's real length, so truncation is visible.
        io_uring_prep_recvmsg(sqe, fd_, &pr.mh, MSG_TRUNC);
        io_uring_sqe_set_data64(sqe, kRecvPlain | idx);
    }
}

template <class Sink> void UdpEngine::handle(io_uring_cqe* cqe, Sink& sink, size_t& delivered) {
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    uint64_t kind = ud & kKindMask;
    uint32_t idx = uint32_t(ud & ~kKindMask);
    int res = cqe->res;
    auto deliver = [&](Msg&& m) {
        ++stats.received;
        if (m.is_truncated()) ++stats.truncated;
        received_any_ = true;
        if (sink(std::move(m)))
            ++delivered;
        else
            stash_.push(std::move(m)); // cannot fail: one stash place per pool slot
    };

    if (kind == kSend) {
        SendSlot& s = sends_[idx];
        if (res < 0) {
            ++stats.send_errors;
            if (!send_error_)
                send_error_ = Error{Errc::system, who(),
                                    "send to " +
                                        (connected_ ? std::string("the connected peer")
                                                    : s.msg.peer().to_string()) +
                                        " failed",
                                    -res};
        } else {
            ++stats.sent;
        }
        s.msg.release();
        send_free_.push_back(idx);
    } else if (kind == kRecvMultishot) {
        if (!(cqe->flags & IORING_CQE_F_MORE)) armed_ = false;
        if (res < 0) {
            if (res == -EINVAL && !received_any_ &&
                opts_.recv_mode == UdpOptions::RecvMode::automatic) {
                // The kernel registered the ring but rejects multishot recvmsg (5.19): fall
                // back to plain receives over the same pool's free slots.
                multishot_ = false;
                pool_->set_recycle(nullptr, nullptr);
                plain_.resize(kPlainRecvs);
                for (uint32_t i = kPlainRecvs; i-- > 0;) plain_idle_.push_back(i);
            } else if (res != -ENOBUFS && res != -ECANCELED && !recv_error_) {
                recv_error_ = Error{Errc::system, who(), "multishot receive failed", -res};
            }
            return;
        }
        if (!(cqe->flags & IORING_CQE_F_BUFFER)) return;
        uint32_t bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        --in_kernel_;
        std::byte* buf = pool_->slot(bid);
        auto* out = io_uring_recvmsg_validate(buf, res, &ms_hdr_);
        if (!out) {
            pool_->give_back(bid);
            return;
        }
        uint32_t copied = uint32_t(res) - payload_off_;
        Msg m(pool_.get(), bid, payload_off_, std::min(out->payloadlen, copied));
        m.set_peer(
            Addr::from_sockaddr(static_cast<sockaddr*>(io_uring_recvmsg_name(out)), out->namelen));
        if (out->flags & MSG_TRUNC) m.set_flags(Msg::truncated);
        deliver(std::move(m));
    } else if (kind == kRecvPlain) {
        PlainRecv& pr = plain_[idx];
        uint32_t slot = uint32_t(pr.slot);
        pr.slot = -1;
        plain_idle_.push_back(idx);
        if (res < 0) {
            pool_->give_back(slot);
            if (res != -ECANCELED && res != -EINTR && !recv_error_)
                recv_error_ = Error{Errc::system, who(), "receive failed", -res};
            return;
        }
        uint32_t cap = opts_.slot_size - payload_off_;
        Msg m(pool_.get(), slot, payload_off_, std::min(uint32_t(res), cap));
        m.set_peer(Addr::from_sockaddr(reinterpret_cast<sockaddr*>(&pr.name), pr.mh.msg_namelen));
        if (uint32_t(res) > cap) m.set_flags(Msg::truncated);
        deliver(std::move(m));
    }
}

template <class Sink> size_t UdpEngine::harvest(Sink& sink) {
    size_t delivered = 0;
    // Older messages first. A sink moves from a message only when it accepts it.
    while (stash_.size()) {
        if (!sink(std::move(stash_.front()))) return delivered;
        stash_.pop();
        ++delivered;
    }
    unsigned head, seen = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&ring_, head, cqe) {
        handle(cqe, sink, delivered);
        ++seen;
    }
    io_uring_cq_advance(&ring_, seen);
    return delivered;
}

template <class Sink> Result<size_t> UdpEngine::wait_into(Sink&& sink, Deadline deadline) {
    for (;;) {
        // Re-arm first: a multishot receive that ended (the kernel ran out of buffers) goes
        // out with the next enter, even while the stash still has messages to hand over.
        refill();
        size_t n = harvest(sink);
        if (n) return n;
        if (recv_error_) {
            Error e = std::move(*recv_error_);
            recv_error_.reset();
            return std::unexpected(std::move(e));
        }
        refill(); // harvest may have ended the multishot request or freed plain slots
        auto now = Clock::now();
        int rc;
        if (deadline <= now) {
            // Nothing to wait for: one enter that submits and runs pending completions, with
            // no timer (a zero timeout costs ~100x more here).
            rc = io_uring_submit_and_get_events(&ring_);
        } else {
            auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now).count();
            __kernel_timespec ts{ns / 1000000000, ns % 1000000000};
            io_uring_cqe* cqe = nullptr;
            rc = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
        }
        if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY)
            return fail_sys(who(), "io_uring wait failed", -rc);
        n = harvest(sink);
        if (n) return n;
        if (Clock::now() >= deadline) return size_t(0);
    }
}

Result<size_t> UdpEngine::send(std::span<Msg> batch, const Addr* to) {
    for (auto& m : batch) {
        if (!m)
            return fail(Errc::invalid_argument, who(),
                        "send was given an empty message (already sent or released)");
        if (!connected_ && !to && m.peer().empty())
            return fail(Errc::invalid_argument, who(),
                        "a message on an unconnected socket has no peer address");
    }
    auto stash_sink = [](Msg&&) { return false; };
    size_t queued = 0;
    for (auto& m : batch) {
        while (send_free_.empty()) { // all send slots in flight: wait for completions
            io_uring_submit_and_wait(&ring_, 1);
            ++stats.submits;
            harvest(stash_sink);
        }
        uint32_t idx = send_free_.back();
        send_free_.pop_back();
        SendSlot& s = sends_[idx];
        s.msg = std::move(m);
        if (to) s.msg.set_peer(*to);
        s.iov = {s.msg.data(), s.msg.size()};
        s.mh = {};
        if (!connected_) {
            s.mh.msg_name = const_cast<sockaddr*>(s.msg.peer().sa());
            s.mh.msg_namelen = s.msg.peer().len();
        }
        s.mh.msg_iov = &s.iov;
        s.mh.msg_iovlen = 1;
        io_uring_sqe* sqe = sqe_or_flush();
        io_uring_prep_sendmsg(sqe, fd_, &s.mh, 0);
        io_uring_sqe_set_data64(sqe, kSend | idx);
        ++queued;
    }
    io_uring_submit(&ring_);
    ++stats.submits;
    harvest(stash_sink); // sends complete inline; reclaim their slots now
    if (send_error_) {
        Error e = std::move(*send_error_);
        send_error_.reset();
        return std::unexpected(std::move(e));
    }
    return queued;
}

Result<size_t> UdpEngine::alloc(std::span<Msg> out) {
    size_t n = 0;
    for (; n < out.size(); ++n) {
        int64_t slot = pool_->take();
        if (slot < 0) {
            auto stash_sink = [](Msg&&) { return false; };
            harvest(stash_sink); // completed sends give their slots back
            slot = pool_->take();
            if (slot < 0) break;
        }
        out[n] = Msg(pool_.get(), uint32_t(slot), payload_off_, 0);
    }
    if (n == 0 && !out.empty())
        return fail(Errc::no_buffers, who(),
                    "all " + std::to_string(pool_->slots()) +
                        " buffers are lent out: drop received or allocated messages first");
    return n;
}

// ---------------------------------------------------------------------------------------------
// UdpConn

UdpConn::UdpConn(std::unique_ptr<UdpEngine> e, Addr any_port_peer)
    : e_(std::move(e)), any_port_peer_(any_port_peer) {}
UdpConn::UdpConn(UdpConn&&) noexcept = default;
UdpConn& UdpConn::operator=(UdpConn&&) noexcept = default;
UdpConn::~UdpConn() = default;


Result<size_t> UdpConn::send(std::span<Msg> batch) {
    if (!any_port_peer_.empty())
        for (auto& m : batch)
            if (m && m.peer().empty()) m.set_peer(any_port_peer_);
    return e_->send(batch, nullptr);
}

Result<size_t> UdpConn::recv(std::span<Msg> batch, Deadline deadline) {
    size_t n = 0;
    auto sink = [&](Msg&& m) {
        if (n == batch.size()) return false;
        if (!any_port_peer_.empty() && !same_host(m.peer(), any_port_peer_)) {
            ++e_->stats.foreign; // taken and dropped: not this connection's
            return true;
        }
        batch[n++] = std::move(m);
        return true;
    };
    if (batch.empty()) return size_t(0);
    do { // a round that only dropped foreign datagrams waits again
        auto r = e_->wait_into(sink, deadline);
        if (!r) return std::unexpected(std::move(r.error()));
    } while (n == 0 && Clock::now() < deadline);
    return n;
}

int UdpConn::wait_fd() const {
    return e_->ring_fd();
}

Result<size_t> UdpConn::alloc(std::span<Msg> out) {
    return e_->alloc(out);
}
void UdpConn::describe(std::vector<std::string>& out) const {
    out.push_back(name_of(info));
}
Addr UdpConn::local() const {
    return e_->local();
}
bool UdpConn::multishot() const {
    return e_->multishot();
}
const UdpStats& UdpConn::stats() const {
    return e_->stats;
}

// ---------------------------------------------------------------------------------------------
// UdpDemux: one listening socket, one queue per peer, new peers waiting to be accepted.

class UdpDemux {
  public:
    UdpDemux(std::unique_ptr<UdpEngine> e, const UdpOptions& o)
        : e_(std::move(e)), table_(o.peer_queue, o.accept_backlog) {}

    // Receive until something is routed or the deadline passes.
    Result<size_t> pump(Deadline deadline) {
        return e_->wait_into([this](Msg&& m) { return route(std::move(m)); }, deadline);
    }

    bool route(Msg&& m) {
        switch (table_.route(std::move(m))) {
        case PeerTable::Routed::queue_full: ++e_->stats.dropped_queue_full; break;
        case PeerTable::Routed::backlog_full: ++e_->stats.dropped_backlog; break;
        default: break;
        }
        return true; // taken (queued or dropped): never back to the engine's stash
    }

    std::unique_ptr<UdpEngine> e_;
    PeerTable table_;
};

UdpPeerConn::UdpPeerConn(std::shared_ptr<UdpDemux> d, uint32_t queue, const Addr& peer)
    : d_(std::move(d)), queue_(queue), peer_(peer) {}
UdpPeerConn::UdpPeerConn(UdpPeerConn&&) noexcept = default;
UdpPeerConn& UdpPeerConn::operator=(UdpPeerConn&& o) noexcept {
    if (this != &o) {
        if (d_) d_->table_.close(queue_);
        d_ = std::move(o.d_);
        queue_ = o.queue_;
        peer_ = o.peer_;
    }
    return *this;
}
UdpPeerConn::~UdpPeerConn() {
    if (d_) d_->table_.close(queue_);
}

namespace {
std::unexpected<Error> peer_gone(const Addr& peer) {
    return fail(Errc::closed, "udp " + peer.to_string(),
                "the peer started a new connection from the same address; this one is closed");
}
} // namespace

Result<size_t> UdpPeerConn::send(std::span<Msg> batch) {
    if (!d_) return peer_gone(peer_);
    return d_->e_->send(batch, &peer_);
}

void UdpPeerConn::restart(Msg&& first) {
    if (!d_) return;
    d_->table_.close(queue_);
    d_->route(std::move(first)); // an unknown peer again: it lands in the accept backlog
    d_.reset();
}

Result<size_t> UdpPeerConn::recv(std::span<Msg> batch, Deadline deadline) {
    if (!d_) return peer_gone(peer_);
    return recv_queued(d_->table_.queue(queue_), batch, deadline,
                       [&](Deadline d) { return d_->pump(d); });
}

Result<size_t> UdpPeerConn::alloc(std::span<Msg> out) {
    if (!d_) return peer_gone(peer_);
    return d_->e_->alloc(out);
}
int UdpPeerConn::wait_fd() const {
    return d_ ? d_->e_->ring_fd() : -1;
}
void UdpPeerConn::describe(std::vector<std::string>& out) const {
    out.push_back(name_of(UdpConn::info));
}

UdpListener::UdpListener(std::shared_ptr<UdpDemux> d) : d_(std::move(d)) {}
UdpListener::UdpListener(UdpListener&&) noexcept = default;
UdpListener& UdpListener::operator=(UdpListener&&) noexcept = default;
UdpListener::~UdpListener() = default;

Result<std::optional<UdpPeerConn>> UdpListener::accept(Deadline deadline) {
    auto q = accept_queued(d_->table_, deadline, [&](Deadline d) { return d_->pump(d); });
    if (!q) return std::unexpected(std::move(q.error()));
    if (!*q) return std::optional<UdpPeerConn>{};
    return std::optional<UdpPeerConn>(UdpPeerConn(d_, **q, d_->table_.peer(**q)));
}

Addr UdpListener::local() const {
    return d_->e_->local();
}
const UdpStats& UdpListener::stats() const {
    return d_->e_->stats;
}
int UdpListener::wait_fd() const {
    return d_->e_->ring_fd();
}

// ---------------------------------------------------------------------------------------------
// Udp: the base chunnel.

Result<UdpConn> Udp::connect(const Addr& peer, const ConnectContext& ctx) const {
    if (ctx.peer_any_port) {
        // Not connected (a connected socket takes datagrams from the peer's one port only):
        // bound to a fresh port of the wildcard address, with the peer kept by the connection.
        if (peer.empty()) return fail(Errc::invalid_argument, "udp", "no address given");
        Addr any;
        any.sa()->sa_family = sa_family_t(peer.family());
        auto e = UdpEngine::create(any, false, opts_);
        if (!e) return std::unexpected(std::move(e.error()));
        return UdpConn(std::move(*e), peer);
    }
    auto e = UdpEngine::create(peer, true, opts_);
    if (!e) return std::unexpected(std::move(e.error()));
    return UdpConn(std::move(*e), Addr{});
}

Result<UdpConn> Udp::bind(const Addr& local, const ConnectContext&) const {
    auto e = UdpEngine::create(local, false, opts_);
    if (!e) return std::unexpected(std::move(e.error()));
    return UdpConn(std::move(*e), Addr{});
}

Result<UdpListener> Udp::listen(const Addr& local, const ConnectContext&) const {
    auto e = UdpEngine::create(local, false, opts_);
    if (!e) return std::unexpected(std::move(e.error()));
    return UdpListener(std::make_shared<UdpDemux>(std::move(*e), opts_));
}

bool Udp::kernel_has_multishot() {
    static const bool yes = [] {
        utsname u{};
        if (uname(&u) != 0) return false;
        int major = 0, minor = 0;
        if (std::sscanf(u.release, "%d.%d", &major, &minor) != 2) return false;
        return major > 6 || (major == 6 && minor >= 0); // multishot recvmsg: Linux 6.0
    }();
    return yes;
}

} // namespace bertha
