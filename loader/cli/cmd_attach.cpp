// `bertha-load attach`: a flow's chain of stages (attaching the interface's roots as needed), or,
// without --port, only the interface's XDP dispatcher.
#include "loader/cli/common.hpp"

#include <cstdio>

namespace bertha::cli {
namespace {

struct Args {
    std::string iface, peer, hook = "xdp", xdp_mode = "auto", tc_mode = "auto";
    int port = 0;
    bool force = false;
    std::vector<std::string> stages;
};

// How the interface's root for `hook` runs, from status: "generic", "tcx", ...
load::HookStatus root_of(Loader& loader, const std::string& ifname, Hook hook) {
    auto st = loader.status(ifname);
    if (!st || st->empty()) return {};
    return hook == Hook::xdp ? st->front().xdp : st->front().tc;
}

int run(const Args& a, const Globals& g) {
    load::Options opts;
    opts.force = a.force;
    opts.xdp_mode = a.xdp_mode == "native"    ? load::XdpMode::native
                    : a.xdp_mode == "generic" ? load::XdpMode::generic
                                              : load::XdpMode::automatic;
    opts.tc_mode = a.tc_mode == "tcx"      ? load::TcMode::tcx
                   : a.tc_mode == "clsact" ? load::TcMode::clsact
                                           : load::TcMode::automatic;
    const Hook hook = parse_hook(a.hook);
    if (a.port == 0) {
        if (!a.stages.empty() || !a.peer.empty())
            return usage(g, "--stage and --peer describe a flow: give its --port too");
        if (hook != Hook::xdp)
            return usage(
                g, "only the XDP dispatcher attaches on its own; tc-egress comes with a flow");
    } else if (a.stages.empty()) {
        return usage(g, "a flow needs its chain: one --stage NAME[:key=val,...] or more");
    }
    FlowKey key{a.iface, hook, uint16_t(a.port), std::nullopt};
    if (!a.peer.empty()) {
        auto peer = parse_peer(a.peer);
        if (!peer) return report_usage(g, peer.error());
        key.peer = *peer;
    }
    auto stages = parse_stages(a.stages, hook);
    if (!stages) return report_usage(g, stages.error());

    auto loader = open_loader(g, opts);
    if (!loader) return report(g, loader.error());
    std::optional<uint32_t> chain;
    if (a.port == 0) {
        if (auto r = loader->attach_dispatcher(a.iface); !r) return report(g, r.error());
    } else {
        auto c = loader->attach(key, *stages);
        if (!c) return report(g, c.error());
        chain = *c;
    }
    const auto root = root_of(*loader, a.iface, hook);
    if (g.json) {
        JsonWriter w;
        w.begin_object().field("iface", a.iface);
        w.key("chain");
        if (chain)
            w.value(*chain);
        else
            w.null();
        if (chain) {
            w.key("flow").begin_object();
            write_flow(w, key);
            w.end_object();
            w.key("stages").begin_array();
            for (auto& s : *stages) w.value(s.text());
            w.end_array();
        }
        w.field("mode", root.mode)
            .field("root_prog_id", root.prog_id)
            .field("link_id", root.link_id);
        std::printf("%s\n", w.end_object().str().c_str());
        return kExitOk;
    }
    if (chain)
        std::printf("attached chain %u: %s %s %s: %s\n", *chain, a.iface.c_str(),
                    std::string(load::to_string(hook)).c_str(), flow_text(key).c_str(),
                    chain_text(*stages).c_str());
    else
        std::printf("attached the XDP dispatcher on %s\n", a.iface.c_str());
    if (hook == Hook::xdp && root.mode == "generic")
        std::printf(
            "note: the XDP dispatcher on %s runs in generic (skb) mode: slower than native, "
            "and only for packets the stack already received\n",
            a.iface.c_str());
    return kExitOk;
}

} // namespace

Command add_attach(CLI::App& app, const Globals& g) {
    auto a = std::make_shared<Args>();
    auto* sub = app.add_subcommand("attach", "Attach a flow's chain of stages (or, without --port, "
                                             "only the XDP dispatcher)");
    sub->add_option("--iface", a->iface, "Interface")->required();
    sub->add_option("--port", a->port, "The flow's local UDP port")->check(CLI::Range(1, 65535));
    sub->add_option("--peer", a->peer, "Only this peer's packets: ADDR[:PORT] (no port: any)");
    sub->add_option("--hook", a->hook, "xdp (ingress, default) or tc-egress")
        ->check(CLI::IsMember({"xdp", "tc-egress"}));
    sub->add_option("--xdp-mode", a->xdp_mode, "auto (native, else generic), native or generic")
        ->check(CLI::IsMember({"auto", "native", "generic"}));
    sub->add_option("--tc-mode", a->tc_mode, "auto (tcx, else clsact), tcx or clsact")
        ->check(CLI::IsMember({"auto", "tcx", "clsact"}));
    sub->add_flag("--force", a->force, "Replace an XDP program that is not Bertha's");
    sub->add_option("--stage", a->stages, "A stage, NAME[:key=val,...]; repeat in chain order")
        ->allow_extra_args(false);
    return {sub, [a, &g] { return run(*a, g); }};
}

} // namespace bertha::cli
