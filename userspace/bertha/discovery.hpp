// Discovery: what this host can do for Bertha's offloads, probed once per process and cached.
// probe(&peer) looks at the interface that routes to the peer (XDP native/generic, AF_XDP copy
// and zero-copy, an XDP program already attached there) and at the host (kernel, privilege or a
// reachable agent, BTF, BPF program loading, TC hooks: tcx or clsact). Every "no" carries a
// reason, and the result is summed up as HostFacts, which select uses to prune the
// implementations this host cannot run before anything is offered to a peer.
//
// Every probe is read-only or fully undone before it returns, bounded in time (netlink waits at
// most one second), and works without privilege: it then answers "no" with the reason.
#pragma once

#include "bertha/addr.hpp"
#include "bertha/chunnel.hpp"
#include "bertha/error.hpp"

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace bertha {

// Where the loader agent (`bertha-load serve`, a later issue) listens. BERTHA_AGENT_SOCKET in the
// environment overrides it (tests, unusual installs).
inline constexpr std::string_view kAgentSocket = "/run/bertha/agent.sock";

// One yes/no answer. `why` is the reason for a no, and says how a yes was established.
struct Feature {
    bool yes = false;
    std::string why;
    explicit operator bool() const noexcept { return yes; }
};

// How XDP native support on an interface is decided.
enum class XdpMethod : uint8_t {
    automatic,    // xdp-features when the kernel has them, else a trial attach
    features,     // the netdev generic-netlink family's xdp-features (Linux 6.3+); read-only
    trial_attach, // attach an XDP_PASS program in driver mode and detach it at once (privileged)
};
std::string_view to_string(XdpMethod m) noexcept;

struct ProbeOptions {
    XdpMethod xdp_method = XdpMethod::automatic;
};

// An XDP program already attached to an interface (bpf_xdp_query).
struct XdpAttachment {
    uint32_t prog_id = 0;
    std::string mode; // "native", "generic", "offload"
    std::string name; // empty when this process may not look programs up by id
};

struct InterfaceFacts {
    std::string name;
    int ifindex = 0;
    std::string driver; // ethtool's driver name; empty when the device has none (lo)

    // NETDEV_XDP_ACT_* bits from xdp-features; valid when xdp_features_known.
    uint64_t xdp_features = 0;
    bool xdp_features_known = false;
    XdpMethod xdp_method = XdpMethod::features; // how xdp_native was decided

    Feature xdp_native;   // the driver runs XDP programs itself (XDP_FLAGS_DRV_MODE)
    Feature xdp_generic;  // skb-mode XDP: any interface, whenever XDP programs can be loaded
    Feature xsk_copy;     // AF_XDP socket bound in copy mode on queue 0
    Feature xsk_zerocopy; // the driver advertises AF_XDP zero-copy
    std::vector<XdpAttachment> existing_xdp; // programs already attached (never disturbed)
};

// The route the kernel would use towards a peer (rtnetlink RTM_GETROUTE).
struct Route {
    Addr peer;
    int ifindex = 0;
    std::string ifname;
    std::string source;  // preferred source address, if the route names one
    std::string gateway; // next hop, empty when the peer is on-link
};
Result<Route> route_to(const Addr& peer);

struct ProbeReport {
    std::string kernel_release; // uname -r
    int kernel_major = 0, kernel_minor = 0;
    unsigned euid = 0;

    Feature privileged; // CAP_NET_ADMIN and CAP_BPF (or CAP_SYS_ADMIN) effective
    Feature agent;      // a loader agent answers at agent_path
    std::string agent_path;
    Feature btf;           // /sys/kernel/btf/vmlinux readable
    Feature bpf_xdp;       // an XDP program loads here (BPF_PROG_LOAD)
    Feature bpf_sched_cls; // a SCHED_CLS (TC) program loads here
    Feature tcx;           // the tcx egress hook exists (Linux 6.6+)
    Feature clsact;        // the clsact qdisc exists (sch_ingress)
    Feature af_xdp;        // socket(AF_XDP, SOCK_RAW, 0) succeeds in this process

    // The interface the facts are about: the one towards the peer, or the one asked for. Empty
    // when probe() had no peer; no_interface says why.
    std::optional<InterfaceFacts> interface;
    std::string no_interface;

    HostFacts facts; // the summary select uses: a reason for every denied Need

    uint64_t generation = 0; // increases with every probe in this process
    std::chrono::microseconds took{0};

    // A table for people, one feature per line: "xdp native   yes  xdp-features: basic, ...".
    // With `route`, the route to the peer is printed too.
    std::string text(const Route* route = nullptr) const;
    // The same as one JSON object.
    std::string json(const Route* route = nullptr) const;
};

// Cached per process and per interface, thread-safe. A report stays valid (and at the same
// address) for the life of the process, also across probe_refresh(), so HostFacts pointers into
// it may be kept. probe() with no peer reports host-wide facts and denies the per-interface
// needs (xdp, af_xdp) because no interface is known.
const ProbeReport& probe(const Addr* peer = nullptr);
const ProbeReport& probe_interface(std::string_view ifname);
// The interface that owns `local` (bind/listen); no interface for a wildcard address.
const ProbeReport& probe_local(const Addr& local);
// Drop the cache: the next call probes again (earlier reports stay readable).
void probe_refresh();

// Uncached, with options (the probe command line uses this to force the XDP method). An
// `ifindex` of 0 means no interface, and `no_interface` says why (a default sentence if empty).
ProbeReport probe_now(int ifindex, const ProbeOptions& opts = {}, std::string no_interface = "");

} // namespace bertha
