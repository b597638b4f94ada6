// make_stack(top, ..., base): compose chunnels at compile time. The stack's data types must line
// up (each chunnel's Lower is the Upper of the one below it); if not, compilation stops with a
// sentence saying so. connect/bind/listen build the base connection and wrap it bottom-up, so
// the connection the application holds is one nested, fully inlined type.
//
//  - connect(peer): negotiates with the peer first (negotiate.hpp): one round trip, or none
//    with a cached zero-RTT choice; `prearranged` options skip negotiation.
//  - listen(local): accept() negotiates with each new peer and wraps its connection under the
//    choice made for it.
//  - bind(local): one connection for every peer, under this host's own choice: pre-arranged.
#pragma once

#include "bertha/chunnel.hpp"
#include "bertha/discovery.hpp"
#include "bertha/log.hpp"
#include "bertha/negotiate.hpp"
#include "bertha/negotiate_conn.hpp"

#include <array>
#include <memory>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

namespace bertha {

namespace detail {

template <class Ch, class Inner>
using wrap_t = typename decltype(std::declval<const Ch&>().connect_wrap(
    std::declval<Inner&&>(), std::declval<const ConnectContext&>()))::value_type;

// Fold the chunnels above the base over the base connection type, bottom-up.
template <class BaseConn, class... Above> struct wrap_all;
template <class BaseConn> struct wrap_all<BaseConn> { using type = BaseConn; };
template <class BaseConn, class Top, class... Rest> struct wrap_all<BaseConn, Top, Rest...> {
    using type = wrap_t<Top, typename wrap_all<BaseConn, Rest...>::type>;
};

// One pair of neighbours in a stack; instantiated for every pair so that a mismatch names the
// two chunnels in the compiler's "required from here" notes.
template <class Above, class Below> constexpr bool fits() {
    static_assert(std::is_same_v<typename Above::Lower, typename Below::Upper>,
                  "make_stack: these two chunnels do not fit together: the upper one consumes a "
                  "data type (its Lower) that the lower one does not produce (its Upper). Reorder "
                  "the stack or add a chunnel that converts between the two.");
    return std::is_same_v<typename Above::Lower, typename Below::Upper>;
}
template <class... Chs, size_t... I> constexpr bool all_fit(std::index_sequence<I...>) {
    using T = std::tuple<Chs...>;
    return (fits<std::tuple_element_t<I, T>, std::tuple_element_t<I + 1, T>>() && ...);
}

// The negotiation slot a chunnel occupies: a select's alternatives in order, or itself alone.
template <class Ch> negotiation::SlotDecl slot_decl_of() {
    negotiation::SlotDecl d;
    if constexpr (requires { Ch::alternatives(); }) {
        d.alts = Ch::alternatives();
        constexpr bool unordered = requires {
            requires Ch::unordered;
        };
        for (size_t i = 0; i < d.alts.size(); ++i) d.ranks.push_back(unordered ? 0 : uint8_t(i));
    } else {
        d.alts = {Ch::info};
        d.ranks = {0};
    }
    return d;
}

// What a chunnel contributes to the answer when `impl` is chosen for it (server side).
template <class Ch> std::vector<uint8_t> params_of(const Ch& ch, std::string_view impl) {
    if constexpr (requires { ch.params_for(impl); })
        return ch.params_for(impl);
    else if constexpr (requires { ch.params(); }) {
        if (Ch::info.impl == impl) return ch.params();
    }
    return {};
}

// Peel layers off a connection down to `Bottom` (every layer must be Unwrappable).
template <class Bottom, class C> constexpr bool unwraps_to() {
    if constexpr (std::is_same_v<C, Bottom>)
        return true;
    else if constexpr (Unwrappable<C>)
        return unwraps_to<Bottom, decltype(std::declval<C&&>().into_inner())>();
    else
        return false;
}
template <class Bottom, class C> Bottom unwrap(C&& c) {
    if constexpr (std::is_same_v<std::decay_t<C>, Bottom>)
        return std::move(c);
    else
        return unwrap<Bottom>(std::move(c).into_inner());
}

// The local address of a base connection or listener, and the peer of an accepted one, when
// the base says (empty otherwise): the flow facts offloads attach for (ConnectContext::flow).
template <class C> Addr local_of(const C& c) {
    if constexpr (HasLocal<C>)
        return c.local();
    else
        return Addr{};
}
template <class C> Addr peer_of(const C& c) {
    if constexpr (HasPeer<C>)
        return c.peer();
    else
        return Addr{};
}
template <class C> std::optional<uint32_t> redirect_chain_of(const C& c) {
    if constexpr (requires { c.redirect_chain(); })
        return c.redirect_chain();
    else
        return std::nullopt;
}
// An accepted peer's base connection, held on the heap and shared: the stack is wrapped around
// it first (the chosen implementations attach their offloads in connect_wrap), and the listener
// answers the peer through it afterwards, so that the offloads are in place before the peer,
// having heard the answer, starts sending. One pointer hop per batch.
template <class B> class SharedBase {
  public:
    using Data = typename B::Data;
    explicit SharedBase(B&& b) : b_(std::make_shared<B>(std::move(b))) {}
    SharedBase(SharedBase&&) noexcept = default; // move-only, like the connection it holds
    SharedBase& operator=(SharedBase&&) noexcept = default;
    SharedBase(const SharedBase&) = delete;
    SharedBase& operator=(const SharedBase&) = delete;
    Result<size_t> send(std::span<Data> batch) { return b_->send(batch); }
    Result<size_t> recv(std::span<Data> batch, Deadline d) { return b_->recv(batch, d); }
    Result<size_t> alloc(std::span<Data> out) requires CanAlloc<B> { return b_->alloc(out); }
    void describe(std::vector<std::string>& out) const { b_->describe(out); }
    decltype(auto) peer() const requires requires(const B& b) { b.peer(); }
    { return b_->peer(); }
    void restart(Msg&& m) requires requires(B& b) { b.restart(std::move(m)); }
    { b_->restart(std::move(m)); }
    bool closed() const requires requires(const B& b) { b.closed(); }
    { return b_->closed(); }
    int wait_fd() const requires HasWaitFd<B> { return b_->wait_fd(); }
    B& inner() { return *b_; }
    const std::shared_ptr<B>& shared() const { return b_; }

  private:
    std::shared_ptr<B> b_;
};

// A component ("count/xdp") as a refusal names it ("count"), and a message as it may travel.
inline std::string wire_name(std::string_view component) {
    std::string out;
    for (char c : component.substr(0, component.find('/'))) {
        if (out.size() == wire::kMaxName) break;
        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-')
            out += c;
    }
    return out.empty() ? std::string("stack") : out;
}
inline std::string wire_text(std::string s) {
    if (s.size() > wire::kMaxMessageText) s.resize(wire::kMaxMessageText);
    for (char& c : s)
        if (c < 0x20 || c > 0x7e) c = '?';
    return s;
}

// The interface the kernel routes `peer` through; "" when there is no route.
inline std::string interface_towards(const Addr& peer) {
    if (peer.empty()) return {};
    auto r = route_to(peer);
    return r ? r->ifname : std::string{};
}
// The interface that owns `local`; "" for a wildcard or foreign address.
inline std::string interface_of(const ProbeReport& r) {
    return r.interface ? r.interface->name : std::string{};
}

} // namespace detail

// Options that skip negotiation: both ends run the stack they were built with.
inline const negotiation::Options prearranged{.enabled = false};

template <class... Chs> class Stack {
    static_assert(sizeof...(Chs) >= 1, "make_stack needs at least a base chunnel");
    using Tuple = std::tuple<Chs...>;
    static constexpr size_t N = sizeof...(Chs);
    using Base = std::tuple_element_t<N - 1, Tuple>;
    static_assert(BaseChunnel<Base>,
                  "make_stack: the last chunnel must be a base chunnel (udp, xsk, or a select of "
                  "bases): it makes the connection that everything above it wraps");
    static_assert(detail::all_fit<Chs...>(std::make_index_sequence<N - 1>{}));

    template <class BaseConn, class Seq> struct final_of;
    template <class BaseConn, size_t... I> struct final_of<BaseConn, std::index_sequence<I...>> {
        using type = typename detail::wrap_all<BaseConn, std::tuple_element_t<I, Tuple>...>::type;
    };
    template <class BaseConn>
    using final_t = typename final_of<BaseConn, std::make_index_sequence<N - 1>>::type;

    // Which positions are negotiated (multilateral chunnels above the base), in stack order.
    static constexpr std::array<bool, N> kMultilateral = {
        (Chs::info.scope == Scope::multilateral)...};
    static std::vector<size_t> slot_positions() {
        std::vector<size_t> out;
        for (size_t p = 0; p + 1 < N; ++p)
            if (kMultilateral[p]) out.push_back(p);
        return out;
    }

    using Contexts = std::array<ConnectContext, N>;

    // Does an implementation in this stack work on an interface (an XDP or TC hook, AF_XDP)?
    // Only then is the route towards each peer looked up for the flow facts (one netlink
    // round trip per connection); otherwise a connection inherits the interface of its local
    // address.
    static bool wants_interface() {
        static const bool yes = [] {
            constexpr uint32_t on_iface =
                uint32_t(Need::xdp) | uint32_t(Need::tc) | uint32_t(Need::af_xdp);
            bool any = false;
            auto scan = [&](const std::vector<ChunnelInfo>& alts) {
                for (auto& a : alts) any |= (uint32_t(a.needs) & on_iface) != 0;
            };
            (scan(detail::slot_decl_of<Chs>().alts), ...);
            return any;
        }();
        return yes;
    }

    // Does an implementation in this stack talk to several ports of the peer? Then the base
    // connects with ConnectContext::peer_any_port (chunnel.hpp).
    static bool wants_any_peer_port() {
        bool any = false;
        auto scan = [&](const std::vector<ChunnelInfo>& alts) {
            for (auto& a : alts) any |= a.any_peer_port;
        };
        (scan(detail::slot_decl_of<Chs>().alts), ...);
        return any;
    }

  public:
    explicit Stack(Chs... chs) : chs_(std::move(chs)...) {}

    using BaseClient = typename decltype(std::declval<const Base&>().connect(
        std::declval<const Addr&>(), std::declval<const ConnectContext&>()))::value_type;
    using ClientBottom = negotiation::NegClientConn<BaseClient>;
    using ClientWrapped = final_t<ClientBottom>;
    using ClientConn = negotiation::Negotiated<ClientWrapped>;
    using BoundConn = final_t<typename decltype(std::declval<const Base&>().bind(
        std::declval<const Addr&>(), std::declval<const ConnectContext&>()))::value_type>;

    // Can a zero-RTT choice be re-made if the server refuses it? (Every layer Unwrappable.)
    static constexpr bool kRebuildable = detail::unwraps_to<ClientBottom, ClientWrapped>();

    // This host's offer for the stack: per negotiated chunnel, what it accepts.
    Result<wire::Offer> offer(const HostFacts& host, Side side) const {
        wire::Offer o;
        std::optional<Error> err;
        [&]<size_t... I>(std::index_sequence<I...>) {
            (
                [&] {
                    if (err || I + 1 == N || !kMultilateral[I]) return;
                    auto slot = negotiation::offer_slot(
                        detail::slot_decl_of<std::tuple_element_t<I, Tuple>>(), host, side);
                    if (!slot)
                        err = std::move(slot.error());
                    else
                        o.slots.push_back(std::move(*slot));
                }(),
                ...);
        }
        (std::make_index_sequence<N>{});
        if (err) return std::unexpected(std::move(*err));
        if (o.slots.size() > wire::kMaxSlots)
            return fail(Errc::invalid_argument, "negotiation",
                        "a stack may negotiate at most " + std::to_string(wire::kMaxSlots) +
                            " chunnels");
        return o;
    }

    // A connection to one peer, negotiated (or pre-arranged with `prearranged`).
    Result<ClientConn> connect(const Addr& peer, const negotiation::Options& opts,
                               const ConnectContext& ctx_in) const {
        ConnectContext ctx = ctx_in;
        ctx.side = Side::client;
        if (ctx.flow.peer.empty()) ctx.flow.peer = peer;
        if (wants_any_peer_port()) ctx.peer_any_port = true;
        if (!ctx.host) {
            const ProbeReport& r = probe(&peer); // the interface towards the peer
            ctx.host = &r.facts;
            if (ctx.flow.ifname.empty()) ctx.flow.ifname = detail::interface_of(r);
        } else if (ctx.flow.ifname.empty() && wants_interface()) {
            ctx.flow.ifname = detail::interface_towards(peer);
        }
        auto base = std::get<N - 1>(chs_).connect(peer, ctx);
        if (!base) return std::unexpected(std::move(base.error()));
        if (ctx.flow.local.empty()) ctx.flow.local = detail::local_of(*base);
        auto st = std::make_shared<negotiation::ClientState>();
        st->opts = opts;
        st->server = peer;
        Contexts local;
        local.fill(ctx);
        if (!opts.enabled) {
            st->phase = negotiation::ClientState::Phase::off;
            return finish(ClientBottom(std::move(*base), st, {}), local, st, ctx);
        }
        auto my_offer = offer(*ctx.host, Side::client);
        if (!my_offer) return std::unexpected(std::move(my_offer.error()));
        st->fingerprint = wire::fingerprint(*my_offer);
        st->conv = negotiation::random_u64();

        auto& cache = negotiation::ZeroRttCache::instance();
        if constexpr (kRebuildable) {
            if (opts.zero_rtt) {
                if (auto cached = cache.lookup(peer, st->fingerprint)) {
                    st->pick = std::move(*cached);
                    auto c = contexts(st->pick, ctx);
                    if (c) return zero_rtt(std::move(*base), *my_offer, st, *c, ctx);
                    cache.erase(peer, st->fingerprint); // stale beyond repair: ask again
                }
            }
        }
        std::vector<Msg> held;
        auto pick = negotiation::client_handshake(*base, peer, *my_offer, opts, st->conv, held);
        if (!pick) return std::unexpected(std::move(pick.error()));
        st->pick = std::move(*pick);
        auto c = contexts(st->pick, ctx);
        if (!c) return std::unexpected(std::move(c.error()));
        cache.store(peer, st->fingerprint, st->pick);
        st->phase = negotiation::ClientState::Phase::established;
        return finish(ClientBottom(std::move(*base), st, std::move(held)), *c, st, ctx);
    }
    Result<ClientConn> connect(const Addr& peer, const negotiation::Options& opts) const {
        return connect(peer, opts, ConnectContext{});
    }
    Result<ClientConn> connect(const Addr& peer, const ConnectContext& ctx) const {
        return connect(peer, negotiation::Options{}, ctx);
    }
    Result<ClientConn> connect(const Addr& peer) const {
        return connect(peer, negotiation::Options{}, ConnectContext{});
    }

    // One connection, bound to `local`, that talks to any peer (each message carries its peer).
    // Pre-arranged: the stack runs this host's own choice for every peer.
    Result<BoundConn> bind(const Addr& local, const ConnectContext& ctx_in) const {
        ConnectContext ctx = ctx_in;
        ctx.side = Side::server;
        if (!ctx.host || ctx.flow.ifname.empty()) {
            const ProbeReport& r = probe_local(local); // the interface that owns `local`
            if (!ctx.host) ctx.host = &r.facts;
            if (ctx.flow.ifname.empty()) ctx.flow.ifname = detail::interface_of(r);
        }
        auto base = std::get<N - 1>(chs_).bind(local, ctx);
        if (!base) return std::unexpected(std::move(base.error()));
        if (ctx.flow.local.empty()) ctx.flow.local = detail::local_of(*base);
        Contexts all;
        all.fill(ctx);
        return wrap<BoundConn>(std::move(*base), all);
    }
    Result<BoundConn> bind(const Addr& local) const { return bind(local, ConnectContext{}); }

    // A listener on `local`; accept() negotiates with each new peer and yields its connection.
    class Listener {
      public:
        using BaseListener = typename decltype(std::declval<const Base&>().listen(
            std::declval<const Addr&>(), std::declval<const ConnectContext&>()))::value_type;
        using BasePeer = typename decltype(std::declval<BaseListener&>().accept(
            Deadline{}))::value_type::value_type;
        using PeerBottom = negotiation::NegServerConn<detail::SharedBase<BasePeer>>;
        using PeerConn = final_t<PeerBottom>;

        // The next peer that completed negotiation, or nullopt when the deadline passes.
        // Peers are negotiated concurrently: one slow or silent peer delays no other.
        Result<std::optional<PeerConn>> accept(Deadline deadline) {
            for (;;) {
                if (auto r = advance_pending(); !r || *r) return r;
                // Look at the socket at least once, even with a deadline already passed
                // (accept(no_wait)), then return when the deadline has passed.
                auto now = Clock::now();
                Deadline slice = pending_.empty()
                                     ? deadline
                                     : std::min(deadline, now + std::chrono::milliseconds(2));
                auto got = base_.accept(slice);
                if (!got) return std::unexpected(std::move(got.error()));
                if (!*got) {
                    if (Clock::now() < deadline) continue;
                    return advance_pending(); // a peer whose offer just arrived: answer it now
                }
                if (!opts_.enabled) { // pre-arranged: no exchange, this host's own choice
                    Contexts all;
                    all.fill(peer_context(**got));
                    auto w = stack_.template wrap<PeerConn>(
                        PeerBottom(detail::SharedBase<BasePeer>(std::move(**got)), 0, {}, 0, {}),
                        all);
                    if (!w) return std::unexpected(std::move(w.error()));
                    return std::optional<PeerConn>(std::move(*w));
                }
                pending_.push_back(Pending{std::move(**got), {}, {}, now});
            }
        }
        BaseListener& base() { return base_; }
        // The context a peer's connection is wrapped with: the listener's, plus the peer and the
        // interface towards it (ConnectContext::flow; see wants_interface).
        ConnectContext peer_context(const BasePeer& conn) const {
            ConnectContext c = ctx_;
            c.flow.peer = detail::peer_of(conn);
            c.flow.redirect_chain = detail::redirect_chain_of(conn);
            if (Stack::wants_interface())
                if (auto name = detail::interface_towards(c.flow.peer); !name.empty())
                    c.flow.ifname = std::move(name);
            return c;
        }
        size_t negotiating() const { return pending_.size(); }
        uint64_t refused() const { return refused_; }
        uint64_t expired() const { return expired_; }

      private:
        friend class Stack;
        Listener(const Stack& s, BaseListener&& b, const ConnectContext& ctx,
                 const negotiation::Options& opts, wire::Offer server_offer)
            : stack_(s), base_(std::move(b)), ctx_(ctx), opts_(opts),
              server_offer_(std::move(server_offer)) {}

        struct Pending {
            BasePeer conn;
            wire::Reassembler reasm;
            std::vector<Msg> held; // data that came before (or without) the offer
            Clock::time_point since;
        };

        // One pass over the peers in negotiation: the first that completes, if any. Peers that
        // were refused or went quiet are dropped.
        Result<std::optional<PeerConn>> advance_pending() {
            for (size_t i = 0; i < pending_.size();) {
                std::optional<PeerConn> done;
                bool drop = false;
                if (auto r = step(pending_[i], done, drop); !r)
                    return std::unexpected(std::move(r.error()));
                if (done || drop) {
                    pending_.erase(pending_.begin() + long(i));
                    if (done) return done;
                    continue;
                }
                ++i;
            }
            return std::optional<PeerConn>{};
        }

        // Read what the peer sent so far; answer once its offer is complete. Every datagram of
        // the batch is filed first (data in order into `held`, negotiation into the
        // reassembler), so data right behind a zero-RTT message is kept, not lost.
        Result<void> step(Pending& p, std::optional<PeerConn>& done, bool& drop) {
            Msg batch[16];
            auto got = p.conn.recv(std::span(batch), no_wait);
            if (!got) return std::unexpected(std::move(got.error()));
            std::optional<wire::Header> complete;
            for (size_t i = 0; i < *got; ++i) {
                Msg& m = batch[i];
                if (!wire::looks_like_negotiation(m.bytes())) {
                    if (p.held.size() < 256) p.held.push_back(std::move(m));
                    continue;
                }
                if (complete) continue; // a retransmission behind the message being answered
                auto d = negotiation::bytes_of(m);
                wire::Header h;
                wire::Error err;
                if (!wire::parse_header(d, h, err)) {
                    if (err.code == wire::Errc::bad_version && d.size() >= wire::kHeaderSize) {
                        refuse_version(p, d);
                        drop = true;
                        return {};
                    }
                    continue;
                }
                if (h.type != wire::Type::offer && h.type != wire::Type::zero_rtt) continue;
                if (p.reasm.feed(h, d.subspan(wire::kHeaderSize))) complete = h;
            }
            if (complete) return answer(p, *complete, done, drop);
            if (Clock::now() - p.since > opts_.accept_idle) {
                ++expired_;
                drop = true;
            }
            return {};
        }

        Result<void> answer(Pending& p, const wire::Header& h, std::optional<PeerConn>& done,
                            bool& drop) {
            wire::Error err;
            wire::Offer offer;
            uint64_t cached_nonce = 0;
            bool zero = h.type == wire::Type::zero_rtt;
            bool ok;
            if (zero) {
                wire::ZeroRtt z;
                ok = wire::decode(p.reasm.body(), z, err);
                cached_nonce = z.nonce;
                offer = std::move(z.offer);
            } else {
                ok = wire::decode(p.reasm.body(), offer, err);
            }
            if (!ok) {
                wire::Refuse r;
                r.reason = wire::RefuseReason::malformed;
                r.chunnel = "stack";
                r.message = err.what.substr(0, wire::kMaxMessageText);
                return send_refuse(p, h.conv, r, drop);
            }
            uint64_t fp = wire::fingerprint(offer);
            const wire::Pick* pick = nonces_.find(fp);
            if (!pick) {
                auto decision =
                    negotiation::decide(offer, server_offer_, negotiation::random_u64(),
                                        [this](size_t slot, const std::string& impl) {
                                            return stack_.params_at(slot_positions()[slot], impl);
                                        });
                if (decision.refuse) return send_refuse(p, h.conv, *decision.refuse, drop);
                pick = &nonces_.pick_for(fp, [&] { return *decision.pick; });
            }
            if (!fits(*pick)) {
                wire::Refuse r;
                r.reason = wire::RefuseReason::malformed;
                r.chunnel = "stack";
                r.message = "the server's chunnels contribute parameters beyond the limit of " +
                            std::to_string(wire::kMaxParams) + " bytes per chunnel";
                return send_refuse(p, h.conv, r, drop);
            }
            std::vector<std::vector<uint8_t>> reply;
            if (zero && cached_nonce == pick->nonce)
                reply =
                    wire::frame(wire::Type::ack, 0, h.conv, wire::encode(wire::Ack{pick->nonce}));
            else
                reply = wire::frame(wire::Type::pick, zero ? wire::flag_zero_rtt_refused : 0,
                                    h.conv, wire::encode(*pick));
            auto c = stack_.contexts(*pick, peer_context(p.conn));
            if (!c) return std::unexpected(std::move(c.error()));
            // Wrap first, answer second (see detail::SharedBase): the peer sends as soon as it
            // hears the answer, and its data must meet the offloads already attached.
            detail::SharedBase<BasePeer> base(std::move(p.conn));
            std::shared_ptr<BasePeer> answer_through = base.shared();
            auto w = stack_.template wrap<PeerConn>(
                PeerBottom(std::move(base), h.conv, reply, pick->nonce, std::move(p.held)), *c);
            if (!w) {
                // A chunnel could not be set up for this peer (an offload that did not attach):
                // the peer is refused with the reason, like an incompatible one, and the
                // listener carries on with the others.
                wire::Refuse r;
                r.reason = wire::RefuseReason::no_compatible;
                r.chunnel = detail::wire_name(w.error().component);
                r.message = detail::wire_text("the server could not set up its choice: " +
                                              w.error().what());
                log(LogLevel::warn, "negotiation",
                    "refused " + detail::peer_of(*answer_through).to_string() + ": " +
                        w.error().what());
                ++refused_;
                drop = true;
                (void)negotiation::send_datagrams(
                    *answer_through, wire::frame(wire::Type::refuse, 0, h.conv, wire::encode(r)));
                return {};
            }
            // The peer is ours now, answer or not: a lost answer is repaired by the peer's
            // retransmitted offer, which the connection answers again (NegServerConn).
            if (auto s = negotiation::send_datagrams(*answer_through, reply); !s)
                log(LogLevel::debug, "negotiation", "answer: " + s.error().what());
            done.emplace(std::move(*w));
            return {};
        }

        static bool fits(const wire::Pick& p) {
            for (auto& c : p.choices)
                if (c.params.size() > wire::kMaxParams) return false;
            return true;
        }

        Result<void> send_refuse(Pending& p, uint64_t conv, const wire::Refuse& r, bool& drop) {
            ++refused_;
            drop = true;
            auto s = negotiation::send_datagrams(
                p.conn, wire::frame(wire::Type::refuse, 0, conv, wire::encode(r)));
            if (!s) return std::unexpected(std::move(s.error()));
            return {};
        }

        void refuse_version(Pending& p, std::span<const uint8_t> d) {
            uint64_t conv = 0;
            for (int i = 0; i < 8; ++i) conv = conv << 8 | d[16 + size_t(i)];
            wire::Refuse r;
            r.reason = wire::RefuseReason::bad_version;
            r.chunnel = "stack";
            r.message = "the offer is negotiation version " + std::to_string(d[4]) +
                        "; this server speaks version " + std::to_string(wire::kVersion);
            bool drop = true;
            (void)send_refuse(p, conv, r, drop);
        }

        Stack stack_; // a copy of the chunnels: the listener may outlive a temporary stack
        BaseListener base_;
        ConnectContext ctx_;
        negotiation::Options opts_;
        wire::Offer server_offer_;
        negotiation::NonceTable nonces_;
        std::vector<Pending> pending_;
        uint64_t refused_ = 0, expired_ = 0;
    };

    Result<Listener> listen(const Addr& local, const negotiation::Options& opts,
                            const ConnectContext& ctx_in) const {
        ConnectContext ctx = ctx_in;
        ctx.side = Side::server;
        if (!ctx.host || ctx.flow.ifname.empty()) {
            const ProbeReport& r = probe_local(local); // the interface that owns `local`
            if (!ctx.host) ctx.host = &r.facts;
            if (ctx.flow.ifname.empty()) ctx.flow.ifname = detail::interface_of(r);
        }
        wire::Offer server_offer;
        if (opts.enabled) {
            auto o = offer(*ctx.host, Side::server);
            if (!o) return std::unexpected(std::move(o.error()));
            server_offer = std::move(*o);
        }
        auto base = std::get<N - 1>(chs_).listen(local, ctx);
        if (!base) return std::unexpected(std::move(base.error()));
        if (ctx.flow.local.empty()) ctx.flow.local = detail::local_of(*base);
        return Listener(*this, std::move(*base), ctx, opts, std::move(server_offer));
    }
    Result<Listener> listen(const Addr& local, const negotiation::Options& opts) const {
        return listen(local, opts, ConnectContext{});
    }
    Result<Listener> listen(const Addr& local, const ConnectContext& ctx) const {
        return listen(local, negotiation::Options{}, ctx);
    }
    Result<Listener> listen(const Addr& local) const {
        return listen(local, negotiation::Options{}, ConnectContext{});
    }

    // Per stack position, the context to wrap it with under `pick`. An error when the pick
    // does not fit this stack (a server that answered for another stack).
    Result<Contexts> contexts(const wire::Pick& pick, const ConnectContext& ctx) const {
        Contexts out;
        out.fill(ctx);
        auto positions = slot_positions();
        if (pick.choices.size() != positions.size())
            return fail(Errc::incompatible, "negotiation",
                        "the answer chose for " + std::to_string(pick.choices.size()) +
                            " chunnels; this stack negotiates " + std::to_string(positions.size()));
        for (size_t s = 0; s < positions.size(); ++s) {
            const wire::Choice& c = pick.choices[s];
            out[positions[s]].chosen = c.impl;
            out[positions[s]].params = c.params;
        }
        return out;
    }

    std::vector<uint8_t> params_at(size_t pos, const std::string& impl) const {
        std::vector<uint8_t> out;
        [&]<size_t... I>(std::index_sequence<I...>) {
            ((I == pos ? (void)(out = detail::params_of(std::get<I>(chs_), impl)) : (void)0), ...);
        }
        (std::make_index_sequence<N - 1>{});
        return out;
    }

  private:
    Result<ClientConn> finish(ClientBottom&& bottom, const Contexts& c,
                              std::shared_ptr<negotiation::ClientState> st,
                              const ConnectContext& ctx) const {
        auto w = wrap<ClientWrapped>(std::move(bottom), c);
        if (!w) return std::unexpected(std::move(w.error()));
        return ClientConn(std::move(*w), std::move(st), rebuilder(ctx));
    }

    Result<ClientConn> zero_rtt(BaseClient&& base, const wire::Offer& my_offer,
                                std::shared_ptr<negotiation::ClientState> st, const Contexts& c,
                                const ConnectContext& ctx) const {
        using Phase = negotiation::ClientState::Phase;
        st->zero_rtt = wire::frame(wire::Type::zero_rtt, 0, st->conv,
                                   wire::encode(wire::ZeroRtt{st->pick.nonce, my_offer}));
        if (st->zero_rtt.empty())
            return fail(Errc::invalid_argument, "negotiation", "the offer is too large");
        st->phase = Phase::zero_rtt_pending;
        st->timeout = st->opts.first_timeout;
        st->tries_left = st->opts.tries - 1;
        st->next_retx = Clock::now() + st->timeout;
        if (auto s = negotiation::send_datagrams(base, st->zero_rtt); !s)
            return std::unexpected(std::move(s.error()));
        auto conn = finish(ClientBottom(std::move(base), st, {}), c, st, ctx);
        if (conn) conn->mark_zero_rtt();
        return conn;
    }

    typename ClientConn::Rebuild rebuilder(const ConnectContext& ctx) const {
        if constexpr (kRebuildable) {
            return [self = *this, ctx](ClientWrapped&& old,
                                       const wire::Pick& p) -> Result<ClientWrapped> {
                auto c = self.contexts(p, ctx);
                if (!c) return std::unexpected(std::move(c.error()));
                return self.template wrap<ClientWrapped>(
                    detail::unwrap<ClientBottom>(std::move(old)), *c);
            };
        } else {
            return nullptr;
        }
    }

    // Wrap `inner` with chunnels N-2 .. 0 (bottom-up), each with its position's context.
    template <class Final, class Inner>
    Result<Final> wrap(Inner&& inner, const Contexts& ctxs) const {
        return wrap_from<Final, N - 1>(std::forward<Inner>(inner), ctxs);
    }
    template <class Final, size_t I, class Inner>
    Result<Final> wrap_from(Inner&& inner, const Contexts& ctxs) const {
        if constexpr (I == 0) {
            return Final(std::move(inner));
        } else {
            auto next = std::get<I - 1>(chs_).connect_wrap(std::move(inner), ctxs[I - 1]);
            if (!next) return std::unexpected(std::move(next.error()));
            return wrap_from<Final, I - 1>(std::move(*next), ctxs);
        }
    }

    Tuple chs_;
};

// Top first: make_stack(codec, shard, base).
template <class... Chs> Stack<std::decay_t<Chs>...> make_stack(Chs&&... chs) {
    return Stack<std::decay_t<Chs>...>(std::forward<Chs>(chs)...);
}

// The "a > b > c" description of a connection's resolved stack.
template <Connection C> std::string describe(const C& conn) {
    std::vector<std::string> names;
    conn.describe(names);
    std::string out;
    for (auto& n : names) out += (out.empty() ? "" : " > ") + n;
    return out;
}

} // namespace bertha
