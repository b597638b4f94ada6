// Helpers shared by the benchmarks: pinning, CPU clocks, a fixed latency histogram, order
// statistics and a small JSON writer. Nothing here allocates on a measured path.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <pthread.h>
#include <sched.h>
#include <string>
#include <string_view>
#include <unistd.h>
#include <vector>

namespace bench {

[[noreturn]] inline void die(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::fputs("bench: ", stderr);
    std::vfprintf(stderr, fmt, ap);
    std::fputc('\n', stderr);
    va_end(ap);
    std::exit(1);
}

// Pin the calling thread to one CPU. Returns false (and the thread floats) when the CPU is not
// in our affinity mask, e.g. inside a container limited to fewer CPUs.
inline bool pin_to(int cpu) {
    if (cpu < 0) return false;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0;
}

// The CPUs this process may run on, in order (the pinning candidates).
inline std::vector<int> allowed_cpus() {
    cpu_set_t set;
    CPU_ZERO(&set);
    std::vector<int> out;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return out;
    for (int c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &set)) out.push_back(c);
    return out;
}

// CPU time of one thread, readable from any thread: the client samples the server's clock at
// the exact start and end of the measured interval, so the server never has to watch phases.
inline clockid_t thread_cpu_clock(pthread_t t) {
    clockid_t id;
    if (pthread_getcpuclockid(t, &id) != 0) return CLOCK_THREAD_CPUTIME_ID;
    return id;
}
inline int64_t cpu_ns(clockid_t id) {
    timespec ts{};
    clock_gettime(id, &ts);
    return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// Order statistics of a handful of repetitions (copies: the raw values stay in order).
struct Summary {
    double min = NAN, median = NAN, max = NAN;
};
inline double median_of(std::vector<double> v) {
    std::erase_if(v, [](double x) { return std::isnan(x); });
    if (v.empty()) return NAN;
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}
inline Summary summarize(std::vector<double> v) {
    std::erase_if(v, [](double x) { return std::isnan(x); });
    if (v.empty()) return {};
    auto [lo, hi] = std::minmax_element(v.begin(), v.end());
    return {*lo, median_of(v), *hi};
}

// Minimal JSON output: enough for flat objects and arrays of numbers and strings. The caller
// writes commas through `sep()`; values go through `num`/`str` so NaN becomes null.
class Json {
  public:
    explicit Json(FILE* f) : f_(f) {}
    void raw(std::string_view s) { std::fwrite(s.data(), 1, s.size(), f_); }
    void num(double v) {
        if (std::isnan(v) || std::isinf(v))
            raw("null");
        else
            std::fprintf(f_, "%.6g", v);
    }
    void num(uint64_t v) { std::fprintf(f_, "%" PRIu64, v); }
    void str(std::string_view s) {
        std::fputc('"', f_);
        for (char c : s) {
            if (c == '"' || c == '\\') std::fputc('\\', f_);
            if (static_cast<unsigned char>(c) < 0x20)
                std::fprintf(f_, "\\u%04x", c);
            else
                std::fputc(c, f_);
        }
        std::fputc('"', f_);
    }
    void key(std::string_view k) {
        str(k);
        raw(": ");
    }

  private:
    FILE* f_;
};

// Directory of the running executable: benchmarks write their results next to themselves,
// which is $(BUILD)/bench/ when built by the Makefile.
inline std::string exe_dir() {
    char buf[4096];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return ".";
    std::string p(buf, size_t(n));
    auto slash = p.rfind('/');
    return slash == std::string::npos ? "." : p.substr(0, slash);
}

} // namespace bench
