// make_stack(top, ..., base): compose chunnels at compile time. The stack's data types must line
// up (each chunnel's Lower is the Upper of the one below it); if not, compilation stops with a
// sentence saying so. connect/bind/listen build the base connection and wrap it bottom-up, so
// the connection the application holds is one nested, fully inlined type.
#pragma once

#include "bertha/chunnel.hpp"

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

} // namespace detail

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

  public:
    explicit Stack(Chs... chs) : chs_(std::move(chs)...) {}

    using ClientConn = final_t<typename decltype(std::declval<const Base&>().connect(
        std::declval<const Addr&>(), std::declval<const ConnectContext&>()))::value_type>;
    using BoundConn = final_t<typename decltype(std::declval<const Base&>().bind(
        std::declval<const Addr&>(), std::declval<const ConnectContext&>()))::value_type>;

    // A connection to one peer.
    Result<ClientConn> connect(const Addr& peer, const ConnectContext& ctx) const {
        auto base = std::get<N - 1>(chs_).connect(peer, ctx);
        if (!base) return std::unexpected(std::move(base.error()));
        return wrap<ClientConn>(std::move(*base), ctx);
    }
    Result<ClientConn> connect(const Addr& peer) const { return connect(peer, local_ctx()); }

    // One connection, bound to `local`, that talks to any peer: each message carries its peer.
    Result<BoundConn> bind(const Addr& local, const ConnectContext& ctx) const {
        auto base = std::get<N - 1>(chs_).bind(local, ctx);
        if (!base) return std::unexpected(std::move(base.error()));
        return wrap<BoundConn>(std::move(*base), ctx);
    }
    Result<BoundConn> bind(const Addr& local) const { return bind(local, local_ctx()); }

    // A listener on `local`; accept() yields one wrapped connection per new peer.
    class Listener {
      public:
        using BaseListener = typename decltype(std::declval<const Base&>().listen(
            std::declval<const Addr&>(), std::declval<const ConnectContext&>()))::value_type;
        using PeerConn = final_t<typename decltype(std::declval<BaseListener&>().accept(
            std::declval<Deadline>()))::value_type::value_type>;

        // The next new peer's connection, or nullopt when the deadline passes without one.
        Result<std::optional<PeerConn>> accept(Deadline deadline) {
            auto got = base_.accept(deadline);
            if (!got) return std::unexpected(std::move(got.error()));
            if (!*got) return std::optional<PeerConn>{};
            auto wrapped = stack_.template wrap<PeerConn>(std::move(**got), ctx_);
            if (!wrapped) return std::unexpected(std::move(wrapped.error()));
            return std::optional<PeerConn>(std::move(*wrapped));
        }
        BaseListener& base() { return base_; }

      private:
        friend class Stack;
        Listener(const Stack& s, BaseListener&& b, const ConnectContext& ctx)
            : stack_(s), base_(std::move(b)), ctx_(ctx) {}
        Stack stack_; // a copy of the chunnels: the listener may outlive a temporary stack
        BaseListener base_;
        ConnectContext ctx_;
    };

    Result<Listener> listen(const Addr& local, const ConnectContext& ctx) const {
        auto base = std::get<N - 1>(chs_).listen(local, ctx);
        if (!base) return std::unexpected(std::move(base.error()));
        return Listener(*this, std::move(*base), ctx);
    }
    Result<Listener> listen(const Addr& local) const { return listen(local, local_ctx()); }

  private:
    static const ConnectContext& local_ctx() {
        static const HostFacts facts = HostFacts::local();
        static const ConnectContext ctx{&facts};
        return ctx;
    }

    // Wrap `inner` with chunnels N-2 .. 0 (bottom-up).
    template <class Final, class Inner>
    Result<Final> wrap(Inner&& inner, const ConnectContext& ctx) const {
        return wrap_from<Final, N - 1>(std::forward<Inner>(inner), ctx);
    }
    template <class Final, size_t I, class Inner>
    Result<Final> wrap_from(Inner&& inner, const ConnectContext& ctx) const {
        if constexpr (I == 0) {
            return Final(std::move(inner));
        } else {
            auto next = std::get<I - 1>(chs_).connect_wrap(std::move(inner), ctx);
            if (!next) return std::unexpected(std::move(next.error()));
            return wrap_from<Final, I - 1>(std::move(*next), ctx);
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
