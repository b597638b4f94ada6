// The baseline of stack_overhead: the udp engine's technique (userspace/bertha/udp.cpp) written
// out by hand for exactly one job, with no Bertha type in sight. One socket, one ring, one
// mapping of equal slots; the first kRecvSlots slots are lent to the kernel through a
// provided-buffer ring and filled by one multishot recvmsg, the rest are for sending. A batch of
// sends is one submission. The syscall pattern deliberately matches the engine's (recv: look at
// the CQ, else one submit-and-wait with a timeout; send: prepare all, one submit, reap), so that
// stackN / inline measures what the framework adds on top of the same kernel work.
#pragma once

#include "bench.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <liburing.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

namespace bench {

class InlineUdp {
  public:
    using Clock = std::chrono::steady_clock;
    static constexpr uint32_t kRecvSlots = 512; // the engine's defaults (UdpOptions)
    static constexpr uint32_t kSendSlots = 512;
    static constexpr uint32_t kSlotSize = 2048;
    static constexpr uint32_t kHeadroom = 128;
    static constexpr uint16_t kGroup = 0;

    // One received datagram, still in its kernel slot until echoed or given back.
    struct Rx {
        std::byte* payload;
        const sockaddr* name;
        uint32_t len;
        uint32_t bid;
        socklen_t namelen;
    };

    // A client connected to `addr`, or a server bound to it.
    InlineUdp(const sockaddr_in& addr, bool connect_to) {
        fd_ = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd_ < 0) die("inline: socket: %s", strerror(errno));
        int sz = 4 << 20;
        if (setsockopt(fd_, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof sz) != 0)
            setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
        if (setsockopt(fd_, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof sz) != 0)
            setsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
        auto* sa = reinterpret_cast<const sockaddr*>(&addr);
        if ((connect_to ? ::connect(fd_, sa, sizeof addr) : ::bind(fd_, sa, sizeof addr)) != 0)
            die("inline: %s: %s", connect_to ? "connect" : "bind", strerror(errno));

        io_uring_params p{};
        p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL;
        p.cq_entries = 2 * 2048; // as the engine sizes it for 512 + 512 slots
        if (int rc = io_uring_queue_init_params(256, &ring_, &p); rc < 0)
            die("inline: io_uring_queue_init: %s", strerror(-rc));

        map_len_ = size_t(kRecvSlots + kSendSlots) * kSlotSize;
        void* mem = mmap(nullptr, map_len_, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
        if (mem == MAP_FAILED) die("inline: mmap: %s", strerror(errno));
        base_ = static_cast<std::byte*>(mem);

        br_len_ = (kRecvSlots * sizeof(io_uring_buf) + 4095) & ~size_t(4095);
        mem = mmap(nullptr, br_len_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED) die("inline: mmap: %s", strerror(errno));
        br_ = static_cast<io_uring_buf_ring*>(mem);
        io_uring_buf_ring_init(br_);
        io_uring_buf_reg reg{};
        reg.ring_addr = reinterpret_cast<uint64_t>(br_);
        reg.ring_entries = kRecvSlots;
        reg.bgid = kGroup;
        if (int rc = io_uring_register_buf_ring(&ring_, &reg, 0); rc != 0)
            die("inline: register_buf_ring: %s", strerror(-rc));
        br_mask_ = io_uring_buf_ring_mask(kRecvSlots);
        for (uint32_t id = 0; id < kRecvSlots; ++id)
            io_uring_buf_ring_add(br_, slot(id), kSlotSize, uint16_t(id), br_mask_, int(id));
        io_uring_buf_ring_advance(br_, kRecvSlots);
        in_kernel_ = kRecvSlots;
        // [recvmsg_out | name | control | payload]: reserve control space so that the payload
        // starts at kHeadroom, like the engine's layout.
        ms_hdr_.msg_namelen = sizeof(sockaddr_in6);
        ms_hdr_.msg_controllen = kHeadroom - sizeof(io_uring_recvmsg_out) - sizeof(sockaddr_in6);

        for (uint32_t i = 0; i < kSendSlots; ++i) {
            send_idle_[i] = kSendSlots - 1 - i;
            send_bufs_[i] = kRecvSlots + kSendSlots - 1 - i;
        }
        n_send_idle_ = n_send_bufs_ = kSendSlots;
        arm();
        io_uring_submit(&ring_);
    }
    ~InlineUdp() {
        io_uring_queue_exit(&ring_);
        if (br_) munmap(br_, br_len_);
        if (base_) munmap(base_, map_len_);
        if (fd_ >= 0) close(fd_);
    }
    InlineUdp(const InlineUdp&) = delete;
    InlineUdp& operator=(const InlineUdp&) = delete;

    uint16_t port() const {
        sockaddr_in a{};
        socklen_t len = sizeof a;
        getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
        return ntohs(a.sin_port);
    }
    uint64_t send_errors() const { return send_errors_; }

    // Client: send n fresh messages of `size` bytes that start with `stamp`. Returns how many
    // went out (fewer only when every sending slot is still in flight).
    size_t send_new(size_t n, uint32_t size, uint64_t stamp) {
        size_t queued = 0;
        for (; queued < n && n_send_bufs_ && n_send_idle_; ++queued) {
            uint32_t bid = send_bufs_[--n_send_bufs_];
            std::byte* p = slot(bid) + kHeadroom;
            std::memcpy(p, &stamp, sizeof stamp);
            prep_send(bid, p, size, nullptr, 0);
        }
        io_uring_submit(&ring_);
        reap(); // sendmsg on UDP completes inline: take the slots back now
        return queued;
    }

    // Server: send each received message back to its sender from the slot it arrived in; the
    // slot returns to the kernel when the send completes.
    size_t echo(const Rx* rx, size_t n) {
        size_t queued = 0;
        for (; queued < n; ++queued) {
            while (!n_send_idle_) { // every send request in flight: wait for one to finish
                io_uring_submit_and_wait(&ring_, 1);
                reap();
            }
            const Rx& r = rx[queued];
            prep_send(r.bid, r.payload, r.len, r.name, r.namelen);
        }
        io_uring_submit(&ring_);
        reap();
        return queued;
    }

    // Up to `max` received messages; 0 when the deadline passes with nothing received.
    size_t recv(Rx* out, size_t max, Clock::time_point deadline) {
        for (;;) {
            reap();
            if (rx_count_) return pop(out, max);
            if (!armed_ && in_kernel_) arm();
            auto left = deadline - Clock::now();
            int64_t ns = std::max<int64_t>(0, std::chrono::nanoseconds(left).count());
            __kernel_timespec ts{ns / 1000000000, ns % 1000000000};
            io_uring_cqe* cqe = nullptr;
            int rc = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
            if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY)
                die("inline: io_uring wait: %s", strerror(-rc));
            reap();
            if (rx_count_) return pop(out, max);
            if (Clock::now() >= deadline) return 0;
        }
    }

    // Client: hand received slots back to the kernel (one ring-tail update for the batch).
    void give_back(const Rx* rx, size_t n) {
        for (size_t i = 0; i < n; ++i) br_add(rx[i].bid, int(i));
        io_uring_buf_ring_advance(br_, int(n));
        in_kernel_ += uint32_t(n);
    }

  private:
    static constexpr uint64_t kSend = 1ull << 32;
    static constexpr uint64_t kRecv = 2ull << 32;

    std::byte* slot(uint32_t id) const { return base_ + size_t(id) * kSlotSize; }
    void br_add(uint32_t bid, int offset) {
        io_uring_buf_ring_add(br_, slot(bid), kSlotSize, uint16_t(bid), br_mask_, offset);
    }

    void arm() {
        io_uring_sqe* sqe = sqe_or_flush();
        io_uring_prep_recvmsg_multishot(sqe, fd_, &ms_hdr_, MSG_TRUNC);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = kGroup;
        io_uring_sqe_set_data64(sqe, kRecv);
        armed_ = true;
    }
    io_uring_sqe* sqe_or_flush() {
        io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
        if (!sqe) {
            io_uring_submit(&ring_);
            sqe = io_uring_get_sqe(&ring_);
        }
        return sqe;
    }
    void prep_send(uint32_t bid, std::byte* p, uint32_t len, const sockaddr* to, socklen_t tolen) {
        uint32_t idx = send_idle_[--n_send_idle_];
        SendReq& s = sends_[idx];
        s.bid = bid;
        s.iov = {p, len};
        s.mh = {};
        s.mh.msg_name = const_cast<sockaddr*>(to);
        s.mh.msg_namelen = tolen;
        s.mh.msg_iov = &s.iov;
        s.mh.msg_iovlen = 1;
        io_uring_sqe* sqe = sqe_or_flush();
        io_uring_prep_sendmsg(sqe, fd_, &s.mh, 0);
        io_uring_sqe_set_data64(sqe, kSend | idx);
    }

    // Drain the completion queue: sends free their request and slot, receives join the FIFO.
    void reap() {
        unsigned head, seen = 0, returned = 0;
        io_uring_cqe* cqe;
        io_uring_for_each_cqe(&ring_, head, cqe) {
            ++seen;
            uint64_t ud = io_uring_cqe_get_data64(cqe);
            if (ud & kSend) {
                uint32_t idx = uint32_t(ud);
                if (cqe->res < 0) ++send_errors_;
                uint32_t bid = sends_[idx].bid;
                if (bid < kRecvSlots)
                    br_add(bid, int(returned++));
                else
                    send_bufs_[n_send_bufs_++] = bid;
                send_idle_[n_send_idle_++] = idx;
                continue;
            }
            if (!(cqe->flags & IORING_CQE_F_MORE)) armed_ = false;
            if (cqe->res < 0) {
                if (cqe->res != -ENOBUFS && cqe->res != -ECANCELED)
                    die("inline: multishot recvmsg: %s", strerror(-cqe->res));
                continue;
            }
            if (!(cqe->flags & IORING_CQE_F_BUFFER)) continue;
            uint32_t bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
            --in_kernel_;
            auto* out = io_uring_recvmsg_validate(slot(bid), cqe->res, &ms_hdr_);
            if (!out) {
                br_add(bid, int(returned++));
                continue;
            }
            auto* payload = static_cast<std::byte*>(io_uring_recvmsg_payload(out, &ms_hdr_));
            uint32_t copied = io_uring_recvmsg_payload_length(out, cqe->res, &ms_hdr_);
            rx_[(rx_head_ + rx_count_++) & (kRecvSlots - 1)] =
                Rx{payload, static_cast<const sockaddr*>(io_uring_recvmsg_name(out)),
                   std::min(out->payloadlen, copied), bid, socklen_t(out->namelen)};
        }
        io_uring_cq_advance(&ring_, seen);
        if (returned) {
            io_uring_buf_ring_advance(br_, int(returned));
            in_kernel_ += returned;
        }
    }
    size_t pop(Rx* out, size_t max) {
        size_t n = std::min<size_t>(max, rx_count_);
        for (size_t i = 0; i < n; ++i) out[i] = rx_[(rx_head_ + i) & (kRecvSlots - 1)];
        rx_head_ = (rx_head_ + n) & (kRecvSlots - 1);
        rx_count_ -= uint32_t(n);
        return n;
    }

    struct SendReq {
        msghdr mh;
        iovec iov;
        uint32_t bid;
    };

    int fd_ = -1;
    io_uring ring_{};
    std::byte* base_ = nullptr;
    size_t map_len_ = 0;
    io_uring_buf_ring* br_ = nullptr;
    size_t br_len_ = 0;
    int br_mask_ = 0;
    uint32_t in_kernel_ = 0;
    bool armed_ = false;
    msghdr ms_hdr_{};
    uint64_t send_errors_ = 0;

    SendReq sends_[kSendSlots]{};
    uint32_t send_idle_[kSendSlots]; // free send requests
    uint32_t send_bufs_[kSendSlots]; // free sending slots (ids kRecvSlots..)
    uint32_t n_send_idle_ = 0, n_send_bufs_ = 0;
    // Received, not yet handed out. At most kRecvSlots slots can be out, so it never overflows.
    Rx rx_[kRecvSlots];
    uint32_t rx_head_ = 0, rx_count_ = 0;
};

} // namespace bench
