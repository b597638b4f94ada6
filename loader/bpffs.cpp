#include "loader/bpffs.hpp"

#include "bertha/log.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>

namespace bertha::load {
namespace {

constexpr std::string_view kComponent = "bertha-load";

bool is_bpffs(const std::string& path) {
    struct statfs st{};
    return ::statfs(path.c_str(), &st) == 0 && st.f_type == BPF_FS_MAGIC;
}

Result<void> mkdir_p(const std::string& path, mode_t mode) {
    for (size_t i = 1; i <= path.size(); ++i) {
        if (i != path.size() && path[i] != '/') continue;
        std::string part = path.substr(0, i);
        if (::mkdir(part.c_str(), mode) != 0 && errno != EEXIST)
            return fail_sys(std::string(kComponent), "mkdir " + part, errno);
    }
    return {};
}

uint64_t netns_inode(const char* path) {
    struct stat st{};
    return ::stat(path, &st) == 0 ? uint64_t(st.st_ino) : 0;
}

} // namespace

Result<std::string> resolve_root(std::string_view configured, bool create) {
    std::string root(configured);
    if (root.empty()) {
        const char* env = std::getenv("BERTHA_BPFFS");
        root = env && *env ? env : "/sys/fs/bpf/bertha";
    }
    while (root.size() > 1 && root.back() == '/') root.pop_back();
    auto parent = root.substr(0, root.rfind('/'));
    if (parent.empty()) parent = "/";
    if (!is_bpffs(parent)) {
        if (parent != "/sys/fs/bpf")
            return fail(Errc::unavailable, std::string(kComponent),
                        parent + " is not a bpffs mount (BERTHA_BPFFS=" + root +
                            "): mount one with `mount -t bpf bpf " + parent + "`");
        if (!create)
            return fail(Errc::unavailable, std::string(kComponent),
                        "/sys/fs/bpf is not mounted: nothing is pinned here");
        if (::mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700") != 0)
            return fail_sys(std::string(kComponent), "mount bpffs on /sys/fs/bpf", errno);
        log(LogLevel::info, kComponent,
            "mounted bpffs on /sys/fs/bpf; if this process runs in its own mount namespace "
            "(ip netns exec), pins last only as long as that namespace");
    }
    if (create) {
        if (auto r = mkdir_p(root, 0700); !r) return std::unexpected(r.error());
    }
    return root;
}

std::string iface_dir_name(std::string_view ifname) {
    auto self = netns_inode("/proc/self/ns/net");
    auto init = netns_inode("/proc/1/ns/net");
    std::string name(ifname);
    // An unreadable /proc/1/ns/net (containers, hidepid) says nothing: suffix then, so that two
    // namespaces' interfaces of one name never share a pin directory.
    if (self && self != init) name += "@" + std::to_string(self);
    return name;
}

std::string ifname_of_dir(std::string_view dir) {
    return std::string(dir.substr(0, dir.find('@')));
}

namespace {
std::string lock_path(std::string_view dir_name) {
    return "/run/bertha/lock/" + std::string(dir_name) + ".lock";
}
} // namespace

Result<IfaceLock> IfaceLock::take(std::string_view dir_name) {
    if (auto r = mkdir_p("/run/bertha/lock", 0755); !r) return std::unexpected(r.error());
    const auto path = lock_path(dir_name);
    for (int attempt = 0; attempt < 100; ++attempt) {
        Fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
        if (!fd) return fail_sys(std::string(kComponent), "open " + path, errno);
        while (::flock(fd.get(), LOCK_EX) != 0) {
            if (errno != EINTR) return fail_sys(std::string(kComponent), "flock " + path, errno);
        }
        // Still the file at that path? Its holder may have removed it while we waited.
        struct stat held{}, named{};
        if (::fstat(fd.get(), &held) == 0 && ::stat(path.c_str(), &named) == 0 &&
            held.st_ino == named.st_ino && held.st_dev == named.st_dev)
            return IfaceLock(std::move(fd));
    }
    return fail(Errc::system, std::string(kComponent), "could not take the lock " + path);
}

void lock_path_remove(std::string_view dir_name) { ::unlink(lock_path(dir_name).c_str()); }

} // namespace bertha::load
