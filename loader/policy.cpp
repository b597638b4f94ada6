// The agent's policy (agent.hpp): which uids/gids may attach which stages on which interfaces
// and ports. Parsed with errors that name file:line.
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
    std::string why = "uid " + std::to_string(uid) + " (gids " + proto::join_ids(gids) +
                      ") asked to attach " + chain_text(stages) + " on " + key.text() +
                      ": no rule in " + source + " allows it";
    if (mine.empty()) return why + " (no rule names uid " + std::to_string(uid) + " or its gids)";
    why += "; the caller's rules: ";
    for (size_t i = 0; i < mine.size() && i < 4; ++i) why += (i ? ", " : "") + rule_text(*mine[i]);
    if (mine.size() > 4) why += ", ...";
    return why;
}
} // namespace bertha::load
