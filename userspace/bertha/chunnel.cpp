#include "bertha/chunnel.hpp"

#include "bertha/discovery.hpp"

#include <bit>

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
    return probe().facts; // no peer: host-wide facts; xdp and af_xdp need an interface
}

std::string name_of(const ChunnelInfo& info) {
    return std::string(info.chunnel) + "/" + std::string(info.impl);
}

} // namespace bertha
