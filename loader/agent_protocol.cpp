// The agent's wire protocol (agent_protocol.hpp): one request and one reply per SOCK_SEQPACKET
// message, versioned, every field bounded and checked.
#include "loader/agent.hpp"


#include "bertha/discovery.hpp"
#include "bertha/log.hpp"
#include "loader/agent_protocol.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <grp.h>
#include <map>
#include <memory>
#include <net/if.h>
#include <poll.h>
#include <pwd.h>
#include <sstream>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <type_traits>
#include <unistd.h>
#include <utility>


namespace bertha::load {

// ---- protocol --------------------------------------------------------------------------------
namespace proto {
namespace {

constexpr std::string_view kRequest = "request";


std::string quoted(std::string_view s) {
    return "'" + escape(s.substr(0, 80)) + "'";
}

} // namespace

std::string_view errc_name(Errc c) noexcept {
    switch (c) {
    case Errc::invalid_argument:
        return "invalid_argument";
    case Errc::unavailable:
        return "unavailable";
    case Errc::incompatible:
        return "incompatible";
    case Errc::system:
        return "system";
    case Errc::no_buffers:
        return "no_buffers";
    case Errc::closed:
        return "closed";
    }
    return "system";
}

std::optional<Errc> errc_from_name(std::string_view name) noexcept {
    for (Errc c : {Errc::invalid_argument, Errc::unavailable, Errc::incompatible, Errc::system,
                   Errc::no_buffers, Errc::closed})
        if (errc_name(c) == name) return c;
    return std::nullopt;
}

std::string escape(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (char ch : text) {
        auto c = static_cast<unsigned char>(ch);
        if (ch == '\\')
            out += "\\\\";
        else if (ch == '\n')
            out += "\\n";
        else if (ch == '\t')
            out += "\\t";
        else if (c < 0x20 || c >= 0x7f)
            out += '?';
        else
            out += ch;
    }
    return out;
}

std::string unescape(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (size_t i = 0; i < text.size(); ++i) {
        if (text[i] != '\\' || i + 1 == text.size()) {
            out += text[i];
            continue;
        }
        char n = text[++i];
        out += n == 'n' ? '\n' : n == 't' ? '\t' : n;
    }
    return out;
}

Result<void> check_ifname(std::string_view name) {
    // The kernel's dev_valid_name(): 1..IFNAMSIZ-1 bytes, not "." or "..", no '/', ':' or space.
    auto bad = [&](const std::string& why) {
        return fail(Errc::invalid_argument, "interface", "name " + quoted(name) + " " + why);
    };
    if (name.empty()) return bad("is empty");
    if (name.size() >= IFNAMSIZ)
        return bad("is longer than " + std::to_string(IFNAMSIZ - 1) + " characters");
    if (name == "." || name == "..") return bad("is not an interface name");
    for (char c : name)
        if (c == '/' || c == ':' || c <= 0x20 || c >= 0x7f)
            return bad("has a character interface names cannot have");
    return {};
}

Result<uint16_t> parse_port(std::string_view text) {
    unsigned v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (text.empty() || text.size() > 5 || ec != std::errc{} || end != text.data() + text.size() ||
        v < 1 || v > 65535)
        return fail(Errc::invalid_argument, "port",
                    quoted(text) + " is not a port (a number from 1 to 65535)");
    return uint16_t(v);
}

Result<Request> parse_request(std::string_view msg) {
    auto bad = [](std::string why) {
        return fail(Errc::invalid_argument, std::string(kRequest), why);
    };
    if (msg.size() > kMaxRequest)
        return bad("longer than " + std::to_string(kMaxRequest) + " bytes");
    if (!msg.empty() && msg.back() == '\n') msg.remove_suffix(1);
    if (msg.empty())
        return bad("empty: a request starts with the protocol version " + std::string(kVersion));
    for (size_t i = 0; i < msg.size(); ++i) {
        auto c = static_cast<unsigned char>(msg[i]);
        if (c < 0x20 || c >= 0x7f)
            return bad("a control or non-ASCII byte at offset " + std::to_string(i));
    }
    const auto f = split(msg, ' ');
    for (size_t i = 0; i < f.size(); ++i)
        if (f[i].empty())
            return bad("field " + std::to_string(i + 1) +
                       " is empty (fields are separated by exactly one space)");
    if (f[0] != kVersion) {
        if (f[0].size() > 1 && f[0][0] == 'v' &&
            std::all_of(f[0].begin() + 1, f[0].end(), [](char c) { return c >= '0' && c <= '9'; }))
            return fail(Errc::incompatible, std::string(kRequest),
                        "this agent speaks " + std::string(kVersion) + ", the request is " +
                            std::string(f[0]));
        return bad("a request starts with the protocol version " + std::string(kVersion));
    }
    if (f.size() < 2) return bad("no operation (attach, detach)");
    Request r;
    if (f[1] == "attach")
        r.op = Op::attach;
    else if (f[1] == "detach")
        r.op = Op::detach;
    else
        return bad("unknown operation " + quoted(f[1]) + " (attach, detach)");
    const char* usage = r.op == Op::attach
                            ? "v1 attach <ifname> <xdp|tc-egress> <port> <peer|-> <stage>..."
                            : "v1 detach <ifname> <xdp|tc-egress> <port> <peer|->";
    if (f.size() < 6 || (r.op == Op::detach && f.size() != 6) ||
        (r.op == Op::attach && f.size() < 7))
        return bad(std::to_string(f.size()) + " fields; the form is " + usage);
    if (auto ok = check_ifname(f[2]); !ok) return std::unexpected(ok.error());
    r.key.ifname = std::string(f[2]);
    if (f[3] == "xdp")
        r.key.hook = Hook::xdp;
    else if (f[3] == "tc-egress")
        r.key.hook = Hook::tc_egress;
    else
        return bad("unknown hook " + quoted(f[3]) + " (xdp, tc-egress)");
    auto port = parse_port(f[4]);
    if (!port) return std::unexpected(port.error());
    r.key.port = *port;
    if (f[5] != "-") {
        auto peer = Addr::parse(f[5]);
        if (!peer) return std::unexpected(peer.error());
        r.key.peer = *peer;
    }
    if (f.size() - 6 > BERTHA_MAX_STAGES)
        return bad(std::to_string(f.size() - 6) + " stages; a chain has at most " +
                   std::to_string(BERTHA_MAX_STAGES));
    for (size_t i = 6; i < f.size(); ++i) {
        auto s = StageSpec::parse(f[i]);
        if (!s) return std::unexpected(s.error());
        r.stages.push_back(std::move(*s));
    }
    return r;
}

Result<std::string> format_request(const Request& r) {
    if (auto ok = check_ifname(r.key.ifname); !ok) return std::unexpected(ok.error());
    if (r.key.port == 0)
        return fail(Errc::invalid_argument, "port", "a flow needs a port (1..65535)");
    const bool attach = r.op == Op::attach;
    if (attach ? (r.stages.empty() || r.stages.size() > BERTHA_MAX_STAGES) : !r.stages.empty())
        return fail(Errc::invalid_argument, std::string(kRequest),
                    attach ? "a chain has 1 to " + std::to_string(BERTHA_MAX_STAGES) + " stages"
                           : "detach names no stages");
    std::string out = std::string(kVersion) + (attach ? " attach " : " detach ") + r.key.ifname +
                      " " + std::string(to_string(r.key.hook)) + " " + std::to_string(r.key.port) +
                      " " + (r.key.peer ? r.key.peer->to_string() : "-");
    for (auto& s : r.stages) {
        // Re-parsing catches what the agent would refuse (names, lengths, spaces).
        auto text = s.text();
        auto back = StageSpec::parse(text);
        if (!back) return std::unexpected(back.error());
        if (text.find_first_of(" \t\n") != std::string::npos)
            return fail(Errc::invalid_argument, "stage " + s.name, "a stage spec has no spaces");
        out += " " + text;
    }
    if (out.size() > kMaxRequest)
        return fail(Errc::invalid_argument, std::string(kRequest),
                    "longer than " + std::to_string(kMaxRequest) + " bytes");
    return out;
}

std::string format_ok(std::string_view payload) {
    return payload.empty() ? std::string("ok") : "ok " + std::string(payload);
}

std::string format_err(const Error& e) {
    std::string m = e.what();
    // Escaping at most doubles the text: keep the head and the tail (a verifier log's end says
    // why it refused) within kMaxReply.
    constexpr size_t kHead = 1024, kTail = 6000;
    if (m.size() > kHead + kTail) m = m.substr(0, kHead) + "\n[...]\n" + m.substr(m.size() - kTail);
    return "err " + std::string(errc_name(e.code)) + " " + escape(m);
}

Result<std::string> parse_reply(std::string_view msg, const std::string& component) {
    if (!msg.empty() && msg.back() == '\n') msg.remove_suffix(1);
    if (msg == "ok") return std::string();
    if (msg.starts_with("ok ")) return std::string(msg.substr(3));
    if (msg.starts_with("err ")) {
        auto rest = msg.substr(4);
        auto sp = rest.find(' ');
        auto code = errc_from_name(rest.substr(0, sp));
        if (code) {
            // "err system" and "err system " alike: an error never has an empty message.
            std::string message =
                sp == std::string_view::npos ? std::string() : unescape(rest.substr(sp + 1));
            if (message.empty()) message = std::string(to_string(*code));
            return std::unexpected(Error{*code, component, std::move(message), 0});
        }
    }
    return fail(Errc::incompatible, component,
                "unexpected reply " + quoted(msg) + " (not a Bertha agent speaking " +
                    std::string(kVersion) + "?)");
}

std::string socket_path(const std::string& configured) {
    if (!configured.empty()) return configured;
    const char* env = std::getenv("BERTHA_AGENT_SOCKET");
    return env && *env ? std::string(env) : std::string(kAgentSocket);
}

Result<sockaddr_un> unix_addr(const std::string& path, const std::string& component) {
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof sun.sun_path)
        return fail(Errc::invalid_argument, component,
                    "a socket path has 1 to " + std::to_string(sizeof sun.sun_path - 1) + " bytes");
    std::memcpy(sun.sun_path, path.c_str(), path.size() + 1);
    return sun;
}

std::string join_ids(std::span<const uint32_t> ids) {
    std::string s;
    for (auto id : ids) s += (s.empty() ? "" : ",") + std::to_string(id);
    return s;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
    std::vector<std::string_view> out;
    for (;;) {
        auto at = s.find(sep);
        out.push_back(s.substr(0, at));
        if (at == std::string_view::npos) return out;
        s = s.substr(at + 1);
    }
}

} // namespace proto
} // namespace bertha::load
