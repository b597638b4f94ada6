// A live dispatcher for one test: a private network namespace (its loopback up), a bpffs mounted
// on a fresh temp dir, and a Loader rooted there. Tests attach flows on "lo" and run packets
// through the live root programs with Loader::explain; nothing they do is seen outside.
//
// The namespace is the calling thread's own (unshare(CLONE_NEWNET) changes only the calling
// thread), and the destructor puts the thread back into the namespace it came from, so tests
// that run later in the same process (loopback sockets) see the host's loopback again. The
// destructor also runs when a test fails: it detaches everything of ours, drops the Loader,
// unmounts the bpffs, removes the dir and the interface's lock file, and leaves the namespace,
// which takes lo and whatever was still attached to it with it.
//
// The temp dir is /tmp/bertha-fixture-<pid>-XXXXXX: a process that dies without running its
// destructors leaves its mount behind, and the next fixture removes the mounts of dead pids.
//
// Use it from the process's main thread: the loader names an interface's pin directory after
// /proc/self/ns/net, which is the main thread's namespace. Setup failures throw (doctest reports
// the test as failed; a benchmark prints the message), so the header needs no test framework.
#pragma once

#include "loader/loader.hpp"

#include <bpf/libbpf.h>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <optional>
#include <sched.h>
#include <stdexcept>
#include <string>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

namespace bertha::test {

class LoaderFixture {
  public:
    static constexpr const char* kIf = "lo";

    LoaderFixture() : LoaderFixture(load::Options{}) {}
    explicit LoaderFixture(load::Options opts) {
        if (::gettid() != ::getpid())
            throw std::runtime_error("LoaderFixture: use it from the main thread (the loader "
                                     "names pin directories after /proc/self/ns/net)");
        host_ns_ = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        if (host_ns_ < 0) fail("open /proc/thread-self/ns/net");
        if (::unshare(CLONE_NEWNET) != 0) {
            int e = errno;
            ::close(host_ns_);
            host_ns_ = -1;
            errno = e;
            fail("unshare(CLONE_NEWNET) (root needed)");
        }
        // From here on every failure goes through cleanup(): the constructor did not finish, so
        // no destructor will run.
        try {
            set_lo_up();
            ifindex_ = int(::if_nametoindex(kIf));
            if (ifindex_ == 0) fail("if_nametoindex(lo) in the new namespace");
            sweep_stale();
            std::string tmpl = std::string(kDirPrefix) + std::to_string(::getpid()) + "-XXXXXX";
            if (!::mkdtemp(tmpl.data())) fail("mkdtemp " + tmpl);
            mount_dir_ = tmpl;
            if (::mount("bpf", mount_dir_.c_str(), "bpf", 0, "mode=0700") != 0)
                fail("mount bpffs on " + mount_dir_);
            mounted_ = true;
            opts.root = mount_dir_ + "/bertha";
            opts_ = opts;
            auto l = load::Loader::open(opts);
            if (!l) throw std::runtime_error("Loader::open: " + l.error().what());
            loader_.emplace(std::move(*l));
        } catch (...) {
            cleanup();
            throw;
        }
    }

    ~LoaderFixture() { cleanup(); }
    LoaderFixture(const LoaderFixture&) = delete;
    LoaderFixture& operator=(const LoaderFixture&) = delete;

    load::Loader& loader() { return *loader_; }
    const std::string& root() const { return opts_.root; }
    int ifindex() const { return ifindex_; }
    // Where the loader pins lo's state: <root>/lo@<netns inode> (this is not the initial netns).
    std::string iface_dir() const { return opts_.root + "/" + dir_name(); }

    // Another Loader on the same pins (a second application, or the same one with --force).
    load::Loader another(load::Options opts) const {
        opts.root = opts_.root;
        auto l = load::Loader::open(opts);
        if (!l) throw std::runtime_error("Loader::open: " + l.error().what());
        return std::move(*l);
    }

  private:
    static constexpr const char* kDirPrefix = "/tmp/bertha-fixture-"; // then <pid>-XXXXXX

    [[noreturn]] static void fail(const std::string& what) {
        throw std::runtime_error("LoaderFixture: " + what + ": " + std::strerror(errno));
    }

    static void set_lo_up() {
        int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0); // in the new namespace
        if (s < 0) fail("socket");
        ifreq ifr{};
        std::strncpy(ifr.ifr_name, kIf, IFNAMSIZ - 1);
        bool ok = ::ioctl(s, SIOCGIFFLAGS, &ifr) == 0;
        ifr.ifr_flags = short(ifr.ifr_flags | IFF_UP);
        ok = ok && ::ioctl(s, SIOCSIFFLAGS, &ifr) == 0;
        int e = errno;
        ::close(s);
        errno = e;
        if (!ok) fail("bring lo up");
    }

    // A process that died without its destructors (a crash, std::exit) left its bpffs mounted,
    // pins and all: unmount and remove the dirs of processes that no longer exist.
    static void sweep_stale() {
        DIR* d = ::opendir("/tmp");
        if (!d) return;
        const std::string prefix = std::string(kDirPrefix).substr(5); // "bertha-fixture-"
        while (dirent* e = ::readdir(d)) {
            std::string name = e->d_name;
            if (name.rfind(prefix, 0) != 0) continue;
            char* end = nullptr;
            long pid = std::strtol(name.c_str() + prefix.size(), &end, 10);
            if (pid <= 0 || *end != '-' || ::kill(pid_t(pid), 0) == 0 || errno != ESRCH) continue;
            std::string dir = "/tmp/" + name;
            ::umount2(dir.c_str(), MNT_DETACH);
            ::rmdir(dir.c_str());
        }
        ::closedir(d);
    }

    std::string dir_name() const {
        struct stat st {};
        ::stat("/proc/self/ns/net", &st);
        return std::string(kIf) + "@" + std::to_string(st.st_ino);
    }

    // Best effort, in reverse order of construction; a step that fails is skipped, never thrown.
    void cleanup() noexcept {
        if (host_ns_ < 0) return;
        std::string lock;
        if (loader_) {
            lock = "/run/bertha/lock/" + dir_name() + ".lock";
            struct stat st {};
            if (::stat(iface_dir().c_str(), &st) == 0) (void)loader_->detach_all(kIf);
            loader_.reset();
        }
        if (ifindex_ > 0) { // a foreign program a test attached (the namespace would drop it too)
            bpf_xdp_detach(ifindex_, XDP_FLAGS_SKB_MODE, nullptr);
            bpf_xdp_detach(ifindex_, XDP_FLAGS_DRV_MODE, nullptr);
        }
        if (mounted_) ::umount2(mount_dir_.c_str(), MNT_DETACH);
        if (!mount_dir_.empty()) ::rmdir(mount_dir_.c_str());
        if (!lock.empty()) ::unlink(lock.c_str());
        if (::setns(host_ns_, CLONE_NEWNET) != 0)
            std::fprintf(stderr,
                         "LoaderFixture: cannot return to the original network namespace: %s\n",
                         std::strerror(errno));
        ::close(host_ns_);
        host_ns_ = -1;
    }

    int host_ns_ = -1;
    int ifindex_ = 0;
    std::string mount_dir_;
    bool mounted_ = false;
    load::Options opts_;
    std::optional<load::Loader> loader_;
};

} // namespace bertha::test
