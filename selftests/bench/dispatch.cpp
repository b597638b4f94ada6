// dispatch: what does the XDP dispatcher cost per packet? ns per packet through
// BPF_PROG_TEST_RUN (the kernel runs the program `repeat` times on one 64-byte UDP frame and
// reports the mean duration) for
//   bare      the baseline: bertha_xdp_pass (bpf/xdp_pass.bpf.c), returns XDP_PASS, nothing else
//   no_flow   the dispatcher on a frame to a port without a flow: parse, one lookup, `miss`
//   stages1   the dispatcher and a chain of 1 count stage (chunnels/count/count.bpf.c)
//   stages3   ... 3 count stages
//   stages5   ... 5 count stages
// The chains are the ones libbertha-load builds: a Loader attaches them on lo of a private
// network namespace (selftests/lib/loader_fixture.hpp), and the live root program is timed.
// Before timing, every variant is checked (explain: the steps the variant claims to take); after
// timing, the per-stage counters must have moved by exactly the number of runs.
//
// In each repetition all variants run back to back, order rotated, after one warm-up
// repetition; the table gives the median over repetitions, the spread, and the paired ratio to
// `bare` (variant / bare of the same repetition, median over repetitions). The kernel reports
// whole nanoseconds (the mean is floored), so the thread's CPU time around the run is recorded
// too: the same quantity with fractions (it also holds the syscall's own cost, ~1 us per run,
// i.e. ~0.001 ns per packet at the default repeat). It reports; it never judges.
#include "bench.hpp"
#include "loader/kernel_objects.hpp"
#include "loader_fixture.hpp"
#include "packet.hpp"
#include "xdp_pass.skel.h"

#include <algorithm>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <exception>
#include <linux/bpf.h>
#include <memory>
#include <string>
#include <sys/utsname.h>
#include <vector>

namespace {

using bench::die;
using bertha::load::Hook;

std::unique_ptr<bertha::test::LoaderFixture> g_fixture;

const char* kBaseline = "bare";
const char* kBaselineText = "bare XDP_PASS program (bertha_xdp_pass)";

struct Config : bench::Common { // reps, pin, quick, out
    Config() { reps = 11; }
    int warmup_reps = 1;
    uint32_t repeat = 1000000;
};

Config parse(int argc, char** argv) {
    Config c;
    CLI::App app(std::string("ns per 64-byte UDP packet through BPF_PROG_TEST_RUN; baseline: ") +
                     kBaselineText +
                     ".\nVariants: bare, no_flow (dispatcher, packet to a port without a flow), "
                     "stages1,\nstages3, stages5 (dispatcher + N count stages). Defaults: 11 reps "
                     "of 1000000\nruns per variant after one warm-up rep. Needs root (BPF, a "
                     "network namespace).",
                 "dispatch");
    app.footer("--quick: 1 rep of 10000 runs (a smoke run; numbers are not meaningful).");
    bench::add_common(app, c);
    app.add_option("--repeat", c.repeat, "runs per variant and rep")->capture_default_str();
    bench::parse(app, c, argc, argv);
    if (bench::quick_sets(app, "--repeat")) c.repeat = 10000;
    bench::resolve_out(c, "dispatch");
    if (c.reps < 1 || c.repeat < 1) bench::usage_error("--reps and --repeat must be >= 1");
    return c;
}

struct Variant {
    const char* name;
    std::string describe;
    int fd = -1;        // the program timed
    uint16_t dport = 0; // the frame's destination port
    int stages = -1;    // count stages run; -1: no dispatcher (bare), 0: the dispatcher misses
    uint32_t chain = BERTHA_NO_CHAIN;
};

struct Trial {
    int rep = 0;
    size_t order = 0;
    const char* variant = "";
    double ns = 0;     // kernel-measured mean, whole ns
    double cpu_ns = 0; // thread CPU time of the run / repeat
};

struct Run {
    uint32_t ns = 0;
    double cpu_ns = 0;
};

// One BPF_PROG_TEST_RUN of `repeat` runs. The frame must come back as it went in, with XDP_PASS.
Run time_run(const Variant& v, const std::vector<uint8_t>& frame, uint32_t repeat) {
    std::vector<uint8_t> out(frame.size() + 256);
    LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = frame.data(), .data_out = out.data(),
                .data_size_in = uint32_t(frame.size()), .data_size_out = uint32_t(out.size()),
                .repeat = int(repeat));
    int64_t t0 = bench::cpu_ns(CLOCK_THREAD_CPUTIME_ID);
    if (bpf_prog_test_run_opts(v.fd, &o) != 0)
        die("%s: BPF_PROG_TEST_RUN: %s", v.name, std::strerror(errno));
    int64_t t1 = bench::cpu_ns(CLOCK_THREAD_CPUTIME_ID);
    out.resize(o.data_size_out);
    if (o.retval != XDP_PASS || out != frame)
        die("%s: verdict %u and %s frame (want XDP_PASS, unchanged)", v.name, o.retval,
            out == frame ? "an unchanged" : "a changed");
    return {o.duration, double(t1 - t0) / repeat};
}

std::vector<uint8_t> frame_to(uint16_t dport) {
    // 14 + 20 + 8 + 22 = 64 bytes: the minimum Ethernet frame without its FCS.
    return bertha::test::Packet()
        .eth()
        .ipv4("198.18.0.2", "198.18.0.1")
        .udp(5000, dport)
        .payload(std::string(22, 'x'))
        .bytes();
}

std::string steps_text(const bertha::load::Explanation& ex) {
    std::string s;
    for (auto& st : ex.steps) s += (s.empty() ? "" : " ") + st.stage + ":" + st.did;
    return s;
}

// The counters the runs must move: the dispatcher's hit and miss, and every stage's pass.
struct Counts {
    uint64_t hit = 0, miss = 0;
    std::vector<uint64_t> stage_pass; // per variant: the sum over its chain's stages
};
Counts read_counts(bertha::test::LoaderFixture& fx, const std::vector<Variant>& vars) {
    auto rows = fx.loader().stats(bertha::test::LoaderFixture::kIf);
    if (!rows) die("stats: %s", rows.error().what().c_str());
    Counts c;
    c.stage_pass.assign(vars.size(), 0);
    for (auto& r : *rows) {
        if (r.hook != Hook::xdp) continue;
        if (r.chain == BERTHA_NO_CHAIN) {
            c.hit = r.counters[BERTHA_C_HIT];
            c.miss = r.counters[BERTHA_C_MISS];
            continue;
        }
        for (size_t i = 0; i < vars.size(); ++i)
            if (vars[i].chain == r.chain) c.stage_pass[i] += r.counters[BERTHA_C_PASS];
    }
    return c;
}

struct Cell {
    const Variant* v;
    bench::Summary ns, cpu, paired;
    double ratio = 0;   // median / the baseline's median
    double over_ns = 0; // median - the baseline's median
    double spread = 0;  // (max - min) / median
};

std::vector<Cell> summarize(const std::vector<Variant>& vars, const std::vector<Trial>& trials,
                            int reps) {
    std::vector<Cell> cells;
    for (auto& v : vars) {
        std::vector<double> ns, cpu, paired;
        for (int rep = 0; rep < reps; ++rep) {
            double mine = NAN, base = NAN, mine_cpu = NAN;
            for (auto& t : trials) {
                if (t.rep != rep) continue;
                if (t.variant == v.name) mine = t.ns, mine_cpu = t.cpu_ns;
                if (std::string(t.variant) == kBaseline) base = t.ns;
            }
            ns.push_back(mine);
            cpu.push_back(mine_cpu);
            paired.push_back(base > 0 ? mine / base : NAN);
        }
        cells.push_back(
            {&v, bench::summarize(ns), bench::summarize(cpu), bench::summarize(paired)});
    }
    for (auto& c : cells) {
        c.ratio = c.ns.median / cells[0].ns.median;
        c.over_ns = c.ns.median - cells[0].ns.median;
        c.spread = (c.ns.max - c.ns.min) / c.ns.median;
    }
    return cells;
}

void print_table(const Config& cfg, const std::vector<Cell>& cells, int cpu) {
    std::printf("\ndispatch: ns per 64-byte UDP packet, BPF_PROG_TEST_RUN, %d rep(s) x %u runs "
                "per variant after %d warm-up rep(s), variants alternated; CPU %d%s\n",
                cfg.reps, cfg.repeat, cfg.warmup_reps, cpu,
                cfg.quick ? " [--quick: smoke run, not a measurement]" : "");
    std::printf("baseline: %s. ns: kernel-measured (whole ns), median (min-max) over reps; "
                "spread: (max-min)/median;\npaired: variant/baseline within a rep, median "
                "(min-max); cpu ns: thread CPU time / runs, median.\n\n",
                kBaselineText);
    std::printf("%-9s %7s %13s %7s %7s %21s %9s %8s\n", "variant", "ns", "min-max", "spread",
                "ratio", "paired", "+ns", "cpu ns");
    for (auto& c : cells) {
        char range[32], paired[48];
        std::snprintf(range, sizeof range, "%.0f-%.0f", c.ns.min, c.ns.max);
        std::snprintf(paired, sizeof paired, "%.2f (%.2f-%.2f)", c.paired.median, c.paired.min,
                      c.paired.max);
        std::printf("%-9s %7.1f %13s %6.1f%% %7.2f %21s %+9.1f %8.2f\n", c.v->name, c.ns.median,
                    range, 100 * c.spread, c.ratio, paired, c.over_ns, c.cpu.median);
    }
    std::printf("\nvariants:\n");
    for (auto& c : cells) std::printf("  %-8s %s\n", c.v->name, c.v->describe.c_str());
    std::printf("\n");
    std::fflush(stdout);
}

void write_json(const Config& cfg, const std::vector<Cell>& cells, const std::vector<Trial>& trials,
                int cpu) {
    if (cfg.out.empty()) return;
    std::string tmp = cfg.out + ".tmp";
    FILE* f = bench::open_output(tmp);
    bench::Json j(f);
    utsname u{};
    uname(&u);
    j.raw("{\n  ");
    j.key("benchmark"), j.str("dispatch"), j.raw(",\n  ");
    j.key("what"), j.str("ns per 64-byte UDP packet through BPF_PROG_TEST_RUN (kernel-measured)");
    j.raw(",\n  ");
    j.key("baseline"), j.str(kBaseline), j.raw(",\n  ");
    j.key("baseline_text"), j.str(kBaselineText), j.raw(",\n  ");
    j.key("quick"), j.raw(cfg.quick ? "true" : "false"), j.raw(",\n  ");
    j.key("config"), j.raw("{");
    j.key("reps"), j.num(uint64_t(cfg.reps)), j.raw(", ");
    j.key("warmup_reps"), j.num(uint64_t(cfg.warmup_reps)), j.raw(", ");
    j.key("repeat"), j.num(uint64_t(cfg.repeat)), j.raw(", ");
    j.key("packet_bytes"), j.num(uint64_t(64)), j.raw(", ");
    j.key("cpu"), j.num(double(cpu)), j.raw("},\n  ");
    j.key("host"), j.raw("{");
    j.key("kernel"), j.str(u.release), j.raw(", ");
    j.key("cpus_online"), j.num(uint64_t(sysconf(_SC_NPROCESSORS_ONLN))), j.raw("},\n  ");
    j.key("variants"), j.raw("{");
    for (size_t i = 0; i < cells.size(); ++i)
        j.raw(i ? ", " : ""), j.key(cells[i].v->name), j.str(cells[i].v->describe);
    j.raw("},\n  ");
    j.key("summary"), j.raw("[\n");
    for (size_t i = 0; i < cells.size(); ++i) {
        const Cell& c = cells[i];
        j.raw("    {"), j.key("variant"), j.str(c.v->name), j.raw(", ");
        j.key("ns"), j.raw("{"), j.key("min"), j.num(c.ns.min), j.raw(", ");
        j.key("median"), j.num(c.ns.median), j.raw(", "), j.key("max"), j.num(c.ns.max);
        j.raw("}, "), j.key("spread"), j.num(c.spread), j.raw(", ");
        j.key("ratio"), j.num(c.ratio), j.raw(", ");
        j.key("over_baseline_ns"), j.num(c.over_ns), j.raw(", ");
        j.key("paired_ratio"), j.raw("{"), j.key("min"), j.num(c.paired.min), j.raw(", ");
        j.key("median"), j.num(c.paired.median), j.raw(", "), j.key("max"), j.num(c.paired.max);
        j.raw("}, "), j.key("cpu_ns"), j.raw("{"), j.key("min"), j.num(c.cpu.min), j.raw(", ");
        j.key("median"), j.num(c.cpu.median), j.raw(", "), j.key("max"), j.num(c.cpu.max);
        j.raw(i + 1 < cells.size() ? "}},\n" : "}}\n");
    }
    j.raw("  ],\n  ");
    j.key("trials"), j.raw("[\n");
    for (size_t i = 0; i < trials.size(); ++i) {
        const Trial& t = trials[i];
        j.raw("    {"), j.key("rep"), j.num(uint64_t(t.rep)), j.raw(", ");
        j.key("order"), j.num(uint64_t(t.order)), j.raw(", ");
        j.key("variant"), j.str(t.variant), j.raw(", ");
        j.key("ns"), j.num(t.ns), j.raw(", ");
        j.key("cpu_ns"), j.num(t.cpu_ns), j.raw(i + 1 < trials.size() ? "},\n" : "}\n");
    }
    j.raw("  ]\n}\n");
    if (std::fclose(f) != 0 || std::rename(tmp.c_str(), cfg.out.c_str()) != 0)
        die("cannot write %s: %s", cfg.out.c_str(), std::strerror(errno));
    std::printf("wrote %s\n", cfg.out.c_str());
}

// The plot's input next to the JSON: one row per variant, median ns with its min and max, the
// paired ratio, and the goal line (2x the baseline's median).
void write_tsv(const Config& cfg, const std::vector<Cell>& cells) {
    if (cfg.out.empty()) return;
    const std::string path = bench::sibling_path(cfg.out, ".tsv");
    FILE* f = bench::open_output(path);
    std::fprintf(f, "# variant\tns\tns_lo\tns_hi\tpaired\tgoal_ns\n"); // gnuplot skips it
    for (auto& c : cells)
        std::fprintf(f, "%s\t%.2f\t%.2f\t%.2f\t%.4f\t%.2f\n", c.v->name, c.ns.median, c.ns.min,
                     c.ns.max, c.paired.median, 2 * cells[0].ns.median);
    if (std::fclose(f) != 0) die("cannot write %s: %s", path.c_str(), std::strerror(errno));
}

} // namespace

// Perf mode over fixtures (Katran's tester does the same): ns per packet for each kind of frame
// the dispatcher meets, through the dispatcher and a 1-stage chain on udp/7001. Medians over
// the reps; printed after the main table and written next to its JSON (<out>_fixtures.json).
void fixture_perf(const Config& cfg, bertha::test::LoaderFixture& fx, int root_fd) {
    using bertha::test::Packet;
    const char *us = "198.18.0.1", *peer = "198.18.0.2", *us6 = "2001:db8::1",
               *peer6 = "2001:db8::2";
    struct Fixture {
        const char* name;
        std::string want;
        std::vector<uint8_t> frame;
    };
    const std::string hit1 = "dispatcher:hit count:pass";
    const Fixture fixtures[] = {
        {"IPv4 UDP, flow hit", hit1, Packet().eth().ipv4(peer, us).udp(5000, 7001).payload("x").bytes()},
        {"IPv4 UDP 1400 B, flow hit", hit1,
         Packet().eth().ipv4(peer, us).udp(5000, 7001).payload(std::string(1400, 'x')).bytes()},
        {"IPv4 options + 2 VLAN tags, hit", hit1,
         Packet().eth(ETH_P_8021AD).vlan(1, ETH_P_8021Q).vlan(2, ETH_P_IP)
             .ipv4(peer, us, IPPROTO_UDP, 3).udp(5000, 7001).payload("x").bytes()},
        {"IPv6 UDP, flow hit", hit1,
         Packet().eth(ETH_P_IPV6).ipv6(peer6, us6).udp(5000, 7001).payload("x").bytes()},
        {"IPv6 + hop-by-hop, flow hit", hit1,
         Packet().eth(ETH_P_IPV6).ipv6(peer6, us6).ipv6_ext(IPPROTO_HOPOPTS).udp(5000, 7001)
             .payload("x").bytes()},
        {"IPv4 UDP, no flow", "dispatcher:miss",
         Packet().eth().ipv4(peer, us).udp(5000, 7999).payload("x").bytes()},
        {"IPv4 TCP (not ours)", "dispatcher:pass",
         Packet().eth().ipv4(peer, us, IPPROTO_TCP).payload(std::string(20, '\0')).bytes()},
        {"ARP (not ours)", "dispatcher:pass",
         Packet().eth(ETH_P_ARP).payload(std::string(28, '\0')).bytes()},
        {"IPv4 fragment (not ours)", "dispatcher:pass",
         Packet().eth().ipv4(peer, us).fragment(0, true).udp(5000, 7001).payload("x").bytes()},
    };
    const uint32_t repeat = std::max<uint32_t>(cfg.repeat / 10, 1000);
    const int reps = std::max(cfg.reps, 3);
    Variant v{"fixture", "", root_fd, 0, 1, BERTHA_NO_CHAIN};
    std::printf("\nper fixture: dispatcher + 1 count stage on udp/7001, median ns over %d reps x "
                "%u runs\n",
                reps, repeat);
    std::string json = "[";
    for (auto& f : fixtures) {
        auto ex = fx.loader().explain(bertha::test::LoaderFixture::kIf, Hook::xdp, f.frame);
        if (!ex || steps_text(*ex) != f.want)
            die("fixture '%s' took '%s', want '%s'", f.name, ex ? steps_text(*ex).c_str() : "?",
                f.want.c_str());
        std::vector<double> ns;
        for (int r = 0; r < reps; ++r) ns.push_back(time_run(v, f.frame, repeat).ns);
        std::sort(ns.begin(), ns.end());
        double med = ns[ns.size() / 2];
        std::printf("  %-34s %6.1f ns  (%zu B; %s)\n", f.name, med, f.frame.size(), f.want.c_str());
        json += std::string(json.size() > 1 ? "," : "") + "\n  {\"fixture\": \"" + f.name +
                "\", \"bytes\": " + std::to_string(f.frame.size()) + ", \"steps\": \"" + f.want +
                "\", \"ns_median\": " + std::to_string(med) + "}";
    }
    json += "\n]\n";
    if (cfg.out.empty()) return;
    const std::string path = bench::sibling_path(cfg.out, "_fixtures.json");
    if (FILE* out = std::fopen(path.c_str(), "w")) {
        std::fputs(json.c_str(), out);
        std::fclose(out);
        std::printf("wrote %s\n", path.c_str());
    }
}

int main(int argc, char** argv) {
    Config cfg = parse(argc, argv);
    int cpu = -1;
    if (cfg.pin) {
        auto allowed = bench::allowed_cpus();
        if (!allowed.empty() && bench::pin_to(allowed.back())) cpu = allowed.back();
    }
    if (cpu < 0) cpu = sched_getcpu();

    // At namespace scope, so that die() (std::exit) still unmounts its bpffs on the way out.
    auto& fx = g_fixture;
    try {
        fx = std::make_unique<bertha::test::LoaderFixture>();
    } catch (const std::exception& e) {
        die("%s", e.what());
    }
    std::unique_ptr<xdp_pass, void (*)(xdp_pass*)> bare(xdp_pass__open_and_load(),
                                                        xdp_pass__destroy);
    if (!bare) die("xdp_pass failed to load (root needed): %s", std::strerror(errno));

    std::vector<Variant> vars;
    vars.push_back({"bare", kBaselineText, bpf_program__fd(bare->progs.bertha_xdp_pass), 7000, -1,
                    BERTHA_NO_CHAIN});
    vars.push_back({"no_flow", "dispatcher, frame to udp/7999 (no flow): parse, lookup, miss", -1,
                    7999, 0, BERTHA_NO_CHAIN});
    for (int n : {1, 3, 5}) {
        const char* name = n == 1 ? "stages1" : n == 3 ? "stages3" : "stages5";
        vars.push_back({name,
                        "dispatcher + " + std::to_string(n) + " count stage" + (n > 1 ? "s" : "") +
                            " (udp/" + std::to_string(7000 + n) + ")",
                        -1, uint16_t(7000 + n), n, BERTHA_NO_CHAIN});
        std::vector<bertha::load::StageSpec> chain(size_t(n), {"count", ""});
        auto c = fx->loader().attach(
            {bertha::test::LoaderFixture::kIf, Hook::xdp, uint16_t(7000 + n), {}}, chain);
        if (!c) die("attach: %s", c.error().what().c_str());
        vars.back().chain = *c;
    }
    auto st = fx->loader().status(bertha::test::LoaderFixture::kIf);
    if (!st || st->empty() || !(*st)[0].xdp.attached) die("the dispatcher is not attached to lo");
    bertha::load::Fd root(bpf_prog_get_fd_by_id((*st)[0].xdp.prog_id));
    if (!root) die("open the dispatcher (id %u): %s", (*st)[0].xdp.prog_id, std::strerror(errno));

    // Each variant does what it says before it is timed.
    std::vector<std::vector<uint8_t>> frames;
    for (auto& v : vars) {
        frames.push_back(frame_to(v.dport));
        if (frames.back().size() != 64) die("the fixture frame is %zu bytes", frames.back().size());
        if (v.stages < 0) continue;
        v.fd = root.get();
        auto ex = fx->loader().explain(bertha::test::LoaderFixture::kIf, Hook::xdp, frames.back());
        if (!ex) die("%s: explain: %s", v.name, ex.error().what().c_str());
        std::string want = v.stages == 0 ? "dispatcher:miss" : "dispatcher:hit";
        for (int i = 0; i < v.stages; ++i) want += " count:pass";
        if (steps_text(*ex) != want || ex->verdict != XDP_PASS)
            die("%s: the frame took '%s' (%s), want '%s' (XDP_PASS)", v.name,
                steps_text(*ex).c_str(), ex->verdict_name.c_str(), want.c_str());
    }

    const Counts before = read_counts(*fx, vars);
    std::vector<Trial> trials;
    for (int rep = -cfg.warmup_reps; rep < cfg.reps; ++rep) {
        for (size_t k = 0; k < vars.size(); ++k) {
            size_t i = (k + size_t(rep + cfg.warmup_reps)) % vars.size();
            Run r = time_run(vars[i], frames[i], cfg.repeat);
            if (rep >= 0) trials.push_back({rep, k, vars[i].name, double(r.ns), r.cpu_ns});
        }
    }
    // Every run went through what it was meant to: the counters moved by exactly the runs.
    const Counts after = read_counts(*fx, vars);
    const uint64_t runs = uint64_t(cfg.reps + cfg.warmup_reps) * cfg.repeat;
    if (after.hit - before.hit != 3 * runs || after.miss - before.miss != runs)
        die("the dispatcher counted %" PRIu64 " hits and %" PRIu64 " misses, want %" PRIu64
            " and %" PRIu64,
            after.hit - before.hit, after.miss - before.miss, 3 * runs, runs);
    for (size_t i = 0; i < vars.size(); ++i)
        if (vars[i].stages > 0 &&
            after.stage_pass[i] - before.stage_pass[i] != uint64_t(vars[i].stages) * runs)
            die("%s: its stages counted %" PRIu64 " passes, want %" PRIu64, vars[i].name,
                after.stage_pass[i] - before.stage_pass[i], uint64_t(vars[i].stages) * runs);

    auto cells = summarize(vars, trials, cfg.reps);
    print_table(cfg, cells, cpu);
    write_json(cfg, cells, trials, cpu);
    write_tsv(cfg, cells);
    fixture_perf(cfg, *fx, root.get());
    return 0;
}
