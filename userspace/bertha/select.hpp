// select(a, b, ...): one chunnel slot with several implementations in preference order. At
// connect time the first one the host can run is chosen, and the connection becomes a
// std::variant over the alternatives' connections: one visit per batch, no virtual call per
// message. Select works for chunnels (connect_wrap) and for bases (connect/bind/listen).
#pragma once

#include "bertha/chunnel.hpp"
#include "bertha/log.hpp"

#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>

namespace bertha {

// The connection of a resolved select: exactly one alternative's connection.
template <class... Cs> class SelectConn {
    using First = std::tuple_element_t<0, std::tuple<Cs...>>;
    static_assert((std::is_same_v<typename Cs::Data, typename First::Data> && ...),
                  "select: every alternative must carry the same data type");

  public:
    using Data = typename First::Data;

    template <size_t I, class C>
    SelectConn(std::in_place_index_t<I> at, C&& c) : v_(at, std::forward<C>(c)) {}

    Result<size_t> send(std::span<Data> batch) {
        return std::visit([&](auto& c) { return c.send(batch); }, v_);
    }
    Result<size_t> recv(std::span<Data> batch, Deadline deadline) {
        return std::visit([&](auto& c) { return c.recv(batch, deadline); }, v_);
    }
    Result<size_t> alloc(std::span<Data> out) requires(CanAlloc<Cs>&&...) {
        return std::visit([&](auto& c) { return c.alloc(out); }, v_);
    }
    void describe(std::vector<std::string>& out) const {
        std::visit([&](const auto& c) { c.describe(out); }, v_);
    }
    int wait_fd() const requires(HasWaitFd<Cs>&&...) {
        return std::visit([](const auto& c) { return int(c.wait_fd()); }, v_);
    }
    size_t chosen() const noexcept { return v_.index(); }
    template <class C> C* get_if() noexcept { return std::get_if<C>(&v_); }
    // Call f on the running alternative (alternatives may share a type, where get_if cannot).
    template <class F> decltype(auto) visit(F&& f) { return std::visit(std::forward<F>(f), v_); }
    // The local address and the peer, when every alternative says (the stack's flow facts).
    Addr local() const requires(HasLocal<Cs>&&...) {
        return std::visit([](const auto& c) -> Addr { return c.local(); }, v_);
    }
    Addr peer() const requires(HasPeer<Cs>&&...) {
        return std::visit([](const auto& c) -> Addr { return c.peer(); }, v_);
    }

    // The chain whose AF_XDP sockets receive this connection (FlowFacts::redirect_chain), when
    // the running alternative has one.
    std::optional<uint32_t> redirect_chain() const {
        return std::visit(
            [](const auto& c) -> std::optional<uint32_t> {
                if constexpr (requires { c.redirect_chain(); })
                    return c.redirect_chain();
                else
                    return std::nullopt;
            },
            v_);
    }

    // The connection below, whichever alternative is running (they all wrap the same one):
    // lets a stack be rebuilt under another choice.
    auto into_inner() && requires(Unwrappable<Cs>&&...) {
        using Inner = decltype(std::declval<First&&>().into_inner());
        return std::visit([](auto&& c) -> Inner { return std::move(c).into_inner(); },
                          std::move(v_));
    }

  private:
    std::variant<Cs...> v_;
};

// The listener of a resolved select of bases; accept() yields the matching SelectConn.
template <class... Ls> class SelectListener {
    template <class L>
    using peer_t = typename decltype(std::declval<L&>().accept(Deadline{}))::value_type::value_type;

  public:
    using PeerConn = SelectConn<peer_t<Ls>...>;

    template <size_t I, class L>
    SelectListener(std::in_place_index_t<I> at, L&& l) : v_(at, std::forward<L>(l)) {}

    Result<std::optional<PeerConn>> accept(Deadline deadline) {
        Result<std::optional<PeerConn>> out = std::optional<PeerConn>{};
        [&]<size_t... I>(std::index_sequence<I...>) {
            (
                [&] {
                    if (v_.index() != I) return;
                    auto r = std::get<I>(v_).accept(deadline);
                    if (!r)
                        out = std::unexpected(std::move(r.error()));
                    else if (*r)
                        out = std::optional<PeerConn>(
                            PeerConn(std::in_place_index<I>, std::move(**r)));
                }(),
                ...);
        }
        (std::index_sequence_for<Ls...>{});
        return out;
    }
    size_t chosen() const noexcept { return v_.index(); }
    Addr local() const requires(HasLocal<Ls>&&...) {
        return std::visit([](const auto& l) -> Addr { return l.local(); }, v_);
    }

  private:
    std::variant<Ls...> v_;
};

template <class... Alts> class Select {
    static_assert(sizeof...(Alts) >= 1, "select needs at least one implementation");
    using First = std::tuple_element_t<0, std::tuple<Alts...>>;
    static_assert((std::is_same_v<typename Alts::Upper, typename First::Upper> && ...),
                  "select: every alternative must offer the same data type upward (Upper)");

  public:
    using Upper = typename First::Upper;
    using Lower = typename First::Lower;
    static constexpr ChunnelInfo info{First::info.type_id, First::info.chunnel, "select",  "",
                                      First::info.match,   First::info.scope,   Need::none};

    explicit Select(Alts... alts) : alts_(std::move(alts)...) {}

    // Index of the first alternative whose needs the host meets, or an error that names the
    // chunnel and says why each alternative cannot run.
    Result<size_t> resolve(const ConnectContext& ctx) const {
        if (!ctx.chosen.empty()) return resolve_chosen(ctx.chosen);
        std::optional<size_t> pick;
        std::string why;
        [&]<size_t... I>(std::index_sequence<I...>) {
            (
                [&] {
                    if (pick) return;
                    const ChunnelInfo& in = std::tuple_element_t<I, std::tuple<Alts...>>::info;
                    if (!ctx.host || ctx.host->meets(in.needs)) {
                        pick = I;
                        return;
                    }
                    why +=
                        (why.empty() ? "" : "; ") + name_of(in) + " " + ctx.host->why_not(in.needs);
                }(),
                ...);
        }
        (std::index_sequence_for<Alts...>{});
        if (pick) return *pick;
        return fail(Errc::unavailable, std::string(First::info.chunnel),
                    "no implementation of '" + std::string(First::info.chunnel) +
                        "' can run on this host: " + why);
    }

    // The alternatives as negotiation offers them: in order, ranked 0, 1, 2, ...
    static std::vector<ChunnelInfo> alternatives() { return {Alts::info...}; }

    // What the chosen implementation contributes to the negotiation answer (server side).
    std::vector<uint8_t> params_for(std::string_view impl) const {
        std::vector<uint8_t> out;
        [&]<size_t... I>(std::index_sequence<I...>) {
            (
                [&] {
                    using A = std::tuple_element_t<I, std::tuple<Alts...>>;
                    if (A::info.impl != impl) return;
                    if constexpr (requires(const A& a) { a.params(); })
                        out = std::get<I>(alts_).params();
                }(),
                ...);
        }
        (std::index_sequence_for<Alts...>{});
        return out;
    }

    template <class Inner>
    requires(ChunnelOver<Alts, Inner>&&...) auto connect_wrap(Inner&& inner,
                                                              const ConnectContext& ctx) const {
        using Conn = SelectConn<detail_conn_t<Alts, Inner>...>;
        return dispatch<Conn>(
            ctx, [&](const auto& alt) { return alt.connect_wrap(std::move(inner), ctx); });
    }

    template <class A = First>
    requires(BaseChunnel<A>) auto connect(const Addr& peer, const ConnectContext& ctx) const {
        using Conn = SelectConn<typename decltype(std::declval<const Alts&>().connect(
            peer, ctx))::value_type...>;
        return dispatch_base<Conn>(ctx, [&](const auto& alt) { return alt.connect(peer, ctx); });
    }
    template <class A = First>
    requires(BaseChunnel<A>) auto bind(const Addr& local, const ConnectContext& ctx) const {
        using Conn = SelectConn<typename decltype(std::declval<const Alts&>().bind(
            local, ctx))::value_type...>;
        return dispatch_base<Conn>(ctx, [&](const auto& alt) { return alt.bind(local, ctx); });
    }
    template <class A = First>
    requires(CanListen<A> && (CanListen<Alts> && ...)) auto listen(const Addr& local,
                                                                   const ConnectContext& ctx) const {
        using L = SelectListener<typename decltype(std::declval<const Alts&>().listen(
            local, ctx))::value_type...>;
        return dispatch_base<L>(ctx, [&](const auto& alt) { return alt.listen(local, ctx); });
    }

  private:
    Result<size_t> resolve_chosen(std::string_view chosen) const {
        std::optional<size_t> pick;
        [&]<size_t... I>(std::index_sequence<I...>) {
            ((!pick && std::tuple_element_t<I, std::tuple<Alts...>>::info.impl == chosen
                  ? (void)(pick = I)
                  : (void)0),
             ...);
        }
        (std::index_sequence_for<Alts...>{});
        if (pick) return *pick;
        return fail(Errc::incompatible, std::string(First::info.chunnel),
                    "negotiation chose '" + std::string(chosen) + "' for '" +
                        std::string(First::info.chunnel) + "', which this stack does not have");
    }

    template <class Ch, class Inner>
    using detail_conn_t = typename decltype(std::declval<const Ch&>().connect_wrap(
        std::declval<Inner&&>(), std::declval<const ConnectContext&>()))::value_type;

    // Run `make` on the chosen alternative and place its connection in the variant.
    template <class Conn, class Make>
    Result<Conn> dispatch(const ConnectContext& ctx, Make&& make) const {
        auto idx = resolve(ctx);
        if (!idx) return std::unexpected(std::move(idx.error()));
        std::optional<Result<Conn>> out;
        [&]<size_t... I>(std::index_sequence<I...>) {
            (
                [&] {
                    if (I != *idx) return;
                    auto r = make(std::get<I>(alts_));
                    if (!r)
                        out.emplace(std::unexpected(std::move(r.error())));
                    else
                        out.emplace(Conn(std::in_place_index<I>, std::move(*r)));
                }(),
                ...);
        }
        (std::index_sequence_for<Alts...>{});
        return std::move(*out);
    }

    // Bases are this host's own choice (the wire is UDP whichever runs): when the chosen one
    // cannot start here after all (Errc::unavailable: e.g. AF_XDP refused on this interface,
    // or no in-process privilege), the next runnable one is tried, and the debug log says why.
    template <class Conn, class Make>
    Result<Conn> dispatch_base(const ConnectContext& ctx, Make&& make) const {
        auto first = resolve(ctx);
        if (!first) return std::unexpected(std::move(first.error()));
        std::optional<Result<Conn>> out;
        std::string why; // why the alternatives before the one that runs do not
        if (ctx.host && ctx.chosen.empty())
            [&]<size_t... I>(std::index_sequence<I...>) {
                ((I < *first ? (void)(why += (why.empty() ? "" : "; ") +
                                             name_of(std::tuple_element_t<I, std::tuple<Alts...>>::info) +
                                             " cannot run here: " +
                                             ctx.host->why_not(std::tuple_element_t<I, std::tuple<Alts...>>::info.needs))
                             : (void)0),
                 ...);
            }(std::index_sequence_for<Alts...>{});
        [&]<size_t... I>(std::index_sequence<I...>) {
            (
                [&] {
                    if (I < *first || (out && *out)) return;
                    const ChunnelInfo& in = std::tuple_element_t<I, std::tuple<Alts...>>::info;
                    if (I != *first && ctx.host && !ctx.host->meets(in.needs)) return;
                    if (!ctx.chosen.empty() && I != *first) return;
                    auto r = make(std::get<I>(alts_));
                    if (r) {
                        if (!why.empty())
                            log(LogLevel::debug, std::string(First::info.chunnel),
                                why + "; using " + name_of(in));
                        out.emplace(Conn(std::in_place_index<I>, std::move(*r)));
                        return;
                    }
                    if (r.error().code == Errc::unavailable && ctx.chosen.empty())
                        why += (why.empty() ? "" : "; ") + name_of(in) +
                               " cannot start here: " + r.error().what();
                    if (!out || r.error().code != Errc::unavailable || !ctx.chosen.empty())
                        out.emplace(std::unexpected(std::move(r.error())));
                }(),
                ...);
        }
        (std::index_sequence_for<Alts...>{});
        if (!*out && out->error().code == Errc::unavailable && !why.empty())
            return fail(Errc::unavailable, std::string(First::info.chunnel), why);
        return std::move(*out);
    }

    std::tuple<Alts...> alts_;
};

template <class... Alts> Select<std::decay_t<Alts>...> select(Alts&&... alts) {
    return Select<std::decay_t<Alts>...>(std::forward<Alts>(alts)...);
}

// select_any(a, b, ...): this end has no preference among the alternatives; in negotiation the
// server's order decides (locally, without negotiation, the first runnable one is used).
template <class... Alts> class SelectAny : public Select<Alts...> {
  public:
    using Select<Alts...>::Select;
    static constexpr bool unordered = true;
};
template <class... Alts> SelectAny<std::decay_t<Alts>...> select_any(Alts&&... alts) {
    return SelectAny<std::decay_t<Alts>...>(std::forward<Alts>(alts)...);
}

} // namespace bertha
