#include "bertha/addr.hpp"

#include <arpa/inet.h>
#include <charconv>
#include <cstring>

namespace bertha {

Result<Addr> Addr::parse(std::string_view text) {
    auto bad = [&](const char* why) {
        return fail(Errc::invalid_argument, "addr",
                    "'" + std::string(text) + "' is not an address: " + why +
                        " (expected 198.18.0.1:7000 or [::1]:7000)");
    };
    std::string host;
    std::string_view port_text;
    if (!text.empty() && text.front() == '[') {
        auto close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
            return bad("IPv6 addresses need the form [addr]:port");
        host = std::string(text.substr(1, close - 1));
        port_text = text.substr(close + 2);
    } else {
        auto colon = text.rfind(':');
        if (colon == std::string_view::npos) return bad("no port");
        host = std::string(text.substr(0, colon));
        port_text = text.substr(colon + 1);
    }
    unsigned port = 0;
    auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (ec != std::errc{} || end != port_text.data() + port_text.size() || port > 65535)
        return bad("the port is not a number from 0 to 65535");

    Addr a;
    if (inet_pton(AF_INET, host.c_str(), &a.u_.v4.sin_addr) == 1) {
        a.u_.v4.sin_family = AF_INET;
        a.u_.v4.sin_port = htons(static_cast<uint16_t>(port));
        return a;
    }
    if (inet_pton(AF_INET6, host.c_str(), &a.u_.v6.sin6_addr) == 1) {
        a.u_.v6.sin6_family = AF_INET6;
        a.u_.v6.sin6_port = htons(static_cast<uint16_t>(port));
        return a;
    }
    return bad("the host part is not an IPv4 or IPv6 literal");
}

Addr Addr::from_sockaddr(const sockaddr* sa, socklen_t len) noexcept {
    Addr a;
    if (sa && sa->sa_family == AF_INET && len >= sizeof(sockaddr_in))
        std::memcpy(&a.u_.v4, sa, sizeof(sockaddr_in));
    else if (sa && sa->sa_family == AF_INET6 && len >= sizeof(sockaddr_in6))
        std::memcpy(&a.u_.v6, sa, sizeof(sockaddr_in6));
    return a;
}

uint16_t Addr::port() const noexcept {
    if (family() == AF_INET) return ntohs(u_.v4.sin_port);
    if (family() == AF_INET6) return ntohs(u_.v6.sin6_port);
    return 0;
}

void Addr::set_port(uint16_t port) noexcept {
    if (family() == AF_INET) u_.v4.sin_port = htons(port);
    if (family() == AF_INET6) u_.v6.sin6_port = htons(port);
}

socklen_t Addr::len() const noexcept {
    if (family() == AF_INET) return sizeof(sockaddr_in);
    if (family() == AF_INET6) return sizeof(sockaddr_in6);
    return 0;
}

std::string Addr::to_string() const {
    char buf[INET6_ADDRSTRLEN] = {};
    if (family() == AF_INET) {
        inet_ntop(AF_INET, &u_.v4.sin_addr, buf, sizeof buf);
        return std::string(buf) + ":" + std::to_string(port());
    }
    if (family() == AF_INET6) {
        inet_ntop(AF_INET6, &u_.v6.sin6_addr, buf, sizeof buf);
        return "[" + std::string(buf) + "]:" + std::to_string(port());
    }
    return "(none)";
}

size_t Addr::hash() const noexcept {
    // FNV-1a over exactly the fields operator== compares (not IPv6 flowinfo).
    uint64_t h = 1469598103934665603ull;
    auto mix = [&h](const void* data, size_t n) {
        const auto* p = static_cast<const unsigned char*>(data);
        for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
    };
    uint16_t fam = static_cast<uint16_t>(family());
    mix(&fam, sizeof fam);
    if (family() == AF_INET) {
        mix(&u_.v4.sin_port, sizeof u_.v4.sin_port);
        mix(&u_.v4.sin_addr, sizeof u_.v4.sin_addr);
    } else if (family() == AF_INET6) {
        mix(&u_.v6.sin6_port, sizeof u_.v6.sin6_port);
        mix(&u_.v6.sin6_addr, sizeof u_.v6.sin6_addr);
        mix(&u_.v6.sin6_scope_id, sizeof u_.v6.sin6_scope_id);
    }
    return static_cast<size_t>(h);
}

bool same_host(const Addr& a, const Addr& b) noexcept {
    if (a.family() != b.family()) return false;
    if (a.family() == AF_INET) return a.u_.v4.sin_addr.s_addr == b.u_.v4.sin_addr.s_addr;
    if (a.family() == AF_INET6)
        return std::memcmp(&a.u_.v6.sin6_addr, &b.u_.v6.sin6_addr, sizeof a.u_.v6.sin6_addr) == 0;
    return false;
}

bool operator==(const Addr& a, const Addr& b) noexcept {
    if (a.family() != b.family()) return false;
    if (a.family() == AF_INET)
        return a.u_.v4.sin_port == b.u_.v4.sin_port &&
               a.u_.v4.sin_addr.s_addr == b.u_.v4.sin_addr.s_addr;
    if (a.family() == AF_INET6)
        return a.u_.v6.sin6_port == b.u_.v6.sin6_port &&
               std::memcmp(&a.u_.v6.sin6_addr, &b.u_.v6.sin6_addr, sizeof(in6_addr)) == 0 &&
               a.u_.v6.sin6_scope_id == b.u_.v6.sin6_scope_id;
    return true;
}

} // namespace bertha
