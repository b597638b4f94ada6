// bertha::XskSocket: one AF_XDP socket bound to one (interface, RX queue), used like a UDP
// socket. It owns its UMEM (a BufferPool: one mapping cut into equal frames) and the fill,
// completion, RX and TX rings. It loads no XDP program: Bertha's dispatcher (or a test program)
// redirects the flow's packets into an XSKMAP that the caller fills with fd().
//
//  - recv lends received frames upward as Msgs with no copy: the payload is the UDP payload, the
//    frame's headers lie in the head-room in front of it, peer() is the sender. Dropping the
//    Msg gives the frame back to the fill ring.
//  - send writes Ethernet/IP/UDP headers into each Msg's head-room in place and puts the frame
//    on the TX ring; a Msg from another pool is copied into a frame first. Destination MACs
//    come from the kernel's route and neighbour tables (xsk/neigh.hpp).
//  - the kernel is woken (sendto / recvfrom / poll) only when its rings say it needs it
//    (XDP_USE_NEED_WAKEUP).
//
// One socket serves one RX queue: open one per queue (XskSocket::queues) to see all of a flow.
// A socket is driven by one thread at a time. Drop every Msg it lent before the socket.
#pragma once

#include "bertha/addr.hpp"
#include "bertha/buffer.hpp"
#include "bertha/chunnel.hpp"
#include "bertha/error.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bertha {

enum class XskMode : uint8_t {
    automatic, // zero-copy if the driver can, else copy
    copy,      // XDP_COPY: the kernel copies frames between the driver and the UMEM
    zerocopy,  // XDP_ZEROCOPY: the driver DMAs into the UMEM; fails where unsupported
};
std::string_view to_string(XskMode m) noexcept;

struct XskOptions {
    std::string ifname;
    uint32_t queue = 0;
    Addr local; // our IP address and UDP port (required). A wildcard address (0.0.0.0, ::)
                // accepts any destination address of its family and sends from the route's
                // preferred source address.
    Addr peer;  // optional default destination for Msgs whose peer() is empty ("connected")
    XskMode mode = XskMode::automatic;

    // Ring sizes, powers of two. The fill ring is filled completely at start.
    uint32_t fill_size = 2048;
    uint32_t comp_size = 2048;
    uint32_t rx_size = 2048;
    uint32_t tx_size = 2048;
    uint32_t rx_frames = 0;     // UMEM frames for receiving; 0 = 2 * fill_size (frames lent upward
                                // keep the fill ring fed)
    uint32_t tx_frames = 0;     // UMEM frames for alloc() and copies; 0 = tx_size
    uint32_t frame_size = 2048; // UMEM chunk: 2048 or 4096

    // Check every received datagram's UDP checksum and count bad ones as invalid. Off by
    // default: a frame a local sender put on a veth reaches XDP with a checksum that was left
    // to offload (CHECKSUM_PARTIAL) and is not yet complete (README.md).
    bool verify_udp_checksum = false;
    // How long send() may wait for the kernel to resolve an unknown neighbour (ARP / ND).
    std::chrono::milliseconds resolve_timeout{1000};
    // How long send() may wait for room on a full TX ring before returning a short count.
    std::chrono::milliseconds tx_wait{10};
    // Before a waiting recv() sleeps in poll(), it looks at the RX ring for this long (yielding
    // the CPU between looks): a datagram that comes within it costs no sleep and no wake-up,
    // which across CPUs is most of a round trip (selftests/bench/README.md, datapath). 0: sleep
    // at once. The cost is at most this much CPU per recv() that finds nothing.
    std::chrono::microseconds busy_poll{50};
};

struct XskStats {
    uint64_t rx = 0;           // datagrams handed to recv's caller
    uint64_t tx = 0;           // frames the kernel completed (sent)
    uint64_t fill_empty = 0;   // refills that found the fill ring drained by the kernel
    uint64_t tx_ring_full = 0; // times send found the TX ring (or the send frames) exhausted
    uint64_t invalid = 0;      // frames received that were not a whole UDP datagram to us
    uint64_t copied = 0;       // Msgs from another pool copied into a UMEM frame by send
    uint64_t wakeups = 0;      // sendto/recvfrom calls that woke the kernel
};

// The kernel's own counters for the socket (getsockopt XDP_STATISTICS).
struct XskKernelStats {
    uint64_t rx_dropped = 0; // dropped for other reasons (e.g. frame too small)
    uint64_t rx_invalid_descs = 0;
    uint64_t tx_invalid_descs = 0;
    uint64_t rx_ring_full = 0;             // dropped: our RX ring was full
    uint64_t rx_fill_ring_empty_descs = 0; // times the kernel found no frame in the fill ring
    uint64_t tx_ring_empty_descs = 0;
};

class XskSocket {
  public:
    using Data = Msg;
    static constexpr uint32_t kXdpHeadroom = 256; // XDP_PACKET_HEADROOM: in front of RX frames
    static constexpr uint32_t kHeaderRoom = 64;   // Ethernet + IPv6 + UDP (62), rounded
    // Where alloc() puts the payload in a frame: head-room for Ethernet/IP/UDP headers and for
    // the chunnels above to push theirs.
    static constexpr uint32_t kAllocHeadroom = kXdpHeadroom + kHeaderRoom;

    // Creates the UMEM and the socket and binds it (in the calling thread's network namespace).
    static Result<XskSocket> open(const XskOptions& options);
    // The RX queues of an interface: open one socket per queue.
    static Result<uint32_t> queues(std::string_view ifname);

    XskSocket(XskSocket&&) noexcept;
    XskSocket& operator=(XskSocket&&) noexcept;
    ~XskSocket(); // the socket first, then the UMEM; frames still in flight are abandoned

    // The socket, for the XSKMAP entry of its queue.
    int fd() const;
    // copy or zerocopy, as bound.
    XskMode mode() const;

    // Up to batch.size() datagrams; waits (poll) until at least one arrives or the deadline
    // passes (no_wait: never blocks). 0 means none arrived in time.
    Result<size_t> recv(std::span<Msg> batch, Deadline deadline);
    // Queues batch[0, n) for transmission and returns n; a Msg's peer(), else the default peer,
    // is the destination. Sent Msgs are consumed. n < batch.size() when the TX ring stayed full
    // for tx_wait: the rest are left untouched for the caller to retry. An error (no route, a
    // neighbour that does not resolve, a payload over the MTU) sends nothing.
    Result<size_t> send(std::span<Msg> batch);
    // Empty Msgs in send frames, with kAllocHeadroom bytes of head-room.
    Result<size_t> alloc(std::span<Msg> out);
    // Wakes the kernel and reaps completions until no frame is in flight or the deadline
    // passes; returns the frames still in flight.
    Result<uint32_t> flush(Deadline deadline);

    void describe(std::vector<std::string>& out) const; // "xsk/copy" or "xsk/zerocopy"
    const Addr& local() const;
    const Addr& peer() const;
    const std::string& ifname() const;
    uint32_t queue() const;
    // The largest UDP payload send accepts (MTU and frame size).
    size_t max_payload() const;
    const XskStats& stats() const;
    Result<XskKernelStats> kernel_stats() const;

  private:
    struct Impl;
    explicit XskSocket(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> p_;
};

static_assert(Connection<XskSocket>, "an XskSocket is a connection of Msgs");

} // namespace bertha
