// Where a frame to a peer goes on the link: the kernel's route towards the peer (RTM_GETROUTE)
// names the next hop (a gateway, or the peer itself when on-link), and the kernel's neighbour
// table (RTM_GETNEIGH) its MAC address. An unknown or unresolved neighbour is resolved by the
// kernel on request (RTM_NEWNEIGH with NTF_USE: it sends the ARP request or neighbour
// solicitation itself; no datagram is sent) and asked again for a bounded time.
//
// Answers are cached per peer address in a small table and looked up again after a while, so
// that a changed route or MAC is noticed; a stale kernel entry is then refreshed the same way
// (our frames bypass the kernel, which would otherwise never reconfirm it).
#pragma once

#include "bertha/addr.hpp"
#include "bertha/error.hpp"
#include "bertha/fd.hpp"
#include "xsk/frame.hpp"
#include "xsk/iface.hpp"

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace bertha::xsk {

struct NextHop {
    Addr peer;   // the IP address asked about (port 0)
    Addr via;    // the next hop: a gateway, or the peer itself (port 0)
    Addr source; // the route's preferred source address (port 0); empty if it names none
    Mac mac{};   // the next hop's MAC address
};

class Neighbours {
  public:
    using Clock = std::chrono::steady_clock;
    static constexpr size_t kCapacity = 64;            // cached peers
    static constexpr std::chrono::seconds kRefresh{5}; // an answer's lifetime in the cache

    // Opens a route netlink socket in the calling thread's network namespace: later lookups
    // happen there, whichever namespace the caller is in by then.
    static Result<Neighbours> open(const Interface& iface, std::chrono::milliseconds timeout);

    // The next hop for frames to `peer` (its port is ignored), from the cache or the kernel.
    // Resolution waits at most the timeout given to open(); failure names the interface and
    // the address. The pointer stays valid until the next call.
    Result<const NextHop*> lookup(const Addr& peer);

    // Uncached, one question each (tests and diagnostics).
    Result<NextHop> route(const Addr& peer);
    // The MAC of `ip` on our interface if the kernel has a usable entry (reachable, stale,
    // delay, probe, permanent, noarp); nullopt if unknown, incomplete or failed. `state` gets
    // the entry's NUD_* state (0 when there is no entry).
    Result<std::optional<Mac>> neighbour(const Addr& ip, uint16_t* state = nullptr);
    // Ask the kernel to resolve `ip` on our interface (creates the entry if needed).
    Result<void> trigger(const Addr& ip);

    const Interface& interface() const { return iface_; }

  private:
    Neighbours(Fd fd, Interface iface, std::chrono::milliseconds timeout)
        : nl_(std::move(fd)), iface_(std::move(iface)), timeout_(timeout) {}
    Result<NextHop> resolve(const Addr& peer);
    std::string who() const { return "xsk on " + iface_.name; }

    struct Entry {
        NextHop hop;
        Clock::time_point expires{};
        bool used = false;
    };

    Fd nl_;
    Interface iface_;
    std::chrono::milliseconds timeout_;
    uint32_t seq_ = 0;
    std::array<Entry, kCapacity> cache_{};
    size_t last_ = 0;   // the entry of the previous lookup: a batch usually has one peer
    size_t victim_ = 0; // round-robin replacement when the table is full
};

} // namespace bertha::xsk
