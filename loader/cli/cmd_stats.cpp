// `bertha-load stats`: every stage's counters (and the dispatchers'), once, or with --watch as
// rates per second between samples until --count samples or SIGINT.
#include "loader/cli/common.hpp"

#include "loader/cli/table.hpp"

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <map>
#include <poll.h>

namespace bertha::cli {
namespace {

struct Args {
    std::string iface;
    bool watch = false;
    double interval = 1.0;
    int count = 0; // 0: until SIGINT
};

using Rows = std::vector<load::StageStats>;

bool is_dispatcher(const load::StageStats& s) {
    return s.chain == BERTHA_NO_CHAIN;
}

// Identifies a row across samples: a chain id reused by another flow is another row.
std::string row_id(const load::StageStats& s) {
    return std::string(load::to_string(s.hook)) + "/" + std::to_string(s.chain) + "/" +
           std::to_string(s.position) + "/" + s.stage + "/" + flow_text(s.key);
}

std::vector<std::string> row_head(const load::StageStats& s) {
    if (is_dispatcher(s)) return {"-", "-", std::string(load::to_string(s.hook)), s.stage, "*"};
    return {std::to_string(s.chain), std::to_string(s.position),
            std::string(load::to_string(s.hook)), s.stage, flow_text(s.key)};
}

Table make_table() {
    std::vector<std::string> head = {"chain", "pos", "hook", "stage", "flow"};
    for (unsigned c = 0; c < BERTHA_COUNTERS; ++c) head.emplace_back(load::counter_name(c));
    Table t(std::move(head));
    t.right(0).right(1);
    for (unsigned c = 0; c < BERTHA_COUNTERS; ++c) t.right(5 + c);
    return t;
}

std::string rate_text(double r) {
    char buf[32];
    if (r == 0) return "0";
    std::snprintf(buf, sizeof buf, r >= 100 ? "%.0f" : "%.1f", r);
    return buf;
}

void write_row_head(JsonWriter& w, const load::StageStats& s) {
    w.key("chain");
    if (is_dispatcher(s))
        w.null();
    else
        w.value(s.chain);
    w.field("position", s.position).field("hook", load::to_string(s.hook)).field("stage", s.stage);
    w.key("flow");
    if (is_dispatcher(s)) {
        w.null();
    } else {
        w.begin_object();
        write_flow(w, s.key);
        w.end_object();
    }
}

void print_totals(const std::string& iface, const Rows& rows, const Globals& g) {
    if (g.json) {
        JsonWriter w;
        w.begin_object().field("iface", iface).key("rows").begin_array();
        for (auto& s : rows) {
            w.begin_object();
            write_row_head(w, s);
            w.key("counters").begin_object();
            for (unsigned c = 0; c < BERTHA_COUNTERS; ++c)
                w.field(load::counter_name(c), s.counters[c]);
            w.end_object().end_object();
        }
        std::printf("%s\n", w.end_array().end_object().str().c_str());
        return;
    }
    Table t = make_table();
    for (auto& s : rows) {
        auto r = row_head(s);
        for (auto v : s.counters) r.push_back(std::to_string(v));
        t.add(std::move(r));
    }
    std::printf("%s", t.str().c_str());
}

// Rates between two samples; a row that is new (or whose counters went back: a reused chain)
// has no rate yet.
void print_rates(const std::string& iface, const Rows& before, const Rows& now, double dt,
                 const Globals& g) {
    std::map<std::string, const load::StageStats*> prev;
    for (auto& s : before) prev[row_id(s)] = &s;
    auto rate = [&](const load::StageStats& s, unsigned c) -> std::optional<double> {
        auto it = prev.find(row_id(s));
        if (it == prev.end() || s.counters[c] < it->second->counters[c]) return std::nullopt;
        return double(s.counters[c] - it->second->counters[c]) / dt;
    };
    if (g.json) {
        JsonWriter w;
        w.begin_object().field("iface", iface).field("interval_ms", int64_t(dt * 1000));
        w.key("rows").begin_array();
        for (auto& s : now) {
            w.begin_object();
            write_row_head(w, s);
            w.key("per_second").begin_object();
            for (unsigned c = 0; c < BERTHA_COUNTERS; ++c) {
                w.key(load::counter_name(c));
                if (auto r = rate(s, c))
                    w.value(int64_t(*r + 0.5));
                else
                    w.null();
            }
            w.end_object().end_object();
        }
        std::printf("%s\n", w.end_array().end_object().str().c_str());
    } else {
        Table t = make_table();
        for (auto& s : now) {
            auto r = row_head(s);
            for (unsigned c = 0; c < BERTHA_COUNTERS; ++c) {
                auto v = rate(s, c);
                r.push_back(v ? rate_text(*v) : "-");
            }
            t.add(std::move(r));
        }
        std::printf("%s: packets per second over %.1f s\n%s\n", iface.c_str(), dt, t.str().c_str());
    }
    std::fflush(stdout);
}

int run(const Args& a, const Globals& g) {
    auto loader = open_loader(g);
    if (!loader) return report(g, loader.error());
    auto first = loader->stats(a.iface);
    if (!first) return report(g, first.error());
    if (!a.watch && a.count == 0) {
        print_totals(a.iface, *first, g);
        return kExitOk;
    }
    const auto& stop = stop_on_signals();
    using clock = std::chrono::steady_clock;
    Rows prev = std::move(*first);
    auto t_prev = clock::now();
    for (int n = 0; a.count == 0 || n < a.count; ++n) {
        // Sleep in short slices so that SIGINT ends the watch at once.
        const auto until = t_prev + std::chrono::duration<double>(a.interval);
        while (!stop.load() && clock::now() < until) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - clock::now());
            ::poll(nullptr, 0, int(std::min<int64_t>(left.count() + 1, 200)));
        }
        if (stop.load()) break;
        auto now = loader->stats(a.iface);
        if (!now) return report(g, now.error());
        auto t_now = clock::now();
        print_rates(a.iface, prev, *now, std::chrono::duration<double>(t_now - t_prev).count(), g);
        prev = std::move(*now);
        t_prev = t_now;
    }
    return kExitOk;
}

} // namespace

Command add_stats(CLI::App& app, const Globals& g) {
    auto a = std::make_shared<Args>();
    auto* sub = app.add_subcommand("stats", "Show the counters of every stage and dispatcher");
    sub->add_option("--iface", a->iface, "Interface")->required();
    sub->add_flag("--watch", a->watch, "Print rates per second between samples, until SIGINT");
    sub->add_option("--interval", a->interval, "Seconds between samples (default 1)")
        ->check(CLI::Range(0.1, 3600.0));
    sub->add_option("--count", a->count, "Stop after N samples (implies --watch)")
        ->check(CLI::Range(1, 1000000));
    return {sub, [a, &g] { return run(*a, g); }};
}

} // namespace bertha::cli
