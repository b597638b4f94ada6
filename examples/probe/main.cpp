// probe: what this host can do for Bertha's offloads, one feature per line with yes/no and the
// reason (bertha::probe). With --peer, the interface that routes to the peer is probed too; with
// --json the same report is one JSON object. Exit status: 0 report printed, 1 the peer or
// interface could not be resolved, 2 bad arguments.
#include "bertha/discovery.hpp"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <net/if.h>
#include <optional>

namespace {

// "198.18.0.2:7000", "[::1]:7", or a bare address (the port does not matter for a route).
bertha::Result<bertha::Addr> parse_peer(const std::string& text) {
    if (auto a = bertha::Addr::parse(text)) return a;
    if (auto a = bertha::Addr::parse(text + ":0")) return a;
    return bertha::Addr::parse("[" + text + "]:0");
}

} // namespace

int main(int argc, char** argv) {
    CLI::App app{"Bertha host probe: XDP native/generic, AF_XDP copy/zero-copy on the interface "
                 "towards a peer; TC (tcx, clsact), BTF, BPF loading, privilege and the agent on "
                 "this host. Every 'no' says why."};
    std::string peer_text, ifname, method = "auto";
    bool json = false;
    app.add_option("--peer", peer_text, "probe the interface that routes to this address");
    app.add_option("--interface", ifname, "probe this interface")->excludes("--peer");
    app.add_option("--xdp-method", method,
                   "how to decide XDP native: auto (xdp-features, else a trial attach), "
                   "features, trial (attach an XDP_PASS program in driver mode and detach it)")
        ->check(CLI::IsMember({"auto", "features", "trial"}))
        ->capture_default_str();
    app.add_flag("--json", json, "print the report as one JSON object");
    CLI11_PARSE(app, argc, argv);

    bertha::ProbeOptions opts;
    if (method == "features") opts.xdp_method = bertha::XdpMethod::features;
    if (method == "trial") opts.xdp_method = bertha::XdpMethod::trial_attach;

    std::optional<bertha::Route> route;
    int ifindex = 0;
    std::string no_interface;
    if (!peer_text.empty()) {
        auto peer = parse_peer(peer_text);
        if (!peer) {
            std::fprintf(stderr, "probe: %s\n", peer.error().what().c_str());
            return 2;
        }
        auto r = bertha::route_to(*peer);
        if (!r) {
            std::fprintf(stderr, "probe: %s\n", r.error().what().c_str());
            return 1;
        }
        route = *r;
        ifindex = r->ifindex;
    } else if (!ifname.empty()) {
        ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
        if (ifindex == 0) {
            std::fprintf(stderr, "probe: no interface named '%s'\n", ifname.c_str());
            return 1;
        }
    }
    bertha::ProbeReport report = bertha::probe_now(ifindex, opts, no_interface);
    const bertha::Route* rp = route ? &*route : nullptr;
    std::fputs((json ? report.json(rp) : report.text(rp)).c_str(), stdout);
    return 0;
}
