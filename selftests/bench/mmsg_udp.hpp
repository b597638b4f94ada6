// The "mmsg" comparison point of stack_overhead: no io_uring at all, one blocking recvmmsg
// (MSG_WAITFORONE, SO_RCVTIMEO for the deadline) and one sendmmsg per batch on an ordinary
// socket. It answers "what does io_uring itself buy or cost for this traffic?".
#pragma once

#include "bench.hpp"

#include <arpa/inet.h>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace bench {

class MmsgUdp {
  public:
    static constexpr size_t kBatch = 32;
    static constexpr size_t kSlotSize = 2048;

    // `timeout` bounds every recv (the socket's SO_RCVTIMEO): the kernel enforces the deadline,
    // so the loop needs no clock read of its own.
    MmsgUdp(const sockaddr_in& addr, bool connect_to, std::chrono::microseconds timeout) {
        fd_ = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd_ < 0) die("mmsg: socket: %s", strerror(errno));
        int sz = 4 << 20;
        if (setsockopt(fd_, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof sz) != 0)
            setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
        if (setsockopt(fd_, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof sz) != 0)
            setsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
        timeval tv{long(timeout.count() / 1000000), long(timeout.count() % 1000000)};
        setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        auto* sa = reinterpret_cast<const sockaddr*>(&addr);
        if ((connect_to ? ::connect(fd_, sa, sizeof addr) : ::bind(fd_, sa, sizeof addr)) != 0)
            die("mmsg: %s: %s", connect_to ? "connect" : "bind", strerror(errno));
        for (size_t i = 0; i < kBatch; ++i) {
            rx_iov_[i] = {rx_buf_[i], kSlotSize};
            rx_[i].msg_hdr.msg_iov = &rx_iov_[i];
            rx_[i].msg_hdr.msg_iovlen = 1;
            tx_[i].msg_hdr.msg_iov = &tx_iov_[i];
            tx_[i].msg_hdr.msg_iovlen = 1;
        }
    }
    ~MmsgUdp() {
        if (fd_ >= 0) close(fd_);
    }
    MmsgUdp(const MmsgUdp&) = delete;
    MmsgUdp& operator=(const MmsgUdp&) = delete;

    uint16_t port() const {
        sockaddr_in a{};
        socklen_t len = sizeof a;
        getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
        return ntohs(a.sin_port);
    }

    // Up to kBatch datagrams; 0 when the receive timeout passes with nothing.
    size_t recv(size_t max) {
        max = std::min(max, kBatch);
        for (size_t i = 0; i < max; ++i) {
            rx_[i].msg_hdr.msg_name = &rx_name_[i];
            rx_[i].msg_hdr.msg_namelen = sizeof rx_name_[i];
        }
        int n = recvmmsg(fd_, rx_, unsigned(max), MSG_WAITFORONE, nullptr);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
            die("mmsg: recvmmsg: %s", strerror(errno));
        }
        return size_t(n);
    }
    const std::byte* rx_data(size_t i) const { return rx_buf_[i]; }
    size_t rx_len(size_t i) const { return rx_[i].msg_len; }

    // Server: send the first n received datagrams back to their senders, in place.
    size_t echo(size_t n) {
        for (size_t i = 0; i < n; ++i) {
            tx_iov_[i] = {rx_buf_[i], rx_[i].msg_len};
            tx_[i].msg_hdr.msg_name = &rx_name_[i];
            tx_[i].msg_hdr.msg_namelen = rx_[i].msg_hdr.msg_namelen;
        }
        return send_all(n);
    }

    // Client: send n fresh datagrams of `size` bytes that start with `stamp`.
    size_t send_new(size_t n, uint32_t size, uint64_t stamp) {
        n = std::min(n, kBatch);
        for (size_t i = 0; i < n; ++i) {
            std::memcpy(tx_buf_[i], &stamp, sizeof stamp);
            tx_iov_[i] = {tx_buf_[i], size};
            tx_[i].msg_hdr.msg_name = nullptr;
            tx_[i].msg_hdr.msg_namelen = 0;
        }
        return send_all(n);
    }

  private:
    size_t send_all(size_t n) {
        size_t done = 0;
        while (done < n) {
            int k = sendmmsg(fd_, tx_ + done, unsigned(n - done), 0);
            if (k < 0) {
                if (errno == EINTR) continue;
                // A full socket buffer or an ICMP error from a vanished peer: the rest of the
                // batch counts as lost, and the client's recv timeout refills the window.
                if (errno == EAGAIN || errno == ECONNREFUSED) break;
                die("mmsg: sendmmsg: %s", strerror(errno));
            }
            done += size_t(k);
        }
        return done;
    }

    int fd_ = -1;
    alignas(64) std::byte rx_buf_[kBatch][kSlotSize];
    alignas(64) std::byte tx_buf_[kBatch][kSlotSize];
    mmsghdr rx_[kBatch]{}, tx_[kBatch]{};
    iovec rx_iov_[kBatch]{}, tx_iov_[kBatch]{};
    sockaddr_in6 rx_name_[kBatch]{};
};

} // namespace bench
