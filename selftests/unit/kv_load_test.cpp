// `kv load`'s pure parts (examples/kv/load_model.hpp): Zipf key choice, Poisson arrivals, key
// names, and the percentiles it reports. Fixed seeds; tolerances are statistical (several
// standard deviations), never timing.
#include "examples/kv/load_model.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <set>
#include <string>
#include <vector>

using namespace bertha::kv::load;

TEST_CASE("kv load: Zipf CDF is increasing and its probabilities sum to 1") {
    for (double s : {0.5, 0.99, 1.2}) {
        Zipf z(1000, s);
        auto cdf = z.cdf();
        REQUIRE(cdf.size() == 1000);
        CHECK(cdf.back() == 1.0);
        double sum = 0;
        for (uint64_t k = 0; k < 1000; ++k) {
            CHECK(z.probability(k) > 0);
            if (k > 0) CHECK(z.probability(k) <= z.probability(k - 1)); // rank k+1 is rarer
            sum += z.probability(k);
        }
        CHECK(sum == doctest::Approx(1.0).epsilon(1e-12));
        // P(rank 1) = 1 / H(n, s)
        CHECK(z.probability(0) == doctest::Approx(1.0 / Zipf::harmonic(1000, s)).epsilon(1e-9));
    }
}

TEST_CASE("kv load: Zipf draws give rank 1 its theoretical share (fixed seed)") {
    const uint64_t n = 10000, draws = 1000000;
    const double s = 0.99;
    Zipf z(n, s);
    Rng rng(42);
    std::vector<uint64_t> hits(n);
    uint64_t outside = 0;
    for (uint64_t i = 0; i < draws; ++i) {
        uint64_t k = z.draw(rng);
        if (k < n)
            ++hits[k];
        else
            ++outside;
    }
    CHECK(outside == 0);
    for (uint64_t k : {0, 1, 9, 99}) {
        const double p = std::pow(double(k + 1), -s) / Zipf::harmonic(n, s);
        const double sd = std::sqrt(double(draws) * p * (1 - p));
        CAPTURE(k);
        CHECK(std::abs(double(hits[k]) - double(draws) * p) < 5 * sd);
    }
    // The extremes of the CDF map to the first and last keys.
    CHECK(z.key_for(0.0) == 0);
    CHECK(z.key_for(std::nextafter(1.0, 0.0)) == n - 1);
}

TEST_CASE("kv load: uniform keys cover the key space evenly (fixed seed)") {
    KeyChooser keys(100, false, 0);
    Rng rng(7);
    std::vector<uint64_t> hits(100);
    uint64_t outside = 0;
    for (int i = 0; i < 200000; ++i) {
        uint64_t k = keys.draw(rng);
        if (k < 100)
            ++hits[k];
        else
            ++outside;
    }
    CHECK(outside == 0);
    const double sd = std::sqrt(2000 * 0.99);
    for (auto h : hits) CHECK(std::abs(double(h) - 2000) < 6 * sd);
}

TEST_CASE("kv load: Poisson inter-arrival times have mean 1/rate and an exponential spread") {
    const double rate = 50000; // per second: mean gap 20 us
    PoissonArrivals a(rate, 1000, 3);
    const int n = 200000;
    uint64_t prev = 1000;
    double sum = 0, sumsq = 0;
    int over_mean = 0, backwards = 0;
    for (int i = 0; i < n; ++i) {
        uint64_t t = a.next_ns();
        backwards += t < prev;
        double gap = double(t - prev);
        sum += gap;
        sumsq += gap * gap;
        over_mean += gap > 20000;
        prev = t;
        a.advance();
    }
    CHECK(backwards == 0);
    const double mean = sum / n, sd = std::sqrt(sumsq / n - mean * mean);
    // The standard error of the mean is 20 us / sqrt(n) = 0.045 us: 1% is over 4 of them.
    CHECK(mean == doctest::Approx(1e9 / rate).epsilon(0.01));
    CHECK(sd == doctest::Approx(1e9 / rate).epsilon(0.02)); // exponential: sd == mean
    CHECK(double(over_mean) / n == doctest::Approx(std::exp(-1.0)).epsilon(0.02));
    // The same seed gives the same schedule.
    PoissonArrivals b(rate, 1000, 3), c(rate, 1000, 3);
    for (int i = 0; i < 100; ++i, b.advance(), c.advance()) REQUIRE(b.next_ns() == c.next_ns());
}

TEST_CASE("kv load: keys are \"key:<n>\" zero-padded to exactly --key-size bytes") {
    char buf[251];
    auto key = [&](size_t size, uint64_t n) {
        format_key(buf, size, n);
        return std::string(buf, size);
    };
    CHECK(key(16, 42) == "key:000000000042");
    CHECK(key(5, 7) == "key:7");
    CHECK(key(4, 7) == "0007"); // too short for the prefix: the bare number
    CHECK(key(1, 9) == "9");
    CHECK(key(250, 123).size() == 250);
    CHECK(key(250, 123).substr(0, 4) == "key:");
    CHECK(min_key_size(1) == 1);
    CHECK(min_key_size(10) == 1);
    CHECK(min_key_size(11) == 2);
    CHECK(min_key_size(1000) == 3);
    std::set<std::string> seen; // every key of a space is distinct at the smallest size
    for (uint64_t n = 0; n < 1000; ++n) seen.insert(key(min_key_size(1000), n));
    CHECK(seen.size() == 1000);
}

TEST_CASE("kv load: percentiles of 1..1000 us are exact ranks, within 1/128 above the value") {
    auto h = std::make_unique<bertha::Histogram>();
    for (uint64_t v = 1; v <= 1000; ++v) h->record(v * 1000); // 1 us .. 1 ms in ns
    for (auto [p, exact] :
         {std::pair{50.0, 500000.0}, std::pair{95.0, 950000.0}, std::pair{99.0, 990000.0},
          std::pair{99.9, 999000.0}, std::pair{100.0, 1000000.0}}) {
        const double got = double(h->percentile(p));
        CAPTURE(p);
        CHECK(got >= exact);
        CHECK(got <= exact * (1 + 1.0 / 128));
    }
    // Rank 999 of 1000, not the maximum: ceil(99.9 / 100 * 1000) in doubles is 1000
    // (bertha::Histogram ranks in integers).
    CHECK(h->percentile(99.9) < h->max());
}

TEST_CASE("kv load: percentiles of an exponential distribution stay within 1% (fixed seed)") {
    auto h = std::make_unique<bertha::Histogram>();
    Rng rng(11);
    std::vector<uint64_t> values;
    for (int i = 0; i < 300000; ++i) {
        auto v = uint64_t(rng.exponential(50000.0)) + 5000; // 5 us floor, 50 us mean tail
        values.push_back(v);
        h->record(v);
    }
    std::sort(values.begin(), values.end());
    uint64_t last = 0;
    for (double p : {50.0, 95.0, 99.0, 99.9}) {
        const size_t rank = size_t(std::llround(p / 100 * double(values.size())));
        const double exact = double(values[rank - 1]);
        const double got = double(h->percentile(p));
        CAPTURE(p);
        CHECK(got >= exact);
        CHECK(got <= exact * 1.01);
        CHECK(uint64_t(got) >= last); // in order
        last = uint64_t(got);
    }
    CHECK(h->max() == values.back());
    CHECK(last <= h->max());
}
