#include "xsk/iface.hpp"

#include "bertha/fd.hpp"

#include <net/if.h> // before the linux/ headers: it defines what linux/if.h would

#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <linux/ethtool.h>
#include <linux/if_arp.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

namespace bertha::xsk {
namespace {

std::string who(std::string_view ifname) {
    return "xsk on " + std::string(ifname);
}

Result<ifreq> request_for(std::string_view ifname) {
    ifreq ifr{};
    if (ifname.empty() || ifname.size() >= IFNAMSIZ)
        return fail(Errc::invalid_argument, who(ifname),
                    "an interface name is 1 to " + std::to_string(IFNAMSIZ - 1) + " characters");
    std::memcpy(ifr.ifr_name, ifname.data(), ifname.size());
    return ifr;
}

Result<Fd> ioctl_socket(std::string_view ifname) {
    Fd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd) return fail_sys(who(ifname), "socket for interface ioctls", errno);
    return fd;
}

} // namespace

Result<Interface> interface_info(std::string_view ifname) {
    auto ifr = request_for(ifname);
    if (!ifr) return std::unexpected(std::move(ifr.error()));
    Interface i;
    i.name = std::string(ifname);
    i.ifindex = int(::if_nametoindex(i.name.c_str()));
    if (i.ifindex == 0)
        return fail_sys(who(ifname), "no such interface in this network namespace", errno);
    auto fd = ioctl_socket(ifname);
    if (!fd) return std::unexpected(std::move(fd.error()));
    if (::ioctl(fd->get(), SIOCGIFHWADDR, &*ifr) != 0)
        return fail_sys(who(ifname), "SIOCGIFHWADDR (its MAC address)", errno);
    if (ifr->ifr_hwaddr.sa_family != ARPHRD_ETHER)
        return fail(Errc::unavailable, who(ifname),
                    "not an Ethernet interface (ARPHRD " +
                        std::to_string(ifr->ifr_hwaddr.sa_family) +
                        "): AF_XDP frames here are built with Ethernet headers");
    std::memcpy(i.mac.data(), ifr->ifr_hwaddr.sa_data, 6);
    if (::ioctl(fd->get(), SIOCGIFMTU, &*ifr) != 0)
        return fail_sys(who(ifname), "SIOCGIFMTU", errno);
    i.mtu = uint32_t(ifr->ifr_mtu);
    return i;
}

Result<uint32_t> rx_queue_count(std::string_view ifname) {
    auto ifr = request_for(ifname);
    if (!ifr) return std::unexpected(std::move(ifr.error()));
    const unsigned ifindex = ::if_nametoindex(std::string(ifname).c_str());
    if (ifindex == 0)
        return fail_sys(who(ifname), "no such interface in this network namespace", errno);
    auto fd = ioctl_socket(ifname);
    if (!fd) return std::unexpected(std::move(fd.error()));
    ethtool_channels ch{};
    ch.cmd = ETHTOOL_GCHANNELS;
    ifr->ifr_data = reinterpret_cast<char*>(&ch);
    if (::ioctl(fd->get(), SIOCETHTOOL, &*ifr) == 0) {
        uint32_t n = ch.combined_count + ch.rx_count;
        return n ? n : 1;
    }
    if (errno != EOPNOTSUPP && errno != EINVAL)
        return fail_sys(who(ifname), "ETHTOOL_GCHANNELS", errno);

    // No channel ops: count the queues in sysfs, if the sysfs mounted here shows this very
    // interface (it shows the namespace of whoever mounted it).
    std::string dir = "/sys/class/net/" + std::string(ifname);
    unsigned sys_index = 0;
    if (std::ifstream idx(dir + "/ifindex"); !(idx >> sys_index) || sys_index != ifindex) return 1u;
    DIR* d = ::opendir((dir + "/queues").c_str());
    if (!d) return 1u;
    uint32_t n = 0;
    for (int guard = 0; guard < 65536; ++guard) { // a directory of queues, bounded
        dirent* e = ::readdir(d);
        if (!e) break;
        if (std::strncmp(e->d_name, "rx-", 3) == 0) ++n;
    }
    ::closedir(d);
    return n ? n : 1;
}

} // namespace bertha::xsk
