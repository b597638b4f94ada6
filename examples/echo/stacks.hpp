// Turning a runtime "--noops K" into a compile-time stack: K noop chunnels over udp. Each K in
// 0..kMaxNoops is its own instantiation; with_noop_stack() picks the one asked for and hands the
// stack to a generic callable, so the server and client loops are written once.
#pragma once

#include "bertha/bertha.hpp"
#include "echo.hpp"
#include "noop/noop.hpp"

#include <utility>

namespace bertha::echo {

template <size_t... I> auto noop_stack(const UdpOptions& udp, std::index_sequence<I...>) {
    // The comma discards I: one Noop per index, then the base.
    return make_stack(((void)I, noop::Noop{})..., Udp{udp});
}

template <class F, size_t... K>
int with_noop_stack(size_t k, const UdpOptions& udp, F&& f, int otherwise,
                    std::index_sequence<K...>) {
    int rc = otherwise;
    ((k == K ? (rc = f(noop_stack(udp, std::make_index_sequence<K>{})), true) : false) || ...);
    return rc;
}

// Calls f(stack) with the stack of `k` noops; returns f's result, or `otherwise` if k is out of
// range.
template <class F> int with_noop_stack(size_t k, const UdpOptions& udp, F&& f, int otherwise) {
    return with_noop_stack(k, udp, std::forward<F>(f), otherwise,
                           std::make_index_sequence<kMaxNoops + 1>{});
}

// The base connection under any number of noop layers: where the udp statistics live.
template <class C> auto& base_of(C& conn) {
    if constexpr (requires { conn.inner(); })
        return base_of(conn.inner());
    else
        return conn;
}

} // namespace bertha::echo
