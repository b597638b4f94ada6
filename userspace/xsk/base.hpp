// The `xsk` base chunnel: UDP datagrams through AF_XDP sockets, with kernel bypass for exactly
// one flow. It speaks plain UDP on the wire, so the peer may run `udp` or `xsk`: which base runs
// is this host's own choice, and `select(Xsk{}, Udp{})` falls back to udp, with no change to the
// application, where AF_XDP cannot run (no AF_XDP on the interface, no in-process privilege).
//
// A connection (connect or bind) is:
//  - a kernel UDP socket that holds the local port (and picks the source address and an
//    ephemeral port for connect), so no other application takes the port; nothing is sent on
//    it, and what reaches it (packets before the redirect is in place) is never read;
//  - one XskSocket per RX queue of the interface (a socket receives only from its own queue);
//  - the flow's chain [xsk] on the interface's XDP dispatcher (Loader, in-process), with each
//    socket entered for its queue: the dispatcher redirects only this flow's packets; ARP,
//    ICMP, other ports and other applications keep reaching the kernel.
// Closing the connection closes the sockets (the kernel empties their XSKMAP entries), drops
// the chain's reference (the last one removes it) and releases the port.
#pragma once

#include "bertha/addr.hpp"
#include "bertha/buffer.hpp"
#include "bertha/chunnel.hpp"
#include "bertha/error.hpp"
#include "bertha/fd.hpp"
#include "bertha/offload.hpp"
#include "xsk/xsk.hpp"

#include <memory>
#include <poll.h>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace bertha {

struct XskBaseOptions {
    XskMode mode = XskMode::automatic;
    uint32_t ring_size = 2048; // each of the fill, completion, RX and TX rings, per queue
    uint32_t peer_queue = 256; // listener: per accepted peer, messages waiting for recv()
    uint32_t accept_backlog = 256;
};

struct XskConnStats {
    uint64_t sent = 0, received = 0;
    uint32_t queues = 0;
};

// A connection on the xsk base: to one peer (connect) or to any (bind; each message names its
// peer). Driven by one thread at a time.
class XskConn {
  public:
    using Data = Msg;
    static constexpr ChunnelInfo info{2,
                                      "xsk",
                                      "af_xdp",
                                      "base,udp,xsk,af_xdp",
                                      Match::exact,
                                      Scope::unilateral,
                                      Need::af_xdp | Need::privilege};

    XskConn(XskConn&&) noexcept = default;
    XskConn& operator=(XskConn&&) noexcept = default;
    ~XskConn();

    // Sends the whole batch through queue 0's socket (a message's peer(), else the connected
    // peer). A TX ring that stays full for 200 ms makes the count short: the rest are left to
    // the caller, untouched.
    Result<size_t> send(std::span<Msg> batch);
    Result<size_t> recv(std::span<Msg> batch, Deadline deadline);
    Result<size_t> alloc(std::span<Msg> out);
    void describe(std::vector<std::string>& out) const;
    int wait_fd() const; // the socket's, with one queue; -1 with several (HasWaitFd)

    Addr local() const { return local_; }
    Addr peer() const { return peer_; } // empty for bind
    XskMode mode() const;               // copy or zerocopy, as the sockets were bound
    const std::string& ifname() const { return ifname_; }
    const OffloadHandle& offload() const { return offload_; }
    XskConnStats stats() const;
    std::span<const XskSocket> sockets() const { return socks_; }

  private:
    friend class Xsk;
    XskConn() = default;
    static Result<XskConn> open(const XskBaseOptions& o, const std::string& ifname,
                                const Addr& local, const Addr& peer);

    std::string ifname_;
    Addr local_, peer_;
    Fd port_;                     // the kernel socket that holds the port
    std::vector<XskSocket> socks_; // one per RX queue; socks_[0] sends
    OffloadHandle offload_;        // the flow's [xsk] chain (after the sockets: goes first)
    std::vector<pollfd> pfds_;     // the sockets, for a multi-queue recv that waits
    size_t next_ = 0;              // the queue recv looks at first (fairness across queues)
    uint64_t sent_ = 0, received_ = 0;
};

class XskDemux;

// One peer of a listener: shares the listener's sockets (and its chain); same thread only.
class XskPeerConn {
  public:
    using Data = Msg;
    XskPeerConn(XskPeerConn&&) noexcept;
    XskPeerConn& operator=(XskPeerConn&&) noexcept;
    ~XskPeerConn();

    Result<size_t> send(std::span<Msg> batch);
    Result<size_t> recv(std::span<Msg> batch, Deadline deadline);
    Result<size_t> alloc(std::span<Msg> out);
    void describe(std::vector<std::string>& out) const;
    const Addr& peer() const { return peer_; }
    int wait_fd() const; // the listener's (XskConn::wait_fd)
    Addr local() const;
    // The listener's chain: offloads attached for this peer's flow end in its sockets.
    std::optional<uint32_t> redirect_chain() const;

    // The peer started over (a new connection from the same address and port): this
    // connection closes, and `first` goes back to the listener as a new peer's first message.
    void restart(Msg&& first);
    bool closed() const { return !d_; }

  private:
    friend class XskListener;
    XskPeerConn(std::shared_ptr<XskDemux> d, uint32_t queue, const Addr& peer);
    std::shared_ptr<XskDemux> d_;
    uint32_t queue_ = 0;
    Addr peer_;
};

struct XskListenerStats {
    uint64_t dropped_queue_full = 0; // an accepted peer's queue was full
    uint64_t dropped_backlog = 0;    // a new peer found the accept backlog full
};

// A listener: one bound connection (its sockets, its chain for the port), one queue per peer.
class XskListener {
  public:
    XskListener(XskListener&&) noexcept;
    XskListener& operator=(XskListener&&) noexcept;
    ~XskListener();
    // The connection of the next new peer, or nullopt when the deadline passes without one.
    Result<std::optional<XskPeerConn>> accept(Deadline deadline);
    Addr local() const;
    XskListenerStats stats() const;
    // The bound connection underneath: its chain id (offloads of accepted peers end in its
    // sockets: the xsk stage's sockets=CHAIN) and its sockets.
    const XskConn& bound() const;

  private:
    friend class Xsk;
    explicit XskListener(std::shared_ptr<XskDemux> d);
    std::shared_ptr<XskDemux> d_;
};

// The base chunnel.
class Xsk {
  public:
    using Upper = Msg;
    using Lower = void;
    static constexpr ChunnelInfo info = XskConn::info;

    Xsk() = default;
    explicit Xsk(XskBaseOptions o) : opts_(o) {}

    // The interface is the stack's (ConnectContext::flow.ifname: towards the peer, or the one
    // owning the local address). Errors that mean "AF_XDP cannot run here" are Errc::unavailable,
    // so that a select falls back to the next base.
    Result<XskConn> connect(const Addr& peer, const ConnectContext& ctx) const;
    Result<XskConn> bind(const Addr& local, const ConnectContext& ctx) const;
    Result<XskListener> listen(const Addr& local, const ConnectContext& ctx) const;

  private:
    XskBaseOptions opts_;
};

} // namespace bertha
