// A small packet builder for BPF fixtures: Packet().eth().ipv4(src, dst).udp(sp, dp)
// .payload("...").bytes(). Lengths and checksums are filled in when bytes() is called, unless a
// test asks for a malformed packet on purpose (truncate(), raw()).
#pragma once

#include <arpa/inet.h>
#include <cstdint>
#include <cstring>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <string_view>
#include <vector>

namespace bertha::test {

class Packet {
  public:
    Packet& eth(uint16_t proto = ETH_P_IP) {
        ethhdr h{};
        std::memcpy(h.h_dest, "\x02\x00\x00\x00\x00\x02", 6);
        std::memcpy(h.h_source, "\x02\x00\x00\x00\x00\x01", 6);
        h.h_proto = htons(proto);
        append(&h, sizeof h);
        return *this;
    }
    Packet& vlan(uint16_t tci, uint16_t inner_proto) { // after eth(ETH_P_8021Q)
        uint16_t v[2] = {htons(tci), htons(inner_proto)};
        append(v, sizeof v);
        return *this;
    }
    Packet& ipv4(const char* src, const char* dst, uint8_t proto = IPPROTO_UDP,
                 uint8_t option_words = 0) {
        iphdr h{};
        h.version = 4;
        h.ihl = uint8_t(5 + option_words);
        h.ttl = 64;
        h.protocol = proto;
        inet_pton(AF_INET, src, &h.saddr);
        inet_pton(AF_INET, dst, &h.daddr);
        ip_off_ = buf_.size();
        append(&h, sizeof h);
        for (int i = 0; i < option_words * 4; ++i) buf_.push_back(i % 4 == 3 ? 0 : 1); // NOPs, EOL
        return *this;
    }
    // Mark the IPv4 header as a fragment (offset in 8-byte units, more-fragments flag).
    Packet& fragment(uint16_t offset, bool more) {
        put16(ip_off_ + 6, uint16_t(offset | (more ? 0x2000 : 0))); // frag_off
        return *this;
    }
    Packet& ipv6(const char* src, const char* dst, uint8_t next = IPPROTO_UDP) {
        ipv6hdr h{};
        h.version = 6;
        h.nexthdr = next;
        h.hop_limit = 64;
        inet_pton(AF_INET6, src, &h.saddr);
        inet_pton(AF_INET6, dst, &h.daddr);
        ip6_off_ = buf_.size();
        next_at_ = ip6_off_ + 6;
        append(&h, sizeof h);
        return *this;
    }
    // An IPv6 extension header of 8 bytes; the previous header's "next" points to it.
    Packet& ipv6_ext(uint8_t type, uint8_t next = IPPROTO_UDP) {
        buf_[next_at_] = type;
        next_at_ = buf_.size();
        uint8_t e[8] = {next, 0, 1, 4, 0, 0, 0, 0}; // PadN options
        append(e, sizeof e);
        return *this;
    }
    Packet& udp(uint16_t sport, uint16_t dport) {
        udphdr h{};
        h.source = htons(sport);
        h.dest = htons(dport);
        udp_off_ = buf_.size();
        append(&h, sizeof h);
        return *this;
    }
    Packet& payload(std::string_view s) {
        append(s.data(), s.size());
        return *this;
    }
    Packet& truncate(size_t n) { // a malformed packet: cut after the length fields are final
        finish();
        if (n < buf_.size()) buf_.resize(n);
        finished_ = true;
        return *this;
    }
    std::vector<uint8_t> bytes() {
        finish();
        return buf_;
    }

    static uint16_t csum_fold(uint32_t sum) {
        while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
        return uint16_t(~sum);
    }
    static uint32_t csum_add(uint32_t sum, const uint8_t* p, size_t n) {
        for (size_t i = 0; i + 1 < n; i += 2) sum += uint32_t(p[i] << 8 | p[i + 1]);
        if (n & 1) sum += uint32_t(p[n - 1] << 8);
        return sum;
    }

  private:
    void append(const void* p, size_t n) {
        auto* b = static_cast<const uint8_t*>(p);
        buf_.insert(buf_.end(), b, b + n);
    }
    // Fields are written byte by byte at their offsets: the IP header of a frame sits at offset
    // 14, where casting to iphdr/ipv6hdr would be a misaligned access (UBSan says so).
    void put16(size_t off, uint16_t host) {
        buf_[off] = uint8_t(host >> 8);
        buf_[off + 1] = uint8_t(host);
    }
    void finish() {
        if (finished_) return;
        finished_ = true;
        uint8_t pseudo[40] = {}; // IPv6: source, destination, length (32 bits), next header
        size_t pseudo_len = 0;
        if (ip6_off_ != npos) {
            put16(ip6_off_ + 4, uint16_t(buf_.size() - ip6_off_ - sizeof(ipv6hdr))); // payload_len
            std::memcpy(pseudo, buf_.data() + ip6_off_ + 8, 32);                   // saddr, daddr
            pseudo_len = 40;
        } else if (ip_off_ != npos) {
            const size_t ihl = (buf_[ip_off_] & 0x0f) * 4u;
            put16(ip_off_ + 2, uint16_t(buf_.size() - ip_off_)); // tot_len
            put16(ip_off_ + 10, 0);                               // check
            put16(ip_off_ + 10, csum_fold(csum_add(0, buf_.data() + ip_off_, ihl)));
            std::memcpy(pseudo, buf_.data() + ip_off_ + 12, 8); // saddr, daddr
            pseudo_len = 12;
        } else {
            return;
        }
        if (udp_off_ == npos) return;
        const uint16_t ulen = uint16_t(buf_.size() - udp_off_);
        put16(udp_off_ + 4, ulen); // len
        put16(udp_off_ + 6, 0);    // check
        if (pseudo_len == 40) {
            pseudo[34] = uint8_t(ulen >> 8);
            pseudo[35] = uint8_t(ulen);
            pseudo[39] = IPPROTO_UDP;
        } else {
            pseudo[9] = IPPROTO_UDP;
            pseudo[10] = uint8_t(ulen >> 8);
            pseudo[11] = uint8_t(ulen);
        }
        uint32_t sum = csum_add(0, pseudo, pseudo_len);
        sum = csum_add(sum, buf_.data() + udp_off_, ulen);
        const uint16_t c = csum_fold(sum);
        put16(udp_off_ + 6, c == 0 ? 0xffff : c); // a computed zero is sent as all ones
    }

    static constexpr size_t npos = size_t(-1);
    std::vector<uint8_t> buf_;
    size_t ip_off_ = npos, udp_off_ = npos, ip6_off_ = npos, next_at_ = npos;
    bool finished_ = false;
};

} // namespace bertha::test
