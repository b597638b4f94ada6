// bertha::Histogram: the latency histogram behind every reported percentile (echo, benchmarks).
#include "bertha/histogram.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <vector>

using bertha::Histogram;

TEST_CASE("histogram buckets tile the value range without gaps or overlaps") {
    for (size_t i = 0; i + 1 < Histogram::kBuckets; ++i) {
        REQUIRE(Histogram::index_of(Histogram::highest_in(i)) == i);
        REQUIRE(Histogram::index_of(Histogram::highest_in(i) + 1) == i + 1);
    }
    CHECK(Histogram::index_of(Histogram::kMaxValue) == Histogram::kBuckets - 1);
    CHECK(Histogram::highest_in(Histogram::kBuckets - 1) == Histogram::kMaxValue);
}

TEST_CASE("histogram error is under 1/128 of the value everywhere") {
    double worst = 0;
    for (uint64_t v = 1; v < (uint64_t(1) << 39); v = uint64_t(double(v) * 1.013) + 1) {
        uint64_t hi = Histogram::highest_in(Histogram::index_of(v));
        REQUIRE(hi >= v);
        worst = std::max(worst, double(hi - v) / double(v));
    }
    CHECK(worst <= 1.0 / 128);
}

TEST_CASE("histogram percentiles match exact ones on a million log-normal samples") {
    auto h = std::make_unique<Histogram>();
    std::mt19937_64 rng(1);
    std::lognormal_distribution<double> dist(11, 0.7); // ~60 us median, in ns
    std::vector<uint64_t> values;
    values.reserve(1000000);
    for (int i = 0; i < 1000000; ++i) {
        auto v = uint64_t(dist(rng));
        values.push_back(v);
        h->record(v);
    }
    std::sort(values.begin(), values.end());
    for (double p : {50.0, 90.0, 99.0, 99.9, 100.0}) {
        // The rank ceil(p / 100 * N) in integers (p has one decimal here): in doubles 99.9% of
        // a million is 999000.0000000001, whose ceiling is one sample too far.
        const size_t rank = (size_t(std::llround(p * 10)) * values.size() + 999) / 1000;
        uint64_t exact = values[rank - 1];
        uint64_t got = h->percentile(p);
        CAPTURE(p);
        CHECK(got >= exact); // never an understatement
        CHECK(double(got - exact) <= double(exact) / 128.0 + 1);
    }
    CHECK(h->count() == 1000000);
    CHECK(h->min() == values.front());
    CHECK(h->max() == values.back());
}

TEST_CASE("histogram edge cases: empty, one value, clear") {
    auto h = std::make_unique<Histogram>();
    CHECK(h->percentile(50) == 0);
    h->record(12345);
    CHECK(h->percentile(50) == 12345);
    CHECK(h->percentile(99.9) == 12345);
    h->clear();
    CHECK(h->count() == 0);
    CHECK(h->percentile(50) == 0);
    h->record(7);
    CHECK(h->min() == 7);
}
