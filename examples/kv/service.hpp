// The kv service port: where clients negotiate the shard chunnel with the server. The shards
// (kv's worker threads or memcached processes) serve on ports base..base+N-1; this listener on
// the service port answers each client's offer with the implementation picked for it:
//  - shard/xdp (when this host can run it, and --no-xdp is not given): the XDP stage steers the
//    client's requests to the shards; the client's connection relays what it passes on;
//  - shard/proxy: the connection relays every request;
//  - shard/client (when the client puts it first): the client sends to the shards itself.
// One thread serves every client: it relays what is ready on each connection, then waits on
// the listener's ring and every connection's upstream socket. A connection idle for
// `idle` is closed (its XDP chain with it).
#pragma once

#include "bertha/addr.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>

namespace bertha::kv {

struct ServiceOptions {
    Addr listen;                      // the service address and port
    uint16_t base = 0;                // shard i on base + i
    uint32_t shards = 1;
    bool xdp = true;                  // offer shard/xdp where this host can run it
    std::chrono::seconds idle{30};    // close a client's connection after this long unused
    bool quiet = false;               // no line per client
};

// Serves until `stop` is set; 0 on a clean stop, 1 on an error (printed).
int run_service(const ServiceOptions& o, const std::atomic<bool>& stop);

} // namespace bertha::kv
