// `bertha-load probe`: what this host (and an interface, or the one towards a peer) can do for
// Bertha's offloads: the discovery report that select uses.
#include "loader/cli/common.hpp"

#include "bertha/discovery.hpp"

#include <cstdio>

namespace bertha::cli {

Command add_probe(CLI::App& app, const Globals& g) {
    struct Args {
        std::string iface, peer;
    };
    auto a = std::make_shared<Args>();
    auto* sub = app.add_subcommand("probe", "Report what this host and an interface support");
    auto* iface = sub->add_option("--iface", a->iface, "Interface to look at");
    sub->add_option("--peer", a->peer, "Look at the interface that routes to ADDR[:PORT]")
        ->excludes(iface);
    return {sub, [a, &g]() -> int {
                std::optional<Route> route;
                const ProbeReport* report = nullptr;
                if (!a->peer.empty()) {
                    auto peer = parse_peer(a->peer);
                    if (!peer) return report_usage(g, peer.error());
                    if (auto r = route_to(*peer)) route = *r;
                    report = &probe(&*peer);
                } else if (!a->iface.empty()) {
                    report = &probe_interface(a->iface);
                } else {
                    report = &probe();
                }
                const Route* rp = route ? &*route : nullptr;
                std::printf("%s",
                            g.json ? (report->json(rp) + "\n").c_str() : report->text(rp).c_str());
                // Asked about an interface that is not there: say so in the exit code too.
                if ((!a->iface.empty() || !a->peer.empty()) && !report->interface) {
                    std::fprintf(stderr, "bertha-load: %s\n", report->no_interface.c_str());
                    return kExitFailure;
                }
                return kExitOk;
            }};
}

} // namespace bertha::cli
