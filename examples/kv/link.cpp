#include "link.hpp"

#include "bertha/stack.hpp"
#include "bertha/udp.hpp"
#include "shard/shard.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <array>
#include <poll.h>
#include <vector>

namespace bertha::kv {

Result<ShardPref> parse_shard_pref(std::string_view t) {
    if (t == "none") return ShardPref::none;
    if (t == "auto") return ShardPref::any;
    if (t == "xdp") return ShardPref::xdp;
    if (t == "proxy") return ShardPref::proxy;
    if (t == "client") return ShardPref::client;
    return fail(Errc::invalid_argument, "kv",
                "--shard " + std::string(t) + ": expected none, auto, xdp, proxy or client");
}
std::string_view to_string(ShardPref p) {
    switch (p) {
    case ShardPref::none: return "none";
    case ShardPref::any: return "auto";
    case ShardPref::xdp: return "xdp";
    case ShardPref::proxy: return "proxy";
    case ShardPref::client: return "client";
    }
    return "?";
}

namespace {

class SocketLink final : public Link {
  public:
    explicit SocketLink(Fd fd) : fd_(std::move(fd)) {}
    int send(std::span<mmsghdr> msgs) override {
        return ::sendmmsg(fd_.get(), msgs.data(), unsigned(msgs.size()), 0);
    }
    int recv(std::span<mmsghdr> msgs) override {
        return ::recvmmsg(fd_.get(), msgs.data(), unsigned(msgs.size()), MSG_DONTWAIT, nullptr);
    }
    void wait(std::chrono::nanoseconds d) override {
        timespec ts{time_t(d.count() / 1000000000), long(d.count() % 1000000000)};
        pollfd p{fd_.get(), POLLIN, 0};
        ::ppoll(&p, 1, &ts, nullptr);
    }
    std::string describe() const override { return "udp socket"; }

  private:
    Fd fd_;
};

// Over a connection of the shard chunnel's stack. Datagrams are copied once each way, between
// the caller's buffers and the connection's lent ones.
template <class Conn> class StackLink final : public Link {
  public:
    explicit StackLink(Conn&& c) : conn_(std::move(c)) {}

    int send(std::span<mmsghdr> msgs) override {
        if (msgs.empty()) return 0;
        std::vector<Msg>& out = out_;
        out.resize(msgs.size());
        auto n = conn_.alloc(out);
        if (!n) return error(n.error(), ENOBUFS);
        size_t k = 0;
        for (; k < *n; ++k) {
            const iovec& v = msgs[k].msg_hdr.msg_iov[0];
            if (!out[k].assign(std::as_bytes(std::span(static_cast<const char*>(v.iov_base), v.iov_len))))
                break;
        }
        auto sent = conn_.send(std::span(out).first(k));
        for (auto& m : out) m.release();
        if (!sent) return error(sent.error(), EIO);
        if (*sent == 0 && !msgs.empty()) {
            errno = EAGAIN;
            return -1;
        }
        return int(*sent);
    }

    int recv(std::span<mmsghdr> msgs) override {
        if (head_ == held_n_) {
            if (auto r = take(no_wait); r < 0) return r;
        }
        int n = 0;
        while (size_t(n) < msgs.size() && head_ < held_n_) {
            Msg& m = held_[head_++];
            iovec& v = msgs[size_t(n)].msg_hdr.msg_iov[0];
            size_t len = std::min(m.size(), v.iov_len);
            std::memcpy(v.iov_base, m.data(), len);
            msgs[size_t(n)].msg_len = unsigned(len);
            m.release();
            ++n;
        }
        return n;
    }

    void wait(std::chrono::nanoseconds d) override {
        if (head_ < held_n_) return;
        (void)take(Clock::now() + d);
    }

    std::string describe() const override { return bertha::describe(conn_); }
    std::string last_error() const override { return err_; }

  private:
    // Only when everything taken before is handed on: the messages fill held_ from the start.
    int take(Deadline deadline) {
        head_ = held_n_ = 0;
        auto n = conn_.recv(held_, deadline);
        if (!n) return error(n.error(), EIO);
        held_n_ = *n;
        return int(*n);
    }
    int error(const Error& e, int code) {
        err_ = e.what();
        errno = code;
        return -1;
    }

    Conn conn_;
    std::vector<Msg> out_;
    std::array<Msg, 32> held_; // received, not yet handed on: [head_, held_n_)
    size_t head_ = 0, held_n_ = 0;
    std::string err_;
};

template <class Stack>
Result<std::unique_ptr<Link>> open_stack(const Stack& stack, const Addr& service) {
    auto c = stack.connect(service);
    if (!c) return std::unexpected(std::move(c.error()));
    using Conn = std::decay_t<decltype(*c)>;
    return std::unique_ptr<Link>(new StackLink<Conn>(std::move(*c)));
}

} // namespace

Result<std::unique_ptr<Link>> socket_link(int family) {
    Fd fd(::socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd) return fail_sys("kv", "socket", errno);
    int sz = 4 << 20;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    return std::unique_ptr<Link>(new SocketLink(std::move(fd)));
}

Result<std::unique_ptr<Link>> shard_link(const Addr& service, ShardPref pref) {
    // Enough buffers for a load generator's window and a reply per request in flight.
    UdpOptions uo;
    uo.recv_slots = 2048;
    uo.send_slots = 2048;
    const Udp udp(uo);
    switch (pref) {
    case ShardPref::any: return open_stack(make_stack(shard::chunnel(), udp), service);
    case ShardPref::xdp: return open_stack(make_stack(shard::Xdp{}, udp), service);
    case ShardPref::proxy: return open_stack(make_stack(shard::Proxy{}, udp), service);
    case ShardPref::client:
        return open_stack(make_stack(shard::chunnel_client_first(), udp), service);
    case ShardPref::none: break;
    }
    return fail(Errc::invalid_argument, "kv", "shard_link without a shard preference");
}

} // namespace bertha::kv
