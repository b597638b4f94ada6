// memcached processes as kv shards (memcached_shards.hpp): fork/exec with the output to a log
// file, readiness by a `version` request over memcached's UDP frame, and stop by pid.
#include "memcached_shards.hpp"

#include "bertha/addr.hpp"
#include "bertha/fd.hpp"
#include "kv/protocol.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace bertha::kv {

namespace {

constexpr const char* kComponent = "kv server (memcached)";
using Clock = std::chrono::steady_clock;

// The binary to exec: a path as given, or the first executable `name` in PATH.
std::string find_binary(const std::string& name) {
    if (name.find('/') != std::string::npos) return ::access(name.c_str(), X_OK) == 0 ? name : "";
    const char* path = std::getenv("PATH");
    std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
    for (size_t begin = 0; begin <= dirs.size();) {
        size_t end = dirs.find(':', begin);
        if (end == std::string::npos) end = dirs.size();
        std::string dir = dirs.substr(begin, end - begin);
        std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
        if (::access(candidate.c_str(), X_OK) == 0) return candidate;
        begin = end + 1;
    }
    return "";
}

Result<Addr> shard_addr(const std::string& bind, uint16_t port) {
    std::string text = bind.find(':') != std::string::npos ? "[" + bind + "]" : bind;
    return Addr::parse(text + ":" + std::to_string(port));
}

// The last few lines of a log, on one line each, for an error message.
std::string log_tail(const std::string& path) {
    std::FILE* f = std::fopen(path.c_str(), "r");
    if (!f) return "";
    std::string text;
    std::array<char, 4096> buf;
    for (size_t n; (n = std::fread(buf.data(), 1, buf.size(), f)) > 0;) {
        text.append(buf.data(), n);
        if (text.size() > 8192) text.erase(0, text.size() - 2048);
    }
    std::fclose(f);
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
    if (text.size() > 600) text.erase(0, text.size() - 600);
    if (text.empty()) return " (its log is empty)";
    for (char& c : text)
        if (c == '\n') c = '|';
    return "; its log ends: " + text;
}

std::string describe_status(int status) {
    if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status))
        return "was killed by signal " + std::to_string(WTERMSIG(status)) + " (" +
               ::strsignal(WTERMSIG(status)) + ")";
    return "stopped";
}

std::string where(const std::string& bind, uint16_t port) {
    return "memcached on " + bind + " UDP port " + std::to_string(port);
}

// Can we bind the UDP port ourselves? memcached binds with SO_REUSEADDR, which on Linux lets a
// second UDP socket share a port: a taken port would not make it fail. So check first.
Result<void> port_free(const Addr& a) {
    Fd fd(::socket(a.family(), SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd) return fail_sys(kComponent, "socket", errno);
    if (::bind(fd.get(), a.sa(), a.len()) != 0) {
        int err = errno;
        return fail_sys(kComponent,
                        err == EADDRINUSE ? "UDP port " + a.to_string() + " is already taken"
                                          : "cannot bind UDP " + a.to_string(),
                        err);
    }
    return {};
}

// Who memcached runs as when we are root (it refuses to run as root).
struct Drop {
    bool drop = false;
    uid_t uid = 0;
    gid_t gid = 0;
};

// fork + exec memcached with its output to `log`, as `as` when set. Only plain system calls in
// the child (the server has no other threads yet).
Result<pid_t> spawn(const std::string& binary, const std::vector<std::string>& args,
                    const std::string& log, const Drop& as) {
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(binary.c_str()));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    Fd out(::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!out) return fail_sys(kComponent, "open log " + log, errno);
    Fd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!devnull) return fail_sys(kComponent, "open /dev/null", errno);
    const std::string exec_failed =
        "kv server: cannot exec " + binary + (as.drop ? " as user nobody: " : ": ");
    pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) return fail_sys(kComponent, "fork", errno);
    if (pid == 0) {
        // Drop privileges here rather than with memcached's -u: a change of credentials clears
        // the parent-death signal, which must stay set so that a shard never outlives the
        // server, even one killed with SIGKILL.
        if (as.drop &&
            (::setgroups(0, nullptr) != 0 || ::setgid(as.gid) != 0 || ::setuid(as.uid) != 0)) {
            static const char msg[] = "kv server: could not switch to user nobody\n";
            [[maybe_unused]] auto n = ::write(2, msg, sizeof msg - 1);
            ::_exit(126);
        }
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) ::_exit(127);
        ::dup2(devnull.get(), 0);
        ::dup2(out.get(), 1);
        ::dup2(out.get(), 2);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        ::execv(binary.c_str(), argv.data());
        const char* why = ::strerror(errno); // glibc: a static string for every errno
        [[maybe_unused]] auto n = ::write(2, exec_failed.data(), exec_failed.size());
        n = ::write(2, why, std::strlen(why));
        n = ::write(2, "\n", 1);
        ::_exit(127);
    }
    return pid;
}

// Sends `version` in a memcached UDP frame; true when a VERSION reply with its id came back
// within `wait`.
bool answers_version(int fd, const Addr& a, uint16_t id, std::chrono::milliseconds wait) {
    std::array<char, 64> req;
    Writer w(req);
    put_frame_header(w, id);
    w.put("version\r\n");
    if (::sendto(fd, req.data(), w.size(), 0, a.sa(), a.len()) < 0) return false;
    auto deadline = Clock::now() + wait;
    std::array<char, 2048> buf;
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0) return false;
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, int(left.count())) <= 0) continue;
        ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
        if (n <= 0) continue;
        auto frame = parse_frame({buf.data(), size_t(n)});
        if (frame && frame->request_id == id && frame->body.starts_with("VERSION ")) return true;
    }
}

} // namespace

MemcachedShards& MemcachedShards::operator=(MemcachedShards&& o) noexcept {
    if (this != &o) {
        stop();
        shards_ = std::move(o.shards_);
        ready_ = std::exchange(o.ready_, false);
        o.shards_.clear();
    }
    return *this;
}

Result<MemcachedShards> MemcachedShards::start(const std::string& bind, uint16_t first_port,
                                               size_t count, const MemcachedOptions& o) {
    std::string binary = find_binary(o.binary);
    if (binary.empty())
        return fail(bertha::Errc::unavailable, kComponent,
                    "'" + o.binary +
                        "' is not installed or not executable (apt-get install memcached, or "
                        "make deps)");
    if (count == 0 || size_t(first_port) + count - 1 > 65535)
        return fail(bertha::Errc::invalid_argument, kComponent,
                    std::to_string(count) + " shards from port " + std::to_string(first_port) +
                        " do not fit");

    // As root: run memcached as nobody. Ports below 1024 need memcached's own -u (it binds
    // first, then drops), at the price of the parent-death signal.
    Drop as;
    bool dash_u = false;
    if (::geteuid() == 0) {
        if (first_port < 1024) {
            dash_u = true;
        } else if (const passwd* pw = ::getpwnam("nobody")) {
            as = Drop{true, pw->pw_uid, pw->pw_gid};
        } else {
            return fail(bertha::Errc::unavailable, kComponent,
                        "running as root, and there is no user 'nobody' to run memcached as");
        }
    }

    MemcachedShards s; // stops whatever it holds if we return early
    std::vector<Addr> addrs;
    for (size_t i = 0; i < count; ++i) {
        uint16_t port = uint16_t(first_port + i);
        auto a = shard_addr(bind, port);
        if (!a) return std::unexpected(a.error());
        if (auto free = port_free(*a); !free) {
            auto e = free.error();
            e.message = "shard " + std::to_string(i) + ": " + e.message;
            return std::unexpected(e);
        }
        // memcached -l reads "host:port": an IPv6 address goes in brackets
        std::string listen = bind.find(':') != std::string::npos ? "[" + bind + "]" : bind;
        std::vector<std::string> args = {"-U", std::to_string(port), "-p", "0", "-l", listen};
        args.insert(args.end(), {"-t", std::to_string(std::max(1u, o.threads))});
        args.insert(args.end(), {"-m", std::to_string(std::max(1u, o.memory_mb))});
        if (dash_u) args.insert(args.end(), {"-u", "nobody"});
        const char* tmpdir = std::getenv("TMPDIR");
        std::string log = std::string(tmpdir && *tmpdir ? tmpdir : "/tmp") +
                          "/bertha-kv-memcached-" + std::to_string(port) + "-XXXXXX";
        int fd = ::mkstemp(log.data());
        if (fd < 0) return fail_sys(kComponent, "cannot create memcached's log " + log, errno);
        ::close(fd);
        auto pid = spawn(binary, args, log, as);
        if (!pid) {
            ::unlink(log.c_str());
            return std::unexpected(pid.error());
        }
        s.shards_.push_back(Shard{*pid, port, log});
        addrs.push_back(*a);
    }

    // Ready when every shard answers `version` over UDP; a shard that exits is an error now.
    Fd probe(::socket(addrs[0].family(), SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!probe) return fail_sys(kComponent, "socket", errno);
    auto deadline = Clock::now() + o.ready_timeout;
    uint16_t id = uint16_t(::getpid());
    for (size_t i = 0; i < count; ++i) {
        Shard& sh = s.shards_[i];
        for (;;) {
            int status = 0;
            if (::waitpid(sh.pid, &status, WNOHANG) == sh.pid) {
                std::string tail = log_tail(sh.log);
                sh.pid = -1; // reaped: never signal that pid again
                return fail(bertha::Errc::unavailable, kComponent,
                            "shard " + std::to_string(i) + ": " + where(bind, sh.port) + " " +
                                describe_status(status) + tail);
            }
            if (answers_version(probe.get(), addrs[i], ++id, std::chrono::milliseconds(50))) break;
            if (Clock::now() >= deadline)
                return fail(bertha::Errc::unavailable, kComponent,
                            "shard " + std::to_string(i) + ": " + where(bind, sh.port) + " (pid " +
                                std::to_string(sh.pid) + ") did not answer `version` within " +
                                std::to_string(o.ready_timeout.count()) + " ms" + log_tail(sh.log));
        }
    }
    // One that answered may still have been another process on a shared port: all must run.
    if (auto gone = s.check_exited(); !gone.empty())
        return fail(bertha::Errc::unavailable, kComponent, gone);
    s.ready_ = true;
    return s;
}

std::string MemcachedShards::check_exited() {
    for (size_t i = 0; i < shards_.size(); ++i) {
        Shard& sh = shards_[i];
        if (sh.pid <= 0) continue;
        int status = 0;
        if (::waitpid(sh.pid, &status, WNOHANG) != sh.pid) continue;
        sh.pid = -1;
        return "shard " + std::to_string(i) + ": memcached on UDP port " + std::to_string(sh.port) +
               " " + describe_status(status) + log_tail(sh.log);
    }
    return "";
}

std::vector<std::string> MemcachedShards::stop() {
    // memcached acts on SIGTERM at its next clock tick (once a second), and one signalled while
    // it is still starting may miss it: SIGTERM again every 500 ms, SIGKILL after 3 s. Shards
    // of a start that failed never served anything: SIGKILL at once.
    const int first = ready_ ? SIGTERM : SIGKILL;
    std::vector<std::string> report(shards_.size());
    std::vector<bool> done(shards_.size(), false);
    for (size_t i = 0; i < shards_.size(); ++i) {
        if (shards_[i].pid <= 0) {
            report[i] = "had already exited";
            done[i] = true;
        }
    }
    auto start = Clock::now();
    auto next_signal = start;
    for (;;) {
        bool all = true;
        for (size_t i = 0; i < shards_.size(); ++i) {
            if (done[i]) continue;
            int status = 0;
            pid_t r = ::waitpid(shards_[i].pid, &status, WNOHANG);
            if (r == shards_[i].pid || (r < 0 && errno == ECHILD)) {
                report[i] = "pid " + std::to_string(shards_[i].pid) + " " +
                            (r < 0 ? std::string("was already reaped") : describe_status(status));
                done[i] = true;
            } else {
                all = false;
                if (Clock::now() >= next_signal) ::kill(shards_[i].pid, first);
            }
        }
        if (all || Clock::now() - start >= std::chrono::seconds(3)) break;
        if (Clock::now() >= next_signal)
            next_signal = Clock::now() + std::chrono::milliseconds(500);
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    for (size_t i = 0; i < shards_.size(); ++i) {
        if (!done[i]) { // still running after 3 s
            ::kill(shards_[i].pid, SIGKILL);
            ::waitpid(shards_[i].pid, nullptr, 0);
            report[i] = "pid " + std::to_string(shards_[i].pid) +
                        " killed (SIGKILL): SIGTERM did not end it within 3 s";
            std::fprintf(stderr, "kv server: shard %zu: memcached %s\n", i, report[i].c_str());
        }
        ::unlink(shards_[i].log.c_str());
    }
    shards_.clear();
    ready_ = false;
    return report;
}

} // namespace bertha::kv
