// How a connection gets its offload stages attached, and gives them back.
//
// An offloaded implementation (count/xdp, shard/xdp, ...) asks, in its connect_wrap, for a chain
// of BPF stages on the connection's flow: attach_offload(flow, stages). The answer is an
// OffloadHandle that the connection keeps; destroying the connection destroys the handle, which
// drops its one reference on the chain. The loader counts references per flow and chain, so
// several connections on one flow share one chain, and the last one to close removes it (and the
// interface's dispatcher with the last chain there).
//
// Who attaches: one process-wide backend, made on first use.
//  - in-process, through one libbertha-load Loader, when this process is privileged
//    (CAP_NET_ADMIN and CAP_BPF, or CAP_SYS_ADMIN, effective: discovery's `privileged`);
//  - otherwise through the loader agent (`bertha-load serve`), over one AgentClient connection
//    to $BERTHA_AGENT_SOCKET or bertha::kAgentSocket. The agent drops the references of a
//    client that goes away, so a crashed application leaves nothing behind. (In-process
//    references of a process that crashes stay pinned until `bertha-load detach`.)
// BERTHA_LOG=debug says which one was used, and every attach and detach.
#pragma once

#include "bertha/addr.hpp"
#include "bertha/chunnel.hpp"
#include "bertha/error.hpp"
#include "loader/loader.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bertha {

// The flow a connection's stages are attached for: UDP to (xdp) or from (tc-egress) the local
// port on one interface, optionally only that of one peer.
struct OffloadFlow {
    std::string chunnel; // who asks, for logs and errors: "count/xdp"
    std::string ifname;
    load::Hook hook = load::Hook::xdp;
    uint16_t port = 0;
    std::optional<Addr> peer;
    // The base's sockets the flow's packets must end in (FlowFacts::redirect_chain): XDP chains
    // attached for this flow get the xsk stage appended, `xsk:sockets=CHAIN`.
    std::optional<uint32_t> redirect_chain;

    // The flow of a connection as stack.hpp describes it (ConnectContext::flow): its interface,
    // local port and peer (if it has one). An error naming the chunnel when one is unknown.
    static Result<OffloadFlow> of(const ConnectContext& ctx, load::Hook hook, std::string chunnel);

    load::FlowKey key() const;
    std::string text() const; // "count/xdp on veth0 xdp udp/7000 from 198.18.0.2:5000"
};

// What attaches and detaches chains: the in-process Loader or the agent. Control path only
// (connect and close), never per message: dynamic dispatch is fine here, and it is the seam tests
// use to stand in for the kernel.
class OffloadBackend {
  public:
    virtual ~OffloadBackend() = default;
    virtual std::string_view name() const noexcept = 0; // "in-process loader", "agent at PATH"
    virtual Result<uint32_t> attach(const load::FlowKey& key,
                                    std::span<const load::StageSpec> stages) = 0;
    virtual Result<void> detach(const load::FlowKey& key) = 0;
    // The counters of every stage on the interface (the agent does not serve them: an error).
    virtual Result<std::vector<load::StageStats>> stats(std::string_view ifname) = 0;
    // Enter (fd >= 0) or take out (fd < 0) the AF_XDP socket of RX queue `queue` for a flow whose
    // chain ends in the xsk stage (Loader::set_xsk). In-process only: the agent cannot take a
    // socket from another process yet, and an unprivileged process cannot make one anyway.
    virtual Result<void> set_xsk(const load::FlowKey& key, uint32_t queue, int fd) = 0;
};

// The process-wide backend, made on first use (see the top of this file). Thread-safe.
Result<std::shared_ptr<OffloadBackend>> offload_backend();
// The in-process backend around a given Loader (tests: a Loader rooted on their own bpffs).
std::shared_ptr<OffloadBackend> in_process_backend(load::Loader loader);
// Replace the process-wide backend (tests); nullptr: the next use makes the default again.
// Handles already attached keep the backend they were attached through.
void set_offload_backend(std::shared_ptr<OffloadBackend> backend);

// One reference on one flow's chain. Move-only; destroying it (or reset()) detaches: drops that
// one reference. A detach that fails is logged (warn) and the handle is empty all the same.
class OffloadHandle {
  public:
    OffloadHandle() = default; // holds nothing
    OffloadHandle(std::shared_ptr<OffloadBackend> backend, OffloadFlow flow, uint32_t chain);
    OffloadHandle(OffloadHandle&& o) noexcept;
    OffloadHandle& operator=(OffloadHandle&& o) noexcept;
    OffloadHandle(const OffloadHandle&) = delete;
    OffloadHandle& operator=(const OffloadHandle&) = delete;
    ~OffloadHandle();

    explicit operator bool() const noexcept { return backend_ != nullptr; }
    const OffloadFlow& flow() const noexcept { return flow_; }
    uint32_t chain() const noexcept { return chain_; }
    std::string_view path() const noexcept; // the backend's name; "" when empty

    // Detach now and say how it went (the destructor only logs). Empty afterwards.
    Result<void> release();
    void reset() noexcept;

    // This chain's stages' counters, in chain order (read through the backend).
    Result<std::vector<load::StageStats>> stats() const;
    // The flow's AF_XDP socket on RX queue `queue` (its chain ends in the xsk stage): enter it,
    // or take it out with fd < 0.
    Result<void> set_xsk(uint32_t queue, int fd) const;

  private:
    std::shared_ptr<OffloadBackend> backend_;
    OffloadFlow flow_;
    uint32_t chain_ = 0;
};

// Attach `stages` for `flow` through the process-wide backend. Errors name the chunnel, the flow,
// the path (in-process or agent) and why.
Result<OffloadHandle> attach_offload(const OffloadFlow& flow,
                                     std::span<const load::StageSpec> stages);
// The same through a given backend.
Result<OffloadHandle> attach_offload(std::shared_ptr<OffloadBackend> backend,
                                     const OffloadFlow& flow,
                                     std::span<const load::StageSpec> stages);

} // namespace bertha
