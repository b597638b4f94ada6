// `bertha-load serve`: the agent (loader/agent.hpp) in the foreground, until SIGINT or SIGTERM.
// An agent is a daemon whose log is its record of who attached what: unless BERTHA_LOG says
// otherwise, it logs at info level (every attach, refusal and disconnect, on stderr).
#include "loader/cli/common.hpp"

#include "loader/agent.hpp"

#include <cstdlib>

namespace bertha::cli {
namespace {

struct Args {
    std::string policy, socket;
};

int run(const Args& a, const Globals& g) {
    if (!std::getenv("BERTHA_LOG")) setenv("BERTHA_LOG", "info", 1);
    // Check the policy before touching bpffs: a typo should not cost a mount.
    if (auto p = load::Policy::load(a.policy); !p) return report(g, p.error());
    auto loader = open_loader(g);
    if (!loader) return report(g, loader.error());
    load::ServeOptions opts;
    opts.policy_path = a.policy;
    opts.socket_path = a.socket;
    opts.stop = &stop_on_signals();
    if (auto r = load::serve(*loader, opts); !r) return report(g, r.error());
    return kExitOk;
}

} // namespace

Command add_serve(CLI::App& app, const Globals& g) {
    auto a = std::make_shared<Args>();
    auto* sub = app.add_subcommand("serve", "Run the agent: attach flows for local applications "
                                            "that its policy allows");
    sub->add_option("--policy", a->policy, "Policy file (see loader/README.md)")->required();
    sub->add_option("--socket", a->socket,
                    "Unix socket (default: $BERTHA_AGENT_SOCKET, else /run/bertha/agent.sock)");
    return {sub, [a, &g] { return run(*a, g); }};
}

} // namespace bertha::cli
