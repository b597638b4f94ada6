// AgentClient (agent.hpp): an application's connection to the agent.
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
    path = proto::socket_path(path);
    const std::string component = "agent " + path;
    auto sun = proto::unix_addr(path, component);
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
