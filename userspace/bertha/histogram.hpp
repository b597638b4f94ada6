// A latency histogram with fixed memory and bounded relative error, laid out like HdrHistogram:
// values below 256 get one bucket each; above that, every power of two is split into 128
// equal buckets, so a bucket is never wider than 1/128 (0.8%) of the values it holds.
// record() is a few shifts and an increment: it never allocates, so it can run per message.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>

namespace bertha {

class Histogram {
  public:
    static constexpr int kSubBits = 8;
    static constexpr uint64_t kSub = uint64_t(1) << kSubBits; // exact below this
    static constexpr uint64_t kHalf = kSub / 2;               // buckets per power of two above
    static constexpr int kMaxBits = 40; // 2^40 ns is ~18 minutes; larger values are clamped
    static constexpr uint64_t kMaxValue = (uint64_t(1) << kMaxBits) - 1;
    static constexpr size_t kBuckets = kSub + (kMaxBits - kSubBits) * kHalf;

    void record(uint64_t v) noexcept {
        v = std::min(v, kMaxValue);
        ++counts_[index_of(v)];
        ++count_;
        min_ = std::min(min_, v);
        max_ = std::max(max_, v);
    }

    void clear() noexcept {
        counts_.fill(0);
        count_ = 0;
        min_ = UINT64_MAX;
        max_ = 0;
    }
    uint64_t count() const noexcept { return count_; }
    uint64_t min() const noexcept { return count_ ? min_ : 0; }
    uint64_t max() const noexcept { return max_; }

    // The smallest recorded value v such that at least p percent of the values are <= v, up to
    // the bucket's precision: the bucket's highest value (never an understatement), clamped to
    // the largest value recorded. 0 when empty.
    uint64_t percentile(double p) const noexcept {
        if (count_ == 0) return 0;
        // rank = ceil(p / 100 * count), in integers: with doubles, p = 99.9 and count = 1000
        // give ceil(999.0000000000001) = 1000, one sample too far (the maximum). p is taken to
        // a millionth of a percent.
        const auto ppm = uint64_t(std::llround(std::clamp(p, 0.0, 100.0) * 1e6));
        const unsigned __int128 scaled = (unsigned __int128)ppm * count_;
        auto rank = uint64_t((scaled + 100'000'000 - 1) / 100'000'000);
        rank = std::max<uint64_t>(rank, 1);
        uint64_t seen = 0;
        for (size_t i = 0; i < kBuckets; ++i) {
            seen += counts_[i];
            if (seen >= rank) return std::clamp(highest_in(i), min(), max_);
        }
        return max_;
    }

    static constexpr size_t index_of(uint64_t v) noexcept {
        if (v < kSub) return size_t(v);
        // shift >= 1 brings v into [kHalf, kSub): the top kSubBits-1 bits pick the bucket.
        int shift = std::bit_width(v) - kSubBits;
        return size_t(kSub + (shift - 1) * kHalf + ((v >> shift) - kHalf));
    }
    static constexpr uint64_t highest_in(size_t i) noexcept {
        if (i < kSub) return i;
        uint64_t shift = (i - kSub) / kHalf + 1;
        uint64_t sub = (i - kSub) % kHalf + kHalf;
        return ((sub + 1) << shift) - 1;
    }

  private:
    std::array<uint64_t, kBuckets> counts_{};
    uint64_t count_ = 0;
    uint64_t min_ = UINT64_MAX;
    uint64_t max_ = 0;
};

} // namespace bertha
