// The `noop` chunnel: passes messages through unchanged, but reads every byte of each one (a
// 64-bit fold), so that a stack of k noops costs what k real, data-touching chunnels would.
// It is the yardstick of the framework's own overhead (selftests/bench/stack_overhead).
#pragma once

#include "bertha/buffer.hpp"
#include "bertha/chunnel.hpp"

#include <cstring>
#include <span>
#include <string>
#include <vector>

namespace bertha::noop {

// Fold every byte of `b` into a 64-bit value. Four independent 16-byte XOR lanes carry no
// dependency from one step to the next, so this runs near memory speed (about 16 ns for 1400
// bytes here, against 146 ns for a multiply-chained fold) while every byte still changes the
// result: the cost measured is reading the data, not a serial hash.
inline uint64_t fold(std::span<const std::byte> b) noexcept {
    using lane = uint64_t __attribute__((vector_size(16)));
    const std::byte* p = b.data();
    size_t i = 0;
    lane a0{}, a1{}, a2{}, a3{};
    for (; i + 64 <= b.size(); i += 64) {
        lane x0, x1, x2, x3;
        std::memcpy(&x0, p + i, 16);
        std::memcpy(&x1, p + i + 16, 16);
        std::memcpy(&x2, p + i + 32, 16);
        std::memcpy(&x3, p + i + 48, 16);
        a0 ^= x0;
        a1 ^= x1;
        a2 ^= x2;
        a3 ^= x3;
    }
    lane a = a0 ^ a1 ^ a2 ^ a3;
    uint64_t acc = a[0] ^ (a[1] * 31);
    for (; i + 8 <= b.size(); i += 8) {
        uint64_t w;
        std::memcpy(&w, p + i, 8);
        acc ^= w;
    }
    uint64_t tail = 0;
    for (; i < b.size(); ++i) tail = (tail << 8) | uint64_t(p[i]);
    return (acc ^ tail ^ b.size()) * 0x100000001b3ull;
}

class Noop {
  public:
    using Upper = Msg;
    using Lower = Msg;
    static constexpr ChunnelInfo info{
        2, "noop", "passthrough", "noop", Match::compositional, Scope::unilateral, Need::none};

    template <Connection Inner> class Conn {
      public:
        using Data = Msg;
        explicit Conn(Inner&& inner) : inner_(std::move(inner)) {}

        Result<size_t> send(std::span<Msg> batch) {
            for (const Msg& m : batch)
                if (m) digest_ ^= fold(m.bytes());
            return inner_.send(batch);
        }
        Result<size_t> recv(std::span<Msg> batch, Deadline deadline) {
            auto n = inner_.recv(batch, deadline);
            if (n)
                for (size_t i = 0; i < *n; ++i) digest_ ^= fold(batch[i].bytes());
            return n;
        }
        Result<size_t> alloc(std::span<Msg> out) requires CanAlloc<Inner> {
            return inner_.alloc(out);
        }
        void describe(std::vector<std::string>& out) const {
            out.push_back(name_of(info));
            inner_.describe(out);
        }
        // The fold of everything that passed: proof the bytes were read.
        uint64_t digest() const noexcept { return digest_; }
        Inner& inner() noexcept { return inner_; }
        Inner into_inner() && { return std::move(inner_); }

      private:
        Inner inner_;
        uint64_t digest_ = 0;
    };

    template <Connection Inner>
    requires std::same_as<typename Inner::Data, Msg> Result<Conn<Inner>>
    connect_wrap(Inner&& inner, const ConnectContext&)
    const { return Conn<Inner>(std::move(inner)); }
};

} // namespace bertha::noop
