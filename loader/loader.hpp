// libbertha-load: owns the per-interface dispatchers and the flows' chains of offload stages.
//
// One interface's state lives in bpffs under <root>/<ifname>/ (root: $BERTHA_BPFFS, else
// /sys/fs/bpf/bertha; bpffs is mounted when it is missing): the shared maps of bertha/flow.h,
// the root programs and their links. Everything the loader knows is in there, so a restarted
// loader (or another process) re-adopts it, and `status` reads it back. When the last flow of an
// interface is detached, its roots are detached and its pins removed: nothing of ours remains.
//
// Calls are serialized per interface across processes (a lock file under /run/bertha), so two
// applications attaching flows on one interface never disturb each other.
#pragma once

#include "bertha/addr.hpp"
#include "bertha/error.hpp"
#include "bertha/flow.h"

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bertha::load {

enum class Hook : uint8_t { xdp = BERTHA_HOOK_XDP, tc_egress = BERTHA_HOOK_TC_EGRESS };
std::string_view to_string(Hook h) noexcept; // "xdp", "tc-egress"

enum class XdpMode : uint8_t { automatic, native, generic }; // automatic: native, else generic
enum class TcMode : uint8_t { automatic, tcx, clsact };      // automatic: tcx, else clsact

// "name" or "name:key=val,key=val" as the user wrote it.
struct StageSpec {
    std::string name;
    std::string config; // "key=val,key=val", validated by the stage's definition
    static Result<StageSpec> parse(std::string_view text);
    std::string text() const;
    friend bool operator==(const StageSpec&, const StageSpec&) = default;
};

// Which packets a chain gets: UDP to (xdp) or from (tc-egress) a local port, optionally only
// those of one peer (address, and port unless it is 0).
struct FlowKey {
    std::string ifname;
    Hook hook = Hook::xdp;
    uint16_t port = 0;
    std::optional<Addr> peer;
    std::string text() const; // "veth0 xdp udp/7000 from 198.18.0.2:5000"
};

struct Options {
    bool force = false; // replace an XDP program that is not ours
    XdpMode xdp_mode = XdpMode::automatic;
    TcMode tc_mode = TcMode::automatic;
    std::string root; // bpffs directory for our pins; empty: $BERTHA_BPFFS or /sys/fs/bpf/bertha
};

struct HookStatus {
    bool attached = false;
    std::string mode;     // "native", "generic" / "tcx", "clsact"
    uint32_t prog_id = 0; // the root program
    uint32_t link_id = 0; // 0 when attached without a link (clsact)
};

struct ChainStatus {
    uint32_t chain = 0;
    FlowKey key;
    uint32_t refs = 0;
    std::vector<StageSpec> stages;
    std::vector<uint32_t> prog_ids;
};

struct IfaceStatus {
    std::string ifname;
    int ifindex = 0; // 0: the interface is gone (pins remain until `detach --all`)
    std::string dir; // the pin directory
    HookStatus xdp, tc;
    std::vector<ChainStatus> chains;
    std::vector<std::string> pins;
};

struct StageStats {
    uint32_t chain = 0;
    uint32_t position = 0; // in the chain; the dispatcher's row has chain == BERTHA_NO_CHAIN
    Hook hook = Hook::xdp;
    std::string stage; // "count", or "dispatcher"
    FlowKey key;
    std::array<uint64_t, BERTHA_COUNTERS> counters{};
};
std::string_view counter_name(unsigned c) noexcept; // "pass", "tx", ...

struct ExplainStep {
    std::string stage; // "dispatcher" or the stage's name
    uint32_t chain = BERTHA_NO_CHAIN, position = 0;
    std::string did; // counter name: "pass", "hit", ...
};

struct Explanation {
    Hook hook = Hook::xdp;
    int verdict = 0;
    std::string verdict_name; // "XDP_PASS", "TC_ACT_UNSPEC (continue)", ...
    std::string parse;        // what the dispatcher's parser made of it
    std::vector<ExplainStep> steps;
    std::vector<uint8_t> out; // the packet as the chain left it
    bool changed = false;
};

// What the loader can put in a chain (the registry of loader/stages.cpp).
struct StageInfo {
    std::string_view name, summary;
    bool xdp = false, tc = false;
    std::vector<std::string_view> keys; // configuration keys it accepts
    bool ends_chain = false; // it redirects: a chain has it last or not at all
};
std::vector<StageInfo> known_stages();

class Loader {
  public:
    static Result<Loader> open(Options opts = {});
    Loader(Loader&&) noexcept;
    Loader& operator=(Loader&&) noexcept;
    ~Loader();

    const std::string& root() const noexcept;

    // Attach the interface's XDP dispatcher (idempotent). Refuses, naming it, an XDP program
    // that is not ours, unless Options::force.
    Result<void> attach_dispatcher(std::string_view ifname);

    // Attach a flow's chain (attaching the roots it needs). The same flow with the same stages
    // again only takes another reference; the same flow with other stages is refused.
    // Returns the chain id.
    Result<uint32_t> attach(const FlowKey& key, std::span<const StageSpec> stages);

    // Drop one reference (all of them with `all_refs`); the last one removes the chain, and the
    // last chain of an interface removes its roots and pins.
    Result<void> detach(const FlowKey& key, bool all_refs = false);
    // Everything of ours on the interface, whatever the references.
    Result<void> detach_all(std::string_view ifname);

    // Put an AF_XDP socket where the `xsk` stage of the flow's chain redirects the packets that
    // arrive on RX queue `queue` (bertha_xsks). The kernel takes the entry out when the socket
    // closes; clear_xsk takes it out before. Both refuse a flow whose chain has no xsk stage
    // redirecting into its own sockets.
    Result<void> set_xsk(const FlowKey& key, uint32_t queue, int xsk_fd);
    Result<void> clear_xsk(const FlowKey& key, uint32_t queue);

    // Interfaces with our pins (one, when ifname is given).
    Result<std::vector<IfaceStatus>> status(std::string_view ifname = {});
    Result<std::vector<StageStats>> stats(std::string_view ifname);
    // Run the live chain on one packet (BPF_PROG_TEST_RUN): which stages ran, what they did.
    Result<Explanation> explain(std::string_view ifname, Hook hook, std::span<const uint8_t> pkt);

    struct Impl;

  private:
    explicit Loader(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

} // namespace bertha::load
