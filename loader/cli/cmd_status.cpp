// `bertha-load status`: per interface, its roots (hook, mode, program, link), its flows (chain,
// hook, flow, references, stages with their program ids) and its pins: what an operator needs
// to see at a glance, and to find the same objects in `bpftool prog`/`bpftool link`.
#include "loader/cli/common.hpp"

#include "loader/cli/table.hpp"

#include <bpf/bpf.h>
#include <cstdio>
#include <unistd.h>

namespace bertha::cli {
namespace {

// "bertha_disp (id 42)"; the id alone when the program cannot be looked up.
std::string prog_text(uint32_t id) {
    if (id == 0) return "-";
    std::string name;
    int fd = bpf_prog_get_fd_by_id(id);
    if (fd >= 0) {
        bpf_prog_info info{};
        uint32_t len = sizeof info;
        if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0) name = info.name;
        ::close(fd);
    }
    return name.empty() ? "id " + std::to_string(id) : name + " (id " + std::to_string(id) + ")";
}

std::string mode_text(const load::HookStatus& h) {
    if (h.attached) return h.mode;
    return h.prog_id ? "loaded, not attached" : "-";
}

void write_hook(JsonWriter& w, std::string_view name, const load::HookStatus& h) {
    w.key(name).begin_object();
    w.field("attached", h.attached).field("mode", h.mode).field("prog_id", h.prog_id);
    w.field("link_id", h.link_id).end_object();
}

void print_iface(const load::IfaceStatus& s) {
    std::printf("%s", s.ifname.c_str());
    if (s.ifindex)
        std::printf(" (ifindex %d)", s.ifindex);
    else
        std::printf(
            " (not in this network namespace, or gone: `detach --iface %s --all` removes the pins)",
            s.ifname.c_str());
    std::printf("  pins: %s\n", s.dir.c_str());

    Table roots({"hook", "mode", "program", "link"}, "  ");
    roots.add({"xdp", mode_text(s.xdp), prog_text(s.xdp.prog_id),
               s.xdp.link_id ? std::to_string(s.xdp.link_id) : "-"});
    roots.add({"tc-egress", mode_text(s.tc), prog_text(s.tc.prog_id),
               s.tc.link_id ? std::to_string(s.tc.link_id) : "-"});
    std::printf("%s\n", roots.str().c_str());

    if (s.chains.empty()) {
        std::printf("  no flows\n\n");
    } else {
        Table flows({"chain", "hook", "flow", "refs", "stages"}, "  ");
        flows.right(0).right(3);
        for (auto& c : s.chains) {
            std::string stages;
            for (size_t i = 0; i < c.stages.size(); ++i)
                stages +=
                    (i ? " -> " : "") + c.stages[i].text() +
                    (i < c.prog_ids.size() ? " (id " + std::to_string(c.prog_ids[i]) + ")" : "");
            flows.add({std::to_string(c.chain), std::string(load::to_string(c.key.hook)),
                       flow_text(c.key), std::to_string(c.refs), stages});
        }
        std::printf("%s\n", flows.str().c_str());
    }
    std::string pins;
    for (auto& p : s.pins) pins += (pins.empty() ? "" : " ") + p;
    std::printf("  pinned: %s\n", pins.empty() ? "(nothing)" : pins.c_str());
}

void write_iface(JsonWriter& w, const load::IfaceStatus& s) {
    w.begin_object().field("iface", s.ifname).field("ifindex", s.ifindex).field("dir", s.dir);
    write_hook(w, "xdp", s.xdp);
    write_hook(w, "tc", s.tc);
    w.key("chains").begin_array();
    for (auto& c : s.chains) {
        w.begin_object().field("chain", c.chain).field("refs", c.refs).key("flow").begin_object();
        write_flow(w, c.key);
        w.end_object().key("stages").begin_array();
        for (size_t i = 0; i < c.stages.size(); ++i) {
            w.begin_object().field("name", c.stages[i].name).field("config", c.stages[i].config);
            w.field("prog_id", i < c.prog_ids.size() ? c.prog_ids[i] : 0u).end_object();
        }
        w.end_array().end_object();
    }
    w.end_array().key("pins").begin_array();
    for (auto& p : s.pins) w.value(p);
    w.end_array().end_object();
}

int run(const std::string& iface, const Globals& g) {
    auto loader = open_loader(g);
    if (!loader) return report(g, loader.error());
    auto st = loader->status(iface);
    // Nothing on the interface asked about is an answer, not a failure.
    if (!st && !(st.error().code == Errc::unavailable && !iface.empty()))
        return report(g, st.error());
    std::vector<load::IfaceStatus> ifaces = st ? std::move(*st) : std::vector<load::IfaceStatus>{};
    if (g.json) {
        JsonWriter w;
        w.begin_object().field("root", loader->root()).key("interfaces").begin_array();
        for (auto& s : ifaces) write_iface(w, s);
        std::printf("%s\n", w.end_array().end_object().str().c_str());
        return kExitOk;
    }
    if (ifaces.empty()) {
        std::printf("no Bertha state under %s%s\n", loader->root().c_str(),
                    iface.empty() ? "" : (" for " + iface).c_str());
        return kExitOk;
    }
    for (size_t i = 0; i < ifaces.size(); ++i) {
        if (i) std::printf("\n");
        print_iface(ifaces[i]);
    }
    return kExitOk;
}

} // namespace

Command add_status(CLI::App& app, const Globals& g) {
    auto iface = std::make_shared<std::string>();
    auto* sub = app.add_subcommand("status", "Show the roots, flows and pins of each interface");
    sub->add_option("--iface", *iface, "Only this interface");
    return {sub, [iface, &g] { return run(*iface, g); }};
}

} // namespace bertha::cli
