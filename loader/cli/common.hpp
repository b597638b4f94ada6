// What every bertha-load subcommand shares: the global options, the exit codes, how an error is
// reported (stderr, and a JSON object on stdout with --json), and the parsing of values that
// several subcommands take (hooks, peers, stage specs).
#pragma once

#include "bertha/error.hpp"
#include "bertha/json.hpp"
#include "loader/loader.hpp"

#include <CLI/CLI.hpp>
#include <atomic>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace bertha::cli {

using load::FlowKey;
using load::Hook;
using load::Loader;
using load::StageSpec;

// Exit codes: 0 done, 1 the operation failed, 2 the command line was wrong.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

struct Globals {
    bool json = false;
    bool verbose = false;
    std::string bpffs; // Options::root
};

// A subcommand: registered before parsing, run after it when it was the one given.
struct Command {
    CLI::App* app = nullptr;
    std::function<int()> run;
};

Command add_probe(CLI::App& app, const Globals& g);
Command add_attach(CLI::App& app, const Globals& g);
Command add_detach(CLI::App& app, const Globals& g);
Command add_status(CLI::App& app, const Globals& g);
Command add_stats(CLI::App& app, const Globals& g);
Command add_explain(CLI::App& app, const Globals& g);
Command add_serve(CLI::App& app, const Globals& g);
Command add_stages(CLI::App& app, const Globals& g);

// "bertha-load: <what>" on stderr and, with --json, {"error":{...}} on stdout. Returns `exit`.
int report(const Globals& g, const Error& e, int exit = kExitFailure);
// The same for a command-line mistake (exit code 2): a value that does not parse.
int usage(const Globals& g, std::string message);
inline int report_usage(const Globals& g, const Error& e) {
    return report(g, e, kExitUsage);
}
std::string error_json(std::string_view code, std::string_view component, std::string_view message);

Result<Loader> open_loader(const Globals& g, load::Options opts = {});

Hook parse_hook(std::string_view text); // CLI11 has checked it is "xdp" or "tc-egress"
// "198.18.0.2:5000", "[::1]:5000", or an address alone (any port of that peer).
Result<Addr> parse_peer(std::string_view text);
// Stage specs checked against the registry for the hook: names, hooks and configuration keys.
Result<std::vector<StageSpec>> parse_stages(const std::vector<std::string>& specs, Hook hook);

// "udp/7000 from 198.18.0.2:5000": a flow without its interface and hook.
std::string flow_text(const FlowKey& k);
std::string chain_text(const std::vector<StageSpec>& stages);
void write_flow(JsonWriter& w, const FlowKey& k); // {"hook","port","peer"} fields, in an object

// SIGINT/SIGTERM set the flag (no SA_RESTART: sleeps and polls return early to look at it).
const std::atomic<bool>& stop_on_signals();

} // namespace bertha::cli
