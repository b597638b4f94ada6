#include "loader/cli/pcap.hpp"

#include <cerrno>
#include <cstdio>
#include <memory>

namespace bertha::cli {
namespace {

constexpr uint32_t kLinktypeEthernet = 1;
constexpr uint32_t kMaxRecord = 256 * 1024; // larger than any snaplen tools write: a corrupt file

const char* linktype_name(uint32_t t) {
    switch (t) {
    case 0:
        return "NULL (BSD loopback)";
    case 101:
        return "RAW (IP without a link header)";
    case 105:
        return "IEEE802_11";
    case 113:
        return "LINUX_SLL (tcpdump -i any)";
    case 127:
        return "IEEE802_11_RADIOTAP";
    case 276:
        return "LINUX_SLL2 (tcpdump -i any)";
    }
    return nullptr;
}

} // namespace

Result<PcapPacket> read_pcap(const std::string& path, uint64_t index) {
    const std::string component = "pcap " + path;
    std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), std::fclose);
    if (!f) return fail_sys(component, "open", errno);
    unsigned char h[24];
    if (std::fread(h, 1, sizeof h, f.get()) != sizeof h)
        return fail(Errc::invalid_argument, component,
                    "shorter than a pcap file header (24 bytes)");

    // The magic number, read as written, says the byte order and the timestamp unit.
    const uint32_t le =
        uint32_t(h[0]) | uint32_t(h[1]) << 8 | uint32_t(h[2]) << 16 | uint32_t(h[3]) << 24;
    bool big;
    if (le == 0xa1b2c3d4 || le == 0xa1b23c4d)
        big = false;
    else if (le == 0xd4c3b2a1 || le == 0x4d3cb2a1)
        big = true;
    else if (le == 0x0a0d0d0a)
        return fail(Errc::invalid_argument, component,
                    "is pcapng, not classic pcap: convert it with `editcap -F pcap " + path +
                        " out.pcap`"
                        " or capture with `tcpdump -w`");
    else
        return fail(Errc::invalid_argument, component, "not a pcap file (unknown magic number)");
    auto u32 = [big](const unsigned char* p) {
        return big ? uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]
                   : uint32_t(p[3]) << 24 | uint32_t(p[2]) << 16 | uint32_t(p[1]) << 8 | p[0];
    };
    // The link type is the low 16 bits; the upper ones may carry the FCS length.
    const uint32_t linktype = u32(h + 20) & 0xffff;
    if (linktype != kLinktypeEthernet) {
        const char* name = linktype_name(linktype);
        return fail(Errc::invalid_argument, component,
                    "link type " + std::to_string(linktype) +
                        (name ? std::string(" ") + name : "") +
                        " is not Ethernet (LINKTYPE_ETHERNET, 1): capture on the interface itself, "
                        "e.g. `tcpdump -i veth0 -w file.pcap`");
    }
    if (index == 0) return fail(Errc::invalid_argument, component, "packets are numbered from 1");

    for (uint64_t n = 1;; ++n) {
        unsigned char r[16];
        size_t got = std::fread(r, 1, sizeof r, f.get());
        if (got == 0)
            return fail(Errc::invalid_argument, component,
                        "has " + std::to_string(n - 1) + " packet(s); there is no packet " +
                            std::to_string(index));
        if (got != sizeof r)
            return fail(Errc::invalid_argument, component,
                        "the file ends inside the header of packet " + std::to_string(n));
        const uint32_t incl = u32(r + 8), orig = u32(r + 12);
        if (incl > kMaxRecord)
            return fail(Errc::invalid_argument, component,
                        "packet " + std::to_string(n) + " claims " + std::to_string(incl) +
                            " bytes: the file is corrupt");
        if (n < index) {
            if (std::fseek(f.get(), long(incl), SEEK_CUR) != 0)
                return fail_sys(component, "seek", errno);
            continue;
        }
        PcapPacket p;
        p.orig_len = orig;
        p.data.resize(incl);
        if (std::fread(p.data.data(), 1, incl, f.get()) != incl)
            return fail(Errc::invalid_argument, component,
                        "the file ends inside packet " + std::to_string(n));
        return p;
    }
}

} // namespace bertha::cli
