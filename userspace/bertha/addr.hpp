// A UDP endpoint address, IPv4 or IPv6, small enough to travel inside every message.
#pragma once

#include "bertha/error.hpp"

#include <cstddef>
#include <cstdint>
#include <netinet/in.h>
#include <string>
#include <string_view>
#include <sys/socket.h>

namespace bertha {

class Addr {
  public:
    Addr() noexcept { u_.v6 = {}; }

    // "198.18.0.1:7000", "[::1]:7000". The port is required.
    static Result<Addr> parse(std::string_view text);
    static Addr from_sockaddr(const sockaddr* sa, socklen_t len) noexcept;

    int family() const noexcept { return u_.sa.sa_family; }
    bool empty() const noexcept { return u_.sa.sa_family == AF_UNSPEC; }
    uint16_t port() const noexcept;
    void set_port(uint16_t port) noexcept;

    const sockaddr* sa() const noexcept { return &u_.sa; }
    sockaddr* sa() noexcept { return &u_.sa; }
    socklen_t len() const noexcept;
    static constexpr socklen_t capacity() noexcept { return sizeof(sockaddr_in6); }

    std::string to_string() const;
    size_t hash() const noexcept;
    friend bool operator==(const Addr& a, const Addr& b) noexcept;
    // The same host: family and IP address equal, whatever the ports.
    friend bool same_host(const Addr& a, const Addr& b) noexcept;

  private:
    union {
        sockaddr sa;
        sockaddr_in v4;
        sockaddr_in6 v6;
    } u_;
};
static_assert(sizeof(Addr) == 28, "Addr travels in every Msg: keep it a bare sockaddr_in6");

struct AddrHash {
    size_t operator()(const Addr& a) const noexcept { return a.hash(); }
};

} // namespace bertha
