// Turning a runtime "--noops K --base B" into a compile-time stack: K noop chunnels over the base. Each K in
// 0..kMaxNoops is its own instantiation; with_noop_stack() picks the one asked for and hands the
// stack to a generic callable, so the server and client loops are written once.
#pragma once

#include "bertha/bertha.hpp"
#include "echo.hpp"
#include "noop/noop.hpp"
#include "xsk/base.hpp"

#include <string>

#include <utility>

namespace bertha::echo {

template <class BaseCh, size_t... I> auto noop_stack(const BaseCh& base, std::index_sequence<I...>) {
    // The comma discards I: one Noop per index, then the base.
    return make_stack(((void)I, noop::Noop{})..., base);
}

template <class BaseCh, class F, size_t... K>
int with_noop_stack(size_t k, const BaseCh& base, F&& f, int otherwise,
                    std::index_sequence<K...>) {
    int rc = otherwise;
    ((k == K ? (rc = f(noop_stack(base, std::make_index_sequence<K>{})), true) : false) || ...);
    return rc;
}

// Calls f(stack) with the stack of `k` noops over `base`; returns f's result, or `otherwise` if
// k is out of range.
template <class BaseCh, class F>
int with_noop_stack(size_t k, const BaseCh& base, F&& f, int otherwise) {
    return with_noop_stack(k, base, std::forward<F>(f), otherwise,
                           std::make_index_sequence<kMaxNoops + 1>{});
}

// The same, over the base --base names: udp (io_uring), xsk (AF_XDP, or an error saying why
// not) or auto (xsk where it can run, else udp: select(Xsk, Udp)).
template <class F> int with_stack(size_t k, Base base, const UdpOptions& udp, F&& f, int otherwise) {
    switch (base) {
    case Base::udp: return with_noop_stack(k, Udp{udp}, std::forward<F>(f), otherwise);
    case Base::xsk: return with_noop_stack(k, Xsk{}, std::forward<F>(f), otherwise);
    case Base::automatic:
        return with_noop_stack(k, select(Xsk{}, Udp{udp}), std::forward<F>(f), otherwise);
    }
    return otherwise;
}

// The base connection under any number of noop layers: where the base's statistics live.
template <class C> auto& base_of(C& conn) {
    if constexpr (requires { conn.inner(); })
        return base_of(conn.inner());
    else
        return conn;
}

// One line about what the base did, whichever it is.
inline std::string base_summary(const UdpConn& c) {
    const UdpStats& st = c.stats();
    return "udp received " + std::to_string(st.received) + ", sent " + std::to_string(st.sent) +
           ", truncated " + std::to_string(st.truncated) + ", send errors " +
           std::to_string(st.send_errors) + ", submits " + std::to_string(st.submits);
}
inline std::string base_summary(const XskConn& c) {
    auto st = c.stats();
    std::string s = "xsk (" + std::string(to_string(c.mode())) + ", " + std::to_string(st.queues) +
                    " queue(s)) received " + std::to_string(st.received) + ", sent " +
                    std::to_string(st.sent);
    auto socks = c.sockets();
    if (!socks.empty()) {
        const XskStats& x = socks[0].stats();
        s += "; queue 0: tx ring full " + std::to_string(x.tx_ring_full) + ", fill empty " +
             std::to_string(x.fill_empty) + ", copied " + std::to_string(x.copied) +
             ", wakeups " + std::to_string(x.wakeups);
    }
    return s;
}
template <class... Cs> std::string base_summary(SelectConn<Cs...>& c) {
    std::string out;
    ((c.template get_if<Cs>() ? (void)(out = base_summary(*c.template get_if<Cs>())) : (void)0),
     ...);
    return out;
}

} // namespace bertha::echo
