// Where the loader pins, and the lock that serializes loaders on one interface. Internal.
#pragma once

#include "bertha/error.hpp"
#include "loader/kernel_objects.hpp"

#include <string>
#include <string_view>

namespace bertha::load {

// The root directory of our pins: `configured`, else $BERTHA_BPFFS, else /sys/fs/bpf/bertha.
// The directory must be on a bpffs; /sys/fs/bpf is mounted when nothing is mounted there (as
// under `ip netns exec`, which remounts /sys — pins then live only as long as that mount
// namespace, which is said at info level).
Result<std::string> resolve_root(std::string_view configured, bool create);

// The directory name of an interface's pins: the name itself in the initial network namespace,
// "<ifname>@<netns inode>" in another one (two namespaces may both have a "veth0").
std::string iface_dir_name(std::string_view ifname);
// The interface name back from a directory name.
std::string ifname_of_dir(std::string_view dir);

// An exclusive lock on one interface, across processes: flock on /run/bertha/lock/<dir>.lock.
// The file is removed with the interface's state (lock_path_remove, called with the lock held);
// a waiter that then gets the lock on the removed file notices and takes the new one.
class IfaceLock {
  public:
    static Result<IfaceLock> take(std::string_view dir_name);

  private:
    explicit IfaceLock(Fd fd) : fd_(std::move(fd)) {}
    Fd fd_;
};
// Remove an interface's lock file; only while holding its lock.
void lock_path_remove(std::string_view dir_name);

} // namespace bertha::load
