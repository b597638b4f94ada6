// One packet out of a classic libpcap capture file (not pcapng), read without libpcap: both byte
// orders, microsecond and nanosecond timestamps, Ethernet link type only (what the dispatchers'
// BPF_PROG_TEST_RUN takes).
#pragma once

#include "bertha/error.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace bertha::cli {

struct PcapPacket {
    std::vector<uint8_t> data; // as captured (may be cut short by the capture's snaplen)
    uint32_t orig_len = 0;     // the packet's length on the wire
};

// The packet with 1-based `index` (Wireshark's frame number).
Result<PcapPacket> read_pcap(const std::string& path, uint64_t index);

} // namespace bertha::cli
