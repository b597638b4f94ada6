// bertha-load: the command line of libbertha-load, in the manner of xdp-loader and bpftool.
// Global options come before or after the subcommand; every subcommand lives in its own file
// (cmd_*.cpp) and returns the exit code: 0 done, 1 failed, 2 the command line was wrong.
#include "loader/cli/common.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

constexpr const char* kVersion = "bertha-load 0.1 (agent protocol v1)";

// A parse error happens before --json is known for sure: look for it in argv.
bool wants_json(int argc, char** argv) {
    for (int i = 1; i < argc; ++i)
        if (!std::strcmp(argv[i], "--json")) return true;
    return false;
}

} // namespace

int main(int argc, char** argv) {
    using namespace bertha::cli;
    Globals g;
    CLI::App app{"Attach, inspect and detach Bertha's offload chains (BPF dispatchers and "
                 "stages) on network interfaces.",
                 "bertha-load"};
    app.set_version_flag("--version", kVersion);
    app.add_flag("--json", g.json, "Machine-readable output: one JSON object on stdout");
    app.add_option("--bpffs", g.bpffs,
                   "Directory of Bertha's pins (default: $BERTHA_BPFFS, else /sys/fs/bpf/bertha)");
    app.add_flag("-v,--verbose", g.verbose, "Log what the loader does (as BERTHA_LOG=debug)");
    app.require_subcommand(1, 1);
    app.fallthrough(); // global options may also follow the subcommand

    std::vector<Command> commands = {add_probe(app, g),  add_attach(app, g), add_detach(app, g),
                                     add_status(app, g), add_stats(app, g),  add_explain(app, g),
                                     add_serve(app, g),  add_stages(app, g)};
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0) return app.exit(e); // --help, --version
        g.json = wants_json(argc, argv);
        if (g.json) std::printf("%s\n", error_json("usage", "bertha-load", e.what()).c_str());
        app.exit(e); // prints the message and the --help hint on stderr
        return kExitUsage;
    }
    // Before anything logs: bertha::log_level() reads the environment once.
    if (g.verbose) setenv("BERTHA_LOG", "debug", 1);
    for (auto& c : commands)
        if (c.app->parsed()) return c.run();
    return kExitUsage;
}
