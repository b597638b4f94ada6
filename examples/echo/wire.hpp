// What an echo message carries: [seq: u64 | sent_ns: u64 | padding] in host byte order (only
// the client that wrote it reads it back; the server echoes bytes it never interprets). The
// padding repeats the low byte of seq, so that a reply cut short or mixed up with another
// message fails the last-byte check without the client reading every byte.
#pragma once

#include "bertha/buffer.hpp"

#include <cstdint>
#include <cstring>

namespace bertha::echo {

inline constexpr size_t kHeaderSize = 16;

struct Stamp {
    uint64_t seq;
    int64_t sent_ns;
};

// Fill a freshly allocated message to `size` bytes. False if the slot cannot hold `size`.
inline bool write_message(Msg& m, size_t size, Stamp s) noexcept {
    if (size < kHeaderSize || !m.resize(size)) return false;
    std::byte* p = m.data();
    std::memcpy(p, &s.seq, 8);
    std::memcpy(p + 8, &s.sent_ns, 8);
    std::memset(p + kHeaderSize, int(s.seq & 0xff), size - kHeaderSize);
    return true;
}

// The stamp of an echoed message, if it has the expected size and intact padding.
inline bool read_message(const Msg& m, size_t size, Stamp& out) noexcept {
    if (m.size() != size || m.is_truncated() || size < kHeaderSize) return false;
    const std::byte* p = m.data();
    std::memcpy(&out.seq, p, 8);
    std::memcpy(&out.sent_ns, p + 8, 8);
    return size == kHeaderSize || p[size - 1] == std::byte(out.seq & 0xff);
}

} // namespace bertha::echo
