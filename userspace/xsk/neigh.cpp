#include "xsk/neigh.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <linux/neighbour.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>
#include <thread>
#include <vector>

namespace bertha::xsk {
namespace {

constexpr int kNetlinkTimeoutMs = 1000; // one request's answer

// A request in a fixed buffer: header, fixed part, attributes.
struct Request {
    alignas(nlmsghdr) unsigned char buf[256] = {};
    nlmsghdr* hdr() { return reinterpret_cast<nlmsghdr*>(buf); }
    Request(uint16_t type, uint16_t flags, const void* fixed, size_t len) {
        hdr()->nlmsg_len = uint32_t(NLMSG_LENGTH(len));
        hdr()->nlmsg_type = type;
        hdr()->nlmsg_flags = uint16_t(NLM_F_REQUEST | flags);
        std::memcpy(NLMSG_DATA(hdr()), fixed, len);
    }
    void attr(uint16_t type, const void* data, size_t len) {
        auto* a = reinterpret_cast<rtattr*>(buf + NLMSG_ALIGN(hdr()->nlmsg_len));
        a->rta_type = type;
        a->rta_len = uint16_t(RTA_LENGTH(len));
        std::memcpy(RTA_DATA(a), data, len);
        hdr()->nlmsg_len = uint32_t(NLMSG_ALIGN(hdr()->nlmsg_len) + RTA_ALIGN(a->rta_len));
    }
};

// The raw address bytes of an Addr (4 or 16) and their length.
const void* ip_bytes(const Addr& a, size_t& len) {
    if (a.family() == AF_INET6) {
        len = 16;
        return &reinterpret_cast<const sockaddr_in6*>(a.sa())->sin6_addr;
    }
    len = 4;
    return &reinterpret_cast<const sockaddr_in*>(a.sa())->sin_addr;
}

Addr ip_only(const Addr& a) {
    Addr out = a;
    out.set_port(0);
    return out;
}

Addr addr_from(int family, const void* data, size_t len) {
    Addr a;
    if (family == AF_INET && len == 4) {
        auto* sa = reinterpret_cast<sockaddr_in*>(a.sa());
        sa->sin_family = AF_INET;
        std::memcpy(&sa->sin_addr, data, 4);
    } else if (family == AF_INET6 && len == 16) {
        auto* sa = reinterpret_cast<sockaddr_in6*>(a.sa());
        sa->sin6_family = AF_INET6;
        std::memcpy(&sa->sin6_addr, data, 16);
    }
    return a;
}

std::string ip_text(const Addr& a) {
    std::string s = a.to_string(); // "198.18.0.1:0" / "[2001:2::1]:0": drop the port
    auto colon = s.rfind(':');
    if (colon != std::string::npos) s.resize(colon);
    if (s.size() > 2 && s.front() == '[') s = s.substr(1, s.size() - 2);
    return s;
}

constexpr uint16_t kUsable =
    NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT | NUD_NOARP;

// Sends one request and calls on_reply(msg) for the kernel's answer message(s) of our sequence
// until its ack or error. Returns the kernel's errno (0 = success). Bounded: the socket's
// receive timeout, and a cap on the messages read.
template <class F>
Result<int> transact(int fd, uint32_t& seq, Request& req, const std::string& who, F&& on_reply) {
    req.hdr()->nlmsg_seq = ++seq;
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    if (::sendto(fd, req.buf, req.hdr()->nlmsg_len, 0, reinterpret_cast<sockaddr*>(&kernel),
                 sizeof kernel) < 0)
        return fail_sys(who, "rtnetlink send", errno);
    alignas(nlmsghdr) static thread_local unsigned char buf[16384];
    for (int reads = 0; reads < 64; ++reads) {
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return fail(Errc::unavailable, who,
                            "rtnetlink: no answer within " + std::to_string(kNetlinkTimeoutMs) +
                                " ms");
            return fail_sys(who, "rtnetlink receive", errno);
        }
        size_t left = size_t(n);
        for (auto* m = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(m, left);
             m = NLMSG_NEXT(m, left)) {
            if (m->nlmsg_seq != seq) continue; // a stale answer to an earlier request
            if (m->nlmsg_type == NLMSG_ERROR) {
                if (m->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) return EPROTO;
                return -static_cast<const nlmsgerr*>(NLMSG_DATA(m))->error;
            }
            if (m->nlmsg_type == NLMSG_DONE) return 0;
            on_reply(m);
        }
    }
    return fail(Errc::unavailable, who, "rtnetlink: the answer never ended");
}

template <class F> void for_each_rtattr(const nlmsghdr* m, size_t fixed, F&& f) {
    if (m->nlmsg_len < NLMSG_LENGTH(fixed)) return;
    auto* a = reinterpret_cast<const rtattr*>(static_cast<const char*>(NLMSG_DATA(m)) +
                                              NLMSG_ALIGN(fixed));
    int len = int(m->nlmsg_len - NLMSG_LENGTH(NLMSG_ALIGN(fixed)));
    for (int guard = 0; RTA_OK(a, len) && guard < 1024; a = RTA_NEXT(a, len), ++guard)
        f(a->rta_type, RTA_DATA(a), size_t(RTA_PAYLOAD(a)));
}

std::string state_text(uint16_t s) {
    if (s == 0) return "no entry";
    if (s & NUD_INCOMPLETE) return "incomplete (no answer to ARP/neighbour solicitation yet)";
    if (s & NUD_FAILED) return "failed (nobody answered ARP/neighbour solicitation)";
    if (s & NUD_NONE) return "none";
    return "state " + std::to_string(s);
}

} // namespace

Result<Neighbours> Neighbours::open(const Interface& iface, std::chrono::milliseconds timeout) {
    Fd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
    if (!fd) return fail_sys("xsk on " + iface.name, "rtnetlink socket", errno);
    timeval tv{kNetlinkTimeoutMs / 1000, (kNetlinkTimeoutMs % 1000) * 1000};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_nl local{};
    local.nl_family = AF_NETLINK;
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&local), sizeof local) != 0)
        return fail_sys("xsk on " + iface.name, "rtnetlink bind", errno);
    return Neighbours(std::move(fd), iface, timeout);
}

Result<NextHop> Neighbours::route(const Addr& peer) {
    if (peer.family() != AF_INET && peer.family() != AF_INET6)
        return fail(Errc::invalid_argument, who(), "no peer address to route to");
    rtmsg rt{};
    rt.rtm_family = uint8_t(peer.family());
    size_t alen;
    const void* dst = ip_bytes(peer, alen);
    rt.rtm_dst_len = uint8_t(alen * 8);
    Request req(RTM_GETROUTE, NLM_F_ACK, &rt, sizeof rt);
    req.attr(RTA_DST, dst, alen);
    if (peer.family() == AF_INET6) { // a link-local peer is on the interface its scope names
        uint32_t scope = reinterpret_cast<const sockaddr_in6*>(peer.sa())->sin6_scope_id;
        if (scope) req.attr(RTA_OIF, &scope, sizeof scope);
    }
    NextHop hop;
    hop.peer = ip_only(peer);
    int oif = 0;
    uint8_t type = 0;
    bool got = false;
    auto r = transact(nl_.get(), seq_, req, who(), [&](const nlmsghdr* m) {
        if (m->nlmsg_type != RTM_NEWROUTE || m->nlmsg_len < NLMSG_LENGTH(sizeof(rtmsg))) return;
        got = true;
        type = static_cast<const rtmsg*>(NLMSG_DATA(m))->rtm_type;
        for_each_rtattr(m, sizeof(rtmsg), [&](uint16_t t, const void* data, size_t len) {
            if (t == RTA_OIF && len == 4) std::memcpy(&oif, data, 4);
            if (t == RTA_GATEWAY) hop.via = addr_from(peer.family(), data, len);
            if (t == RTA_PREFSRC) hop.source = addr_from(peer.family(), data, len);
            if (t == RTA_VIA && len >= sizeof(rtvia)) { // an IPv4 route via an IPv6 gateway
                const auto* v = static_cast<const rtvia*>(data);
                hop.via = addr_from(v->rtvia_family, v->rtvia_addr, len - sizeof(rtvia));
            }
        });
    });
    if (!r) return std::unexpected(std::move(r.error()));
    const std::string to = "route to " + ip_text(peer);
    if (*r != 0) return fail_sys(who(), to, *r);
    if (!got) return fail(Errc::unavailable, who(), to + ": the kernel gave no route");
    if (type == RTN_LOCAL)
        return fail(Errc::invalid_argument, who(),
                    to + ": it is an address of this host; an AF_XDP socket only reaches other "
                         "hosts on the link");
    if (type != RTN_UNICAST)
        return fail(Errc::unavailable, who(),
                    to + ": not a unicast route (type " + std::to_string(type) + ")");
    if (oif != iface_.ifindex) {
        char name[IF_NAMESIZE] = {};
        std::string other = ::if_indextoname(unsigned(oif), name) ? name : std::to_string(oif);
        return fail(Errc::unavailable, who(),
                    to + " leaves through " + other + ", not " + iface_.name +
                        ": an AF_XDP socket sends only on its own interface");
    }
    if (hop.via.empty()) hop.via = hop.peer; // on-link
    return hop;
}

Result<std::optional<Mac>> Neighbours::neighbour(const Addr& ip, uint16_t* state) {
    ndmsg nd{};
    nd.ndm_family = uint8_t(ip.family());
    nd.ndm_ifindex = iface_.ifindex;
    Request req(RTM_GETNEIGH, NLM_F_ACK, &nd, sizeof nd);
    size_t alen;
    const void* dst = ip_bytes(ip, alen);
    req.attr(NDA_DST, dst, alen);
    uint16_t st = 0;
    std::optional<Mac> mac;
    auto r = transact(nl_.get(), seq_, req, who(), [&](const nlmsghdr* m) {
        if (m->nlmsg_type != RTM_NEWNEIGH || m->nlmsg_len < NLMSG_LENGTH(sizeof(ndmsg))) return;
        st = static_cast<const ndmsg*>(NLMSG_DATA(m))->ndm_state;
        for_each_rtattr(m, sizeof(ndmsg), [&](uint16_t t, const void* data, size_t len) {
            if (t == NDA_LLADDR && len == 6) {
                Mac a;
                std::memcpy(a.data(), data, 6);
                mac = a;
            }
        });
    });
    if (!r) return std::unexpected(std::move(r.error()));
    if (*r == ENOENT)
        st = 0, mac.reset();
    else if (*r != 0)
        return fail_sys(who(), "neighbour lookup of " + ip_text(ip), *r);
    if (state) *state = st;
    if (!(st & kUsable)) mac.reset();
    return mac;
}

Result<void> Neighbours::trigger(const Addr& ip) {
    ndmsg nd{};
    nd.ndm_family = uint8_t(ip.family());
    nd.ndm_ifindex = iface_.ifindex;
    nd.ndm_state = NUD_NONE;
    nd.ndm_flags = NTF_USE; // "use" the entry: the kernel starts (or refreshes) its resolution
    Request req(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_ACK, &nd, sizeof nd);
    size_t alen;
    const void* dst = ip_bytes(ip, alen);
    req.attr(NDA_DST, dst, alen);
    auto r = transact(nl_.get(), seq_, req, who(), [](const nlmsghdr*) {});
    if (!r) return std::unexpected(std::move(r.error()));
    if (*r != 0) return fail_sys(who(), "asking the kernel to resolve " + ip_text(ip), *r);
    return {};
}

Result<NextHop> Neighbours::resolve(const Addr& peer) {
    auto hop = route(peer);
    if (!hop) return std::unexpected(std::move(hop.error()));
    uint16_t state = 0;
    auto mac = neighbour(hop->via, &state);
    if (!mac) return std::unexpected(std::move(mac.error()));
    if (*mac) {
        hop->mac = **mac;
        if (state & NUD_STALE) (void)trigger(hop->via); // reconfirm in the background
        return hop;
    }
    // Unknown or unresolved: have the kernel resolve it, and ask again, bounded in time and
    // count (1 ms, doubling to 50 ms between questions).
    auto r = trigger(hop->via);
    if (!r) return std::unexpected(std::move(r.error()));
    const auto deadline = Clock::now() + timeout_;
    auto pause = std::chrono::milliseconds(1);
    for (int tries = 0; tries < 1000; ++tries) {
        mac = neighbour(hop->via, &state);
        if (!mac) return std::unexpected(std::move(mac.error()));
        if (*mac) {
            hop->mac = **mac;
            return hop;
        }
        auto now = Clock::now();
        if (now >= deadline) break;
        if (state & NUD_FAILED) (void)trigger(hop->via); // try again until our deadline
        std::this_thread::sleep_for(std::min<Clock::duration>(pause, deadline - now));
        pause = std::min(pause * 2, std::chrono::milliseconds(50));
    }
    std::string what = "no MAC address for " + ip_text(hop->via);
    if (!same_host(hop->via, hop->peer)) what += " (the gateway towards " + ip_text(peer) + ")";
    std::string hint;
    if (peer.family() == AF_INET6 && (state & NUD_INCOMPLETE))
        hint = "; IPv6 solicits from the interface's link-local address, which must exist and "
               "have passed duplicate address detection";
    return fail(Errc::unavailable, who(),
                what + " after " + std::to_string(timeout_.count()) + " ms: neighbour " +
                    state_text(state) + hint);
}

Result<const NextHop*> Neighbours::lookup(const Addr& peer) {
    const auto now = Clock::now();
    auto fresh = [&](const Entry& e) {
        return e.used && now < e.expires && same_host(e.hop.peer, peer);
    };
    if (fresh(cache_[last_])) return &cache_[last_].hop;
    size_t slot = kCapacity;
    for (size_t i = 0; i < kCapacity; ++i) {
        if (fresh(cache_[i])) {
            last_ = i;
            return &cache_[i].hop;
        }
        if (slot == kCapacity && (!cache_[i].used || now >= cache_[i].expires))
            slot = i; // free, or expired (this peer's old answer among them)
    }
    auto hop = resolve(peer);
    if (!hop) return std::unexpected(std::move(hop.error()));
    if (slot == kCapacity) {
        slot = victim_;
        victim_ = (victim_ + 1) % kCapacity;
    }
    cache_[slot] = Entry{std::move(*hop), now + kRefresh, true};
    last_ = slot;
    return &cache_[slot].hop;
}

} // namespace bertha::xsk
