#include "loader/cli/common.hpp"

#include "loader/agent_protocol.hpp"
#include "loader/stages.hpp"

#include <csignal>
#include <cstdio>

namespace bertha::cli {

std::string error_json(std::string_view code, std::string_view component,
                       std::string_view message) {
    JsonWriter w;
    w.begin_object().key("error").begin_object();
    w.field("code", code).field("component", component).field("message", message);
    w.end_object().end_object();
    return w.str();
}

int report(const Globals& g, const Error& e, int exit) {
    std::fprintf(stderr, "bertha-load: %s\n", e.what().c_str());
    if (g.json) {
        // The message as what() prints it (errno text included), without the component prefix.
        std::string message = e.what();
        if (!e.component.empty() && message.starts_with(e.component + ": "))
            message = message.substr(e.component.size() + 2);
        std::printf("%s\n",
                    error_json(load::proto::errc_name(e.code), e.component, message).c_str());
    }
    return exit;
}

int usage(const Globals& g, std::string message) {
    // Worded like CLI11's own parse errors, and the same JSON code.
    std::fprintf(stderr, "bertha-load: %s\n", message.c_str());
    if (g.json) std::printf("%s\n", error_json("usage", "bertha-load", message).c_str());
    return kExitUsage;
}

Result<Loader> open_loader(const Globals& g, load::Options opts) {
    if (opts.root.empty()) opts.root = g.bpffs;
    return Loader::open(std::move(opts));
}

Hook parse_hook(std::string_view text) {
    return text == "tc-egress" ? Hook::tc_egress : Hook::xdp;
}

Result<Addr> parse_peer(std::string_view text) {
    if (auto a = Addr::parse(text)) return a;
    // An address alone: any port of that peer (port 0 in the flow key).
    std::string s(text);
    auto bare = Addr::parse(s.find(':') != std::string::npos && s.front() != '[' ? "[" + s + "]:0"
                                                                                 : s + ":0");
    if (bare) return bare;
    return Addr::parse(text); // its error names the expected forms
}

Result<std::vector<StageSpec>> parse_stages(const std::vector<std::string>& specs, Hook hook) {
    std::vector<StageSpec> out;
    const auto known = load::known_stages();
    for (auto& text : specs) {
        auto s = StageSpec::parse(text);
        if (!s) return std::unexpected(s.error());
        auto it = std::find_if(known.begin(), known.end(),
                               [&](const load::StageInfo& i) { return i.name == s->name; });
        if (it == known.end()) {
            std::string names;
            for (auto& i : known) names += (names.empty() ? "" : ", ") + std::string(i.name);
            return fail(Errc::invalid_argument, "stage " + s->name,
                        "no such stage (known: " + names + "; see `bertha-load stages`)");
        }
        if (hook == Hook::xdp ? !it->xdp : !it->tc)
            return fail(Errc::invalid_argument, "stage " + s->name,
                        "has no program for the " + std::string(load::to_string(hook)) + " hook");
        if (auto c = load::parse_config(*it, s->config); !c) return std::unexpected(c.error());
        out.push_back(std::move(*s));
    }
    return out;
}

std::string flow_text(const FlowKey& k) {
    std::string s = "udp/" + std::to_string(k.port);
    if (k.peer) s += (k.hook == Hook::xdp ? " from " : " to ") + k.peer->to_string();
    return s;
}

std::string chain_text(const std::vector<StageSpec>& stages) {
    std::string s;
    for (auto& st : stages) s += (s.empty() ? "" : " -> ") + st.text();
    return s;
}

void write_flow(JsonWriter& w, const FlowKey& k) {
    w.field("hook", load::to_string(k.hook)).field("port", k.port).key("peer");
    if (k.peer)
        w.value(k.peer->to_string());
    else
        w.null();
}

namespace {
std::atomic<bool> g_stop{false};
void on_stop_signal(int) {
    g_stop.store(true);
}
} // namespace

const std::atomic<bool>& stop_on_signals() {
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; // no SA_RESTART: poll()/nanosleep return EINTR and the caller looks
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    return g_stop;
}

} // namespace bertha::cli
