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
        auto* ip = reinterpret_cast<iphdr*>(buf_.data() + ip_off_);
        ip->frag_off = htons(uint16_t(offset | (more ? 0x2000 : 0)));
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
    void finish() {
        if (finished_) return;
        finished_ = true;
        if (ip6_off_ != npos) {
            auto* ip6 = reinterpret_cast<ipv6hdr*>(buf_.data() + ip6_off_);
            ip6->payload_len = htons(uint16_t(buf_.size() - ip6_off_ - sizeof(ipv6hdr)));
            if (udp_off_ != npos) {
                auto* u = reinterpret_cast<udphdr*>(buf_.data() + udp_off_);
                uint16_t ulen = uint16_t(buf_.size() - udp_off_);
                u->len = htons(ulen);
                u->check = 0;
                uint8_t pseudo[40] = {}; // source, destination, length (32 bits), next header
                std::memcpy(pseudo, &ip6->saddr, 16);
                std::memcpy(pseudo + 16, &ip6->daddr, 16);
                pseudo[34] = uint8_t(ulen >> 8);
                pseudo[35] = uint8_t(ulen);
                pseudo[39] = IPPROTO_UDP;
                uint32_t sum = csum_add(0, pseudo, sizeof pseudo);
                sum = csum_add(sum, buf_.data() + udp_off_, ulen);
                uint16_t c = csum_fold(sum);
                u->check = htons(c == 0 ? 0xffff : c); // zero is illegal for IPv6 UDP
            }
            return;
        }
        if (ip_off_ == npos) return;
        auto* ip = reinterpret_cast<iphdr*>(buf_.data() + ip_off_);
        ip->tot_len = htons(uint16_t(buf_.size() - ip_off_));
        ip->check = 0;
        ip->check = htons(csum_fold(csum_add(0, buf_.data() + ip_off_, ip->ihl * 4u)));
        if (udp_off_ == npos) return;
        auto* u = reinterpret_cast<udphdr*>(buf_.data() + udp_off_);
        uint16_t ulen = uint16_t(buf_.size() - udp_off_);
        u->len = htons(ulen);
        u->check = 0;
        uint8_t pseudo[12];
        std::memcpy(pseudo, &ip->saddr, 4);
        std::memcpy(pseudo + 4, &ip->daddr, 4);
        pseudo[8] = 0;
        pseudo[9] = IPPROTO_UDP;
        pseudo[10] = uint8_t(ulen >> 8);
        pseudo[11] = uint8_t(ulen);
        uint32_t sum = csum_add(0, pseudo, sizeof pseudo);
        sum = csum_add(sum, buf_.data() + udp_off_, ulen);
        uint16_t c = csum_fold(sum);
        u->check = htons(c == 0 ? 0xffff : c);
    }

    static constexpr size_t npos = size_t(-1);
    std::vector<uint8_t> buf_;
    size_t ip_off_ = npos, udp_off_ = npos, ip6_off_ = npos, next_at_ = npos;
    bool finished_ = false;
};

} // namespace bertha::test
