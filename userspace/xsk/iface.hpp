// The facts about one network interface that an AF_XDP socket needs: its index, MAC address and
// MTU (frame building), and how many RX queues it has (one socket per queue). Looked up in the
// calling thread's network namespace.
#pragma once

#include "bertha/error.hpp"
#include "xsk/frame.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace bertha::xsk {

struct Interface {
    std::string name;
    int ifindex = 0;
    Mac mac{};
    uint32_t mtu = 0;
};

// Index (if_nametoindex), MAC (SIOCGIFHWADDR: must be Ethernet) and MTU (SIOCGIFMTU).
Result<Interface> interface_info(std::string_view ifname);

// The number of RX queues packets can arrive on: ethtool's channel count (ETHTOOL_GCHANNELS:
// combined + rx-only), else the rx-* entries under /sys/class/net/IF/queues (when that sysfs
// is this namespace's), else 1.
Result<uint32_t> rx_queue_count(std::string_view ifname);

} // namespace bertha::xsk
