// The `count` chunnel: the receiving end counts the datagrams of its connection; messages pass
// through untouched. Two implementations with the same observable counts:
//  - count::Xdp: the XDP `count` stage (count.bpf.c) attached for the connection's flow behind
//    the interface's dispatcher; its `pass` counter is the count (Loader::stats, `bertha-load
//    stats`, or counts(conn) in a privileged process);
//  - count::Userspace: the fallback, counting in the connection; needs nothing.
// Use count::chunnel() (= select(Xdp, Userspace)): a host without XDP, privilege or agent runs
// the fallback with no change to the application. See README.md.
#pragma once

#include "bertha/buffer.hpp"
#include "bertha/chunnel.hpp"
#include "bertha/log.hpp"
#include "bertha/negotiation.h"
#include "bertha/offload.hpp"
#include "bertha/parse.h"
#include "bertha/select.hpp"

#include <array>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

namespace bertha::count {

inline constexpr uint32_t kTypeId = 3;
inline constexpr std::string_view kStageName = "count"; // the loader's stage (stages.cpp)

// What a count connection reports.
struct Counts {
    uint64_t received = 0; // datagrams of the flow that arrived at this end
    uint64_t sent = 0;     // messages this end sent
};

// The counting rule, stated on a frame as it arrives at the interface: a frame counts when it is
// one whole UDP datagram (Ethernet, up to two VLAN tags, IPv4 with options or IPv6 with up to
// four extension headers; not a fragment, not truncated) to the flow's local port, and from the
// flow's peer when the flow has one (any port of that peer when the peer's port is 0), and is
// not a negotiation datagram (negotiation.h: the magic and at least a header's length). These
// are the datagrams the kernel hands to the connection's socket and the negotiation layer hands
// on, one message each: the fallback counts them as messages, the XDP stage as packets (and a
// negotiation datagram as `miss`). (One disagreement by construction: a
// datagram the sender's IP layer fragmented is one message to the fallback but never counted
// by the XDP stage, which passes fragments on untouched. See README.md.)
struct Rule {
    uint16_t port = 0; // the local port
    Addr peer;         // empty(): any peer

    static Rule of(const FlowFacts& f) {
        return Rule{uint16_t(f.local.empty() ? 0 : f.local.port()), f.peer};
    }

    bool counts(std::span<const uint8_t> frame) const {
        bertha_pkt pkt{};
        const uint8_t* data = frame.data();
        if (bertha_parse_udp(data, data + frame.size(), &pkt) != BERTHA_PARSE_OK) return false;
        if (pkt.dport != port) return false;
        // Negotiation is not data: the negotiation layer takes such datagrams out (wire.hpp).
        if (bertha_is_negotiation(data + pkt.payload_off, pkt.payload_len, data + frame.size()))
            return false;
        if (peer.empty()) return true;
        const uint8_t* ip = data + pkt.l3_off;
        if (pkt.ip_version == 4) {
            if (peer.family() != AF_INET) return false;
            auto* sin = reinterpret_cast<const sockaddr_in*>(peer.sa());
            if (std::memcmp(ip + 12, &sin->sin_addr, 4) != 0) return false;
        } else {
            if (peer.family() != AF_INET6) return false;
            auto* sin6 = reinterpret_cast<const sockaddr_in6*>(peer.sa());
            if (std::memcmp(ip + 8, &sin6->sin6_addr, 16) != 0) return false;
        }
        return peer.port() == 0 || pkt.sport == peer.port();
    }
};

// The XDP offload: the receiving (serving) end attaches the `count` stage for its flow.
class Xdp {
  public:
    using Upper = Msg;
    using Lower = Msg;
    static constexpr ChunnelInfo info{kTypeId,
                                      "count",
                                      "xdp",
                                      "count,offload,xdp",
                                      Match::compositional,
                                      Scope::multilateral,
                                      Need::xdp | Need::privilege,
                                      Where::server};

    template <Connection Inner> class Conn {
      public:
        using Data = Msg;
        Conn(Inner&& inner, OffloadHandle&& offload)
            : inner_(std::move(inner)), offload_(std::move(offload)) {}

        // Data passes untouched: the stage counts in the kernel, the sent side here.
        Result<size_t> send(std::span<Msg> batch) {
            auto n = inner_.send(batch);
            if (n && offload_) sent_ += *n;
            return n;
        }
        Result<size_t> recv(std::span<Msg> batch, Deadline deadline) {
            return inner_.recv(batch, deadline);
        }
        Result<size_t> alloc(std::span<Msg> out) requires CanAlloc<Inner> {
            return inner_.alloc(out);
        }
        void describe(std::vector<std::string>& out) const {
            out.push_back(name_of(info) + (offload_ ? "" : " (peer runs it)"));
            inner_.describe(out);
        }
        // received: the stage's `pass` counter (shared by every connection on the same flow),
        // read through the process's loader; the agent does not serve counters (an error).
        Result<Counts> counts() const {
            if (!offload_)
                return fail(Errc::unavailable, name_of(info),
                            "the peer counts this connection (it runs count/xdp)");
            auto rows = offload_.stats();
            if (!rows) return std::unexpected(rows.error());
            for (auto& r : *rows)
                if (r.stage == kStageName) return Counts{r.counters[BERTHA_C_PASS], sent_};
            return fail(Errc::unavailable, name_of(info), "no count stage in the chain");
        }
        bool active() const noexcept { return bool(offload_); }
        const OffloadHandle& offload() const noexcept { return offload_; }
        Addr local() const requires HasLocal<Inner> { return inner_.local(); }
        Addr peer() const requires HasPeer<Inner> { return inner_.peer(); }
        Inner& inner() noexcept { return inner_; }
        Inner into_inner() && { return std::move(inner_); } // the handle detaches

      private:
        Inner inner_;
        OffloadHandle offload_; // empty at the end that passes through
        uint64_t sent_ = 0;
    };

    template <Connection Inner>
    requires std::same_as<typename Inner::Data, Msg> Result<Conn<Inner>>
    connect_wrap(Inner&& inner, const ConnectContext& ctx)
    const {
        if (!runs_at(info.where, ctx.side)) return Conn<Inner>(std::move(inner), {});
        auto flow = OffloadFlow::of(ctx, load::Hook::xdp, name_of(info));
        if (!flow) return std::unexpected(std::move(flow.error()));
        const load::StageSpec stage{std::string(kStageName), ""};
        auto h = attach_offload(*flow, std::span(&stage, 1));
        if (!h) return std::unexpected(std::move(h.error()));
        return Conn<Inner>(std::move(inner), std::move(*h));
    }
};

// The fallback: the serving end counts in the connection.
class Userspace {
  public:
    using Upper = Msg;
    using Lower = Msg;
    static constexpr ChunnelInfo info{
        kTypeId,    "count",      "userspace", "count", Match::compositional, Scope::multilateral,
        Need::none, Where::server};

    template <Connection Inner> class Conn {
      public:
        using Data = Msg;
        Conn(Inner&& inner, bool active) : inner_(std::move(inner)), active_(active) {}

        Result<size_t> send(std::span<Msg> batch) {
            auto n = inner_.send(batch);
            if (n && active_) sent_ += *n;
            return n;
        }
        // Every message handed up is one datagram of the flow (Rule): the socket below
        // delivers only those, and the negotiation layer has taken its own out already.
        Result<size_t> recv(std::span<Msg> batch, Deadline deadline) {
            auto n = inner_.recv(batch, deadline);
            if (n && active_) received_ += *n;
            return n;
        }
        Result<size_t> alloc(std::span<Msg> out) requires CanAlloc<Inner> {
            return inner_.alloc(out);
        }
        void describe(std::vector<std::string>& out) const {
            out.push_back(name_of(info) + (active_ ? "" : " (peer runs it)"));
            inner_.describe(out);
        }
        Result<Counts> counts() const {
            if (!active_)
                return fail(Errc::unavailable, name_of(info),
                            "the peer counts this connection (it runs count/userspace)");
            return Counts{received_, sent_};
        }
        bool active() const noexcept { return active_; }
        Addr local() const requires HasLocal<Inner> { return inner_.local(); }
        Addr peer() const requires HasPeer<Inner> { return inner_.peer(); }
        Inner& inner() noexcept { return inner_; }
        Inner into_inner() && { return std::move(inner_); }

      private:
        Inner inner_;
        bool active_;
        uint64_t received_ = 0, sent_ = 0;
    };

    template <Connection Inner>
    requires std::same_as<typename Inner::Data, Msg> Result<Conn<Inner>>
    connect_wrap(Inner&& inner, const ConnectContext& ctx)
    const {
        bool active = runs_at(info.where, ctx.side);
        if (active && log_level() == LogLevel::debug) {
            std::string why = !ctx.chosen.empty() ? "negotiation chose it"
                              : !ctx.host         ? "no host facts given"
                                                  : "chosen locally";
            if (ctx.host && !ctx.host->meets(Xdp::info.needs))
                why += "; count/xdp cannot run here: " + ctx.host->why_not(Xdp::info.needs);
            log(LogLevel::debug, "count",
                "the userspace fallback counts " +
                    (ctx.flow.local.empty() ? std::string("this connection")
                                            : "udp/" + std::to_string(ctx.flow.local.port())) +
                    " (" + why + ")");
        }
        return Conn<Inner>(std::move(inner), active);
    }
};

// The chunnel as applications use it: the offload where the serving host can run it, else the
// fallback.
inline auto chunnel() {
    return bertha::select(Xdp{}, Userspace{});
}
using Count = decltype(chunnel());

namespace detail {
template <class... Cs> Result<Counts> select_counts(SelectConn<Cs...>& conn);
} // namespace detail

// The counts of a count connection: the connection a stack returns when `count` is its top
// chunnel (either implementation, the select of both, or the client's negotiated wrapper).
template <class C> Result<Counts> counts(C& conn) {
    if constexpr (requires { conn.counts(); })
        return conn.counts();
    else if constexpr (requires { conn.inner(); })
        return counts(conn.inner());
    else
        return detail::select_counts(conn);
}

namespace detail {
template <class... Cs> Result<Counts> select_counts(SelectConn<Cs...>& conn) {
    Result<Counts> out = fail(Errc::invalid_argument, "count", "not a count connection");
    (
        [&] {
            if (auto* c = conn.template get_if<Cs>()) out = counts(*c);
        }(),
        ...);
    return out;
}
} // namespace detail

} // namespace bertha::count
