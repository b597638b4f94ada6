// The shard router's decisions, without its sockets: which shard a client's request goes to,
// how a get over several shards is split and its replies merged, and which client a shard's
// reply goes back to. Three owners drive it with their own I/O:
//  - kv::Router (router.hpp): the router as a process, on its own service and upstream sockets;
//  - shard/proxy and shard/xdp on the serving end (chunnels/shard/shard.hpp): over an accepted
//    connection towards the client, and one upstream socket towards the shards;
//  - shard/client on the client (chunnels/shard/shard.hpp): the application's requests go
//    straight to the shards' ports through the connection, replies come back through it.
// Every owner therefore picks the same shard for a request: shard::steer (steer.hpp, the XDP
// stage's rule) where it applies, else the first key's shard, else shard 0.
//
// Request ids: a request forwarded goes out with an upstream id of the core's (the shards see
// requests from many clients, or a split get's parts, on one socket), and its reply comes back
// with the client's id restored. Datagrams pass in place; only a split get's parts and its merged
// reply are built by the core, and handed to the owner through a RouterSink.
#pragma once

#include "bertha/addr.hpp"
#include "bertha/chunnel.hpp"
#include "bertha/error.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>

namespace bertha::kv {

struct RouterCoreOptions {
    uint32_t shards = 1;
    std::chrono::milliseconds timeout{1000}; // an unanswered request is forgotten after this
    uint32_t ids = 65536;    // outstanding requests at most (a power of two, <= 65536)
    uint32_t groups = 1024;  // split gets in flight at most
};

struct RouterStats {
    uint64_t requests = 0;  // datagrams from clients
    uint64_t forwarded = 0; // sent to one shard whole
    uint64_t split = 0;     // gets split over several shards
    uint64_t replies = 0;   // datagrams relayed back to clients
    uint64_t merged = 0;    // merged replies of split gets
    uint64_t expired = 0;   // requests forgotten unanswered
    uint64_t busy = 0;      // requests dropped: every upstream id or split slot in use
    uint64_t stray = 0;     // shard datagrams matching nothing outstanding
    uint64_t malformed = 0; // client datagrams shorter than the frame header (dropped)
};

// Where the core's own datagrams go (a split get's parts, a merged reply's datagrams). The
// bytes are valid during the call only.
class RouterSink {
  public:
    virtual void to_shard(std::string_view datagram, uint32_t shard) = 0;
    virtual void to_client(std::string_view datagram, const Addr& client) = 0;

  protected:
    ~RouterSink() = default;
};

class RouterCore {
  public:
    static Result<RouterCore> make(const RouterCoreOptions& o);
    RouterCore(RouterCore&&) noexcept;
    RouterCore& operator=(RouterCore&&) noexcept;
    ~RouterCore();

    // A client's request datagram, rewritable in place. The shard to send it to as it now is
    // (its request id replaced by an upstream one), or nullopt: the core took it (a split get,
    // whose parts went to the sink; or dropped: malformed, or no id free).
    std::optional<uint32_t> request(char* d, size_t len, const Addr& client, RouterSink& sink);
    // A shard's reply datagram, rewritable in place. The client to relay it to as it now is
    // (the client's request id restored), or nullopt: the core took it (a part of a split get,
    // merged and sent through the sink when its last part is in; or stray).
    std::optional<Addr> reply(char* d, size_t len, RouterSink& sink);
    // Forget requests unanswered past the timeout: a slice of the table per call.
    void sweep();

    // The shard a key lives on (bertha/kv.h's hash): the same everywhere.
    uint32_t shard_of(std::string_view key) const;
    uint32_t shards() const;
    const RouterStats& stats() const;

    struct Impl;

  private:
    explicit RouterCore(std::unique_ptr<Impl> p);
    std::unique_ptr<Impl> p_;
};

} // namespace bertha::kv
