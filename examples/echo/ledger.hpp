// The client's record of what it sent: one entry per sequence number in a fixed ring, so that
// each echoed message can be checked (did we send it? is it back for the first time? does its
// timestamp match?) without a hash map or an allocation per message.
//
// Entries live at seq % capacity. `tail` is the oldest sequence number that may still be in
// flight; the client sends only while next - tail < capacity, so an entry is reused only after
// its message came back or was declared lost. Because messages are sent in sequence order and
// time order, the ones past their timeout are always a prefix of those in flight: expiry walks
// the tail forward and never scans.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace bertha::echo {

enum class Ack {
    fresh,     // in flight and back for the first time
    late,      // back after it was declared lost
    stale,     // too old to check: its entry has been reused (a very late reply)
    duplicate, // already back once
    unknown,   // never sent
    mismatch,  // sent, but the timestamp differs from the one sent with it
};

class Ledger {
  public:
    // Room for many windows' worth of sequence numbers: while the oldest message waits out its
    // timeout, the others keep flowing past it.
    explicit Ledger(size_t window)
        : entries_(std::bit_ceil(std::max<size_t>(size_t(1) << 16, window * 64))),
          mask_(entries_.size() - 1) {}

    uint64_t next() const noexcept { return next_; }
    // How many more messages may be sent before the ring would overwrite a live entry.
    uint64_t room() const noexcept { return entries_.size() - (next_ - tail_); }

    void sent(int64_t now_ns) noexcept {
        entries_[next_ & mask_] = {next_, now_ns, State::in_flight};
        ++next_;
    }

    Ack ack(uint64_t seq, int64_t sent_ns) noexcept {
        if (seq >= next_) return Ack::unknown;
        Entry& e = entries_[seq & mask_];
        if (e.seq != seq) return Ack::stale;
        if (e.sent_ns != sent_ns) return Ack::mismatch;
        State was = e.state;
        e.state = State::back;
        if (was == State::back) return Ack::duplicate;
        advance(INT64_MIN);
        return was == State::lost ? Ack::late : Ack::fresh;
    }

    // Declare lost every message in flight that was sent at or before `cutoff_ns`; returns how
    // many. expire(INT64_MAX) gives up on everything still out.
    uint64_t expire(int64_t cutoff_ns) noexcept { return advance(cutoff_ns); }

    // When the oldest message still in flight was sent, if any is.
    std::optional<int64_t> oldest_in_flight() const noexcept {
        if (tail_ == next_) return std::nullopt;
        return entries_[tail_ & mask_].sent_ns;
    }

  private:
    enum class State : uint8_t { in_flight, back, lost };
    struct Entry {
        uint64_t seq = UINT64_MAX;
        int64_t sent_ns = 0;
        State state = State::back;
    };

    // Move the tail past every entry that is no longer in flight, declaring lost those in
    // flight and sent at or before cutoff_ns. Keeps the invariant: tail is in flight or == next.
    uint64_t advance(int64_t cutoff_ns) noexcept {
        uint64_t lost = 0;
        while (tail_ < next_) {
            Entry& e = entries_[tail_ & mask_];
            if (e.state == State::in_flight) {
                if (e.sent_ns > cutoff_ns) break;
                e.state = State::lost;
                ++lost;
            }
            ++tail_;
        }
        return lost;
    }

    std::vector<Entry> entries_;
    uint64_t mask_;
    uint64_t tail_ = 0, next_ = 0;
};

} // namespace bertha::echo
