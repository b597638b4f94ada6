// Deterministic mutation tests for the loader's decoders: the agent protocol's parse_request and
// parse_reply, Policy::parse, StageSpec::parse, and bertha-load's pcap reader. libFuzzer builds
// use clang 14, which cannot compile <expected>, so these decoders are exercised here instead:
// a fixed-seed PRNG mutates a handful of valid seeds 20,000 times per decoder (bit flips, byte
// insertions and deletions, truncation, duplicated fields, very long tokens, NUL bytes, numbers
// at their limits), and every call must return a value or an Error with a message. A value must
// satisfy the decoder's bounds and survive its encoder (or, for the policy and pcap, an
// equivalent writer) and a second decode unchanged.
#include "loader/agent.hpp"
#include "loader/agent_protocol.hpp"
#include "loader/cli/pcap.hpp"

// The pcap reader is compiled into bertha-load only, not libbertha.a; it depends on nothing
// but <cstdio> and bertha/error.hpp, so the test compiles it in.
#include "loader/cli/pcap.cpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <random>
#include <string>
#include <string_view>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

using namespace bertha;
using namespace bertha::load;

namespace {

constexpr int kIterations = 20000;
constexpr uint64_t kSeed = 0xB3E7'7A00'D1CE'5EEDull;

// Printable form of a (possibly binary) input for failure messages.
std::string show(std::string_view s) {
    static const char hex[] = "0123456789abcdef";
    std::string out;
    for (size_t i = 0; i < s.size() && out.size() < 400; ++i) {
        auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            out += char(c);
        } else {
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    if (out.size() >= 400) out += "...(" + std::to_string(s.size()) + " bytes)";
    return out;
}

// What a mutation run found wrong: the first few inputs with what was wrong, and a count.
struct Findings {
    int count = 0;
    std::vector<std::string> examples;
    void add(std::string_view input, const std::string& what) {
        if (++count <= 5) examples.push_back(what + " <- input \"" + show(input) + "\"");
    }
    void report() const {
        for (auto& e : examples) FAIL_CHECK(e);
        CHECK(count == 0);
    }
};

bool valid_errc(Errc c) {
    switch (c) {
    case Errc::invalid_argument:
    case Errc::unavailable:
    case Errc::incompatible:
    case Errc::system:
    case Errc::no_buffers:
    case Errc::closed:
        return true;
    }
    return false;
}

// An Error as every decoder must return it: a known code and a message that says something.
std::string error_problem(const Error& e) {
    if (!valid_errc(e.code)) return "an Error with an unknown code";
    if (e.message.empty()) return "an Error with an empty message (" + e.what() + ")";
    return {};
}

bool stage_name_ok(std::string_view n) {
    return !n.empty() && n.size() < BERTHA_NAME_LEN && std::all_of(n.begin(), n.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    });
}

// A stage spec as it travels: a name, a config of at most 63 bytes, printable ASCII without
// spaces (a request separates its fields with spaces).
std::string stage_problem(const StageSpec& s) {
    if (!stage_name_ok(s.name)) return "stage name '" + show(s.name) + "' out of bounds";
    if (s.config.size() >= BERTHA_CONFIG_LEN)
        return "stage config of " + std::to_string(s.config.size()) + " bytes";
    for (char ch : s.text()) {
        auto c = static_cast<unsigned char>(ch);
        if (c <= 0x20 || c >= 0x7f)
            return "stage spec '" + show(s.text()) + "' holds a space, control or non-ASCII byte";
    }
    return {};
}

// The mutation engine: one PRNG with a constant seed, so every run sees the same inputs.
class Mutator {
  public:
    Mutator(std::vector<std::string> seeds, std::vector<std::string> dict, std::string separators)
        : seeds_(std::move(seeds)), dict_(std::move(dict)), seps_(std::move(separators)),
          pool_(seeds_) {}

    size_t below(size_t n) { return n == 0 ? 0 : size_t(rng_() % n); }
    bool chance(unsigned percent) { return below(100) < percent; }

    // A parent (a seed, or an input that decoded before) with one to four mutations.
    std::string next() {
        std::string s = chance(50) ? seeds_[below(seeds_.size())] : pool_[below(pool_.size())];
        for (size_t n = 1 + below(4); n > 0; --n) mutate(s);
        return s;
    }

    // Inputs that decode are mutated further: deeper fields get reached.
    void keep(const std::string& s) {
        if (pool_.size() < 512)
            pool_.push_back(s);
        else
            pool_[below(pool_.size())] = s;
    }

  private:
    struct Span {
        size_t at, len;
    };

    // Runs of bytes between separators: the fields, keys, values and numbers of the input.
    std::vector<Span> tokens(const std::string& s) const {
        std::vector<Span> out;
        size_t i = 0;
        while (i < s.size()) {
            while (i < s.size() && seps_.find(s[i]) != std::string::npos) ++i;
            size_t j = i;
            while (j < s.size() && seps_.find(s[j]) == std::string::npos) ++j;
            if (j > i) out.push_back({i, j - i});
            i = j;
        }
        return out;
    }

    void mutate(std::string& s) {
        static const char* const limits[] = {"0",          "1",     "65535",
                                             "65536",      "-1",    "4294967295",
                                             "4294967296", "00000", "18446744073709551616",
                                             "99999"};
        static const char specials[] = {' ', '\n', '\t', '\r', ':', '=', ',',    '-',    '[',
                                        ']', '#',  '\\', '*',  '.', '/', '\x7f', '\xff', '\0'};
        auto pos = [&] { return below(s.size() + 1); };
        switch (below(13)) {
        case 0: // flip one bit
            if (!s.empty()) s[below(s.size())] ^= char(1u << below(8));
            break;
        case 1: // insert a random byte
            s.insert(pos(), 1, char(below(256)));
            break;
        case 2: // delete a few bytes
            if (!s.empty()) {
                size_t at = below(s.size());
                s.erase(at, 1 + below(std::min<size_t>(8, s.size() - at)));
            }
            break;
        case 3: // truncate
            s.resize(below(s.size() + 1));
            break;
        case 4: { // duplicate a field, with the separator before it
            auto t = tokens(s);
            if (t.empty()) break;
            auto [at, len] = t[below(t.size())];
            std::string copy =
                (at > 0 ? s.substr(at - 1, 1) : std::string(" ")) + s.substr(at, len);
            s.insert(at + len, copy);
            break;
        }
        case 5: { // a very long token, replacing a field or inserted
            static const size_t lengths[] = {15, 16, 63, 64, 255, 1023, 1024, 1025, 4096};
            static const char fill[] = {'a', 'z', '0', '9', 'A', '_', '.', ':'};
            std::string big(lengths[below(std::size(lengths))], fill[below(std::size(fill))]);
            auto t = tokens(s);
            if (!t.empty() && chance(60)) {
                auto [at, len] = t[below(t.size())];
                s.replace(at, len, big);
            } else {
                s.insert(pos(), big);
            }
            break;
        }
        case 6: // NUL bytes, inserted or overwriting
            if (!s.empty() && chance(50))
                s[below(s.size())] = '\0';
            else
                s.insert(pos(), 1 + below(3), '\0');
            break;
        case 7: { // a number at its limits, in place of a run of digits (or anywhere)
            std::string lim = limits[below(std::size(limits))];
            std::vector<Span> runs;
            for (size_t i = 0; i < s.size();) {
                if (s[i] >= '0' && s[i] <= '9') {
                    size_t j = i;
                    while (j < s.size() && s[j] >= '0' && s[j] <= '9') ++j;
                    runs.push_back({i, j - i});
                    i = j;
                } else {
                    ++i;
                }
            }
            if (!runs.empty() && chance(85)) {
                auto [at, len] = runs[below(runs.size())];
                s.replace(at, len, lim);
            } else {
                s.insert(pos(), lim);
            }
            break;
        }
        case 8: { // a dictionary word in place of a field
            if (dict_.empty()) break;
            const auto& w = dict_[below(dict_.size())];
            auto t = tokens(s);
            if (!t.empty() && chance(75)) {
                auto [at, len] = t[below(t.size())];
                s.replace(at, len, w);
            } else {
                s.insert(pos(), w);
            }
            break;
        }
        case 9: { // swap two fields
            auto t = tokens(s);
            if (t.size() < 2) break;
            size_t a = below(t.size()), b = below(t.size());
            if (a == b) break;
            if (a > b) std::swap(a, b);
            std::string ta = s.substr(t[a].at, t[a].len), tb = s.substr(t[b].at, t[b].len);
            s.replace(t[b].at, t[b].len, ta);
            s.replace(t[a].at, t[a].len, tb);
            break;
        }
        case 10: { // splice: the head of this input, the tail of another
            const auto& o = pool_[below(pool_.size())];
            s = s.substr(0, below(s.size() + 1)) + o.substr(below(o.size() + 1));
            break;
        }
        case 11: // a separator or another byte the decoders treat specially
            s.insert(pos(), 1, specials[below(std::size(specials))]);
            break;
        case 12: { // duplicate a random slice
            if (s.empty()) break;
            size_t at = below(s.size()), len = 1 + below(std::min<size_t>(64, s.size() - at));
            s.insert(pos(), s.substr(at, len));
            break;
        }
        }
    }

    std::mt19937_64 rng_{kSeed};
    std::vector<std::string> seeds_, dict_;
    std::string seps_;
    std::vector<std::string> pool_;
};

// How many inputs a run accepted and refused: a run that never reaches one side tests nothing.
struct Tally {
    int accepted = 0, refused = 0;
    void check(const std::string& what) const {
        INFO(what << ": " << accepted << " accepted, " << refused << " refused of " << kIterations);
        CHECK(accepted + refused == kIterations);
        CHECK(accepted >= kIterations / 50);
        CHECK(refused >= kIterations / 4);
    }
};

// The corners a run must reach (a limit accepted, each kind of refusal): an engine that never
// gets there tests nothing there.
class Reached {
  public:
    Reached(std::initializer_list<const char*> names) {
        for (auto n : names) marks_.emplace_back(n, 0);
    }
    void mark(std::string_view name, bool cond = true) {
        for (auto& [n, count] : marks_)
            if (n == name) {
                count += cond;
                return;
            }
        FAIL("no corner named " << name);
    }
    void check(const std::string& what) const {
        for (auto& [n, count] : marks_) {
            INFO(what << " never reached: " << n);
            CHECK(count > 0);
        }
    }

  private:
    std::vector<std::pair<std::string, int>> marks_;
};

bool says(const Error& e, std::string_view text) {
    return e.what().find(text) != std::string::npos;
}

// ---- requests --------------------------------------------------------------------------------

std::string request_problem(const proto::Request& r) {
    if (auto ok = proto::check_ifname(r.key.ifname); !ok)
        return "accepted interface: " + ok.error().what();
    if (r.key.ifname.size() > 15) return "interface name longer than 15";
    if (r.key.port < 1) return "port 0 accepted";
    if (r.key.hook != Hook::xdp && r.key.hook != Hook::tc_egress) return "unknown hook";
    if (r.key.peer && r.key.peer->family() != AF_INET && r.key.peer->family() != AF_INET6)
        return "a peer without an address family";
    if (r.op == proto::Op::attach && (r.stages.empty() || r.stages.size() > BERTHA_MAX_STAGES))
        return "attach with " + std::to_string(r.stages.size()) + " stages";
    if (r.op == proto::Op::detach && !r.stages.empty()) return "detach with stages";
    for (auto& s : r.stages)
        if (auto p = stage_problem(s); !p.empty()) return p;
    return {};
}

bool same_request(const proto::Request& a, const proto::Request& b) {
    return a.op == b.op && a.key.ifname == b.key.ifname && a.key.hook == b.key.hook &&
           a.key.port == b.key.port && a.key.peer == b.key.peer && a.stages == b.stages;
}

// ---- policy ----------------------------------------------------------------------------------

// The rules written back as a policy file, each on its own line number.
std::string write_policy(const Policy& p) {
    std::string out;
    int line = 1;
    for (auto& r : p.rules) {
        for (; line < r.line; ++line) out += "\n";
        out += "allow ";
        out += r.uid ? "uid=" + std::to_string(*r.uid) : "gid=" + std::to_string(*r.gid);
        out += " iface=" + r.iface + " port=" + std::to_string(r.port_lo) + "-" +
               std::to_string(r.port_hi) + " stage=";
        for (size_t i = 0; i < r.stages.size(); ++i) out += (i ? "," : "") + r.stages[i];
        out += "\n";
        ++line;
    }
    return out;
}

std::string rule_problem(const PolicyRule& r, int lines) {
    if (r.uid.has_value() == r.gid.has_value()) return "a rule without exactly one of uid/gid";
    if ((r.uid && *r.uid == UINT32_MAX) || (r.gid && *r.gid == UINT32_MAX))
        return "id 4294967295 ((uid_t)-1) accepted";
    if (r.iface != "*")
        if (auto ok = proto::check_ifname(r.iface); !ok)
            return "accepted iface: " + ok.error().what();
    if (r.port_lo < 1 || r.port_lo > r.port_hi)
        return "port range " + std::to_string(r.port_lo) + "-" + std::to_string(r.port_hi);
    if (r.stages.empty()) return "a rule without stages";
    if (!(r.stages.size() == 1 && r.stages[0] == "*"))
        for (auto& n : r.stages)
            if (!stage_name_ok(n)) return "accepted stage name '" + show(n) + "'";
    if (r.line < 1 || r.line > lines) return "rule line " + std::to_string(r.line);
    return {};
}

bool same_rules(const Policy& a, const Policy& b) {
    if (a.rules.size() != b.rules.size()) return false;
    for (size_t i = 0; i < a.rules.size(); ++i) {
        const auto &x = a.rules[i], &y = b.rules[i];
        if (x.uid != y.uid || x.gid != y.gid || x.iface != y.iface || x.port_lo != y.port_lo ||
            x.port_hi != y.port_hi || x.stages != y.stages || x.line != y.line)
            return false;
    }
    return true;
}

// ---- pcap ------------------------------------------------------------------------------------

constexpr uint32_t kPcapMaxRecord = 256 * 1024;

void put32(std::string& b, uint32_t v, bool big) {
    for (int i = 0; i < 4; ++i) b += char(big ? v >> (24 - 8 * i) : v >> (8 * i));
}

uint32_t get32(std::string_view b, size_t at, bool big) {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
        uint32_t byte = static_cast<unsigned char>(b[at + i]);
        v |= big ? byte << (24 - 8 * i) : byte << (8 * i);
    }
    return v;
}

// A classic pcap file: `magic` as the writer's native value, written in the given byte order.
std::string pcap_file(uint32_t magic, bool big, uint32_t linktype,
                      const std::vector<std::pair<std::string, uint32_t>>& packets) {
    std::string b;
    put32(b, magic, big);
    b += big ? std::string("\0\2\0\4", 4) : std::string("\2\0\4\0", 4); // version 2.4
    put32(b, 0, big);                                                   // thiszone
    put32(b, 0, big);                                                   // sigfigs
    put32(b, 65535, big);                                               // snaplen
    put32(b, linktype, big);
    uint32_t t = 1700000000;
    for (auto& [data, orig] : packets) {
        put32(b, t++, big);
        put32(b, 123456, big);
        put32(b, uint32_t(data.size()), big);
        put32(b, orig, big);
        b += data;
    }
    return b;
}

// What read_pcap must return, found in memory: ok with the packet's bytes and wire length, or a
// refusal. A packet skipped over that the file cuts short counts as present (the reader seeks
// past it), so asking for the one after says there is no such packet.
struct RefPacket {
    bool ok = false;
    std::string data;
    uint32_t orig = 0;
};

RefPacket ref_pcap(std::string_view b, uint64_t index) {
    if (b.size() < 24) return {};
    bool big;
    uint32_t le = get32(b, 0, false);
    if (le == 0xa1b2c3d4 || le == 0xa1b23c4d)
        big = false;
    else if (le == 0xd4c3b2a1 || le == 0x4d3cb2a1)
        big = true;
    else
        return {};
    if ((get32(b, 20, big) & 0xffff) != 1 || index == 0) return {};
    size_t off = 24;
    for (uint64_t n = 1;; ++n) {
        if (off >= b.size() || b.size() - off < 16) return {};
        uint32_t incl = get32(b, off + 8, big), orig = get32(b, off + 12, big);
        off += 16;
        if (incl > kPcapMaxRecord) return {};
        if (n < index) {
            off += incl;
            continue;
        }
        if (b.size() - off < incl) return {};
        return {true, std::string(b.substr(off, incl)), orig};
    }
}

// One scratch file for the reader, rewritten in place for every input: a memfd (the reader
// opens it as /proc/self/fd/N), so 20,000 rewrites stay in memory; else a file under $TMPDIR.
class ScratchFile {
  public:
    ScratchFile() {
        fd_ = ::memfd_create("bertha-pcap-fuzz", MFD_CLOEXEC);
        if (fd_ >= 0 && ::access(("/proc/self/fd/" + std::to_string(fd_)).c_str(), R_OK) == 0) {
            path_ = "/proc/self/fd/" + std::to_string(fd_);
            return;
        }
        if (fd_ >= 0) ::close(fd_);
        const char* dir = std::getenv("TMPDIR");
        path_ = std::string(dir && *dir ? dir : "/tmp") + "/bertha-pcap-fuzz-XXXXXX";
        fd_ = ::mkstemp(path_.data());
        temp_ = true;
    }
    ~ScratchFile() {
        if (fd_ < 0) return;
        ::close(fd_);
        if (temp_) ::unlink(path_.c_str());
    }
    ScratchFile(const ScratchFile&) = delete;
    ScratchFile& operator=(const ScratchFile&) = delete;
    bool ok() const { return fd_ >= 0; }
    const std::string& path() const { return path_; }
    bool write(std::string_view b) {
        return ::ftruncate(fd_, 0) == 0 &&
               ::pwrite(fd_, b.data(), b.size(), 0) == static_cast<ssize_t>(b.size());
    }

  private:
    std::string path_;
    int fd_ = -1;
    bool temp_ = false;
};

// The offsets of the 32-bit fields of the file header and of every record header that fits.
std::vector<size_t> pcap_fields(std::string_view b) {
    std::vector<size_t> out;
    for (size_t at = 0; at + 4 <= std::min<size_t>(24, b.size()); at += 4) out.push_back(at);
    if (b.size() < 24) return out;
    uint32_t le = get32(b, 0, false);
    bool big = le == 0xd4c3b2a1 || le == 0x4d3cb2a1;
    for (size_t off = 24; off + 16 <= b.size() && out.size() < 64;) {
        for (size_t f = 0; f < 16; f += 4) out.push_back(off + f);
        uint32_t incl = get32(b, off + 8, big);
        if (incl > b.size()) break;
        off += 16 + incl;
    }
    return out;
}

} // namespace

TEST_CASE("loader decoders: parse_request never crashes on 20000 mutated requests, refuses with a "
          "reason, and what it accepts is in bounds and survives format_request + parse_request") {
    Mutator m(
        {
            "v1 attach veth0 xdp 7000 - count",
            "v1 attach veth0 tc-egress 7000 198.18.0.2:5000 count shard:n=4,key=hash",
            "v1 attach lo xdp 1 [::1]:0 count count count\n",
            "v1 detach veth0 xdp 65535 -",
            "v1 detach eth-long_name.1 tc-egress 7001 [2001:db8::1]:5000",
            "v1 attach a xdp 7000 - c c c c c c c c",
            "v1 attach veth0 xdp 7000 198.18.0.2:0 count:k=v,abcdefghijklmno:x=" +
                std::string(60, 'y'),
        },
        {"v1",
         "v2",
         "v0",
         "attach",
         "detach",
         "xdp",
         "tc-egress",
         "-",
         "lo",
         "veth0",
         ".",
         "..",
         "198.18.0.2:5000",
         "[::1]:0",
         "[::ffff:1.2.3.4]:65535",
         "[fe80::1%lo]:1",
         "1.2.3.4",
         "count",
         "count:",
         ":x",
         "a:b:c",
         "abcdefghijklmnop"},
        " :,=[]");
    Findings bad;
    Tally tally;
    Reached reached{"port 1",
                    "port 65535",
                    "IPv4 peer",
                    "IPv6 peer",
                    "8 stages",
                    "detach",
                    "tc-egress",
                    "15-byte ifname",
                    "63-byte config",
                    "refused: 1025+ bytes",
                    "refused: port 0",
                    "refused: port 65536",
                    "refused: port -1",
                    "refused: 4294967296",
                    "refused: 9 stages",
                    "refused: NUL byte",
                    "refused: another version",
                    "refused: 16-byte ifname",
                    "refused: empty field"};
    for (int i = 0; i < kIterations; ++i) {
        const std::string msg = m.next();
        auto r = proto::parse_request(msg);
        if (!r) {
            ++tally.refused;
            const Error& e = r.error();
            reached.mark("refused: 1025+ bytes", says(e, "longer than 1024 bytes"));
            reached.mark("refused: port 0", says(e, "'0' is not a port"));
            reached.mark("refused: port 65536", says(e, "'65536' is not a port"));
            reached.mark("refused: port -1", says(e, "'-1' is not a port"));
            reached.mark("refused: 4294967296", says(e, "'4294967296'"));
            reached.mark("refused: 9 stages", says(e, "9 stages; a chain has at most 8"));
            reached.mark("refused: NUL byte", msg.find('\0') != std::string::npos);
            reached.mark("refused: another version", e.code == Errc::incompatible);
            reached.mark("refused: 16-byte ifname", says(e, "is longer than 15 characters"));
            reached.mark("refused: empty field", says(e, "is empty (fields are separated"));
            if (auto p = error_problem(r.error()); !p.empty()) bad.add(msg, p);
            if (r.error().code != Errc::invalid_argument && r.error().code != Errc::incompatible)
                bad.add(msg, "refused with " + std::string(to_string(r.error().code)));
            continue;
        }
        ++tally.accepted;
        m.keep(msg);
        reached.mark("port 1", r->key.port == 1);
        reached.mark("port 65535", r->key.port == 65535);
        reached.mark("IPv4 peer", r->key.peer && r->key.peer->family() == AF_INET);
        reached.mark("IPv6 peer", r->key.peer && r->key.peer->family() == AF_INET6);
        reached.mark("8 stages", r->stages.size() == 8);
        reached.mark("detach", r->op == proto::Op::detach);
        reached.mark("tc-egress", r->key.hook == Hook::tc_egress);
        reached.mark("15-byte ifname", r->key.ifname.size() == 15);
        for (auto& st : r->stages) reached.mark("63-byte config", st.config.size() == 63);
        if (msg.size() > proto::kMaxRequest) bad.add(msg, "a request over 1024 bytes accepted");
        if (auto p = request_problem(*r); !p.empty()) bad.add(msg, p);
        auto text = proto::format_request(*r);
        if (!text) {
            bad.add(msg, "accepted, but format_request refuses it: " + text.error().what());
            continue;
        }
        auto back = proto::parse_request(*text);
        if (!back)
            bad.add(msg, "'" + *text + "' does not parse back: " + back.error().what());
        else if (!same_request(*r, *back))
            bad.add(msg, "'" + *text + "' parses back to another request");
        else if (auto again = proto::format_request(*back); !again || *again != *text)
            bad.add(msg, "format_request is not canonical for '" + *text + "'");
    }
    tally.check("parse_request");
    reached.check("parse_request");
    bad.report();
}

TEST_CASE("loader decoders: parse_reply never crashes on 20000 mutated replies; ok payloads and "
          "err codes and messages survive format_ok/format_err + parse_reply, anything else is "
          "refused as incompatible with a reason") {
    Mutator m(
        {
            "ok",
            "ok 3",
            "ok 4294967295\n",
            "err invalid_argument request: field 3 is empty (fields are separated by exactly one "
            "space)",
            "err system lo: program count_xdp: load refused\\nverifier log:\\nR1 \\\\ bad\\tx",
            "err unavailable",
            "err closed agent: too many clients\n",
            "err incompatible request: this agent speaks v1, the request is v2",
        },
        {"ok", "err", "invalid_argument", "unavailable", "incompatible", "system", "no_buffers",
         "closed", "nope", "\\n", "\\\\", "\\", "\\t"},
        " :\\");
    const std::string component = "agent /run/bertha/agent.sock";
    Findings bad;
    Tally tally;
    Reached reached{"ok",
                    "ok <payload>",
                    "err invalid_argument",
                    "err unavailable",
                    "err incompatible",
                    "err system",
                    "err no_buffers",
                    "err closed",
                    "multi-line message",
                    "refused: not ok or err"};
    for (int i = 0; i < kIterations; ++i) {
        const std::string msg = m.next();
        auto r = proto::parse_reply(msg, component);
        std::string_view line = msg;
        if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
        if (r) {
            ++tally.accepted;
            m.keep(msg);
            reached.mark("ok", line == "ok");
            reached.mark("ok <payload>", r->size() > 0);
            if (!(line == "ok" || line.starts_with("ok ")))
                bad.add(msg, "a reply that is not ok accepted");
            // The payload travels on one line: a trailing newline of its own cannot survive.
            if (!r->empty() && r->back() == '\n') continue;
            auto back = proto::parse_reply(proto::format_ok(*r), component);
            if (!back || *back != *r) bad.add(msg, "the ok payload does not survive format_ok");
            continue;
        }
        ++tally.refused;
        const Error& e = r.error();
        if (auto p = error_problem(e); !p.empty()) bad.add(msg, p);
        if (e.component != component) bad.add(msg, "an error without the client's component");
        const bool is_err = line.starts_with("err ");
        if (is_err && (e.code != Errc::incompatible || !says(e, "unexpected reply")))
            reached.mark("err " + std::string(proto::errc_name(e.code)));
        reached.mark("multi-line message", e.message.find('\n') != std::string::npos);
        reached.mark("refused: not ok or err", !is_err);
        if (!is_err && e.code != Errc::incompatible)
            bad.add(msg, "a reply neither ok nor err gave " + std::string(to_string(e.code)));
        if (is_err && e.code != Errc::incompatible) {
            auto rest = line.substr(4);
            auto name = rest.substr(0, rest.find(' '));
            if (proto::errc_from_name(name) != std::optional<Errc>(e.code))
                bad.add(msg, "the err code is not the one the reply names");
        }
        // What the client saw goes back out as an err line (as a proxy would) and in again.
        const std::string what = e.what();
        if (what.size() > 1024 + 6000) continue; // format_err cuts it: not meant to survive
        auto line2 = proto::format_err(e);
        if (line2.find('\n') != std::string::npos) bad.add(msg, "format_err wrote two lines");
        auto back = proto::parse_reply(line2, component);
        if (back)
            bad.add(msg, "format_err's line parses as ok");
        else if (back.error().code != e.code ||
                 back.error().message != proto::unescape(proto::escape(what)))
            bad.add(msg, "the error does not survive format_err: '" + show(line2) + "'");
    }
    tally.check("parse_reply");
    reached.check("parse_reply");
    bad.report();
}

TEST_CASE("loader decoders: Policy::parse never crashes on 20000 mutated policies; accepted rules "
          "name one of uid/gid, a valid iface, 1 <= lo <= hi <= 65535 and valid stages, and parse "
          "back the same; refusals name file:line") {
    Mutator m(
        {
            "# the sample of agent.hpp\n"
            "allow uid=1000 iface=veth0 port=7000-7100 stage=count,shard\n"
            "\n"
            "  allow\tgid=2000 iface=* port=9000 stage=*   # trailing comment\n",
            "allow uid=0 iface=lo port=1-65535 stage=count\n",
            "allow gid=0 iface=* port=* stage=*",
            "allow uid=root iface=veth0 port=7000 stage=count,shard,a_1 # root is held to it\r\n"
            "allow gid=4294967294 iface=abcdefghijklmno port=65535-65535 stage=abcdefghijklmno\n",
            "\n\n   \t\n# nothing but comments\n#allow uid=1 iface=* port=* stage=*\n",
        },
        {"allow", "deny",           "uid=",   "gid=",   "iface=", "port=",     "stage=",  "uid",
         "*",     "root",           "nobody", "bertha", "#",      "7000-7100", "65535-1", "1-",
         "-1",    "uid=4294967295", "veth0",  "count,", ",count", "*,count",   "a/b",     ".",
         "..",    "stage=count",    "port=*", "iface=*"},
        " \t\n=,-");
    Findings bad;
    Tally tally;
    Reached reached{"uid rule",
                    "gid rule",
                    "iface *",
                    "port 1-65535",
                    "a single port",
                    "stage *",
                    "15-byte stage name",
                    "two rules",
                    "refused: given twice",
                    "refused: id out of range",
                    "refused: reversed range",
                    "refused: NUL byte",
                    "refused: bad stage name",
                    "refused: not key=value",
                    "refused: bad port",
                    "refused: uid and gid"};
    for (int i = 0; i < kIterations; ++i) {
        const std::string text = m.next();
        const int lines = int(std::count(text.begin(), text.end(), '\n')) + 1;
        auto p = Policy::parse(text, "fuzz.policy");
        if (!p) {
            ++tally.refused;
            const Error& e = p.error();
            if (auto pr = error_problem(e); !pr.empty()) bad.add(text, pr);
            reached.mark("refused: given twice", says(e, "given twice"));
            reached.mark("refused: id out of range", says(e, "is out of range"));
            reached.mark("refused: reversed range", says(e, "the range is reversed"));
            reached.mark("refused: NUL byte", says(e, "a control or non-ASCII byte"));
            reached.mark("refused: bad stage name", says(e, "is not a stage name"));
            reached.mark("refused: not key=value", says(e, "is not key=value"));
            reached.mark("refused: bad port", says(e, "expected *, a port or a range"));
            reached.mark("refused: uid and gid", says(e, "not both"));
            // "fuzz.policy:N" with N a line of the text.
            const std::string prefix = "fuzz.policy:";
            int line = 0;
            if (e.component.starts_with(prefix))
                line = std::atoi(e.component.c_str() + prefix.size());
            if (line < 1 || line > lines)
                bad.add(text, "a refusal that names no line of the file: '" + e.component + "'");
            continue;
        }
        ++tally.accepted;
        if (!p->rules.empty()) m.keep(text);
        if (p->source != "fuzz.policy") bad.add(text, "the source is lost");
        reached.mark("two rules", p->rules.size() >= 2);
        for (auto& r : p->rules) {
            reached.mark("uid rule", r.uid.has_value());
            reached.mark("gid rule", r.gid.has_value());
            reached.mark("iface *", r.iface == "*");
            reached.mark("port 1-65535", r.port_lo == 1 && r.port_hi == 65535);
            reached.mark("a single port", r.port_lo == r.port_hi);
            reached.mark("stage *", r.stages == std::vector<std::string>{"*"});
            for (auto& n : r.stages) reached.mark("15-byte stage name", n.size() == 15);
        }
        int last = 0;
        for (auto& r : p->rules) {
            if (auto pr = rule_problem(r, lines); !pr.empty())
                bad.add(text, "line " + std::to_string(r.line) + ": " + pr);
            if (r.line <= last) bad.add(text, "rules out of line order");
            last = r.line;
        }
        const std::string again = write_policy(*p);
        auto back = Policy::parse(again, "fuzz.policy");
        if (!back)
            bad.add(text, "its rules written back do not parse: " + back.error().what());
        else if (!same_rules(*p, *back))
            bad.add(text, "its rules written back parse to other rules: '" + show(again) + "'");
    }
    tally.check("Policy::parse");
    reached.check("Policy::parse");
    bad.report();
}

TEST_CASE("loader decoders: StageSpec::parse never crashes on 20000 mutated specs; accepted specs "
          "have a [a-z0-9_] name of 1-15, a config of at most 63 printable bytes without spaces, "
          "and travel through text() and the agent protocol unchanged") {
    Mutator m(
        {
            "count",
            "count:",
            "shard:n=4,key=hash",
            "a:b",
            "abcdefghijklmno",
            "x:" + std::string(63, 'c'),
            "count:k=v,k2=v2",
            "s_1:key=a:b=c",
        },
        {"count", "shard", "n=4", "key=hash", "k=", "=v", ":", "::", ",", "COUNT", "a b", "a\tb",
         std::string("a\0b", 3), "abcdefghijklmnop"},
        ":,=");
    Findings bad;
    Tally tally;
    Reached reached{
        "15-byte name",      "63-byte config",          "no config",
        "refused: bad name", "refused: 64-byte config", "refused: space, control or NUL in config"};
    for (int i = 0; i < kIterations; ++i) {
        const std::string text = m.next();
        auto s = StageSpec::parse(text);
        if (!s) {
            ++tally.refused;
            const Error& e = s.error();
            if (auto p = error_problem(e); !p.empty()) bad.add(text, p);
            reached.mark("refused: bad name", says(e, "a stage is NAME"));
            reached.mark("refused: 64-byte config", says(e, "configuration longer than 63"));
            reached.mark("refused: space, control or NUL in config",
                         says(e, "configuration has a space"));
            continue;
        }
        ++tally.accepted;
        m.keep(text);
        reached.mark("15-byte name", s->name.size() == 15);
        reached.mark("63-byte config", s->config.size() == 63);
        reached.mark("no config", s->config.empty());
        if (auto p = stage_problem(*s); !p.empty()) bad.add(text, p);
        if (s->name.find(':') != std::string::npos) bad.add(text, "a name with a colon");
        auto back = StageSpec::parse(s->text());
        if (!back || *back != *s) bad.add(text, "text() does not parse back to the same spec");
        // What a client may send, the agent must take, and get the same stage.
        proto::Request req{proto::Op::attach, FlowKey{"lo", Hook::xdp, 7000, std::nullopt}, {*s}};
        auto line = proto::format_request(req);
        if (!line) {
            bad.add(text,
                    "accepted, but the agent protocol cannot carry it: " + line.error().what());
            continue;
        }
        auto got = proto::parse_request(*line);
        if (!got)
            bad.add(text, "format_request sent '" + show(*line) +
                              "', which the agent refuses: " + got.error().what());
        else if (got->stages != req.stages)
            bad.add(text, "the agent got another stage than the client sent");
    }
    tally.check("StageSpec::parse");
    reached.check("StageSpec::parse");
    bad.report();
}

TEST_CASE("loader decoders: read_pcap never crashes on 20000 mutated capture files and returns "
          "exactly the packet a reference reader finds, or refuses with a reason") {
    // An Ethernet/IPv4/UDP datagram (loader/README.md's explain sample), and other frames.
    const std::string udp = std::string(
        "\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00\x45\x00\x00\x21\x00\x01\x00\x00"
        "\x40\x11\xee\xa3\xc6\x12\x00\x02\xc6\x12\x00\x01\x13\x88\x1b\x59\x00\x0d\x00\xf9hello",
        47);
    const std::string arp(60, '\x06'), jumbo(9000, '\x5a');
    const std::vector<std::string> seeds = {
        pcap_file(0xa1b2c3d4, false, 1, {{udp, 47}}),
        pcap_file(0xa1b2c3d4, true, 1, {{udp, 47}, {arp, 60}, {udp.substr(0, 20), 47}}),
        pcap_file(0xa1b23c4d, false, 1, {{arp, 60}, {udp, 47}}),
        pcap_file(0xa1b23c4d, true, 0x10000001, {{"", 0}, {jumbo, 9000}, {udp, 1514}}),
        pcap_file(0xa1b2c3d4, false, 113, {{udp, 47}}),             // LINUX_SLL: refused
        std::string("\x0a\x0d\x0d\x0a", 4) + std::string(40, '\0'), // pcapng: refused
    };
    Mutator m(seeds, {}, "");
    std::mt19937_64 fields(kSeed ^ 0x5ca1ab1e);
    auto below = [&](size_t n) { return n == 0 ? 0 : size_t(fields() % n); };
    static const uint32_t limits[] = {0,      1,      47,         65535,      65536,
                                      262144, 262145, 0x7fffffff, 0x80000000, 0xffffffff};
    static const uint64_t indexes[] = {1, 1, 1, 1, 2, 2, 3, 4, 0, 65536, 4294967296ull, UINT64_MAX};

    ScratchFile file;
    REQUIRE(file.ok());
    ScratchFile again;
    REQUIRE(again.ok());
    Findings bad;
    Tally tally;
    Reached reached{"little-endian",
                    "big-endian",
                    "nanosecond timestamps",
                    "packet 2 or later",
                    "cut by the snaplen",
                    "an empty packet",
                    "refused: pcapng",
                    "refused: other link type",
                    "refused: packet 0",
                    "refused: over 256 KiB",
                    "refused: ends inside a packet",
                    "refused: ends inside a header",
                    "refused: no such packet",
                    "refused: unknown magic"};
    for (int i = 0; i < kIterations; ++i) {
        std::string b = m.next();
        // Numbers at their limits in the header fields: lengths, magic, link type.
        if (below(2) == 0) {
            auto at = pcap_fields(b);
            if (!at.empty()) {
                size_t off = at[below(at.size())];
                std::string v;
                put32(v, limits[below(std::size(limits))], below(2) == 0);
                b.replace(off, 4, v);
            }
        }
        const uint64_t index = indexes[below(std::size(indexes))];
        REQUIRE(file.write(b));
        auto got = cli::read_pcap(file.path(), index);
        auto want = ref_pcap(b, index);
        const std::string tag = "[packet " + std::to_string(index) + "] ";
        if (!got) {
            ++tally.refused;
            const Error& e = got.error();
            if (auto p = error_problem(e); !p.empty()) bad.add(b, tag + p);
            reached.mark("refused: pcapng", says(e, "is pcapng"));
            reached.mark("refused: other link type", says(e, "is not Ethernet"));
            reached.mark("refused: packet 0", says(e, "numbered from 1"));
            reached.mark("refused: over 256 KiB", says(e, "the file is corrupt"));
            reached.mark("refused: ends inside a packet", says(e, "the file ends inside packet"));
            reached.mark("refused: ends inside a header", says(e, "inside the header"));
            reached.mark("refused: no such packet", says(e, "there is no packet"));
            reached.mark("refused: unknown magic", says(e, "unknown magic"));
            if (want.ok) bad.add(b, tag + "refused a packet that is there: " + got.error().what());
            continue;
        }
        ++tally.accepted;
        m.keep(b);
        if (!want.ok) {
            bad.add(b, tag + "returned a packet the file does not hold");
            continue;
        }
        const uint32_t magic = get32(b, 0, false);
        reached.mark("little-endian", magic == 0xa1b2c3d4 || magic == 0xa1b23c4d);
        reached.mark("big-endian", magic == 0xd4c3b2a1 || magic == 0x4d3cb2a1);
        reached.mark("nanosecond timestamps", magic == 0xa1b23c4d || magic == 0x4d3cb2a1);
        reached.mark("packet 2 or later", index >= 2);
        reached.mark("cut by the snaplen", got->data.size() < got->orig_len);
        reached.mark("an empty packet", got->data.empty());
        if (got->data.size() > kPcapMaxRecord) bad.add(b, tag + "a packet over 256 KiB");
        if (std::string(got->data.begin(), got->data.end()) != want.data ||
            got->orig_len != want.orig)
            bad.add(b, tag + "returned other bytes than the file holds");
        // The packet written out as a capture of its own reads back the same.
        std::string one(got->data.begin(), got->data.end());
        REQUIRE(again.write(pcap_file(0xa1b2c3d4, false, 1, {{one, got->orig_len}})));
        auto back = cli::read_pcap(again.path(), 1);
        if (!back || back->data != got->data || back->orig_len != got->orig_len)
            bad.add(b, tag + "the packet does not survive being written out and read again");
    }
    tally.check("read_pcap");
    reached.check("read_pcap");
    bad.report();
}
