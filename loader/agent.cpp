// The agent (agent.hpp): its wire protocol (agent_protocol.hpp), its policy, the serving loop and
// the client. One thread serves every client with poll(): loader calls are serialized anyway
// (per interface, across processes), and a single thread makes "which client holds which
// reference" plain data with no locking.
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

std::vector<std::string_view> split(std::string_view s, char sep) {
    std::vector<std::string_view> out;
    for (;;) {
        auto at = s.find(sep);
        out.push_back(s.substr(0, at));
        if (at == std::string_view::npos) return out;
        s = s.substr(at + 1);
    }
}

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
        if (code)
            return std::unexpected(Error{*code, component,
                                         sp == std::string_view::npos
                                             ? std::string(to_string(*code))
                                             : unescape(rest.substr(sp + 1)),
                                         0});
    }
    return fail(Errc::incompatible, component,
                "unexpected reply " + quoted(msg) + " (not a Bertha agent speaking " +
                    std::string(kVersion) + "?)");
}

} // namespace proto

// ---- policy ----------------------------------------------------------------------------------
namespace {

bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

std::vector<std::string_view> words(std::string_view s) {
    std::vector<std::string_view> out;
    size_t i = 0;
    while (i < s.size()) {
        while (i < s.size() && is_space(s[i])) ++i;
        size_t j = i;
        while (j < s.size() && !is_space(s[j])) ++j;
        if (j > i) out.push_back(s.substr(i, j - i));
        i = j;
    }
    return out;
}

std::optional<uint32_t> number(std::string_view s) {
    uint32_t v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc{} || end != s.data() + s.size() || v == UINT32_MAX)
        return std::nullopt; // (uid_t)-1 means "no id" to the kernel
    return v;
}

bool is_digits(std::string_view s) {
    return !s.empty() &&
           std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// getpwnam_r / getgrnam_r with a growing buffer. nullopt: no such name.
template <class Ent, class Fn> std::optional<uint32_t> lookup(const std::string& name, Fn fn) {
    std::vector<char> buf(1024);
    for (;;) {
        Ent ent{};
        Ent* found = nullptr;
        int err = fn(name.c_str(), &ent, buf.data(), buf.size(), &found);
        if (err == ERANGE && buf.size() < (1u << 20)) {
            buf.resize(buf.size() * 2);
            continue;
        }
        if (err || !found) return std::nullopt;
        if constexpr (std::is_same_v<Ent, passwd>)
            return uint32_t(found->pw_uid);
        else
            return uint32_t(found->gr_gid);
    }
}

bool stage_name_ok(std::string_view n) {
    return !n.empty() && n.size() < BERTHA_NAME_LEN && std::all_of(n.begin(), n.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    });
}

std::string join_ids(std::span<const uint32_t> ids) {
    std::string s;
    for (auto id : ids) s += (s.empty() ? "" : ",") + std::to_string(id);
    return s;
}

std::string chain_text(std::span<const StageSpec> stages) {
    std::string s;
    for (auto& st : stages) s += (s.empty() ? "" : " -> ") + st.text();
    return s;
}

std::string rule_text(const PolicyRule& r) {
    std::string s = "line " + std::to_string(r.line) + " (iface " + r.iface + ", port ";
    s += r.port_lo == r.port_hi ? std::to_string(r.port_lo)
                                : std::to_string(r.port_lo) + "-" + std::to_string(r.port_hi);
    std::string st;
    for (auto& n : r.stages) st += (st.empty() ? "" : ",") + n;
    return s + ", stage " + st + ")";
}

// One "allow ..." line into a rule; errors are the message only (the caller adds file:line).
Result<PolicyRule> parse_rule(const std::vector<std::string_view>& w) {
    auto bad = [](std::string why) { return fail(Errc::invalid_argument, "", why); };
    PolicyRule r;
    bool have_iface = false, have_port = false, have_stage = false;
    for (size_t i = 1; i < w.size(); ++i) {
        auto eq = w[i].find('=');
        if (eq == std::string_view::npos || eq == 0)
            return bad("'" + std::string(w[i]) + "' is not key=value");
        auto key = w[i].substr(0, eq);
        auto val = w[i].substr(eq + 1);
        if (val.empty()) return bad(std::string(key) + "= has no value");
        auto first = [](bool& seen) { return !std::exchange(seen, true); };
        auto twice = [&] { return bad(std::string(key) + "= given twice"); };
        if (key == "uid" || key == "gid") {
            if (r.uid || r.gid)
                return bad(r.uid.has_value() == (key == "uid")
                               ? std::string(key) + "= given twice"
                               : "a rule names uid= or gid=, not both (write two rules)");
            std::string name(val);
            std::optional<uint32_t> id;
            if (is_digits(val))
                id = number(val);
            else if (key == "uid")
                id = lookup<passwd>(name, getpwnam_r);
            else
                id = lookup<group>(name, getgrnam_r);
            if (!id)
                return bad(is_digits(val) ? std::string(key) + "=" + name + " is out of range"
                                          : std::string(key == "uid" ? "no user" : "no group") +
                                                " named '" + name + "' on this host");
            (key == "uid" ? r.uid : r.gid) = *id;
        } else if (key == "iface") {
            if (!first(have_iface)) return twice();
            if (val != "*")
                if (auto ok = proto::check_ifname(val); !ok) return bad(ok.error().what());
            r.iface = std::string(val);
        } else if (key == "port") {
            if (!first(have_port)) return twice();
            if (val == "*") {
                r.port_lo = 1;
                r.port_hi = 65535;
            } else {
                auto dash = val.find('-');
                auto lo = proto::parse_port(val.substr(0, dash));
                auto hi =
                    dash == std::string_view::npos ? lo : proto::parse_port(val.substr(dash + 1));
                if (!lo || !hi)
                    return bad("port=" + std::string(val) +
                               ": expected *, a port or a range like 7000-7100 (ports 1..65535)");
                if (*lo > *hi) return bad("port=" + std::string(val) + ": the range is reversed");
                r.port_lo = *lo;
                r.port_hi = *hi;
            }
        } else if (key == "stage") {
            if (!first(have_stage)) return twice();
            for (auto n : proto::split(val, ',')) {
                if (n == "*" && val != "*")
                    return bad("stage=" + std::string(val) + ": * stands alone");
                if (n != "*" && !stage_name_ok(n))
                    return bad("stage=" + std::string(val) + ": '" + std::string(n) +
                               "' is not a stage name ([a-z0-9_], at most " +
                               std::to_string(BERTHA_NAME_LEN - 1) + " characters)");
                r.stages.emplace_back(n);
            }
        } else {
            return bad("unknown key '" + std::string(key) + "' (uid, gid, iface, port, stage)");
        }
    }
    if (!r.uid && !r.gid) return bad("a rule needs uid= or gid=");
    if (!have_iface) return bad("a rule needs iface= (iface=* for any interface)");
    if (!have_port) return bad("a rule needs port= (port=* for any port)");
    if (!have_stage) return bad("a rule needs stage= (stage=* for any stage)");
    return r;
}

} // namespace

Result<Policy> Policy::parse(std::string_view text, std::string source) {
    Policy p;
    p.source = std::move(source);
    int line_no = 0;
    for (auto line : proto::split(text, '\n')) {
        ++line_no;
        auto where = p.source + ":" + std::to_string(line_no);
        if (auto hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
        for (size_t i = 0; i < line.size(); ++i) {
            auto c = static_cast<unsigned char>(line[i]);
            if ((c < 0x20 && !is_space(line[i])) || c >= 0x7f)
                return fail(Errc::invalid_argument, where,
                            "a control or non-ASCII byte in column " + std::to_string(i + 1));
        }
        auto w = words(line);
        if (w.empty()) continue;
        if (w[0] != "allow")
            return fail(Errc::invalid_argument, where,
                        "'" + std::string(w[0]) +
                            "' is not a rule: rules start with 'allow' (anything not allowed "
                            "is refused)");
        auto rule = parse_rule(w);
        if (!rule) return fail(Errc::invalid_argument, where, rule.error().message);
        rule->line = line_no;
        p.rules.push_back(std::move(*rule));
    }
    return p;
}

Result<Policy> Policy::load(const std::string& path) {
    const std::string component = "policy " + path;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail_sys(component, "open", errno);
    Fd owner(fd);
    struct stat st {};
    if (::fstat(fd, &st) != 0) return fail_sys(component, "stat", errno);
    if (!S_ISREG(st.st_mode)) return fail(Errc::invalid_argument, component, "not a regular file");
    // Whoever can write the policy decides who loads BPF as root.
    if (st.st_mode & S_IWOTH)
        return fail(Errc::invalid_argument, component,
                    "is writable by everyone; refusing it (chmod o-w " + path + ")");
    if (st.st_size > (1 << 20)) return fail(Errc::invalid_argument, component, "larger than 1 MiB");
    std::string text(size_t(st.st_size), '\0');
    size_t got = 0;
    while (got < text.size()) {
        ssize_t n = ::read(fd, text.data() + got, text.size() - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail_sys(component, "read", errno);
        if (n == 0) break;
        got += size_t(n);
    }
    text.resize(got);
    return parse(text, path);
}

std::string Policy::refuses(uint32_t uid, std::span<const uint32_t> gids, const FlowKey& key,
                            std::span<const StageSpec> stages) const {
    auto names_caller = [&](const PolicyRule& r) {
        return (r.uid && *r.uid == uid) ||
               (r.gid && std::find(gids.begin(), gids.end(), *r.gid) != gids.end());
    };
    auto allows = [&](const PolicyRule& r) {
        if (r.iface != "*" && r.iface != key.ifname) return false;
        if (key.port < r.port_lo || key.port > r.port_hi) return false;
        if (r.stages.size() == 1 && r.stages[0] == "*") return true;
        return std::all_of(stages.begin(), stages.end(), [&](const StageSpec& s) {
            return std::find(r.stages.begin(), r.stages.end(), s.name) != r.stages.end();
        });
    };
    std::vector<const PolicyRule*> mine;
    for (auto& r : rules) {
        if (!names_caller(r)) continue;
        if (allows(r)) return {};
        mine.push_back(&r);
    }
    std::string why = "uid " + std::to_string(uid) + " (gids " + join_ids(gids) +
                      ") asked to attach " + chain_text(stages) + " on " + key.text() +
                      ": no rule in " + source + " allows it";
    if (mine.empty()) return why + " (no rule names uid " + std::to_string(uid) + " or its gids)";
    why += "; the caller's rules: ";
    for (size_t i = 0; i < mine.size() && i < 4; ++i) why += (i ? ", " : "") + rule_text(*mine[i]);
    if (mine.size() > 4) why += ", ...";
    return why;
}

// ---- serving ---------------------------------------------------------------------------------
namespace {

constexpr int kPollMs = 200; // how soon a stop request is noticed
constexpr size_t kMaxClients = 256;

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

Result<void> mkdir_parents(const std::string& path, const std::string& component) {
    for (size_t i = 1; i < path.size(); ++i) {
        if (path[i] != '/') continue;
        auto dir = path.substr(0, i);
        if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
            return fail_sys(component, "mkdir " + dir, errno);
    }
    return {};
}

// The listening socket. Owns its file: removed on destruction if it is still the one we bound.
class Listener {
  public:
    static Result<Listener> open(const std::string& path);
    Listener(Listener&&) = default;
    ~Listener() {
        struct stat st {};
        if (fd_ && ::lstat(path_.c_str(), &st) == 0 && st.st_ino == ino_ && st.st_dev == dev_)
            ::unlink(path_.c_str());
    }
    int fd() const { return fd_.get(); }

  private:
    Listener(Fd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
    Fd fd_;
    std::string path_;
    ino_t ino_ = 0;
    dev_t dev_ = 0;
};

Result<Listener> Listener::open(const std::string& path) {
    const std::string component = "agent " + path;
    auto sun = unix_addr(path, component);
    if (!sun) return std::unexpected(sun.error());
    if (auto r = mkdir_parents(path, component); !r) return std::unexpected(r.error());
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return fail(Errc::unavailable, component,
                        "exists and is not a socket; not replacing it");
        // Replace the file only when nobody answers on it (an agent that died without cleaning).
        Fd probe(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        if (!probe) return fail_sys(component, "socket", errno);
        if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&*sun), sizeof *sun) == 0 ||
            errno == EAGAIN || errno == EPROTOTYPE)
            return fail(Errc::unavailable, component,
                        "another process answers on this socket (an agent already running?)");
        if (errno != ECONNREFUSED) return fail_sys(component, "probe the existing socket", errno);
        log(LogLevel::info, component, "replacing a stale socket nobody answers on");
        if (::unlink(path.c_str()) != 0 && errno != ENOENT)
            return fail_sys(component, "remove the stale socket", errno);
    }
    Fd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) return fail_sys(component, "socket", errno);
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&*sun), sizeof *sun) != 0)
        return fail_sys(component, "bind", errno);
    Listener l(std::move(fd), path);
    if (::lstat(path.c_str(), &st) != 0) return fail_sys(component, "stat", errno);
    l.ino_ = st.st_ino;
    l.dev_ = st.st_dev;
    // Everyone may connect: the policy, not the file mode, decides what a caller may do.
    if (::chmod(path.c_str(), 0666) != 0) return fail_sys(component, "chmod 0666", errno);
    if (::listen(l.fd(), 64) != 0) return fail_sys(component, "listen", errno);
    return l;
}

struct Held {
    FlowKey key;
    uint32_t refs = 0;
};

struct Client {
    Fd fd;
    uint32_t uid = 0;
    pid_t pid = 0;
    std::vector<uint32_t> gids;       // primary first, then the supplementary ones
    std::map<std::string, Held> held; // by FlowKey::text(): the references this socket holds
    std::string who() const { return "uid " + std::to_string(uid) + " pid " + std::to_string(pid); }
};

// The supplementary groups from /proc/<pid>/status, for kernels without SO_PEERGROUPS.
void groups_from_proc(Client& c) {
    std::ifstream in("/proc/" + std::to_string(c.pid) + "/status");
    std::string line;
    while (std::getline(in, line)) {
        if (!line.starts_with("Groups:")) continue;
        std::istringstream ids(line.substr(7));
        uint32_t g;
        while (ids >> g) c.gids.push_back(g);
    }
}

// The caller's uid and gids, as they were when it connected (SO_PEERCRED, SO_PEERGROUPS): a
// process that changes its credentials afterwards, or exits and has its pid reused, cannot
// make the agent judge someone else.
Result<void> peer_credentials(Client& c) {
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(c.fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        return fail_sys("agent", "SO_PEERCRED", errno);
    c.uid = cred.uid;
    c.pid = cred.pid;
    c.gids.push_back(cred.gid);
    std::vector<gid_t> groups(64);
    for (;;) {
        socklen_t glen = socklen_t(groups.size() * sizeof(gid_t));
        if (::getsockopt(c.fd.get(), SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen) == 0) {
            groups.resize(glen / sizeof(gid_t));
            break;
        }
        if (errno == ERANGE && glen > groups.size() * sizeof(gid_t)) {
            groups.resize(glen / sizeof(gid_t));
            continue;
        }
        groups.clear();
        groups_from_proc(c);
        break;
    }
    for (auto g : groups)
        if (std::find(c.gids.begin(), c.gids.end(), g) == c.gids.end()) c.gids.push_back(g);
    return {};
}

class Agent {
  public:
    Agent(Loader& loader, Policy policy) : loader_(loader), policy_(std::move(policy)) {}

    std::string handle(Client& c, std::string_view msg) {
        auto req = proto::parse_request(msg);
        if (!req) {
            log(LogLevel::info, "agent", c.who() + ": malformed request: " + req.error().what());
            return proto::format_err(req.error());
        }
        return req->op == proto::Op::attach ? attach(c, *req) : detach(c, *req);
    }

    // A client is gone: give back every reference it held, one detach per reference.
    void release(Client& c) {
        unsigned n = 0;
        for (auto& [text, h] : c.held)
            for (; h.refs > 0; --h.refs, ++n)
                if (auto r = loader_.detach(h.key); !r)
                    log(LogLevel::warn, "agent",
                        c.who() + " left; releasing " + text + ": " + r.error().what());
        c.held.clear();
        if (n)
            log(LogLevel::info, "agent",
                c.who() + " disconnected; released " + std::to_string(n) + " reference(s)");
    }

  private:
    std::string attach(Client& c, const proto::Request& r) {
        if (auto why = policy_.refuses(c.uid, c.gids, r.key, r.stages); !why.empty()) {
            log(LogLevel::info, "agent", "refused pid " + std::to_string(c.pid) + ": " + why);
            return proto::format_err(Error{Errc::unavailable, "policy", why, 0});
        }
        auto chain = loader_.attach(r.key, r.stages);
        if (!chain) {
            log(LogLevel::info, "agent", c.who() + ": attach failed: " + chain.error().what());
            return proto::format_err(chain.error());
        }
        auto& h = c.held[r.key.text()];
        h.key = r.key;
        h.refs++;
        log(LogLevel::info, "agent",
            c.who() + ": attached chain " + std::to_string(*chain) + " for " + r.key.text() +
                " (this client holds " + std::to_string(h.refs) + " reference(s))");
        return proto::format_ok(std::to_string(*chain));
    }

    std::string detach(Client& c, const proto::Request& r) {
        auto it = c.held.find(r.key.text());
        if (it == c.held.end())
            return proto::format_err(Error{Errc::invalid_argument, "flow " + r.key.text(),
                                           "this connection holds no reference to it (an "
                                           "operator removes others' flows with `bertha-load "
                                           "detach`)",
                                           0});
        auto res = loader_.detach(r.key);
        // Whether it worked or the flow was already gone (an operator's detach), this
        // connection's reference is spent.
        if (--it->second.refs == 0) c.held.erase(it);
        if (!res) return proto::format_err(res.error());
        log(LogLevel::info, "agent", c.who() + ": detached one reference of " + r.key.text());
        return proto::format_ok();
    }

    Loader& loader_;
    Policy policy_;
};

bool send_msg(int fd, std::string_view msg) {
    for (;;) {
        if (::send(fd, msg.data(), msg.size(), MSG_NOSIGNAL | MSG_DONTWAIT) >= 0) return true;
        if (errno != EINTR) return false;
    }
}

} // namespace

Result<void> serve(Loader& loader, const ServeOptions& opts) {
    if (opts.policy_path.empty())
        return fail(Errc::invalid_argument, "agent", "serve needs a policy file");
    auto policy = Policy::load(opts.policy_path);
    if (!policy) return std::unexpected(policy.error());
    if (policy->rules.empty())
        log(LogLevel::warn, "agent", opts.policy_path + " has no rules: every request is refused");
    const std::string path = socket_path(opts.socket_path);
    auto listener = Listener::open(path);
    if (!listener) return std::unexpected(listener.error());
    log(LogLevel::info, "agent " + path,
        "listening; " + std::to_string(policy->rules.size()) + " rule(s) from " + opts.policy_path);

    Agent agent(loader, std::move(*policy));
    std::vector<std::unique_ptr<Client>> clients;
    std::vector<pollfd> pfds;
    std::vector<char> buf(proto::kMaxRequest + 1);
    bool listen_pause = false; // skip the listener in the next poll (accept ran out of fds)
    auto drop = [&](size_t i) {
        agent.release(*clients[i]);
        clients.erase(clients.begin() + ptrdiff_t(i));
    };

    while (!(opts.stop && opts.stop->load())) {
        pfds.assign(1, pollfd{std::exchange(listen_pause, false) ? -1 : listener->fd(), POLLIN, 0});
        for (auto& c : clients) pfds.push_back(pollfd{c->fd.get(), POLLIN, 0});
        int n = ::poll(pfds.data(), pfds.size(), kPollMs);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail_sys("agent " + path, "poll", errno);
        if (n == 0) continue;

        // Client events first, newest last: indexes in pfds match clients until a drop, so walk
        // backwards.
        for (size_t i = clients.size(); i-- > 0;) {
            if (!pfds[i + 1].revents) continue;
            Client& c = *clients[i];
            iovec iov{buf.data(), buf.size()};
            msghdr mh{};
            mh.msg_iov = &iov;
            mh.msg_iovlen = 1;
            ssize_t got = ::recvmsg(c.fd.get(), &mh, MSG_DONTWAIT);
            if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (got <= 0) {
                drop(i);
                continue;
            }
            std::string reply;
            if ((mh.msg_flags & MSG_TRUNC) || size_t(got) > proto::kMaxRequest)
                reply = proto::format_err(
                    Error{Errc::invalid_argument, "request",
                          "longer than " + std::to_string(proto::kMaxRequest) + " bytes", 0});
            else
                reply = agent.handle(c, std::string_view(buf.data(), size_t(got)));
            if (!send_msg(c.fd.get(), reply)) {
                log(LogLevel::info, "agent",
                    c.who() + ": reply not delivered; dropping the client");
                drop(i);
            }
        }

        if (pfds[0].revents & POLLIN) {
            for (;;) {
                Fd fd(::accept4(listener->fd(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
                if (!fd) {
                    // Out of file descriptors: the connection stays queued, and polling the
                    // listener again at once would spin; look again after one poll interval.
                    if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                        log(LogLevel::warn, "agent " + path,
                            std::string("accept: ") + std::strerror(errno));
                        listen_pause = true;
                    }
                    break; // EAGAIN: no more waiting
                }
                if (clients.size() >= kMaxClients) {
                    send_msg(fd.get(),
                             proto::format_err(Error{Errc::unavailable, "agent",
                                                     "serving " + std::to_string(kMaxClients) +
                                                         " clients already; try again later",
                                                     0}));
                    continue;
                }
                auto c = std::make_unique<Client>();
                c->fd = std::move(fd);
                if (auto r = peer_credentials(*c); !r) {
                    log(LogLevel::warn, "agent", r.error().what());
                    continue;
                }
                log(LogLevel::debug, "agent",
                    c->who() + " connected (gids " + join_ids(c->gids) + ")");
                clients.push_back(std::move(c));
            }
        }
    }

    // Stopping: the references stay (agent.hpp) so that running applications keep their
    // offloads across an agent restart; say what remains.
    unsigned refs = 0;
    for (auto& c : clients)
        for (auto& [text, h] : c->held) refs += h.refs;
    if (refs)
        log(LogLevel::info, "agent " + path,
            "stopping; " + std::to_string(refs) +
                " reference(s) of connected clients stay attached (bertha-load detach removes "
                "them)");
    return {};
}

// ---- client ----------------------------------------------------------------------------------
namespace {

// The agent's path back from a connected socket (the listener's bound name), for errors.
std::string peer_path(int fd) {
    sockaddr_un sun{};
    socklen_t len = sizeof sun;
    if (fd < 0 || ::getpeername(fd, reinterpret_cast<sockaddr*>(&sun), &len) != 0 ||
        len <= offsetof(sockaddr_un, sun_path))
        return "agent";
    return "agent " +
           std::string(sun.sun_path, strnlen(sun.sun_path, len - offsetof(sockaddr_un, sun_path)));
}

// A request refused before it is sent still reads as the agent's: "agent <path>: port: ...".
std::unexpected<Error> as_agent_error(int fd, const Error& e) {
    return fail(e.code, peer_path(fd), e.what());
}

} // namespace

Result<AgentClient> AgentClient::connect(std::string path) {
    path = socket_path(path);
    const std::string component = "agent " + path;
    auto sun = unix_addr(path, component);
    if (!sun) return std::unexpected(sun.error());
    Fd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (!fd) return fail_sys(component, "socket", errno);
    while (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&*sun), sizeof *sun) != 0)
        if (errno != EINTR)
            return fail_sys(component, "connect (is `bertha-load serve` running?)", errno);
    timeval tv{5, 0};
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0)
        return fail_sys(component, "SO_RCVTIMEO", errno);
    return AgentClient(std::move(fd));
}

Result<std::string> AgentClient::call(const std::string& request) {
    const std::string component = peer_path(fd_.get());
    if (!fd_) return fail(Errc::closed, component, "the connection to the agent is closed");
    std::vector<char> buf(proto::kMaxReply + 1);
    auto receive = [&]() -> Result<std::string> {
        for (;;) {
            ssize_t n = ::recv(fd_.get(), buf.data(), buf.size(), 0);
            if (n > 0)
                return proto::parse_reply(std::string_view(buf.data(), size_t(n)), component);
            if (n < 0 && errno == EINTR) continue;
            int err = errno;
            // A late reply would answer the next request: this connection is done either way.
            fd_.reset();
            if (n == 0) return fail(Errc::closed, component, "the agent closed the connection");
            if (err == EAGAIN || err == EWOULDBLOCK)
                return fail(Errc::unavailable, component, "no reply within 5 s");
            return fail_sys(component, "receive the reply", err);
        }
    };
    while (::send(fd_.get(), request.data(), request.size(), MSG_NOSIGNAL) < 0) {
        if (errno == EINTR) continue;
        int err = errno;
        if (err != EPIPE && err != ECONNRESET) return fail_sys(component, "send the request", err);
        // An agent that turns the connection away (too many clients) says why before closing.
        ssize_t n = ::recv(fd_.get(), buf.data(), buf.size(), MSG_DONTWAIT);
        fd_.reset();
        if (n > 0)
            if (auto r = proto::parse_reply(std::string_view(buf.data(), size_t(n)), component); !r)
                return r;
        return fail(Errc::closed, component, "the agent closed the connection");
    }
    return receive();
}

Result<uint32_t> AgentClient::attach(const FlowKey& key, std::span<const StageSpec> stages) {
    proto::Request r{proto::Op::attach, key, {stages.begin(), stages.end()}};
    auto text = proto::format_request(r);
    if (!text) return as_agent_error(fd_.get(), text.error());
    auto reply = call(*text);
    if (!reply) return std::unexpected(reply.error());
    uint32_t chain = 0;
    auto [end, ec] = std::from_chars(reply->data(), reply->data() + reply->size(), chain);
    if (ec != std::errc{} || end != reply->data() + reply->size() || chain >= BERTHA_MAX_CHAINS)
        return fail(Errc::incompatible, peer_path(fd_.get()),
                    "attach answered 'ok " + proto::escape(*reply) + "', not a chain id");
    return chain;
}

Result<void> AgentClient::detach(const FlowKey& key) {
    auto text = proto::format_request(proto::Request{proto::Op::detach, key, {}});
    if (!text) return as_agent_error(fd_.get(), text.error());
    auto reply = call(*text);
    if (!reply) return std::unexpected(reply.error());
    return {};
}

} // namespace bertha::load
