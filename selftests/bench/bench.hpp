// Helpers shared by the benchmarks: pinning, CPU clocks, a fixed latency histogram, order
// statistics and a small JSON writer. Nothing here allocates on a measured path.
#pragma once

#include <CLI/CLI.hpp>
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
#include <csignal>
#include <cstring>
#include <ctime>
#include <pthread.h>
#include <sched.h>
#include <string>
#include <string_view>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace bench {

// A server role's stop: SIGINT and SIGTERM only set a flag, which its loop polls (each of its
// waits is bounded), so that it prints its report and exits cleanly.
inline volatile std::sig_atomic_t stop_requested = 0;
inline void on_stop_signal(int) { stop_requested = 1; }
inline void stop_on_signals() {
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
}

// "bench: <what><hint>" on stderr, then exit with `code`.
[[noreturn]] inline void vexit(int code, const char* hint, const char* fmt, va_list ap) {
    std::fputs("bench: ", stderr);
    std::vfprintf(stderr, fmt, ap);
    std::fputs(hint, stderr);
    std::exit(code);
}

[[noreturn]] inline void die(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vexit(1, "\n", fmt, ap);
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

// ---- command line ----------------------------------------------------------------------------
// Every benchmark takes --reps N, --no-pin, --out FILE.json|DIR, --no-json, --quick and --help
// (-h), parsed with CLI11. Options act in command-line order, as a hand loop would: a repeated
// option keeps its last value, the later of --out/--no-json wins, and --quick sets its smoke-run
// values only for the options not given after it (`quick_sets`).

// A command-line mistake found after parsing: "bench: ... (see --help)" on stderr, exit code 2.
[[noreturn]] inline void usage_error(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vexit(2, " (see --help)\n", fmt, ap);
}

struct Common {
    int reps = 1;    // the bench sets its default before add_common
    bool pin = true; // false: --no-pin
    std::string out; // JSON path, "" = none; made final by resolve_out
    bool out_set = false;
    bool quick = false;
};

// Options are added after this: a repeated option keeps its last value (CLI11 would refuse it).
inline void add_common(CLI::App& app, Common& c) {
    app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    app.add_option("--reps", c.reps, "repetitions")->capture_default_str();
    app.add_flag("--no-pin")->description("do not pin threads to CPUs");
    app.add_option("--out")
        ->description("write the JSON results to FILE.json, or into DIR (default: next to the "
                      "executable)")
        ->type_name("FILE.json|DIR");
    app.add_flag("--no-json")->description("write no JSON results");
    app.add_flag("--quick", c.quick, "a smoke run: short, and numbers are not meaningful");
}

// The option among `names` given last on the command line, or "" if none was.
inline std::string last_given(const CLI::App& app, std::initializer_list<std::string> names) {
    const auto& order = app.parse_order();
    for (auto it = order.rbegin(); it != order.rend(); ++it)
        for (const std::string& n : names)
            if ((*it)->check_name(n)) return n;
    return "";
}

// --quick was given and `name` was not given after it: the smoke-run value applies.
inline bool quick_sets(const CLI::App& app, const std::string& name) {
    return last_given(app, {"--quick", name}) == "--quick";
}

// Parses argv into the options of `app` and `c`: --help prints the usage and exits 0, a mistake
// (unknown option, malformed number) prints what is wrong and exits 2. Then applies --no-pin and
// the later of --out/--no-json, and, with --quick, c.reps = 1 unless --reps came after it.
inline void parse(CLI::App& app, Common& c, int argc, char** argv) {
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        int rc = app.exit(e); // help on stdout; or the message and the --help hint on stderr
        std::exit(rc == 0 ? 0 : 2);
    }
    c.pin = app.count("--no-pin") == 0;
    std::string o = last_given(app, {"--out", "--no-json"});
    c.out_set = !o.empty();
    c.out = o == "--out" ? app["--out"]->as<std::string>() : "";
    if (quick_sets(app, "--reps")) c.reps = 1;
}

// The JSON path: `name`.json, or `name`.quick.json for --quick so that a smoke run never
// overwrites a real result, next to the executable unless --out named a file or a directory
// (the file goes into it). --no-json leaves it empty.
inline void resolve_out(Common& c, const std::string& name) {
    const std::string file = name + (c.quick ? ".quick.json" : ".json");
    if (!c.out_set) c.out = exe_dir() + "/" + file;
    struct stat st {};
    if (!c.out.empty() && ::stat(c.out.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
        c.out += "/" + file;
}

// A file next to the JSON result: "x.json" + ".tsv" -> "x.tsv", + "_fixtures.json" ->
// "x_fixtures.json". Empty when there is no JSON result (--no-json).
inline std::string sibling_path(const std::string& json_path, const std::string& suffix) {
    if (json_path.empty()) return {};
    std::string path = json_path;
    if (path.size() > 5 && path.ends_with(".json")) path.resize(path.size() - 5);
    return path + suffix;
}

// Open an output file for writing, or stop the bench saying which file and why.
inline FILE* open_output(const std::string& path) {
    FILE* f = std::fopen(path.c_str(), "w");
    if (!f) die("cannot write %s: %s", path.c_str(), std::strerror(errno));
    return f;
}

} // namespace bench
