// The agent: `bertha-load serve` attaches offloads for applications that may not load BPF
// themselves. It listens on a Unix socket (bertha::kAgentSocket, or $BERTHA_AGENT_SOCKET),
// checks every caller's uid/gids (SO_PEERCRED) against its policy file, and attaches through
// its Loader. A flow attached for a client holds one reference for as long as the client's
// socket is open: a client that exits or crashes gives its references back.
//
// Policy file, one rule per line ('#' starts a comment):
//     allow uid=1000 iface=veth0 port=7000-7100 stage=count,shard
//     allow gid=bertha iface=* port=* stage=*
// A caller is allowed a request when one rule matches its uid (or one of its gids), the
// interface, the port and every stage of the chain. Anything else is refused, naming the rule
// set that refused it. Root (uid 0) is held to the policy like everyone else.
#pragma once

#include "bertha/error.hpp"
#include "loader/kernel_objects.hpp"
#include "loader/loader.hpp"

#include <atomic>
#include <string>
#include <vector>

namespace bertha::load {

struct PolicyRule {
    std::optional<uint32_t> uid, gid; // exactly one is set
    std::string iface;                // "*" or a name
    uint16_t port_lo = 0, port_hi = 65535;
    std::vector<std::string> stages;  // {"*"} or names
    int line = 0;
};

struct Policy {
    std::vector<PolicyRule> rules;
    std::string source; // the file it came from
    static Result<Policy> parse(std::string_view text, std::string source = "policy");
    static Result<Policy> load(const std::string& path);
    // Empty when allowed; otherwise why not, in words for the caller.
    std::string refuses(uint32_t uid, std::span<const uint32_t> gids, const FlowKey& key,
                        std::span<const StageSpec> stages) const;
};

struct ServeOptions {
    std::string socket_path; // empty: $BERTHA_AGENT_SOCKET, else kAgentSocket
    std::string policy_path; // required
    const std::atomic<bool>* stop = nullptr; // serve returns when it turns true (signals)
};

// Run the agent until *stop (or a fatal error). State of earlier runs is re-adopted by the
// Loader (it reads the pins); references of clients of an earlier run that are gone are not
// dropped automatically: `bertha-load detach` removes them.
Result<void> serve(Loader& loader, const ServeOptions& opts);

// An application's connection to the agent. Flows it attaches are detached when it (or the
// process) goes away, or by detach().
class AgentClient {
  public:
    static Result<AgentClient> connect(std::string path = {});
    Result<uint32_t> attach(const FlowKey& key, std::span<const StageSpec> stages);
    Result<void> detach(const FlowKey& key);

  private:
    explicit AgentClient(Fd fd) : fd_(std::move(fd)) {}
    Result<std::string> call(const std::string& request);
    Fd fd_;
};

} // namespace bertha::load
