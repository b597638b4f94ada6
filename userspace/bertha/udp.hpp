// The `udp` base chunnel on io_uring. One socket, one ring, one buffer pool per connection.
//  - send: a batch is one submission (one io_uring_enter), never a syscall per message;
//  - recv: one multishot recvmsg over a provided-buffer ring where the kernel has it (6.0+),
//    otherwise a standing set of plain recvmsg requests; either way messages arrive in lent
//    pool slots with head-room, and the application gives them back by dropping them;
//  - a listening socket demultiplexes peers into per-peer connections (accept()).
#pragma once

#include "bertha/addr.hpp"
#include "bertha/buffer.hpp"
#include "bertha/chunnel.hpp"
#include "bertha/error.hpp"

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace bertha {

struct UdpOptions {
    enum class RecvMode { automatic, multishot, plain };
    RecvMode recv_mode = RecvMode::automatic;
    uint32_t recv_slots = 512;  // buffers the kernel receives into (a power of two)
    uint32_t send_slots = 512;  // buffers for messages the application builds (alloc)
    uint32_t slot_size = 2048;  // bytes per buffer: head-room + payload
    uint32_t headroom = 128;    // bytes in front of every payload for pushed headers
    uint32_t peer_queue = 256;  // per accepted peer: messages waiting for recv() (14 KiB)
    uint32_t accept_backlog = 256;
    int socket_buffer = 4 << 20; // SO_RCVBUF / SO_SNDBUF request
};

class UdpEngine;
class UdpDemux;

struct UdpStats {
    uint64_t sent = 0, received = 0, truncated = 0, send_errors = 0, submits = 0;
    uint64_t dropped_queue_full = 0; // accepted peers whose queue was full (listener only)
    uint64_t dropped_backlog = 0;    // new peers beyond the accept backlog (listener only)
    uint64_t foreign = 0; // from another address than the peer's (any-port connections only)
};

// A connection on the udp base: connected to one peer (connect) or talking to any (bind).
class UdpConn {
  public:
    using Data = Msg;
    static constexpr ChunnelInfo info{
        1, "udp", "io_uring", "base,udp,io_uring", Match::exact, Scope::unilateral, Need::none};

    UdpConn(UdpConn&&) noexcept;
    UdpConn& operator=(UdpConn&&) noexcept;
    ~UdpConn();

    // Send every message of the batch (to its peer() unless connected). Consumes the messages.
    Result<size_t> send(std::span<Msg> batch);
    // Fill up to batch.size() messages; 0 when the deadline passes with nothing received.
    Result<size_t> recv(std::span<Msg> batch, Deadline deadline);
    // Fresh empty messages with head-room, for the application to fill and send.
    Result<size_t> alloc(std::span<Msg> out);
    void describe(std::vector<std::string>& out) const;

    Addr local() const;
    bool multishot() const; // which receive path is in use
    const UdpStats& stats() const;
    // A descriptor that polls readable when recv may have something new (the ring's): for a
    // caller that waits on this connection and other descriptors together. Check recv with
    // no_wait before polling: messages already taken from the ring do not show.
    int wait_fd() const;

  private:
    friend class Udp;
    UdpConn(std::unique_ptr<UdpEngine> e, Addr any_port_peer);
    std::unique_ptr<UdpEngine> e_;
    // A connection that talks to every port of its peer (ConnectContext::peer_any_port): the
    // socket is not connected; messages without a peer go to this one, and datagrams from
    // another address are dropped (stats().foreign). Empty for a connected socket.
    Addr any_port_peer_;
};

// One peer of a listener. Shares the listener's socket and ring; same thread only.
class UdpPeerConn {
  public:
    using Data = Msg;
    UdpPeerConn(UdpPeerConn&&) noexcept;
    UdpPeerConn& operator=(UdpPeerConn&&) noexcept;
    ~UdpPeerConn();

    Result<size_t> send(std::span<Msg> batch);
    Result<size_t> recv(std::span<Msg> batch, Deadline deadline);
    Result<size_t> alloc(std::span<Msg> out);
    void describe(std::vector<std::string>& out) const;
    const Addr& peer() const { return peer_; }
    int wait_fd() const; // the listener's ring (UdpConn::wait_fd)

    // The peer started over (a new connection from the same address and port): this
    // connection closes, and `first` goes back to the listener as a new peer's first message.
    void restart(Msg&& first);
    bool closed() const { return !d_; }

  private:
    friend class UdpListener;
    UdpPeerConn(std::shared_ptr<UdpDemux> d, uint32_t queue, const Addr& peer);
    std::shared_ptr<UdpDemux> d_;
    uint32_t queue_ = 0;
    Addr peer_;
};

class UdpListener {
  public:
    UdpListener(UdpListener&&) noexcept;
    UdpListener& operator=(UdpListener&&) noexcept;
    ~UdpListener();
    // The connection of the next new peer, or nullopt when the deadline passes without one.
    Result<std::optional<UdpPeerConn>> accept(Deadline deadline);
    Addr local() const;
    const UdpStats& stats() const;
    int wait_fd() const; // the ring (UdpConn::wait_fd): its peers' too

  private:
    friend class Udp;
    explicit UdpListener(std::shared_ptr<UdpDemux> d);
    std::shared_ptr<UdpDemux> d_;
};

// The base chunnel itself: a factory of the three connection shapes.
class Udp {
  public:
    using Upper = Msg;
    using Lower = void;
    static constexpr ChunnelInfo info = UdpConn::info;

    Udp() = default;
    explicit Udp(UdpOptions o) : opts_(o) {}

    Result<UdpConn> connect(const Addr& peer, const ConnectContext& = {}) const;
    Result<UdpConn> bind(const Addr& local, const ConnectContext& = {}) const;
    Result<UdpListener> listen(const Addr& local, const ConnectContext& = {}) const;

    // Does this kernel have multishot recvmsg with provided-buffer rings? (cached per process)
    static bool kernel_has_multishot();

  private:
    UdpOptions opts_;
};

} // namespace bertha
