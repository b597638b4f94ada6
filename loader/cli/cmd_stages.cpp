// `bertha-load stages`: what can go into a chain (loader/stages.cpp's registry).
#include "loader/cli/common.hpp"

#include "loader/cli/table.hpp"

#include <cstdio>

namespace bertha::cli {
namespace {

int run(const Globals& g) {
    const auto stages = load::known_stages();
    if (g.json) {
        JsonWriter w;
        w.begin_object().key("stages").begin_array();
        for (auto& s : stages) {
            w.begin_object()
                .field("name", s.name)
                .field("summary", s.summary)
                .key("hooks")
                .begin_array();
            if (s.xdp) w.value("xdp");
            if (s.tc) w.value("tc-egress");
            w.end_array().key("keys").begin_array();
            for (auto k : s.keys) w.value(k);
            w.end_array().end_object();
        }
        std::printf("%s\n", w.end_array().end_object().str().c_str());
        return kExitOk;
    }
    Table t({"stage", "hooks", "keys", "what it does"});
    for (auto& s : stages) {
        std::string hooks = s.xdp && s.tc ? "xdp, tc-egress" : s.xdp ? "xdp" : "tc-egress";
        std::string keys;
        for (auto k : s.keys) keys += (keys.empty() ? "" : ", ") + std::string(k);
        t.add({std::string(s.name), hooks, keys.empty() ? "-" : keys, std::string(s.summary)});
    }
    std::printf("%s", t.str().c_str());
    return kExitOk;
}

} // namespace

Command add_stages(CLI::App& app, const Globals& g) {
    auto* sub = app.add_subcommand("stages", "List the stages a chain can hold");
    return {sub, [&g] { return run(g); }};
}

} // namespace bertha::cli
