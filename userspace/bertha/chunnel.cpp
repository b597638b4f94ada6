#include "bertha/chunnel.hpp"

#include <bit>
#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace bertha {

std::string_view to_string(Need one) noexcept {
    switch (one) {
    case Need::none:
        return "nothing";
    case Need::privilege:
        return "privilege";
    case Need::xdp:
        return "xdp";
    case Need::tc:
        return "tc";
    case Need::af_xdp:
        return "af_xdp";
    case Need::btf:
        return "btf";
    }
    return "unknown";
}

void HostFacts::deny(Need n, std::string why) {
    available &= ~uint32_t(n);
    for (uint32_t bits = uint32_t(n); bits; bits &= bits - 1) reasons[std::countr_zero(bits)] = why;
}

std::string HostFacts::why_not(Need n) const {
    std::string out;
    for (uint32_t bits = uint32_t(n) & ~available; bits; bits &= bits - 1) {
        int bit = std::countr_zero(bits);
        if (!out.empty()) out += "; ";
        out += "needs ";
        out += to_string(Need(1u << bit));
        out += " (";
        out += reasons[bit].empty() ? std::string("not available on this host") : reasons[bit];
        out += ")";
    }
    return out;
}

HostFacts HostFacts::local() {
    HostFacts f;
    __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2]{};
    bool net_admin = false;
    if (syscall(SYS_capget, &hdr, data) == 0)
        net_admin = data[CAP_NET_ADMIN / 32].effective & (1u << (CAP_NET_ADMIN % 32));
    if (geteuid() == 0 || net_admin)
        f.grant(Need::privilege);
    else
        f.deny(Need::privilege, "not root and no CAP_NET_ADMIN");
    const char* later = "not probed: interface discovery is not part of this build yet";
    f.deny(Need::xdp, later);
    f.deny(Need::tc, later);
    f.deny(Need::af_xdp, later);
    f.deny(Need::btf, later);
    return f;
}

std::string name_of(const ChunnelInfo& info) {
    return std::string(info.chunnel) + "/" + std::string(info.impl);
}

} // namespace bertha
