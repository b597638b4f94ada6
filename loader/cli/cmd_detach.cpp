// `bertha-load detach`: one flow (every reference to it: the operator overrides whoever holds
// it), or everything of Bertha's on an interface, or on every interface.
#include "loader/cli/common.hpp"

#include "loader/bpffs.hpp"

#include <cstdio>

namespace bertha::cli {
namespace {

struct Args {
    std::string iface, peer, hook = "xdp";
    int port = 0;
    bool all = false;
};

// Everything on each interface with pins (of this network namespace: another one's interfaces
// cannot be reached from here).
int detach_everywhere(Loader& loader, const Globals& g) {
    auto st = loader.status();
    if (!st) return report(g, st.error());
    JsonWriter w;
    w.begin_object().key("detached").begin_array();
    int rc = kExitOk;
    for (auto& s : *st) {
        const std::string dir = s.dir.substr(s.dir.rfind('/') + 1);
        if (dir != load::iface_dir_name(s.ifname)) {
            std::fprintf(stderr, "bertha-load: skipping %s: pins of another network namespace\n",
                         s.dir.c_str());
            continue;
        }
        if (auto r = loader.detach_all(s.ifname); !r) {
            rc = report(g, r.error());
            continue;
        }
        w.value(s.ifname);
        if (!g.json) std::printf("detached everything on %s\n", s.ifname.c_str());
    }
    if (g.json)
        std::printf("%s\n", w.end_array().end_object().str().c_str());
    else if (st->empty())
        std::printf("no Bertha state under %s\n", loader.root().c_str());
    return rc;
}

int run(const Args& a, const Globals& g) {
    if (a.iface.empty() && !a.all) return usage(g, "name an --iface, or --all");
    if (a.all && a.port) return usage(g, "--all detaches every flow: it takes no --port");
    if (!a.port && (!a.peer.empty() || a.hook != "xdp"))
        return usage(g, "--peer and --hook name a flow: give its --port too");
    auto loader = open_loader(g);
    if (!loader) return report(g, loader.error());
    if (a.all && a.iface.empty()) return detach_everywhere(*loader, g);

    std::optional<FlowKey> key;
    if (a.port) {
        key = FlowKey{a.iface, parse_hook(a.hook), uint16_t(a.port), std::nullopt};
        if (!a.peer.empty()) {
            auto peer = parse_peer(a.peer);
            if (!peer) return report_usage(g, peer.error());
            key->peer = *peer;
        }
    } else if (!a.all) {
        // The interface alone undoes `attach --iface IF` (the dispatcher), but never silently
        // takes flows with it.
        auto st = loader->status(a.iface);
        if (!st) return report(g, st.error());
        if (!st->empty() && !st->front().chains.empty())
            return usage(g, a.iface + " has " + std::to_string(st->front().chains.size()) +
                                " flow(s): name one with --port, or detach them all with --all");
    }
    auto r = key ? loader->detach(*key, true) : loader->detach_all(a.iface);
    if (!r) return report(g, r.error());
    if (g.json) {
        JsonWriter w;
        w.begin_object().field("iface", a.iface);
        w.key("flow");
        if (key) {
            w.begin_object();
            write_flow(w, *key);
            w.end_object();
        } else {
            w.null();
        }
        std::printf("%s\n", w.end_object().str().c_str());
    } else if (key) {
        std::printf("detached %s (every reference)\n", key->text().c_str());
    } else {
        std::printf("detached everything on %s\n", a.iface.c_str());
    }
    return kExitOk;
}

} // namespace

Command add_detach(CLI::App& app, const Globals& g) {
    auto a = std::make_shared<Args>();
    auto* sub = app.add_subcommand("detach", "Detach a flow (all its references), or everything "
                                             "on an interface");
    sub->add_option("--iface", a->iface, "Interface");
    sub->add_option("--port", a->port, "The flow's local UDP port")->check(CLI::Range(1, 65535));
    sub->add_option("--peer", a->peer, "The flow's peer, ADDR[:PORT], as it was attached");
    sub->add_option("--hook", a->hook, "xdp (default) or tc-egress")
        ->check(CLI::IsMember({"xdp", "tc-egress"}));
    sub->add_flag("--all", a->all,
                  "Every flow and root on --iface (on every interface without it)");
    return {sub, [a, &g] { return run(*a, g); }};
}

} // namespace bertha::cli
