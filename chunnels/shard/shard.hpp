// The `shard` chunnel: a client's memcached-over-UDP requests reach the shard that owns their
// key, one of N shards of the server (shard i serves on UDP port base + i), with three
// interchangeable implementations chosen by negotiation (README.md):
//  - shard::Xdp (shard/xdp, the serving end): the XDP `shard` stage on the server's interface
//    rewrites each request's destination port to its shard's (shard.bpf.c), so the kernel
//    delivers it straight to the shard; what the stage passes on (a get spanning shards, odd
//    requests) reaches the connection, which relays it like the proxy;
//  - shard::Proxy (shard/proxy, the serving end): the connection relays every request to its
//    shard over an upstream socket and the replies back (kv::RouterCore), pipelined;
//  - shard::Client (shard/client, the client): the client sends each request straight to its
//    shard's port, splitting a get that spans shards; the shard table (base, count) arrives in
//    the negotiation answer.
// All three pick the shard with kv::RouterCore (steer.hpp's rule, then the first key), over
// bertha/kv.h's one hash. With shard/client and shard/xdp the shards answer from their own
// ports, so a stack with the shard chunnel connects its base to every port of the server
// (ChunnelInfo::any_peer_port; udp has it, xsk not yet).
//
// shard/xdp's stage is attached for the service port from any peer (service_flow): one chain
// for the service, not one per client. So a server that runs it steers the steerable requests
// of every client on that port, shard/proxy clients included (a client that insists on
// shard/proxy gets the relay for the rest); a server that must relay everything runs without
// shard/xdp (kv server --no-xdp).
//
// On the serving end the application receives nothing from a shard connection: every request
// is answered by its shard. It drives the relay by calling recv (a thread serving many
// connections calls recv with no_wait on each, then waits: shard::wait_fds, shard::activity).
#pragma once

#include "bertha/buffer.hpp"
#include "bertha/chunnel.hpp"
#include "bertha/fd.hpp"
#include "bertha/log.hpp"
#include "bertha/offload.hpp"
#include "bertha/select.hpp"
#include "bertha/kv.h"
#include "kv/router_core.hpp"

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>
#include <poll.h>
#include <span>
#include <string>
#include <sys/socket.h>
#include <vector>

namespace bertha::shard {

inline constexpr uint32_t kTypeId = 4;
inline constexpr std::string_view kStageName = "shard"; // the loader's stage (stages.cpp)

// The service's shard table: shard i serves on UDP port base + i of the server.
struct Table {
    uint16_t base = 0;
    uint16_t shards = 0; // 1 .. BERTHA_SHARD_MAX

    bool valid() const noexcept {
        return shards >= 1 && shards <= BERTHA_SHARD_MAX && base != 0 &&
               uint32_t(base) + shards - 1 <= 65535;
    }
    std::string text() const {
        return std::to_string(shards) + " shards on ports " + std::to_string(base) + ".." +
               std::to_string(base + shards - 1);
    }
};

// The table as the negotiation answer carries it (every implementation's params): base and
// shard count, big-endian u16 each.
inline constexpr size_t kParamsSize = 4;
inline std::vector<uint8_t> encode(const Table& t) {
    return {uint8_t(t.base >> 8), uint8_t(t.base), uint8_t(t.shards >> 8), uint8_t(t.shards)};
}
inline Result<Table> decode(std::span<const uint8_t> p) {
    if (p.size() != kParamsSize)
        return fail(Errc::incompatible, "shard",
                    "the server's shard table is " + std::to_string(p.size()) + " bytes, not " +
                        std::to_string(kParamsSize));
    Table t{uint16_t(p[0] << 8 | p[1]), uint16_t(p[2] << 8 | p[3])};
    if (!t.valid())
        return fail(Errc::incompatible, "shard",
                    "the server's shard table is not valid (base " + std::to_string(t.base) +
                        ", " + std::to_string(t.shards) + " shards; 1 to " +
                        std::to_string(BERTHA_SHARD_MAX) + " shards on ports up to 65535)");
    return t;
}

struct Config {
    // The serving end states the table; a client leaves it empty (the answer brings it) unless
    // it connects pre-arranged, without negotiation.
    Table table;
    Addr shards_at; // the shards' address (port ignored); empty: the connection's local address
    std::chrono::milliseconds timeout{1000}; // a request unanswered this long is forgotten
    uint32_t ids = 4096; // requests outstanding per connection at most (a power of two)
};

// The XDP stage for a table: `shard:shards=N,base=P`.
inline load::StageSpec stage_for(const Table& t) {
    return {std::string(kStageName),
            "shards=" + std::to_string(t.shards) + ",base=" + std::to_string(t.base)};
}

// The flow shard/xdp attaches for: the service port from any peer, on the interface. One chain
// steers the service for all its shard/xdp clients (the loader counts one reference per
// connection): a chain per client would load and verify the stage's program per client
// (~140 ms here, its rodata holds its place in the chain; seconds under emulation), on the
// server's one thread, while every client waits.
inline OffloadFlow service_flow(OffloadFlow flow) {
    flow.peer.reset();
    return flow;
}

// What a shard connection did (the end that runs the chunnel).
struct Stats {
    kv::RouterStats relay; // requests relayed (proxy, xdp's leftovers) or sent (client)
    // shard/xdp: the service's stage (every shard/xdp client's): datagrams it steered (its
    // `hit` counter) and passed on to the relays (`pass`)
    uint64_t steered = 0;
    uint64_t passed_on = 0;
};

namespace detail {

inline Addr with_port(Addr a, uint16_t port) {
    a.set_port(port);
    return a;
}

inline Result<Table> table_for(const Config& cfg, const ConnectContext& ctx, std::string_view who) {
    if (!ctx.chosen.empty() && !ctx.params.empty()) return decode(ctx.params);
    if (cfg.table.valid()) return cfg.table;
    return fail(Errc::invalid_argument, std::string(who),
                "no shard table: the serving end states it in shard::Config::table (the client "
                "learns it from the negotiation answer)");
}

// A fresh message of the connection's holding `dg` (a copy), or an empty one when the
// connection has no buffer free (the datagram is dropped, as UDP would).
template <Connection Inner> Msg copy_into(Inner& inner, std::string_view dg) {
    Msg m;
    if constexpr (CanAlloc<Inner>) {
        std::span<Msg> one(&m, 1);
        if (auto n = inner.alloc(one); !n || *n == 0) return {};
    }
    if (m && !m.assign(std::as_bytes(std::span(dg.data(), dg.size())))) m.release();
    return m;
}
// Send what `out` holds through the connection, and empty it.
template <Connection Inner> Result<void> send_all(Inner& inner, std::vector<Msg>& out) {
    if (out.empty()) return {};
    auto n = inner.send(out);
    out.clear();
    if (!n) return std::unexpected(std::move(n.error()));
    return {};
}

// The serving end's relay: the client's requests from the connection to their shards over one
// upstream UDP socket, and the replies back through the connection.
template <Connection Inner> class Relay final : public kv::RouterSink {
  public:
    Relay(Inner&& inner, kv::RouterCore core, Fd up, Addr shards_at, Table t)
        : inner_(std::move(inner)), core_(std::move(core)), up_(std::move(up)),
          shards_at_(shards_at), table_(t) {}

    // One pass: what the client sent, what the shards answered; the number of datagrams handled.
    // The requests go to the shards with one sendmmsg, straight from the connection's buffers.
    Result<size_t> pump(std::span<Msg> scratch) {
        size_t handled = 0;
        auto n = inner_.recv(scratch.first(std::min(scratch.size(), kBatch)), no_wait);
        if (!n) return std::unexpected(std::move(n.error()));
        size_t up = 0;
        for (size_t i = 0; i < *n; ++i) {
            Msg& m = scratch[i];
            auto* d = reinterpret_cast<char*>(m.data());
            if (auto s = core_.request(d, m.size(), m.peer(), *this)) {
                const Addr a = with_port(shards_at_, uint16_t(table_.base + *s));
                std::memcpy(&up_to_[up], a.sa(), a.len());
                up_iov_[up] = {d, m.size()};
                up_msgs_[up] = {};
                up_msgs_[up].msg_hdr.msg_name = &up_to_[up];
                up_msgs_[up].msg_hdr.msg_namelen = a.len();
                up_msgs_[up].msg_hdr.msg_iov = &up_iov_[up];
                up_msgs_[up].msg_hdr.msg_iovlen = 1;
                ++up;
            }
        }
        // Best effort, as UDP: what the kernel refuses is dropped (the client times out).
        for (size_t done = 0, tries = 0; done < up && tries < 4; ++tries) {
            int k = ::sendmmsg(up_.get(), up_msgs_.data() + done, unsigned(up - done), MSG_DONTWAIT);
            if (k > 0)
                done += size_t(k);
            else if (k < 0 && errno != EAGAIN && errno != EINTR)
                ++done; // skip the one refused
        }
        for (size_t i = 0; i < *n; ++i) scratch[i].release();
        handled += *n;
        handled += take_replies();
        if (auto r = flush_down(); !r) return std::unexpected(std::move(r.error()));
        core_.sweep();
        return handled;
    }

    // Wait until either side may have something, or the deadline (at most 100 ms a wait).
    void wait(Deadline deadline) {
        auto now = Clock::now();
        if (deadline <= now) return;
        auto us = std::chrono::duration_cast<std::chrono::microseconds>(deadline - now).count();
        int fd = -1;
        if constexpr (HasWaitFd<Inner>) fd = inner_.wait_fd();
        if (fd < 0) { // nothing to poll for the client's side: short slices
            pollfd p{up_.get(), POLLIN, 0};
            ::poll(&p, 1, 0);
            if (!(p.revents & POLLIN)) (void)inner_peek(std::min<int64_t>(us, 200));
            return;
        }
        pollfd fds[2] = {{fd, POLLIN, 0}, {up_.get(), POLLIN, 0}};
        ::poll(fds, 2, int(std::min<int64_t>((us + 999) / 1000, 100)));
    }

    // The core's own datagrams: a split get's parts go out at once, a merged reply's with the
    // next flush.
    void to_shard(std::string_view dg, uint32_t s) override {
        const Addr a = with_port(shards_at_, uint16_t(table_.base + s));
        ::sendto(up_.get(), dg.data(), dg.size(), 0, a.sa(), a.len());
    }
    void to_client(std::string_view dg, const Addr&) override { queue_down(dg); }

    Inner& inner() noexcept { return inner_; }
    const Inner& inner() const noexcept { return inner_; }
    Inner into_inner() && { return std::move(inner_); }
    const kv::RouterStats& stats() const { return core_.stats(); }
    int upstream_fd() const noexcept { return up_.get(); }

  private:
    static constexpr size_t kBatch = 32;
    static constexpr size_t kMaxDatagram = 65536;

    void send_up(const char* d, size_t len, uint32_t s) {
        const Addr a = with_port(shards_at_, uint16_t(table_.base + s));
        ::sendto(up_.get(), d, len, MSG_DONTWAIT, a.sa(), a.len());
    }
    Result<size_t> inner_peek(int64_t us) {
        // Used only where the inner connection has no descriptor: a short blocking receive
        // whose messages are handled at once.
        std::array<Msg, 8> tmp;
        auto n = inner_.recv(tmp, Clock::now() + std::chrono::microseconds(us));
        if (!n) return n;
        for (size_t i = 0; i < *n; ++i) {
            auto* d = reinterpret_cast<char*>(tmp[i].data());
            if (auto s = core_.request(d, tmp[i].size(), tmp[i].peer(), *this))
                send_up(d, tmp[i].size(), *s);
        }
        return n;
    }
    size_t take_replies() {
        size_t total = 0;
        for (int round = 0; round < 4; ++round) { // bounded: the client's side gets its turn
            std::array<mmsghdr, kBatch> msgs{};
            std::array<iovec, kBatch> iov{};
            for (size_t i = 0; i < kBatch; ++i) {
                iov[i] = {rx_.data() + i * kMaxDatagram, kMaxDatagram};
                msgs[i].msg_hdr.msg_iov = &iov[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            int n = ::recvmmsg(up_.get(), msgs.data(), kBatch, MSG_DONTWAIT, nullptr);
            if (n <= 0) break;
            for (int i = 0; i < n; ++i) {
                char* d = rx_.data() + size_t(i) * kMaxDatagram;
                if (core_.reply(d, msgs[i].msg_len, *this))
                    queue_down(std::string_view(d, msgs[i].msg_len));
            }
            total += size_t(n);
            if (size_t(n) < kBatch) break;
        }
        return total;
    }
    void queue_down(std::string_view dg) {
        if (down_.size() == kBatch) (void)flush_down();
        if (Msg m = copy_into(inner_, dg)) down_.push_back(std::move(m));
    }
    Result<void> flush_down() { return send_all(inner_, down_); }

    Inner inner_;
    kv::RouterCore core_;
    Fd up_;
    Addr shards_at_;
    Table table_;
    std::vector<Msg> down_;
    std::vector<char> rx_ = std::vector<char>(kBatch * kMaxDatagram);
    std::array<mmsghdr, kBatch> up_msgs_{};
    std::array<iovec, kBatch> up_iov_{};
    std::array<sockaddr_storage, kBatch> up_to_{};
};

inline Result<Fd> upstream_socket(const Addr& shards_at, std::string_view who) {
    Fd fd(::socket(shards_at.family(), SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd) return fail_sys(std::string(who), "upstream socket", errno);
    int sz = 4 << 20;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    return fd;
}

template <Connection Inner>
Result<Relay<Inner>> make_relay(Inner&& inner, const Config& cfg, const ConnectContext& ctx,
                                std::string_view who) {
    if (!cfg.table.valid())
        return fail(Errc::invalid_argument, std::string(who),
                    "the serving end needs its shard table (shard::Config::table)");
    Addr at = !cfg.shards_at.empty() ? cfg.shards_at : ctx.flow.local;
    if (at.empty() || [&] {
            static const Addr any4 = [] {
                Addr a;
                a.sa()->sa_family = AF_INET;
                return a;
            }();
            Addr probe = at;
            probe.set_port(0);
            return probe == any4;
        }())
        return fail(Errc::invalid_argument, std::string(who),
                    "the shards' address is unknown (a wildcard local address): set "
                    "shard::Config::shards_at");
    auto core = kv::RouterCore::make({.shards = cfg.table.shards, .timeout = cfg.timeout,
                                      .ids = cfg.ids, .groups = 256});
    if (!core) return std::unexpected(std::move(core.error()));
    auto up = upstream_socket(at, who);
    if (!up) return std::unexpected(std::move(up.error()));
    return Relay<Inner>(std::move(inner), std::move(*core), std::move(*up), at, cfg.table);
}

// The end that does not run the chunnel: messages pass untouched.
template <Connection Inner> class Passthrough {
  public:
    using Data = Msg;
    Passthrough(Inner&& inner, std::string name) : inner_(std::move(inner)), name_(std::move(name)) {}
    Result<size_t> send(std::span<Msg> batch) { return inner_.send(batch); }
    Result<size_t> recv(std::span<Msg> batch, Deadline d) { return inner_.recv(batch, d); }
    Result<size_t> alloc(std::span<Msg> out) requires CanAlloc<Inner> { return inner_.alloc(out); }
    void describe(std::vector<std::string>& out) const {
        out.push_back(name_);
        inner_.describe(out);
    }
    int wait_fd() const requires HasWaitFd<Inner> { return inner_.wait_fd(); }
    Addr local() const requires HasLocal<Inner> { return inner_.local(); }
    Addr peer() const requires HasPeer<Inner> { return inner_.peer(); }
    Inner& inner() noexcept { return inner_; }
    Inner into_inner() && { return std::move(inner_); }

  private:
    Inner inner_;
    std::string name_;
};

} // namespace detail

namespace detail {
// What the three implementations share: the configuration, and the table they contribute to
// the negotiation answer (the serving end's; a client's is empty and contributes nothing).
class Configured {
  public:
    Configured() = default;
    explicit Configured(Config c) : cfg_(c) {}
    std::vector<uint8_t> params() const { return encode(cfg_.table); }

  protected:
    Config cfg_;
};

// The connection at the end that does not run the implementation `name`.
template <class Out, class Inner> Out pass_through(Inner&& inner, std::string_view name, bool server) {
    return Out(std::in_place_index<1>,
               Passthrough<Inner>(std::move(inner), std::string(name) +
                                                       (server ? " (the server runs it)"
                                                               : " (the client runs it)")));
}
} // namespace detail

// The serving end's connection under shard/proxy or shard/xdp: a relay (and, for xdp, the
// stage's chain on the flow). recv hands nothing up; it relays until the deadline.
template <Connection Inner> class ServeConn {
  public:
    using Data = Msg;
    ServeConn(detail::Relay<Inner>&& relay, OffloadHandle&& offload, std::string name)
        : relay_(std::move(relay)), offload_(std::move(offload)), name_(std::move(name)) {}

    // The serving end sends nothing of its own: replies come from the shards.
    Result<size_t> send(std::span<Msg> batch) { return relay_.inner().send(batch); }
    Result<size_t> recv(std::span<Msg>, Deadline deadline) {
        std::array<Msg, 32> scratch;
        for (;;) {
            auto n = relay_.pump(scratch);
            if (!n) return std::unexpected(std::move(n.error()));
            activity_ += *n;
            // Past the deadline even while busy: one pass for no_wait, so that a thread serving
            // many connections (and its listener) gets round to the others.
            if (Clock::now() >= deadline) return size_t(0);
            if (*n) continue; // more may be waiting: relay it before waiting
            relay_.wait(deadline);
        }
    }
    Result<size_t> alloc(std::span<Msg> out) requires CanAlloc<Inner> {
        return relay_.inner().alloc(out);
    }
    void describe(std::vector<std::string>& out) const {
        out.push_back(name_);
        relay_.inner().describe(out);
    }
    Addr local() const requires HasLocal<Inner> { return relay_.inner().local(); }
    Addr peer() const requires HasPeer<Inner> { return relay_.inner().peer(); }
    Inner& inner() noexcept { return relay_.inner(); }
    Inner into_inner() && { return std::move(relay_).into_inner(); }

    Result<Stats> stats() const {
        Stats s;
        s.relay = relay_.stats();
        if (offload_) {
            auto rows = offload_.stats();
            if (!rows) return std::unexpected(rows.error());
            for (auto& r : *rows)
                if (r.stage == kStageName) {
                    s.steered = r.counters[BERTHA_C_HIT];
                    s.passed_on = r.counters[BERTHA_C_PASS];
                }
        }
        return s;
    }
    // Datagrams handled so far (both ways): a loop over many connections waits only after a
    // pass in which no connection's count moved.
    uint64_t activity() const noexcept { return activity_; }
    // What to poll: the client's side (-1 if it has none) and the upstream socket.
    std::array<int, 2> wait_fds() const {
        int fd = -1;
        if constexpr (HasWaitFd<Inner>) fd = relay_.inner().wait_fd();
        return {fd, relay_.upstream_fd()};
    }
    const OffloadHandle& offload() const noexcept { return offload_; }

  private:
    detail::Relay<Inner> relay_;
    OffloadHandle offload_;
    std::string name_;
    uint64_t activity_ = 0;
};

// The client's connection under shard/client: each request goes straight to its shard's port.
template <Connection Inner> class ClientConn final : public kv::RouterSink {
  public:
    using Data = Msg;
    ClientConn(Inner&& inner, kv::RouterCore core, Addr server, Table t)
        : inner_(std::move(inner)), core_(std::move(core)), server_(server), table_(t) {}

    Result<size_t> send(std::span<Msg> batch) {
        size_t kept = 0;
        for (size_t i = 0; i < batch.size(); ++i) {
            Msg& m = batch[i];
            if (!m) continue;
            auto* d = reinterpret_cast<char*>(m.data());
            auto s = core_.request(d, m.size(), Addr{}, *this);
            if (!s) { // split into parts (sent already) or dropped
                m.release();
                continue;
            }
            m.set_peer(detail::with_port(server_, uint16_t(table_.base + *s)));
            if (kept != i) batch[kept] = std::move(m);
            ++kept;
        }
        if (auto r = flush_parts(); !r) return std::unexpected(std::move(r.error()));
        if (kept == 0) return batch.size();
        auto n = inner_.send(batch.first(kept));
        if (!n) return n;
        return batch.size() - kept + *n;
    }

    Result<size_t> recv(std::span<Msg> batch, Deadline deadline) {
        core_.sweep();
        for (;;) {
            size_t got = 0;
            while (got < batch.size() && ready_head_ < ready_.size())
                batch[got++] = std::move(ready_[ready_head_++]);
            if (ready_head_ == ready_.size()) ready_.clear(), ready_head_ = 0;
            if (got) return got;
            auto n = inner_.recv(batch, deadline);
            if (!n || *n == 0) return n;
            size_t kept = 0;
            for (size_t i = 0; i < *n; ++i) {
                Msg& m = batch[i];
                auto* d = reinterpret_cast<char*>(m.data());
                if (!core_.reply(d, m.size(), *this)) { // a split get's part, or stray
                    m.release();
                    continue;
                }
                if (kept != i) batch[kept] = std::move(m);
                ++kept;
            }
            if (kept) return kept;
            if (Clock::now() >= deadline) return size_t(0);
        }
    }
    Result<size_t> alloc(std::span<Msg> out) requires CanAlloc<Inner> { return inner_.alloc(out); }
    void describe(std::vector<std::string>& out) const {
        out.push_back("shard/client (" + table_.text() + ")");
        inner_.describe(out);
    }
    int wait_fd() const requires HasWaitFd<Inner> { return inner_.wait_fd(); }
    Addr local() const requires HasLocal<Inner> { return inner_.local(); }
    Addr peer() const requires HasPeer<Inner> { return inner_.peer(); }
    Inner& inner() noexcept { return inner_; }
    Inner into_inner() && { return std::move(inner_); }
    Result<Stats> stats() const { return Stats{core_.stats(), 0, 0}; }
    const Table& table() const noexcept { return table_; }

    // A split get's parts: each in a fresh buffer, sent with the batch.
    void to_shard(std::string_view dg, uint32_t s) override {
        Msg m = detail::copy_into(inner_, dg);
        if (!m) return;
        m.set_peer(detail::with_port(server_, uint16_t(table_.base + s)));
        parts_.push_back(std::move(m));
    }
    // A split get's merged reply: handed up with the next recv.
    void to_client(std::string_view dg, const Addr&) override {
        if (Msg m = detail::copy_into(inner_, dg)) ready_.push_back(std::move(m));
    }

  private:
    Result<void> flush_parts() { return detail::send_all(inner_, parts_); }

    Inner inner_;
    kv::RouterCore core_;
    Addr server_;
    Table table_;
    std::vector<Msg> parts_, ready_;
    size_t ready_head_ = 0;
};

// shard/xdp: the XDP stage steers at the serving end; the connection relays what it passes on.
class Xdp : public detail::Configured {
  public:
    using Upper = Msg;
    using Lower = Msg;
    static constexpr ChunnelInfo info{kTypeId,
                                      "shard",
                                      "xdp",
                                      "shard,offload,xdp",
                                      Match::compositional,
                                      Scope::multilateral,
                                      Need::xdp | Need::privilege,
                                      Where::server,
                                      true};
    using Configured::Configured;

    template <Connection Inner>
    requires std::same_as<typename Inner::Data, Msg>
    auto connect_wrap(Inner&& inner, const ConnectContext& ctx) const
        -> Result<SelectConn<ServeConn<Inner>, detail::Passthrough<Inner>>> {
        using Out = SelectConn<ServeConn<Inner>, detail::Passthrough<Inner>>;
        if (!runs_at(info.where, ctx.side))
            return detail::pass_through<Out>(std::move(inner), name_of(info), true);
        auto flow = OffloadFlow::of(ctx, load::Hook::xdp, name_of(info));
        if (!flow) return std::unexpected(std::move(flow.error()));
        if (!cfg_.table.valid())
            return fail(Errc::invalid_argument, name_of(info),
                        "the serving end needs its shard table (shard::Config::table)");
        const load::StageSpec stage = stage_for(cfg_.table);
        auto h = attach_offload(service_flow(*flow), std::span(&stage, 1));
        if (!h) return std::unexpected(std::move(h.error()));
        auto relay = detail::make_relay(std::move(inner), cfg_, ctx, name_of(info));
        if (!relay) return std::unexpected(std::move(relay.error()));
        return Out(std::in_place_index<0>,
                   ServeConn<Inner>(std::move(*relay), std::move(*h),
                                    "shard/xdp (" + cfg_.table.text() + ")"));
    }
};

// shard/proxy: the serving end relays every request in userspace.
class Proxy : public detail::Configured {
  public:
    using Upper = Msg;
    using Lower = Msg;
    static constexpr ChunnelInfo info{kTypeId,
                                      "shard",
                                      "proxy",
                                      "shard,proxy",
                                      Match::compositional,
                                      Scope::multilateral,
                                      Need::none,
                                      Where::server,
                                      true}; // a server that runs shard/xdp steers every client
    using Configured::Configured;

    template <Connection Inner>
    requires std::same_as<typename Inner::Data, Msg>
    auto connect_wrap(Inner&& inner, const ConnectContext& ctx) const
        -> Result<SelectConn<ServeConn<Inner>, detail::Passthrough<Inner>>> {
        using Out = SelectConn<ServeConn<Inner>, detail::Passthrough<Inner>>;
        if (!runs_at(info.where, ctx.side))
            return detail::pass_through<Out>(std::move(inner), name_of(info), true);
        auto relay = detail::make_relay(std::move(inner), cfg_, ctx, name_of(info));
        if (!relay) return std::unexpected(std::move(relay.error()));
        return Out(std::in_place_index<0>,
                   ServeConn<Inner>(std::move(*relay), OffloadHandle{},
                                    "shard/proxy (" + cfg_.table.text() + ")"));
    }
};

// shard/client: the client hashes and sends to the shard's port itself.
class Client : public detail::Configured {
  public:
    using Upper = Msg;
    using Lower = Msg;
    static constexpr ChunnelInfo info{kTypeId,
                                      "shard",
                                      "client",
                                      "shard,client",
                                      Match::compositional,
                                      Scope::multilateral,
                                      Need::none,
                                      Where::client,
                                      true};
    using Configured::Configured;

    template <Connection Inner>
    requires std::same_as<typename Inner::Data, Msg>
    auto connect_wrap(Inner&& inner, const ConnectContext& ctx) const
        -> Result<SelectConn<ClientConn<Inner>, detail::Passthrough<Inner>>> {
        using Out = SelectConn<ClientConn<Inner>, detail::Passthrough<Inner>>;
        if (!runs_at(info.where, ctx.side))
            return detail::pass_through<Out>(std::move(inner), name_of(info), false);
        auto t = detail::table_for(cfg_, ctx, name_of(info));
        if (!t) return std::unexpected(std::move(t.error()));
        if (ctx.flow.peer.empty())
            return fail(Errc::invalid_argument, name_of(info),
                        "needs a connection to one server (connect), not bind or listen");
        auto core = kv::RouterCore::make(
            {.shards = t->shards, .timeout = cfg_.timeout, .ids = cfg_.ids, .groups = 256});
        if (!core) return std::unexpected(std::move(core.error()));
        log(LogLevel::debug, "shard",
            "shard/client: " + t->text() + " of " + ctx.flow.peer.to_string());
        return Out(std::in_place_index<0>,
                   ClientConn<Inner>(std::move(inner), std::move(*core), ctx.flow.peer, *t));
    }
};

// The chunnel as applications use it, in the order they prefer: by default the offload where
// the server can run it, else the proxy; shard/client last (chosen when the client puts it
// first: chunnel_client_first).
inline auto chunnel(const Config& c = {}) {
    return bertha::select(Xdp{c}, Proxy{c}, Client{c});
}
inline auto chunnel_client_first(const Config& c = {}) {
    return bertha::select(Client{c}, Xdp{c}, Proxy{c});
}

// What a shard connection did, at the end that runs it (an error at the other end).
template <class C> Result<Stats> stats(C& conn);
template <class C> uint64_t activity(C& conn);
template <class C> std::array<int, 2> wait_fds(C& conn);

namespace detail {
template <class C> struct kind_of { static constexpr int value = 0; }; // a wrapper (or not ours)
template <class... Cs> struct kind_of<SelectConn<Cs...>> { static constexpr int value = 1; };
template <class I> struct kind_of<ServeConn<I>> { static constexpr int value = 2; };
template <class I> struct kind_of<ClientConn<I>> { static constexpr int value = 2; };
template <class I> struct kind_of<Passthrough<I>> { static constexpr int value = 3; };

template <class F, class... Cs> void visit_select(SelectConn<Cs...>& conn, F& f);

// Find the shard connection inside C (a select of them, or wrapped by layers with inner())
// and call f on it; nothing where this end does not run the chunnel.
template <class C, class F> void visit_shard(C& conn, F&& f) {
    constexpr int k = kind_of<C>::value;
    if constexpr (k == 1)
        visit_select(conn, f);
    else if constexpr (k == 2)
        f(conn);
    else if constexpr (k == 0 && requires { conn.inner(); })
        visit_shard(conn.inner(), f);
}
template <class F, class... Cs> void visit_select(SelectConn<Cs...>& conn, F& f) {
    conn.visit([&](auto& c) { visit_shard(c, f); });
}
} // namespace detail

template <class C> Result<Stats> stats(C& conn) {
    Result<Stats> out = fail(Errc::unavailable, "shard", "the peer runs the shard chunnel");
    detail::visit_shard(conn, [&](auto& c) { out = c.stats(); });
    return out;
}
template <class C> uint64_t activity(C& conn) {
    uint64_t out = 0;
    detail::visit_shard(conn, [&](auto& c) {
        if constexpr (requires { c.activity(); }) out = c.activity();
    });
    return out;
}
template <class C> std::array<int, 2> wait_fds(C& conn) {
    std::array<int, 2> out{-1, -1};
    detail::visit_shard(conn, [&](auto& c) {
        if constexpr (requires { c.wait_fds(); }) out = c.wait_fds();
    });
    return out;
}

} // namespace bertha::shard
