// Discovery: the report is consistent (a reason for every 'no'), cached per interface, refreshed
// on demand, maps loopback peers to lo, and its facts prune what the host cannot run.
#include "bertha/bertha.hpp"
#include "bertha/discovery.hpp"
#include "test_chunnels.hpp"

#include <cstdlib>
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

using namespace bertha;
using namespace bertha::test;

namespace {

constexpr Need kNeeds[] = {Need::privilege, Need::xdp, Need::tc, Need::af_xdp, Need::btf};

Addr addr(const char* text) {
    auto a = Addr::parse(text);
    REQUIRE(a);
    return *a;
}

// Every feature says why, yes or no; every denied need has a reason.
void check_consistent(const ProbeReport& r) {
    INFO(r.text());
    CHECK(r.kernel_major >= 5);
    for (const Feature* f : {&r.privileged, &r.agent, &r.btf, &r.bpf_xdp, &r.bpf_sched_cls, &r.tcx,
                             &r.clsact, &r.af_xdp})
        CHECK_FALSE(f->why.empty());
    if (r.interface) {
        const InterfaceFacts& i = *r.interface;
        CHECK(i.ifindex > 0);
        CHECK_FALSE(i.name.empty());
        for (const Feature* f : {&i.xdp_native, &i.xdp_generic, &i.xsk_copy, &i.xsk_zerocopy})
            CHECK_FALSE(f->why.empty());
        // Zero-copy implies copy mode; native XDP needs a loadable program to count as a need.
        if (i.xsk_zerocopy) CHECK(i.xsk_copy);
        if (r.facts.meets(Need::xdp)) CHECK(i.xdp_native);
        CHECK(r.facts.meets(Need::af_xdp) == i.xsk_copy.yes);
    } else {
        CHECK_FALSE(r.no_interface.empty());
        CHECK_FALSE(r.facts.meets(Need::xdp));
        CHECK_FALSE(r.facts.meets(Need::af_xdp));
    }
    CHECK(r.facts.meets(Need::btf) == r.btf.yes);
    for (Need n : kNeeds) {
        CAPTURE(to_string(n));
        if (!r.facts.meets(n)) CHECK_FALSE(r.facts.why_not(n).empty());
        if (!r.facts.meets(n)) CHECK_FALSE(r.facts.reasons[std::countr_zero(uint32_t(n))].empty());
    }
    // Both renderings carry every need.
    std::string text = r.text(), json = r.json();
    for (Need n : kNeeds) {
        CHECK(text.find(std::string(to_string(n))) != std::string::npos);
        CHECK(json.find("\"" + std::string(to_string(n)) + "\"") != std::string::npos);
    }
}

} // namespace

TEST_CASE("probe: every 'no' has a reason, with no peer and with a loopback peer") {
    check_consistent(probe());
    Addr lo = addr("127.0.0.1:7000");
    check_consistent(probe(&lo));
    check_consistent(probe_interface("lo"));
}

TEST_CASE("probe with no peer denies xdp and af_xdp because no interface is known") {
    const ProbeReport& r = probe();
    CHECK_FALSE(r.interface);
    CHECK(r.facts.why_not(Need::xdp).find("no interface") != std::string::npos);
    CHECK(r.facts.why_not(Need::af_xdp).find("no interface") != std::string::npos);
}

TEST_CASE("HostFacts::local() is probe()'s facts") {
    HostFacts local = HostFacts::local();
    const HostFacts& probed = probe().facts;
    CHECK(local.available == probed.available);
    for (Need n : kNeeds) CHECK(local.why_not(n) == probed.why_not(n));
}

TEST_CASE("probe is cached per interface: repeated calls return the same report") {
    CHECK(&probe() == &probe());
    Addr a = addr("127.0.0.1:1"), b = addr("127.0.0.2:2");
    const ProbeReport& ra = probe(&a);
    CHECK(&ra == &probe(&a));
    CHECK(&ra == &probe(&b)); // another peer behind the same interface
    CHECK(&ra == &probe_interface("lo"));
    CHECK(&ra != &probe());
}

TEST_CASE("probe_refresh probes again, and earlier reports stay readable") {
    Addr lo = addr("127.0.0.1:7000");
    const ProbeReport& before = probe(&lo);
    const ProbeReport& host_before = probe();
    uint64_t generation = before.generation;
    probe_refresh();
    const ProbeReport& after = probe(&lo);
    CHECK(&after != &before);
    CHECK(after.generation > generation);
    CHECK(&probe() != &host_before);
    // The old report was retired, not freed: references (and HostFacts pointers) stay valid.
    CHECK(before.kernel_release == after.kernel_release);
    CHECK(before.interface->name == "lo");
    CHECK(&probe(&lo) == &after); // and the new one is cached in turn
}

TEST_CASE("a loopback peer maps to lo, IPv4 and IPv6") {
    Addr v4 = addr("127.0.0.1:7000");
    auto route = route_to(v4);
    REQUIRE(route);
    CHECK(route->ifname == "lo");
    const ProbeReport& r = probe(&v4);
    REQUIRE(r.interface);
    CHECK(r.interface->name == "lo");
    CHECK(r.interface->ifindex == route->ifindex);

    Addr v6 = addr("[::1]:7000");
    auto route6 = route_to(v6);
    REQUIRE(route6);
    CHECK(route6->ifname == "lo");
    CHECK(&probe(&v6) == &r);
}

TEST_CASE("a local address maps to the interface that owns it; a wildcard to none") {
    Addr mine = addr("127.0.0.1:7000");
    const ProbeReport& r = probe_local(mine);
    REQUIRE(r.interface);
    CHECK(r.interface->name == "lo");
    CHECK(&r == &probe(&mine));
    Addr any = addr("0.0.0.0:7000");
    CHECK(&probe_local(any) == &probe());
    CHECK_FALSE(probe_local(any).interface);
}

TEST_CASE("lo has no native XDP nor AF_XDP zero-copy, each with a reason naming lo") {
    Addr lo = addr("127.0.0.1:7000");
    const ProbeReport& r = probe(&lo);
    REQUIRE(r.interface);
    CHECK_FALSE(r.interface->xdp_native);
    CHECK_FALSE(r.interface->xsk_zerocopy);
    CHECK_FALSE(r.facts.meets(Need::xdp));
    CHECK(r.facts.why_not(Need::xdp).find("lo") != std::string::npos);
    // Generic XDP is possible exactly when XDP programs load here (or the agent is there).
    CHECK(r.interface->xdp_generic.yes == (r.bpf_xdp.yes || r.agent.yes));
}

TEST_CASE("an implementation that needs native XDP is pruned on lo; the fallback is chosen") {
    Addr lo = addr("127.0.0.1:7000");
    auto sel = select(Header<'x', Need::xdp>{}, Header<'f'>{});
    ConnectContext ctx;
    ctx.host = &probe(&lo).facts;
    auto pick = sel.resolve(ctx);
    REQUIRE(pick);
    CHECK(*pick == 1);

    auto only = select(Header<'x', Need::xdp>{});
    auto none = only.resolve(ctx);
    REQUIRE_FALSE(none);
    CHECK(none.error().message.find("needs xdp") != std::string::npos);
}

TEST_CASE("an unknown interface is reported as a reason, not an error") {
    const ProbeReport& r = probe_interface("bertha-none0");
    CHECK_FALSE(r.interface);
    CHECK(r.no_interface.find("bertha-none0") != std::string::npos);
    CHECK_FALSE(r.facts.meets(Need::xdp));
    CHECK(r.facts.why_not(Need::xdp).find("bertha-none0") != std::string::npos);
}

TEST_CASE("an agent listening at BERTHA_AGENT_SOCKET counts as privilege") {
    std::string path = "/tmp/bertha-agent-test-" + std::to_string(::getpid()) + ".sock";
    int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    std::snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path.c_str());
    ::unlink(path.c_str());
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) == 0);
    REQUIRE(::listen(fd, 4) == 0);
    ::setenv("BERTHA_AGENT_SOCKET", path.c_str(), 1);
    probe_refresh();
    const ProbeReport& with = probe();
    ::close(fd);
    ::unlink(path.c_str());
    CHECK(with.agent.yes);
    CHECK(with.agent_path == path);
    CHECK(with.facts.meets(Need::privilege));

    // Gone again: the socket file no longer exists, and the report says where it looked.
    probe_refresh();
    const ProbeReport& without = probe();
    CHECK_FALSE(without.agent.yes);
    CHECK(without.agent.why.find(path) != std::string::npos);
    ::unsetenv("BERTHA_AGENT_SOCKET");
    probe_refresh();
    CHECK(probe().agent_path == std::string(kAgentSocket));
}

TEST_CASE("probe leaves no XDP program on the interface it probed") {
    Addr lo = addr("127.0.0.1:7000");
    probe_refresh();
    const ProbeReport& r = probe(&lo);
    REQUIRE(r.interface);
    // A forced trial attach too (lo refuses driver mode, so nothing can stay either way).
    ProbeOptions trial;
    trial.xdp_method = XdpMethod::trial_attach;
    ProbeReport t = probe_now(r.interface->ifindex, trial);
    REQUIRE(t.interface);
    CHECK(t.interface->xdp_method == XdpMethod::trial_attach);
    CHECK_FALSE(t.interface->xdp_native);
    ProbeReport again = probe_now(r.interface->ifindex);
    REQUIRE(again.interface);
    CHECK(again.interface->existing_xdp.size() == r.interface->existing_xdp.size());
}
