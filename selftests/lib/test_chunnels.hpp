// Small chunnels that exist only for tests: they make composition order and select resolution
// observable on the wire.
#pragma once

#include "bertha/bertha.hpp"

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

inline std::string text(const Msg& m) {
    return std::string(reinterpret_cast<const char*>(m.data()), m.size());
}
inline bool put(Msg& m, std::string_view s) {
    return m.assign(std::as_bytes(std::span(s)));
}

} // namespace bertha::test
