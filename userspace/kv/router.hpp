// The shard router: the userspace half of sharding a memcached-style service over UDP, in the
// manner of mcrouter or twemproxy. It listens on the service port, sends each request to its
// key's shard (port base + shard, the same choice as the XDP `shard` stage and the client:
// chunnels/shard/steer.hpp over bertha/kv.h's hash), and relays each reply back from the service
// port, with the client's own request id. It is pipelined: a request is forwarded as soon as it
// arrives, whatever is still outstanding.
//
// What one shard cannot answer alone is split: a get/gets whose keys live on several shards
// becomes one get per shard, and the VALUE items of their replies are merged into one reply
// (in the order the shards answer, then END). Requests the steering rule does not take and that
// are not such a get (a malformed command, several commands in one datagram) go to the shard of
// their first key, or to shard 0: the shard answers the same error memcached would.
//
// Where the XDP stage runs, it steers what it can and this router gets the rest (the datagrams
// the stage passes on). Without the stage, the router carries everything.
//
// One thread; two UDP sockets (the service port, and one towards the shards); the decisions are
// kv::RouterCore's (router_core.hpp), which the shard chunnel drives too: fixed tables (an
// upstream request id per outstanding request, 65536 of them; 1024 split gets at a time); no
// allocation per request except for a split get's merged reply.
#pragma once

#include "bertha/addr.hpp"
#include "bertha/chunnel.hpp"
#include "bertha/error.hpp"
#include "bertha/fd.hpp"
#include "kv/router_core.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace bertha::kv {

struct RouterOptions {
    Addr listen;      // the service address and port
    Addr shards_at;   // the shards' address (its port is ignored)
    uint16_t base = 0; // shard i listens on base + i
    uint32_t shards = 1;
    std::chrono::milliseconds timeout{1000}; // an unanswered request is forgotten after this
};


class Router {
  public:
    static Result<Router> open(const RouterOptions& o);
    Router(Router&&) noexcept;
    Router& operator=(Router&&) noexcept;
    ~Router();

    // Relay until `stop` is set or `until` passes (each wait is at most 100 ms).
    Result<void> run(const std::atomic<bool>& stop, Deadline until = Deadline::max());
    // One round: wait (until the deadline) for datagrams on either socket, handle them.
    Result<size_t> poll_once(Deadline deadline);

    Addr local() const;
    const RouterStats& stats() const;

    struct Impl;

  private:
    explicit Router(std::unique_ptr<Impl> p);
    std::unique_ptr<Impl> p_;
};

} // namespace bertha::kv
