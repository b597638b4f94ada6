// The pure parts of `kv load` (load.cpp), header-only so that selftests/unit/kv_load_test.cpp
// includes them as "examples/kv/load_model.hpp": the random source, key choice (uniform, or
// Zipf through a precomputed CDF), Poisson inter-arrival times, the key names, and percentiles
// read from bertha::Histogram. Nothing here allocates after construction.
#pragma once

#include "bertha/histogram.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <span>
#include <vector>

namespace bertha::kv::load {

// Every draw comes from one mt19937_64 with a fixed seed; doubles are built from its bits (not
// std::*_distribution, whose output differs between standard libraries), so a seed gives the
// same keys and the same send times everywhere.
class Rng {
  public:
    explicit Rng(uint64_t seed) : g_(seed) {}
    uint64_t next() noexcept { return g_(); }
    // Uniform in [0, 1): the top 53 bits.
    double unit() noexcept { return double(g_() >> 11) * 0x1p-53; }
    // Uniform in [0, n), n >= 1 (Lemire's multiply-shift; the bias is below n / 2^64).
    uint64_t below(uint64_t n) noexcept {
        return uint64_t((static_cast<unsigned __int128>(g_()) * n) >> 64);
    }
    // Exponential with mean `mean`: the gap between two arrivals of a Poisson process.
    double exponential(double mean) noexcept { return -std::log1p(-unit()) * mean; }

  private:
    std::mt19937_64 g_;
};

// Zipf over ranks 1..n: P(rank k) = k^-s / H(n, s). Rank k is key k-1, so key 0 is the hottest.
// The CDF is computed once (n doubles); a draw is one binary search.
class Zipf {
  public:
    Zipf(uint64_t n, double s) : cdf_(std::max<uint64_t>(n, 1)) {
        double sum = 0;
        for (uint64_t k = 0; k < cdf_.size(); ++k) {
            sum += std::pow(double(k + 1), -s);
            cdf_[k] = sum;
        }
        for (double& c : cdf_) c /= sum;
        cdf_.back() = 1.0; // no draw may fall past the end through rounding
    }
    // The key for a uniform u in [0, 1): the first k with cdf[k] > u.
    uint64_t key_for(double u) const noexcept {
        auto it = std::upper_bound(cdf_.begin(), cdf_.end(), u);
        return it == cdf_.end() ? cdf_.size() - 1 : uint64_t(it - cdf_.begin());
    }
    uint64_t draw(Rng& r) const noexcept { return key_for(r.unit()); }
    // P(key k), from the CDF.
    double probability(uint64_t k) const noexcept {
        return k == 0 ? cdf_[0] : cdf_[k] - cdf_[k - 1];
    }
    std::span<const double> cdf() const noexcept { return cdf_; }
    // The generalized harmonic number H(n, s), for tests: P(key 0) = 1 / H.
    static double harmonic(uint64_t n, double s) {
        double h = 0;
        for (uint64_t k = n; k >= 1; --k) h += std::pow(double(k), -s); // small terms first
        return h;
    }

  private:
    std::vector<double> cdf_;
};

// Uniform or Zipf keys in [0, n).
class KeyChooser {
  public:
    KeyChooser(uint64_t n, bool zipf, double s) : n_(std::max<uint64_t>(n, 1)) {
        if (zipf) zipf_.emplace_back(n_, s);
    }
    uint64_t draw(Rng& r) const noexcept { return zipf_.empty() ? r.below(n_) : zipf_[0].draw(r); }
    uint64_t keys() const noexcept { return n_; }

  private:
    uint64_t n_;
    std::vector<Zipf> zipf_; // zero or one: std::optional of a vector-holding class, by hand
};

// Open loop: the intended send times of a Poisson process at `rate` per second, in ns from
// `start`. Times are kept in double ns so rounding does not accumulate over a long run.
class PoissonArrivals {
  public:
    PoissonArrivals(double rate_per_s, uint64_t start_ns, uint64_t seed)
        : mean_ns_(1e9 / rate_per_s), rng_(seed), t_(double(start_ns)) {
        advance();
    }
    uint64_t next_ns() const noexcept { return uint64_t(t_); }
    void advance() noexcept { t_ += rng_.exponential(mean_ns_); }
    double mean_ns() const noexcept { return mean_ns_; }

  private:
    double mean_ns_;
    Rng rng_;
    double t_;
};

// Key names: "key:<n>" with <n> zero-padded so every key is exactly `size` bytes; when `size`
// is too short for the prefix, the bare zero-padded number. min_key_size() says what fits.
inline size_t digits(uint64_t n) noexcept {
    size_t d = 1;
    while (n >= 10) n /= 10, ++d;
    return d;
}
inline size_t min_key_size(uint64_t keys) noexcept {
    return digits(keys > 0 ? keys - 1 : 0);
}
// Writes exactly `size` bytes at out (size >= digits(n)).
inline void format_key(char* out, size_t size, uint64_t n) noexcept {
    char num[24];
    auto end = std::to_chars(num, num + sizeof num, n).ptr;
    size_t nd = size_t(end - num);
    size_t pos = 0;
    if (size >= 4 + nd) {
        std::memcpy(out, "key:", 4);
        pos = 4;
    }
    std::memset(out + pos, '0', size - pos - nd);
    std::memcpy(out + size - nd, num, nd);
}

} // namespace bertha::kv::load
