// The vocabulary of composition: what a chunnel says about itself, what a connection can do,
// and what a host offers. Everything here is checked at compile time where it can be.
#pragma once

#include "bertha/addr.hpp"
#include "bertha/error.hpp"

#include <chrono>
#include <concepts>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bertha {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;
inline Deadline after(std::chrono::nanoseconds d) {
    return Clock::now() + d;
}
inline constexpr Deadline no_wait{}; // recv returns what is ready now, never blocks

// Exact chunnels (serialization, header formats) must run on both ends; compositional ones
// (sharding, caching) must run on at least one end, and negotiation says which.
enum class Match : uint8_t { exact, compositional };
// Unilateral chunnels are this host's business alone (which base); multilateral ones need the
// peer's agreement.
enum class Scope : uint8_t { unilateral, multilateral };

// What an implementation needs from the host. Discovery (bertha/discovery.hpp) fills HostFacts;
// select never picks an implementation whose requirements the host does not meet. A need is met
// only when this process can really use it: an XDP or TC hook counts when its programs can be
// loaded here (privilege) or by the loader agent.
enum class Need : uint32_t {
    none = 0,
    privilege = 1u << 0, // CAP_NET_ADMIN + CAP_BPF (BPF programs load), or a reachable agent
    xdp = 1u << 1,       // XDP *native* (driver mode) on the interface towards the peer
    tc = 1u << 2,        // a TC egress hook (tcx or clsact) and SCHED_CLS programs load
    af_xdp = 1u << 3,    // AF_XDP sockets bind (copy mode at least) on that interface
    btf = 1u << 4,       // kernel BTF (CO-RE relocations)
};
constexpr Need operator|(Need a, Need b) {
    return Need(uint32_t(a) | uint32_t(b));
}
constexpr bool has(Need set, Need one) {
    return (uint32_t(set) & uint32_t(one)) != 0;
}
std::string_view to_string(Need one) noexcept; // a single flag's name

// Static description of one implementation of one chunnel. Every chunnel type carries one as
// `static constexpr ChunnelInfo info`.
// Where an implementation does its work. Exact chunnels run at both ends; a compositional one
// runs at one end and the other end passes messages through (shard/client: the client hashes;
// shard/xdp: the server's XDP hook steers).
enum class Where : uint8_t { both, client, server };
// Which end of a connection this host is.
enum class Side : uint8_t { client, server };
// Does the end `side` run an implementation that runs at `where`?
constexpr bool runs_at(Where where, Side side) {
    return where == Where::both || (where == Where::client && side == Side::client) ||
           (where == Where::server && side == Side::server);
}

struct ChunnelInfo {
    uint32_t type_id;         // stable across versions and hosts: it goes on the wire
    std::string_view chunnel; // "shard": [a-z0-9._-], at most 48 characters
    std::string_view impl;    // "xdp" -> printed as "shard/xdp"; same character set
    std::string_view labels;  // comma-separated capability labels, e.g. "offload,xdp"
    Match match = Match::exact;
    Scope scope = Scope::multilateral;
    Need needs = Need::none;
    Where where = Where::both;
    // Its messages travel between the client and several ports of the server (shard/client
    // sends to the shards' ports; under shard/xdp the shards answer from theirs): a stack with
    // such an implementation anywhere connects its base with ConnectContext::peer_any_port.
    bool any_peer_port = false;
};

// What this host can do, and why not where it cannot: filled by discovery (probe(&peer).facts
// for the interface towards a peer), or stated by a caller (or a test).
struct HostFacts {
    uint32_t available = 0;  // bit set of Need
    std::string reasons[32]; // reasons[bit]: why that Need is not met
    bool meets(Need n) const noexcept { return (uint32_t(n) & ~available) == 0; }
    void grant(Need n) noexcept { available |= uint32_t(n); }
    void deny(Need n, std::string why);
    std::string why_not(Need n) const; // "needs xdp (reason); needs privilege (reason)"

    // probe().facts: host-wide facts with no peer, so xdp and af_xdp are denied (no interface).
    static HostFacts local();
};

// The connection's flow as the stack knows it when it wraps: what an offload attaches for
// (bertha/offload.hpp). Filled by stack.hpp's connect, accept, bind and listen.
struct FlowFacts {
    Addr local;         // local address and port (0.0.0.0:7000 for a wildcard); empty() if unknown
    Addr peer;          // the peer of a connected or accepted connection; empty() for bind/listen
    std::string ifname; // the interface towards the peer (stacks with an implementation on an
                        // interface: xdp, tc, af_xdp), else the one owning the local address;
                        // "" when unknown (no route, a wildcard address)
    // A base that bypasses the kernel (xsk) receives the flow through its own chain's AF_XDP
    // sockets: an XDP offload attached for this flow must end in them (the xsk stage's
    // sockets=CHAIN), or its packets would go to the kernel, where nothing reads them.
    std::optional<uint32_t> redirect_chain;
};

// What `connect_wrap` is told: the host's facts (and, later, the negotiated choices).
struct ConnectContext {
    const HostFacts* host = nullptr;
    Side side = Side::client;
    // Set by negotiation for the chunnel being wrapped: the implementation both ends agreed on
    // ("" = no negotiation: choose locally), and the parameters the serving end contributed
    // for it (a chunnel contributes them with `std::vector<uint8_t> params() const`).
    std::string_view chosen = {};
    std::span<const uint8_t> params = {};
    FlowFacts flow = {};
    // For a base's connect: take datagrams from every port of the peer's address, and send a
    // message to its own peer() when it names one (ChunnelInfo::any_peer_port). A base that
    // cannot fails with Errc::unavailable, so that a select of bases falls back.
    bool peer_any_port = false;
};

// A connection moves batches of Data. `send` consumes the batch (messages handed on, slots
// given back when the kernel is done) and returns how many it accepted. `recv` fills up to
// batch.size() entries and returns how many; 0 means the deadline passed with nothing to read.
// (Inside a stack, a layer may see an early 0 from the negotiation layer when an answer changes
// the stack; the connection an application holds returns 0 only at the deadline.)
template <class C>
concept Connection = std::movable<C> &&
    requires(C& c, const C& cc, std::span<typename C::Data> batch, Deadline d,
             std::vector<std::string>& out) {
    typename C::Data;
    { c.send(batch) } -> std::same_as<Result<size_t>>;
    { c.recv(batch, d) } -> std::same_as<Result<size_t>>;
    {cc.describe(out)}; // appends "chunnel/impl" names, top first
};

// A connection that can lend fresh, empty buffers for the application to fill and send.
template <class C>
concept CanAlloc = requires(C& c, std::span<typename C::Data> out) {
    { c.alloc(out) } -> std::same_as<Result<size_t>>;
};

// A connection or listener that says its local address / its peer's (the stack's flow facts).
template <class C>
concept HasLocal = requires(const C& c) {
    { c.local() } -> std::convertible_to<Addr>;
};
template <class C>
concept HasPeer = requires(const C& c) {
    { c.peer() } -> std::convertible_to<Addr>;
};

// A connection with a descriptor that polls readable when its recv may have something new, for
// a caller that waits on it together with other descriptors (shard's relay: the client side
// and its upstream socket). -1: none now (the caller waits in short slices instead). A caller
// first tries recv with no_wait: what a layer already holds does not show on the descriptor.
template <class C>
concept HasWaitFd = requires(const C& c) {
    { c.wait_fd() } -> std::convertible_to<int>;
};

// A connection that can hand back the one it wraps (to rebuild a stack under another choice).
template <class C>
concept Unwrappable = requires(C&& c) { std::move(c).into_inner(); };

// A chunnel stage: turns a connection carrying Lower into one carrying Upper.
template <class C>
concept ChunnelType = requires {
    { C::info } -> std::convertible_to<const ChunnelInfo&>;
    typename C::Upper;
    typename C::Lower;
};

template <class C, class Inner>
concept ChunnelOver = ChunnelType<C> && Connection<Inner> &&
    requires(const C& c, Inner&& inner, const ConnectContext& ctx) {
    {c.connect_wrap(std::move(inner), ctx)};
};

// A base chunnel makes a connection from nothing (an address): the bottom of every stack.
// connect(peer) gives a connection to one peer; bind(local) one that talks to any peer (each
// message names its peer); and, where the base has it, listen(local) a listener whose accept()
// yields one per peer (CanListen: a stack's listen() needs it).
template <class B>
concept BaseChunnel = requires(const B& b, const class Addr& a, const ConnectContext& ctx) {
    { B::info } -> std::convertible_to<const ChunnelInfo&>;
    typename B::Upper;
    {b.connect(a, ctx)};
    {b.bind(a, ctx)};
};
template <class B>
concept CanListen = BaseChunnel<B> && requires(const B& b, const class Addr& a,
                                               const ConnectContext& ctx) {
    {b.listen(a, ctx)};
};

std::string name_of(const ChunnelInfo& info); // "chunnel/impl"

} // namespace bertha
