// The loader agent: its policy file parser (every error names file:line), its decisions (uid,
// gid, interface, port range edges, stage lists), its wire protocol (malformed requests get an
// `err`, never a crash), and a round trip through serve() with a real Loader: attach, refusal,
// references, and a client's references released when its socket closes.
#include "loader/agent.hpp"
#include "loader/agent_protocol.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <doctest/doctest.h>
#include <fstream>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>

using namespace bertha;
using namespace bertha::load;

namespace {

FlowKey flow(std::string ifname, uint16_t port, Hook hook = Hook::xdp) {
    return FlowKey{std::move(ifname), hook, port, std::nullopt};
}

std::vector<StageSpec> chain(std::initializer_list<const char*> names) {
    std::vector<StageSpec> out;
    for (auto n : names) out.push_back(StageSpec{n, ""});
    return out;
}

// The error of a policy that must not parse.
Error policy_error(const std::string& text) {
    auto p = Policy::parse(text, "test.policy");
    REQUIRE_FALSE(p.has_value());
    return p.error();
}

Error request_error(std::string_view msg) {
    auto r = proto::parse_request(msg);
    REQUIRE_FALSE(r.has_value());
    return r.error();
}

constexpr const char* kTwoRules =
    "# the sample of agent.hpp\n"
    "allow uid=1000 iface=veth0 port=7000-7100 stage=count,shard\n"
    "\n"
    "  allow\tgid=2000 iface=* port=9000 stage=*   # trailing comment\n";

} // namespace

TEST_CASE("policy: the documented rules parse into the fields they name, with their lines") {
    auto p = Policy::parse(kTwoRules, "test.policy");
    REQUIRE(p.has_value());
    CHECK(p->source == "test.policy");
    REQUIRE(p->rules.size() == 2);
    const auto& a = p->rules[0];
    CHECK(a.uid == std::optional<uint32_t>(1000));
    CHECK_FALSE(a.gid.has_value());
    CHECK(a.iface == "veth0");
    CHECK(a.port_lo == 7000);
    CHECK(a.port_hi == 7100);
    CHECK(a.stages == std::vector<std::string>{"count", "shard"});
    CHECK(a.line == 2);
    const auto& b = p->rules[1];
    CHECK(b.gid == std::optional<uint32_t>(2000));
    CHECK_FALSE(b.uid.has_value());
    CHECK(b.iface == "*");
    CHECK(b.port_lo == 9000);
    CHECK(b.port_hi == 9000);
    CHECK(b.stages == std::vector<std::string>{"*"});
    CHECK(b.line == 4);
}

TEST_CASE(
    "policy: group and user names resolve, port=* is every port, an empty file has no rules") {
    auto p = Policy::parse("allow gid=root iface=lo port=* stage=count\nallow uid=root iface=lo "
                           "port=1 stage=count",
                           "x");
    REQUIRE(p.has_value());
    REQUIRE(p->rules.size() == 2);
    CHECK(p->rules[0].gid == std::optional<uint32_t>(0));
    CHECK(p->rules[0].port_lo == 1);
    CHECK(p->rules[0].port_hi == 65535);
    CHECK(p->rules[1].uid == std::optional<uint32_t>(0));
    auto empty = Policy::parse("# nothing\n\n", "x");
    REQUIRE(empty.has_value());
    CHECK(empty->rules.empty());
}

TEST_CASE("policy: every malformed rule is refused naming file:line and what is wrong") {
    struct Case {
        const char* text;
        const char* says;
    };
    const Case cases[] = {
        {"deny uid=1 iface=* port=* stage=*", "rules start with 'allow'"},
        {"allow uid=1 iface=* port=*", "needs stage="},
        {"allow uid=1 port=* stage=*", "needs iface="},
        {"allow uid=1 iface=* stage=*", "needs port="},
        {"allow iface=* port=* stage=*", "needs uid= or gid="},
        {"allow uid=1 gid=2 iface=* port=* stage=*", "not both"},
        {"allow uid=1 uid=2 iface=* port=* stage=*", "uid= given twice"},
        {"allow uid=1 iface=a iface=b port=* stage=*", "iface= given twice"},
        {"allow uid=no_such_user_bertha iface=* port=* stage=*",
         "no user named 'no_such_user_bertha'"},
        {"allow gid=no_such_group_bertha iface=* port=* stage=*",
         "no group named 'no_such_group_bertha'"},
        {"allow uid=4294967295 iface=* port=* stage=*", "out of range"},
        {"allow uid=1 iface=* port=0 stage=*", "port=0"},
        {"allow uid=1 iface=* port=65536 stage=*", "port=65536"},
        {"allow uid=1 iface=* port=7100-7000 stage=*", "reversed"},
        {"allow uid=1 iface=* port=70-x stage=*", "port=70-x"},
        {"allow uid=1 iface=* port=* stage=Count", "'Count' is not a stage name"},
        {"allow uid=1 iface=* port=* stage=count,,shard", "'' is not a stage name"},
        {"allow uid=1 iface=* port=* stage=count,*", "* stands alone"},
        {"allow uid=1 iface=a/b port=* stage=*", "interface"},
        {"allow uid=1 iface=averyveryverylongname port=* stage=*", "longer than 15"},
        {"allow uid=1 iface= port=* stage=*", "iface= has no value"},
        {"allow uid=1 iface=* port=* stage=* color=red", "unknown key 'color'"},
        {"allow uid=1 iface=* port=* stage=* junk", "'junk' is not key=value"},
        {"allow uid=1 iface=* port=* stage=*\x01", "control or non-ASCII byte"},
    };
    for (auto& c : cases) {
        CAPTURE(c.text);
        auto e = policy_error(c.text);
        CHECK(e.code == Errc::invalid_argument);
        CHECK(e.component == "test.policy:1");
        CHECK(e.what().starts_with("test.policy:1: "));
        CHECK(e.message.find(c.says) != std::string::npos);
    }
    // The line is the file's, comments and blank lines included.
    auto e = policy_error("# header\n\nallow uid=1 iface=* port=* stage=*\nallow uid=1 iface=*\n");
    CHECK(e.component == "test.policy:4");
}

TEST_CASE("policy: Policy::load names the file, and refuses one everyone may write") {
    char dir[] = "/tmp/bertha-policy-test.XXXXXX";
    REQUIRE(mkdtemp(dir) != nullptr);
    const std::string path = std::string(dir) + "/policy";
    std::ofstream(path) << "allow uid=1 iface=* port=*\n";
    ::chmod(path.c_str(), 0644);
    auto bad = Policy::load(path);
    REQUIRE_FALSE(bad.has_value());
    CHECK(bad.error().component == path + ":1");
    ::chmod(path.c_str(), 0666);
    auto open = Policy::load(path);
    REQUIRE_FALSE(open.has_value());
    CHECK(open.error().message.find("writable by everyone") != std::string::npos);
    auto missing = Policy::load(path + ".none");
    REQUIRE_FALSE(missing.has_value());
    CHECK(missing.error().code == Errc::system);
    CHECK(missing.error().sys_errno == ENOENT);
    ::unlink(path.c_str());
    ::rmdir(dir);
}

TEST_CASE("policy: refuses() allows exactly what a rule names: uid or gid, interface, port range "
          "edges, every stage") {
    auto p = Policy::parse(kTwoRules, "test.policy");
    REQUIRE(p.has_value());
    const std::vector<uint32_t> no_groups{1000};
    auto allowed = [&](uint32_t uid, std::vector<uint32_t> gids, FlowKey k,
                       std::vector<StageSpec> st) { return p->refuses(uid, gids, k, st).empty(); };

    // uid rule: the range's edges are in, one past them is out.
    CHECK(allowed(1000, no_groups, flow("veth0", 7000), chain({"count"})));
    CHECK(allowed(1000, no_groups, flow("veth0", 7100), chain({"count"})));
    CHECK_FALSE(allowed(1000, no_groups, flow("veth0", 6999), chain({"count"})));
    CHECK_FALSE(allowed(1000, no_groups, flow("veth0", 7101), chain({"count"})));
    // Another interface; a chain with one stage the rule does not list.
    CHECK_FALSE(allowed(1000, no_groups, flow("veth1", 7000), chain({"count"})));
    CHECK(allowed(1000, no_groups, flow("veth0", 7000), chain({"count", "shard"})));
    CHECK_FALSE(allowed(1000, no_groups, flow("veth0", 7000), chain({"count", "kvcache"})));
    // The hook does not matter to a rule; the stage's configuration neither (its name does).
    CHECK(allowed(1000, no_groups, flow("veth0", 7050, Hook::tc_egress),
                  {StageSpec{"shard", "n=4"}}));

    // gid rule, matched through a supplementary group: any interface, any stage, one port.
    CHECK(allowed(1001, {1001, 2000}, flow("eth9", 9000), chain({"anything", "count"})));
    CHECK_FALSE(allowed(1001, {1001, 2000}, flow("eth9", 9001), chain({"count"})));
    CHECK_FALSE(allowed(1001, {1001}, flow("eth9", 9000), chain({"count"})));
    // A uid equal to a rule's gid is not that group.
    CHECK_FALSE(allowed(2000, {5}, flow("eth9", 9000), chain({"count"})));
    // Root is held to the policy like everyone else.
    CHECK_FALSE(allowed(0, {0}, flow("veth0", 7000), chain({"count"})));
}

TEST_CASE(
    "policy: a refusal names the caller, the request, the policy file and the caller's rules") {
    auto p = Policy::parse(kTwoRules, "/etc/bertha/policy");
    REQUIRE(p.has_value());
    auto st = chain({"count", "kvcache"});
    const std::vector<uint32_t> gids{1000, 27};
    auto why = p->refuses(1000, gids, flow("veth0", 7000), st);
    CHECK(why.find("uid 1000 (gids 1000,27)") != std::string::npos);
    CHECK(why.find("attach count -> kvcache on veth0 xdp udp/7000") != std::string::npos);
    CHECK(why.find("no rule in /etc/bertha/policy allows it") != std::string::npos);
    CHECK(why.find("line 2 (iface veth0, port 7000-7100, stage count,shard)") != std::string::npos);
    const std::vector<uint32_t> other{42};
    auto stranger = p->refuses(42, other, flow("veth0", 7000), chain({"count"}));
    CHECK(stranger.find("no rule names uid 42 or its gids") != std::string::npos);
}

TEST_CASE("protocol: a request survives format and parse field for field") {
    proto::Request r;
    r.op = proto::Op::attach;
    r.key = flow("veth0", 7000, Hook::tc_egress);
    r.key.peer = *Addr::parse("198.18.0.2:5000");
    r.stages = {StageSpec{"count", ""}, StageSpec{"shard", "n=4,key=hash"}};
    auto text = proto::format_request(r);
    REQUIRE(text.has_value());
    CHECK(*text == "v1 attach veth0 tc-egress 7000 198.18.0.2:5000 count shard:n=4,key=hash");
    auto back = proto::parse_request(*text + "\n");
    REQUIRE(back.has_value());
    CHECK(back->op == proto::Op::attach);
    CHECK(back->key.text() == r.key.text());
    CHECK(back->stages == r.stages);

    auto det = proto::format_request(proto::Request{proto::Op::detach, flow("lo", 1), {}});
    REQUIRE(det.has_value());
    CHECK(*det == "v1 detach lo xdp 1 -");
    auto d = proto::parse_request(*det);
    REQUIRE(d.has_value());
    CHECK(d->op == proto::Op::detach);
    CHECK_FALSE(d->key.peer.has_value());
    CHECK(d->stages.empty());
}

TEST_CASE("protocol: malformed requests are refused with a reason, never obeyed") {
    struct Case {
        std::string msg;
        const char* says;
    };
    const Case cases[] = {
        {std::string(proto::kMaxRequest + 1, 'a'), "longer than 1024 bytes"},
        {"", "starts with the protocol version"},
        {"v1", "no operation"},
        {"v1 fly lo xdp 7000 - count", "unknown operation 'fly'"},
        {"v1 attach lo xdp 7000 -", "the form is v1 attach"},
        {"v1 attach lo xdp 7000", "the form is v1 attach"},
        {"v1 detach lo xdp 7000 - count", "the form is v1 detach"},
        {"v1 attach lo ingress 7000 - count", "unknown hook 'ingress'"},
        {"v1 attach lo xdp 0 - count", "'0' is not a port"},
        {"v1 attach lo xdp 65536 - count", "'65536' is not a port"},
        {"v1 attach lo xdp 7a - count", "'7a' is not a port"},
        {"v1 attach lo xdp 007000 - count", "is not a port"},
        {"v1 attach lo xdp 7000 - count ", "is empty"},
        {"v1 attach lo  xdp 7000 - count", "is empty"},
        {"v1 attach lo xdp 7000 198.18.0.2 count", "no port"},
        {"v1 attach averyveryverylongname xdp 7000 - count", "longer than 15"},
        {"v1 attach a/b xdp 7000 - count", "interface"},
        {"v1 attach lo xdp 7000 - Count", "a stage is NAME"},
        {"v1 attach lo xdp 7000 - count\tcount", "control or non-ASCII"},
        {"v1 attach lo xdp 7000 - c c c c c c c c c", "9 stages"},
    };
    for (auto& c : cases) {
        CAPTURE(c.msg);
        auto e = request_error(c.msg);
        CHECK(e.code == Errc::invalid_argument);
        CHECK(e.what().find(c.says) != std::string::npos);
    }
    auto v2 = request_error("v2 attach lo xdp 7000 - count");
    CHECK(v2.code == Errc::incompatible);
    CHECK(v2.message.find("this agent speaks v1") != std::string::npos);
}

TEST_CASE("protocol: the client refuses to send what the agent would refuse") {
    CHECK_FALSE(proto::format_request({proto::Op::attach, flow("lo", 0), chain({"count"})}));
    CHECK_FALSE(proto::format_request({proto::Op::attach, flow("lo", 7000), {}}));
    CHECK_FALSE(proto::format_request({proto::Op::attach, flow("a b", 7000), chain({"count"})}));
    CHECK_FALSE(proto::format_request({proto::Op::detach, flow("lo", 7000), chain({"count"})}));
    CHECK_FALSE(proto::format_request(
        {proto::Op::attach, flow("lo", 7000), {StageSpec{"count", "a=b c"}}}));
}

TEST_CASE("protocol: replies carry chain ids and errors (code, multi-line message) intact") {
    auto ok = proto::parse_reply(proto::format_ok("3"), "agent x");
    REQUIRE(ok.has_value());
    CHECK(*ok == "3");
    auto bare = proto::parse_reply(proto::format_ok(), "agent x");
    REQUIRE(bare.has_value());
    CHECK(bare->empty());

    Error e{Errc::system, "lo: program count_xdp", "load refused\nverifier log:\nR1 \\ bad", 0};
    auto line = proto::format_err(e);
    CHECK(line.find('\n') == std::string::npos);
    CHECK(line.starts_with("err system "));
    auto back = proto::parse_reply(line, "agent x");
    REQUIRE_FALSE(back.has_value());
    CHECK(back.error().code == Errc::system);
    CHECK(back.error().component == "agent x");
    CHECK(back.error().message == e.what());

    // A huge message (a verifier log) is cut to fit, keeping its end.
    Error big{Errc::system, "p", std::string(50000, 'x') + "THE END", 0};
    auto cut = proto::format_err(big);
    CHECK(cut.size() <= proto::kMaxReply);
    CHECK(cut.ends_with("THE END"));

    auto junk = proto::parse_reply("hello", "agent x");
    REQUIRE_FALSE(junk.has_value());
    CHECK(junk.error().code == Errc::incompatible);
    for (Errc c : {Errc::invalid_argument, Errc::unavailable, Errc::incompatible, Errc::system,
                   Errc::no_buffers, Errc::closed})
        CHECK(proto::errc_from_name(proto::errc_name(c)) == std::optional<Errc>(c));
    CHECK_FALSE(proto::errc_from_name("nope").has_value());
}

// ---- a real agent ----------------------------------------------------------------------------
namespace {

// One connection, one request, its reply (or "" when none came).
std::string raw_call(const std::string& path, std::string_view msg) {
    int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    std::snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path.c_str());
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string reply;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) == 0 &&
        ::send(fd, msg.data(), msg.size(), MSG_NOSIGNAL) >= 0) {
        char buf[proto::kMaxReply];
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n > 0) reply.assign(buf, size_t(n));
    }
    ::close(fd);
    return reply;
}

// A temporary bpffs and an agent serving from a thread in its own network namespace (whose lo is
// the only interface it touches). Everything is undone on destruction, whatever failed.
struct AgentFixture {
    std::string dir, bpffs, socket, policy;
    std::atomic<bool> stop{false};
    std::atomic<int> state{0}; // 0 starting, 1 serving, -1 could not start
    std::string why;           // when state is -1
    std::thread thread;
    bool mounted = false;

    bool start() {
        char tmpl[] = "/tmp/bertha-agent-test.XXXXXX";
        if (!mkdtemp(tmpl)) return false;
        dir = tmpl;
        bpffs = dir + "/bpffs";
        socket = dir + "/run/agent.sock"; // its directory is the agent's to create
        policy = dir + "/policy";
        ::mkdir(bpffs.c_str(), 0700);
        if (::mount("bpf", bpffs.c_str(), "bpf", 0, "mode=0700") != 0) {
            why = std::string("mount bpffs: ") + std::strerror(errno);
            return false;
        }
        mounted = true;
        std::ofstream(policy) << "allow uid=" << ::getuid()
                              << " iface=lo port=7000-7001 stage=count\n";
        thread = std::thread([this] {
            if (::unshare(CLONE_NEWNET) != 0) {
                why = std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno);
                state = -1;
                return;
            }
            auto loader = Loader::open(Options{.root = bpffs + "/bertha"});
            if (!loader) {
                why = loader.error().what();
                state = -1;
                return;
            }
            state = 1;
            auto r = serve(*loader, ServeOptions{socket, policy, &stop});
            if (!r) why = r.error().what();
            (void)loader->detach_all("lo"); // whatever a failed test left behind
        });
        for (int i = 0; i < 300 && state == 0; ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        // Serving once the socket is there.
        for (int i = 0; i < 300 && state == 1 && ::access(socket.c_str(), F_OK) != 0; ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        return state == 1 && ::access(socket.c_str(), F_OK) == 0;
    }

    ~AgentFixture() {
        stop = true;
        if (thread.joinable()) thread.join();
        if (mounted) ::umount2(bpffs.c_str(), MNT_DETACH);
        for (auto p : {policy, socket, dir + "/run", bpffs, dir}) {
            ::unlink(p.c_str());
            ::rmdir(p.c_str());
        }
    }

    // The flow's references, as the pins say (0: no such flow).
    uint32_t refs(const FlowKey& k) {
        auto loader = Loader::open(Options{.root = bpffs + "/bertha"});
        if (!loader) return 0;
        auto st = loader->status("lo");
        if (!st) return 0;
        for (auto& i : *st)
            for (auto& c : i.chains)
                if (c.key.text() == k.text()) return c.refs;
        return 0;
    }
};

} // namespace

TEST_CASE("agent: attach, refusal, malformed requests, references held per client socket and "
          "released when it closes") {
    if (::geteuid() != 0) {
        MESSAGE("skipped: needs root (bpffs mount, a network namespace, BPF)");
        return;
    }
    AgentFixture fx;
    if (!fx.start()) {
        MESSAGE("skipped: the agent could not start here: " << fx.why);
        return;
    }
    struct stat st {};
    REQUIRE(::stat(fx.socket.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0666);
    const FlowKey k = flow("lo", 7000);
    const auto count = chain({"count"});
    {
        auto client = AgentClient::connect(fx.socket);
        REQUIRE(client.has_value());
        auto c1 = client->attach(k, count);
        REQUIRE_MESSAGE(c1.has_value(), c1.error().what());
        auto c2 = client->attach(k, count);
        REQUIRE(c2.has_value());
        CHECK(*c1 == *c2);
        CHECK(fx.refs(k) == 2);

        // Port 7002 is outside the policy's range.
        auto refused = client->attach(flow("lo", 7002), count);
        REQUIRE_FALSE(refused.has_value());
        CHECK(refused.error().code == Errc::unavailable);
        CHECK(refused.error().component == "agent " + fx.socket);
        CHECK(refused.error().message.find("no rule in " + fx.policy + " allows it") !=
              std::string::npos);

        // Malformed requests, each on a connection of its own.
        CHECK(raw_call(fx.socket, std::string(2000, 'v')).starts_with("err invalid_argument "));
        CHECK(
            raw_call(fx.socket, "v1 attach lo xdp 0 - count").starts_with("err invalid_argument "));
        CHECK(raw_call(fx.socket, "v1 attach lo xdp 7000 -").starts_with("err invalid_argument "));
        CHECK(raw_call(fx.socket, "v1 attach lo udp 7000 - count")
                  .starts_with("err invalid_argument "));
        CHECK(
            raw_call(fx.socket, "v9 attach lo xdp 7000 - count").starts_with("err incompatible "));
        CHECK(raw_call(fx.socket, std::string("v1 attach lo xdp 7000 - co\0nt", 29))
                  .starts_with("err invalid_argument "));
        // A connection may only give back references it holds.
        CHECK(raw_call(fx.socket, "v1 detach lo xdp 7000 -").find("holds no reference") !=
              std::string::npos);
        CHECK(fx.refs(k) == 2);

        REQUIRE(client->detach(k).has_value());
        CHECK(fx.refs(k) == 1);
        // The agent still serves this client after all of the above.
        auto again = client->attach(k, count);
        REQUIRE(again.has_value());
        CHECK(fx.refs(k) == 2);
    } // the client's socket closes: its two references go back
    // The agent notices within its poll interval; the last reference takes the interface's
    // chain, roots and pins with it (status reads pins without the loader's lock: wait for all).
    auto loader = Loader::open(Options{.root = fx.bpffs + "/bertha"});
    REQUIRE(loader.has_value());
    Result<std::vector<IfaceStatus>> status;
    for (int i = 0; i < 150; ++i) {
        status = loader->status();
        if (status && status->empty()) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    REQUIRE(status.has_value());
    for (auto& i : *status) {
        std::string pins;
        for (auto& p : i.pins) pins += " " + p;
        MESSAGE("left behind in " << i.dir << ":" << pins << ", " << i.chains.size()
                                  << " chain(s)");
    }
    CHECK(status->empty());
    CHECK(fx.refs(k) == 0);

    // A second agent on the same socket is refused while the first answers.
    auto second = serve(*loader, ServeOptions{fx.socket, fx.policy, &fx.stop});
    REQUIRE_FALSE(second.has_value());
    CHECK(second.error().message.find("another process answers") != std::string::npos);

    fx.stop = true;
    fx.thread.join();
    CHECK(fx.why.empty());
    CHECK(::access(fx.socket.c_str(), F_OK) != 0); // stop removed the socket file
}
