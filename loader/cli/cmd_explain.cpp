// `bertha-load explain`: run one packet through an interface's live root and chain
// (BPF_PROG_TEST_RUN; nothing is sent) and say what each step did, the verdict, and which bytes
// the chain changed.
#include "loader/cli/common.hpp"

#include "loader/cli/pcap.hpp"

#include <cstdio>

namespace bertha::cli {
namespace {

struct Args {
    std::string iface, hook = "xdp", hex, pcap;
    uint64_t index = 1;
};

// Hex digits, optionally separated by spaces, colons or newlines (as tcpdump -xx, Wireshark's
// "copy as hex" and od print them), with an optional leading 0x.
Result<std::vector<uint8_t>> parse_hex(std::string_view text) {
    auto bad = [](std::string why) { return fail(Errc::invalid_argument, "--packet", why); };
    if (text.starts_with("0x") || text.starts_with("0X")) text.remove_prefix(2);
    std::vector<uint8_t> out;
    int high = -1;
    for (size_t i = 0; i < text.size(); ++i) {
        char c = text[i];
        if (c == ' ' || c == ':' || c == '\n' || c == '\t' || c == '\r') {
            if (high >= 0) return bad("a lone hex digit before offset " + std::to_string(i));
            continue;
        }
        int v = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (v < 0)
            return bad("'" + std::string(1, c) + "' at offset " + std::to_string(i) +
                       " is not a hex digit");
        if (high < 0) {
            high = v;
        } else {
            out.push_back(uint8_t(high << 4 | v));
            high = -1;
        }
        if (out.size() > 65535) return bad("longer than 65535 bytes");
    }
    if (high >= 0) return bad("an odd number of hex digits");
    if (out.empty()) return bad("no bytes");
    return out;
}

struct Change {
    size_t offset, length;
};

// Runs of differing bytes over the common length.
std::vector<Change> changes(std::span<const uint8_t> a, std::span<const uint8_t> b) {
    std::vector<Change> out;
    const size_t n = std::min(a.size(), b.size());
    for (size_t i = 0; i < n;) {
        if (a[i] == b[i]) {
            ++i;
            continue;
        }
        size_t j = i;
        while (j < n && a[j] != b[j]) ++j;
        out.push_back({i, j - i});
        i = j;
    }
    return out;
}

std::string hex(std::span<const uint8_t> bytes, size_t max = 16) {
    std::string s;
    char buf[4];
    for (size_t i = 0; i < bytes.size() && i < max; ++i) {
        std::snprintf(buf, sizeof buf, "%02x", bytes[i]);
        s += (i ? " " : "") + std::string(buf);
    }
    return bytes.size() > max ? s + " ..." : s;
}

std::string what_it_did(const load::ExplainStep& s) {
    if (s.stage == "dispatcher") {
        if (s.did == "hit") return "hit: the packet belongs to a flow, its chain runs";
        if (s.did == "miss") return "miss: no flow for this packet, passed on untouched";
        if (s.did == "pass") return "pass: not a UDP datagram it can read, passed on untouched";
        return s.did;
    }
    if (s.did == "pass") return "pass: handed it on";
    if (s.did == "tx") return "tx: sent it back out of the interface";
    if (s.did == "redirect") return "redirect: sent it elsewhere";
    if (s.did == "drop") return "drop: dropped it";
    if (s.did == "error") return "error: could not do its job, passed it on untouched";
    return s.did;
}

int run(const Args& a, const Globals& g) {
    if (a.hex.empty() == a.pcap.empty())
        return usage(g, "give the packet: --packet HEX or --pcap FILE");
    std::vector<uint8_t> pkt;
    std::string note;
    if (!a.hex.empty()) {
        auto p = parse_hex(a.hex);
        if (!p) return report_usage(g, p.error());
        pkt = std::move(*p);
        if (pkt.size() < 14)
            return usage(g, "--packet: a packet starts with its 14-byte Ethernet header (got " +
                                std::to_string(pkt.size()) + " bytes)");
    } else {
        auto p = read_pcap(a.pcap, a.index);
        if (!p) return report(g, p.error());
        if (p->data.size() < p->orig_len)
            note = "the capture kept " + std::to_string(p->data.size()) + " of its " +
                   std::to_string(p->orig_len) + " bytes (snaplen): the run sees the cut packet";
        pkt = std::move(p->data);
    }
    const Hook hook = parse_hook(a.hook);
    auto loader = open_loader(g);
    if (!loader) return report(g, loader.error());
    auto ex = loader->explain(a.iface, hook, pkt);
    if (!ex) return report(g, ex.error());
    const auto diff = changes(pkt, ex->out);

    if (g.json) {
        JsonWriter w;
        w.begin_object().field("iface", a.iface).field("hook", load::to_string(hook));
        w.field("length", pkt.size()).field("parse", ex->parse).key("steps").begin_array();
        for (auto& s : ex->steps) {
            w.begin_object().field("stage", s.stage).key("chain");
            if (s.chain == BERTHA_NO_CHAIN)
                w.null();
            else
                w.value(s.chain);
            w.field("position", s.position).field("did", s.did).end_object();
        }
        w.end_array().field("verdict", ex->verdict).field("verdict_name", ex->verdict_name);
        w.field("changed", ex->changed).field("length_out", ex->out.size());
        w.key("changes").begin_array();
        for (auto& c : diff) {
            w.begin_object().field("offset", c.offset).field("length", c.length);
            w.field("before", hex({pkt.data() + c.offset, c.length}, c.length));
            w.field("after", hex({ex->out.data() + c.offset, c.length}, c.length)).end_object();
        }
        w.end_array();
        if (!note.empty()) w.field("note", note);
        std::printf("%s\n", w.end_object().str().c_str());
        return kExitOk;
    }
    std::printf("%s %s: a %zu-byte packet\n", a.iface.c_str(),
                std::string(load::to_string(hook)).c_str(), pkt.size());
    if (!note.empty()) std::printf("note: %s\n", note.c_str());
    std::printf("parse:   %s\n", ex->parse.c_str());
    int n = 0;
    for (auto& s : ex->steps) {
        if (s.stage == "dispatcher")
            std::printf("  %d. dispatcher: %s\n", ++n, what_it_did(s).c_str());
        else
            std::printf("  %d. chain %u stage %u (%s): %s\n", ++n, s.chain, s.position,
                        s.stage.c_str(), what_it_did(s).c_str());
    }
    if (ex->steps.empty()) std::printf("  (no step was recorded)\n");
    std::printf("verdict: %s\n", ex->verdict_name.c_str());
    if (!ex->changed) {
        std::printf("packet:  unchanged\n");
        return kExitOk;
    }
    std::printf("packet:  changed");
    if (ex->out.size() != pkt.size())
        std::printf(", length %zu -> %zu", pkt.size(), ex->out.size());
    std::printf("\n");
    for (auto& c : diff)
        std::printf("  bytes %zu-%zu: %s -> %s\n", c.offset, c.offset + c.length - 1,
                    hex({pkt.data() + c.offset, c.length}).c_str(),
                    hex({ex->out.data() + c.offset, c.length}).c_str());
    return kExitOk;
}

} // namespace

Command add_explain(CLI::App& app, const Globals& g) {
    auto a = std::make_shared<Args>();
    auto* sub = app.add_subcommand("explain", "Run one packet through the live chain (nothing is "
                                              "sent) and say what each step did");
    sub->add_option("--iface", a->iface, "Interface")->required();
    sub->add_option("--hook", a->hook, "xdp (default) or tc-egress")
        ->check(CLI::IsMember({"xdp", "tc-egress"}));
    auto* hex = sub->add_option("--packet", a->hex,
                                "The packet from its Ethernet header on, in hex "
                                "(spaces and colons allowed)");
    auto* pcap =
        sub->add_option("--pcap", a->pcap, "A classic pcap file (Ethernet)")->excludes(hex);
    sub->add_option("--index", a->index, "Which packet of the pcap, from 1 (default 1)")
        ->check(CLI::Range(uint64_t(1), uint64_t(1) << 40))
        ->needs(pcap);
    return {sub, [a, &g] { return run(*a, g); }};
}

} // namespace bertha::cli
