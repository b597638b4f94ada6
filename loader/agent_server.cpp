// The agent (agent.hpp): one thread serves every client with poll(). Loader calls are serialized
// anyway (per interface, across processes), and a single thread makes "which client holds which
// reference" plain data with no locking.
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

// ---- serving ---------------------------------------------------------------------------------
namespace {

constexpr int kPollMs = 200; // how soon a stop request is noticed
constexpr size_t kMaxClients = 256;



Result<void> mkdir_parents(const std::string& path, const std::string& component) {
    for (size_t i = 1; i < path.size(); ++i) {
        if (path[i] != '/') continue;
        auto dir = path.substr(0, i);
        if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
            return fail_sys(component, "mkdir " + dir, errno);
    }
    return {};
}

// The listening socket. Owns its file: removed on destruction if it is still the one we bound.
class Listener {
  public:
    static Result<Listener> open(const std::string& path);
    Listener(Listener&&) = default;
    ~Listener() {
        struct stat st {};
        if (fd_ && ::lstat(path_.c_str(), &st) == 0 && st.st_ino == ino_ && st.st_dev == dev_)
            ::unlink(path_.c_str());
    }
    int fd() const { return fd_.get(); }

  private:
    Listener(Fd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
    Fd fd_;
    std::string path_;
    ino_t ino_ = 0;
    dev_t dev_ = 0;
};

Result<Listener> Listener::open(const std::string& path) {
    const std::string component = "agent " + path;
    auto sun = proto::unix_addr(path, component);
    if (!sun) return std::unexpected(sun.error());
    if (auto r = mkdir_parents(path, component); !r) return std::unexpected(r.error());
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return fail(Errc::unavailable, component,
                        "exists and is not a socket; not replacing it");
        // Replace the file only when nobody answers on it (an agent that died without cleaning).
        Fd probe(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        if (!probe) return fail_sys(component, "socket", errno);
        if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&*sun), sizeof *sun) == 0 ||
            errno == EAGAIN || errno == EPROTOTYPE)
            return fail(Errc::unavailable, component,
                        "another process answers on this socket (an agent already running?)");
        if (errno != ECONNREFUSED) return fail_sys(component, "probe the existing socket", errno);
        log(LogLevel::info, component, "replacing a stale socket nobody answers on");
        if (::unlink(path.c_str()) != 0 && errno != ENOENT)
            return fail_sys(component, "remove the stale socket", errno);
    }
    Fd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) return fail_sys(component, "socket", errno);
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&*sun), sizeof *sun) != 0)
        return fail_sys(component, "bind", errno);
    Listener l(std::move(fd), path);
    if (::lstat(path.c_str(), &st) != 0) return fail_sys(component, "stat", errno);
    l.ino_ = st.st_ino;
    l.dev_ = st.st_dev;
    // Everyone may connect: the policy, not the file mode, decides what a caller may do.
    if (::chmod(path.c_str(), 0666) != 0) return fail_sys(component, "chmod 0666", errno);
    if (::listen(l.fd(), 64) != 0) return fail_sys(component, "listen", errno);
    return l;
}

struct Held {
    FlowKey key;
    uint32_t refs = 0;
};

struct Client {
    Fd fd;
    uint32_t uid = 0;
    pid_t pid = 0;
    std::vector<uint32_t> gids;       // primary first, then the supplementary ones
    std::map<std::string, Held> held; // by FlowKey::text(): the references this socket holds
    std::string who() const { return "uid " + std::to_string(uid) + " pid " + std::to_string(pid); }
};

// The supplementary groups from /proc/<pid>/status, for kernels without SO_PEERGROUPS.
void groups_from_proc(Client& c) {
    std::ifstream in("/proc/" + std::to_string(c.pid) + "/status");
    std::string line;
    while (std::getline(in, line)) {
        if (!line.starts_with("Groups:")) continue;
        std::istringstream ids(line.substr(7));
        uint32_t g;
        while (ids >> g) c.gids.push_back(g);
    }
}

// The caller's uid and gids, as they were when it connected (SO_PEERCRED, SO_PEERGROUPS): a
// process that changes its credentials afterwards, or exits and has its pid reused, cannot
// make the agent judge someone else.
Result<void> peer_credentials(Client& c) {
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(c.fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        return fail_sys("agent", "SO_PEERCRED", errno);
    c.uid = cred.uid;
    c.pid = cred.pid;
    c.gids.push_back(cred.gid);
    std::vector<gid_t> groups(64);
    for (;;) {
        socklen_t glen = socklen_t(groups.size() * sizeof(gid_t));
        if (::getsockopt(c.fd.get(), SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen) == 0) {
            groups.resize(glen / sizeof(gid_t));
            break;
        }
        if (errno == ERANGE && glen > groups.size() * sizeof(gid_t)) {
            groups.resize(glen / sizeof(gid_t));
            continue;
        }
        groups.clear();
        groups_from_proc(c);
        break;
    }
    for (auto g : groups)
        if (std::find(c.gids.begin(), c.gids.end(), g) == c.gids.end()) c.gids.push_back(g);
    return {};
}

class Agent {
  public:
    Agent(Loader& loader, Policy policy) : loader_(loader), policy_(std::move(policy)) {}

    std::string handle(Client& c, std::string_view msg) {
        auto req = proto::parse_request(msg);
        if (!req) {
            log(LogLevel::info, "agent", c.who() + ": malformed request: " + req.error().what());
            return proto::format_err(req.error());
        }
        return req->op == proto::Op::attach ? attach(c, *req) : detach(c, *req);
    }

    // A client is gone: give back every reference it held, one detach per reference.
    void release(Client& c) {
        unsigned n = 0;
        for (auto& [text, h] : c.held)
            for (; h.refs > 0; --h.refs, ++n)
                if (auto r = loader_.detach(h.key); !r)
                    log(LogLevel::warn, "agent",
                        c.who() + " left; releasing " + text + ": " + r.error().what());
        c.held.clear();
        if (n)
            log(LogLevel::info, "agent",
                c.who() + " disconnected; released " + std::to_string(n) + " reference(s)");
    }

  private:
    std::string attach(Client& c, const proto::Request& r) {
        if (auto why = policy_.refuses(c.uid, c.gids, r.key, r.stages); !why.empty()) {
            log(LogLevel::info, "agent", "refused pid " + std::to_string(c.pid) + ": " + why);
            return proto::format_err(Error{Errc::unavailable, "policy", why, 0});
        }
        auto chain = loader_.attach(r.key, r.stages);
        if (!chain) {
            log(LogLevel::info, "agent", c.who() + ": attach failed: " + chain.error().what());
            return proto::format_err(chain.error());
        }
        auto& h = c.held[r.key.text()];
        h.key = r.key;
        h.refs++;
        log(LogLevel::info, "agent",
            c.who() + ": attached chain " + std::to_string(*chain) + " for " + r.key.text() +
                " (this client holds " + std::to_string(h.refs) + " reference(s))");
        return proto::format_ok(std::to_string(*chain));
    }

    std::string detach(Client& c, const proto::Request& r) {
        auto it = c.held.find(r.key.text());
        if (it == c.held.end())
            return proto::format_err(Error{Errc::invalid_argument, "flow " + r.key.text(),
                                           "this connection holds no reference to it (an "
                                           "operator removes others' flows with `bertha-load "
                                           "detach`)",
                                           0});
        auto res = loader_.detach(r.key);
        // Whether it worked or the flow was already gone (an operator's detach), this
        // connection's reference is spent.
        if (--it->second.refs == 0) c.held.erase(it);
        if (!res) return proto::format_err(res.error());
        log(LogLevel::info, "agent", c.who() + ": detached one reference of " + r.key.text());
        return proto::format_ok();
    }

    Loader& loader_;
    Policy policy_;
};

bool send_msg(int fd, std::string_view msg) {
    for (;;) {
        if (::send(fd, msg.data(), msg.size(), MSG_NOSIGNAL | MSG_DONTWAIT) >= 0) return true;
        if (errno != EINTR) return false;
    }
}

} // namespace

Result<void> serve(Loader& loader, const ServeOptions& opts) {
    if (opts.policy_path.empty())
        return fail(Errc::invalid_argument, "agent", "serve needs a policy file");
    auto policy = Policy::load(opts.policy_path);
    if (!policy) return std::unexpected(policy.error());
    if (policy->rules.empty())
        log(LogLevel::warn, "agent", opts.policy_path + " has no rules: every request is refused");
    const std::string path = proto::socket_path(opts.socket_path);
    auto listener = Listener::open(path);
    if (!listener) return std::unexpected(listener.error());
    log(LogLevel::info, "agent " + path,
        "listening; " + std::to_string(policy->rules.size()) + " rule(s) from " + opts.policy_path);

    Agent agent(loader, std::move(*policy));
    std::vector<std::unique_ptr<Client>> clients;
    std::vector<pollfd> pfds;
    std::vector<char> buf(proto::kMaxRequest + 1);
    bool listen_pause = false; // skip the listener in the next poll (accept ran out of fds)
    auto drop = [&](size_t i) {
        agent.release(*clients[i]);
        clients.erase(clients.begin() + ptrdiff_t(i));
    };

    while (!(opts.stop && opts.stop->load())) {
        pfds.assign(1, pollfd{std::exchange(listen_pause, false) ? -1 : listener->fd(), POLLIN, 0});
        for (auto& c : clients) pfds.push_back(pollfd{c->fd.get(), POLLIN, 0});
        int n = ::poll(pfds.data(), pfds.size(), kPollMs);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail_sys("agent " + path, "poll", errno);
        if (n == 0) continue;

        // Client events first, newest last: indexes in pfds match clients until a drop, so walk
        // backwards.
        for (size_t i = clients.size(); i-- > 0;) {
            if (!pfds[i + 1].revents) continue;
            Client& c = *clients[i];
            iovec iov{buf.data(), buf.size()};
            msghdr mh{};
            mh.msg_iov = &iov;
            mh.msg_iovlen = 1;
            ssize_t got = ::recvmsg(c.fd.get(), &mh, MSG_DONTWAIT);
            if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (got <= 0) {
                drop(i);
                continue;
            }
            std::string reply;
            if ((mh.msg_flags & MSG_TRUNC) || size_t(got) > proto::kMaxRequest)
                reply = proto::format_err(
                    Error{Errc::invalid_argument, "request",
                          "longer than " + std::to_string(proto::kMaxRequest) + " bytes", 0});
            else
                reply = agent.handle(c, std::string_view(buf.data(), size_t(got)));
            if (!send_msg(c.fd.get(), reply)) {
                log(LogLevel::info, "agent",
                    c.who() + ": reply not delivered; dropping the client");
                drop(i);
            }
        }

        if (pfds[0].revents & POLLIN) {
            for (;;) {
                Fd fd(::accept4(listener->fd(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
                if (!fd) {
                    // Out of file descriptors: the connection stays queued, and polling the
                    // listener again at once would spin; look again after one poll interval.
                    if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                        log(LogLevel::warn, "agent " + path,
                            std::string("accept: ") + std::strerror(errno));
                        listen_pause = true;
                    }
                    break; // EAGAIN: no more waiting
                }
                if (clients.size() >= kMaxClients) {
                    send_msg(fd.get(),
                             proto::format_err(Error{Errc::unavailable, "agent",
                                                     "serving " + std::to_string(kMaxClients) +
                                                         " clients already; try again later",
                                                     0}));
                    continue;
                }
                auto c = std::make_unique<Client>();
                c->fd = std::move(fd);
                if (auto r = peer_credentials(*c); !r) {
                    log(LogLevel::warn, "agent", r.error().what());
                    continue;
                }
                log(LogLevel::debug, "agent",
                    c->who() + " connected (gids " + proto::join_ids(c->gids) + ")");
                clients.push_back(std::move(c));
            }
        }
    }

    // Stopping: the references stay (agent.hpp) so that running applications keep their
    // offloads across an agent restart; say what remains.
    unsigned refs = 0;
    for (auto& c : clients)
        for (auto& [text, h] : c->held) refs += h.refs;
    if (refs)
        log(LogLevel::info, "agent " + path,
            "stopping; " + std::to_string(refs) +
                " reference(s) of connected clients stay attached (bertha-load detach removes "
                "them)");
    return {};
}
} // namespace bertha::load
