// The agent's wire protocol (internal to libbertha-load; exposed so that the unit tests check the
// parser and the formatter directly). One request and one reply per SOCK_SEQPACKET message, each
// one line of printable ASCII, fields separated by single spaces:
//
//     v1 attach <ifname> <xdp|tc-egress> <port> <peer|-> <stage> [<stage>...]
//         -> ok <chain>
//     v1 detach <ifname> <xdp|tc-egress> <port> <peer|->
//         -> ok
//     and for anything that fails
//         -> err <errc> <message>
//
// <peer> is "198.18.0.2:5000" or "[::1]:5000" (port 0: any port of that peer), "-" for any peer.
// <stage> is NAME[:key=val,...] (StageSpec). <errc> is an Errc enumerator's name
// ("invalid_argument", ...). The message of an err is escaped onto its one line: "\\" for a
// backslash, "\n" for a newline (verifier logs are multi-line), "?" for other control bytes.
#pragma once

#include "bertha/error.hpp"
#include "loader/loader.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <sys/un.h>
#include <string_view>
#include <vector>

namespace bertha::load::proto {

inline constexpr std::string_view kVersion = "v1";
// A request longer than this is refused whole (never truncated and then obeyed). Eight stages
// of at most 15 + 1 + 63 characters and the flow fit in well under 1 KiB.
inline constexpr size_t kMaxRequest = 1024;
// A reply: an error carries the tail of a verifier log (LibbpfCapture keeps 8 KiB of it).
inline constexpr size_t kMaxReply = 16384;

enum class Op : uint8_t { attach, detach };

struct Request {
    Op op = Op::attach;
    FlowKey key;
    std::vector<StageSpec> stages; // attach: 1..BERTHA_MAX_STAGES; detach: none
};

// Agent side: every field checked; an Error (invalid_argument, or incompatible for another
// protocol version) says which field and why, for an `err` reply.
Result<Request> parse_request(std::string_view msg);
// Client side: the same checks, so a client never sends what the agent would refuse as
// malformed.
Result<std::string> format_request(const Request& r);

std::string format_ok(std::string_view payload = {});
std::string format_err(const Error& e); // escaped, and bounded by kMaxReply
// The payload of "ok [payload]", or the Error an "err" carries (with `component`, the client's
// name for the agent). A reply that is neither is an Errc::incompatible error.
Result<std::string> parse_reply(std::string_view msg, const std::string& component);

std::string escape(std::string_view text);
std::string unescape(std::string_view text);

std::string_view errc_name(Errc c) noexcept; // "invalid_argument", ...
std::optional<Errc> errc_from_name(std::string_view name) noexcept;

// Field checks shared with the policy parser and the command line.
Result<void> check_ifname(std::string_view name);   // what the kernel accepts as a device name
Result<uint16_t> parse_port(std::string_view text); // decimal 1..65535

// The agent's socket: `configured`, else $BERTHA_AGENT_SOCKET, else bertha::kAgentSocket.
std::string socket_path(const std::string& configured);
Result<sockaddr_un> unix_addr(const std::string& path, const std::string& component);

std::string join_ids(std::span<const uint32_t> ids); // "4,27,100"

std::vector<std::string_view> split(std::string_view s, char sep);

} // namespace bertha::load::proto
