// Small chunnels that exist only for tests: they make composition order and select resolution
// observable on the wire.
#pragma once

#include "bertha/bertha.hpp"

#include <atomic>
#include <vector>

#include <string>

namespace bertha::test {

// Pushes the one-byte header `Tag` on send and checks and pulls it on receive. A message whose
// first byte is not `Tag` is counted as foreign and dropped from the batch.
template <char Tag, Need Needs = Need::none> struct Header {
    using Upper = Msg;
    using Lower = Msg;
    static constexpr char name[] = {'h', 'e', 'a', 'd', 'e', 'r', '-', Tag, 0};
    static constexpr ChunnelInfo info{
        100, "header", name, "test", Match::exact, Scope::multilateral, Needs};

    template <Connection Inner> struct Conn {
        using Data = Msg;
        Inner inner;
        size_t foreign = 0;

        Result<size_t> send(std::span<Msg> batch) {
            for (Msg& m : batch) {
                std::byte* h = m.push(1);
                if (!h) return fail(Errc::invalid_argument, name, "no head-room for the header");
                *h = std::byte(Tag);
            }
            return inner.send(batch);
        }
        // 0 keeps its meaning (deadline passed): a batch of only foreign messages reads on.
        Result<size_t> recv(std::span<Msg> batch, Deadline d) {
            for (;;) {
                auto n = inner.recv(batch, d);
                if (!n || *n == 0) return n;
                if (size_t kept = strip(batch.first(*n))) return kept;
            }
        }
        size_t strip(std::span<Msg> batch) {
            size_t kept = 0;
            for (size_t i = 0; i < batch.size(); ++i) {
                Msg& m = batch[i];
                if (m.size() >= 1 && m.bytes()[0] == std::byte(Tag) && m.pull(1)) {
                    if (kept != i) batch[kept] = std::move(m);
                    ++kept;
                } else {
                    ++foreign;
                    m.release();
                }
            }
            return kept;
        }
        Result<size_t> alloc(std::span<Msg> out) requires CanAlloc<Inner> {
            return inner.alloc(out);
        }
        void describe(std::vector<std::string>& out) const {
            out.push_back(name_of(info));
            inner.describe(out);
        }
        Inner into_inner() && { return std::move(inner); }
    };

    template <Connection Inner>
    Result<Conn<Inner>> connect_wrap(Inner&& inner, const ConnectContext&) const {
        return Conn<Inner>{std::move(inner)};
    }
};

// A compositional chunnel: the end that runs the chosen implementation counts the messages it
// sees (in `counted[side]`), the other end passes them through untouched. The server's copy
// contributes parameters {'p', Tag} to the negotiation answer; the client keeps what it got.
template <char Tag, Where W> struct Tally {
    using Upper = Msg;
    using Lower = Msg;
    static constexpr char name[] = {'t', 'a', 'l', 'l', 'y', '-', Tag, 0};
    static constexpr ChunnelInfo info{
        200, "tally", name, "test", Match::compositional, Scope::multilateral, Need::none, W};
    static inline std::atomic<int> counted[2]{};
    static inline std::vector<uint8_t> params_seen[2];

    static void reset() {
        counted[0] = counted[1] = 0;
        params_seen[0].clear();
        params_seen[1].clear();
    }

    template <Connection Inner> struct Conn {
        using Data = Msg;
        Inner inner;
        bool active;
        Side side;

        Result<size_t> send(std::span<Msg> batch) {
            if (active) counted[int(side)] += int(batch.size());
            return inner.send(batch);
        }
        Result<size_t> recv(std::span<Msg> batch, Deadline d) {
            auto n = inner.recv(batch, d);
            if (n && active) counted[int(side)] += int(*n);
            return n;
        }
        Result<size_t> alloc(std::span<Msg> out) requires CanAlloc<Inner> {
            return inner.alloc(out);
        }
        void describe(std::vector<std::string>& out) const {
            out.push_back(name_of(info) + (active ? "" : " (peer runs it)"));
            inner.describe(out);
        }
        Inner into_inner() && { return std::move(inner); }
    };

    std::vector<uint8_t> params() const { return {'p', uint8_t(Tag)}; }

    template <Connection Inner>
    Result<Conn<Inner>> connect_wrap(Inner&& inner, const ConnectContext& ctx) const {
        bool active = W == Where::both || (W == Where::client && ctx.side == Side::client) ||
                      (W == Where::server && ctx.side == Side::server);
        params_seen[int(ctx.side)].assign(ctx.params.begin(), ctx.params.end());
        return Conn<Inner>{std::move(inner), active, ctx.side};
    }
};

// Header<Tag> under a 48-character implementation name: stacks of these make offers larger
// than one negotiation datagram.
template <char Tag> struct LongName : Header<Tag> {
    static constexpr char name[] = {'a', '-', 'r', 'a', 't', 'h', 'e', 'r', '-', 'l', 'o', 'n', 'g',
                                    '-', 'i', 'm', 'p', 'l', 'e', 'm', 'e', 'n', 't', 'a', 't', 'i',
                                    'o', 'n', '-', 'n', 'a', 'm', 'e', '-', 'f', 'o', 'r', '-', 't',
                                    'h', 'e', '-', 't', 'e', 's', 't', '-', Tag, 0};
    static_assert(sizeof(name) == 49);
    static constexpr ChunnelInfo info{
        100, "header", name, "test", Match::exact, Scope::multilateral, Need::none};
};

// 127.0.0.1:port (0: any free port).
inline Addr loopback(uint16_t port = 0) {
    return *Addr::parse("127.0.0.1:" + std::to_string(port));
}

// Host facts that grant exactly `granted` and deny the rest with a reason.
inline HostFacts facts_with(Need granted) {
    HostFacts f;
    f.grant(granted);
    f.deny(Need(~uint32_t(granted) & 0x1f), "denied by the test");
    return f;
}

inline std::string text(const Msg& m) {
    return std::string(reinterpret_cast<const char*>(m.data()), m.size());
}
inline bool put(Msg& m, std::string_view s) {
    return m.assign(std::as_bytes(std::span(s)));
}

} // namespace bertha::test
