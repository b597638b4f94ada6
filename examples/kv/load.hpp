// `kv load`: a load generator for any memcached UDP port (a kv shard, the service port, memcached
// itself). Closed loop (a window of requests in flight) or open loop (Poisson arrivals at a
// rate, latency from the intended send time); uniform or Zipf keys; get/set mix; warm-up, then a
// measured window; throughput and p50/p95/p99/p99.9/max latency (bertha::Histogram: <= 1/128
// relative error). One unconnected UDP socket, batched sendmmsg/recvmmsg, request templates
// built once, a fixed table of the 65536 request ids: nothing is allocated per request.
#pragma once

#include "link.hpp"

#include <cstdint>
#include <string>

namespace bertha::kv {

struct LoadOptions {
    std::string server;        // "127.0.0.1:11301"
    bool open_loop = false;    // --mode open
    uint32_t window = 16;      // closed: requests in flight
    double rate = 10000;       // open: requests per second (Poisson)
    uint64_t keys = 10000;     // key space: key 0 .. keys-1
    bool zipf = false;         // --dist zipf (else uniform)
    double zipf_s = 0.99;      // Zipf exponent
    uint32_t key_size = 16;    // bytes, 1..250
    uint32_t value_size = 32;  // bytes of every set
    double get_ratio = 0.9;    // share of gets (the rest are sets)
    double warmup_s = 1;       // run but do not record
    double duration_s = 5;     // the measured window
    uint32_t timeout_ms = 500; // a request outstanding this long is lost
    uint32_t batch = 32;       // datagrams per sendmmsg/recvmmsg
    uint64_t seed = 1;         // keys, operations and arrival times
    uint32_t shards = 0;       // client-side sharding: each request to base + its key's shard
    uint32_t base = 0;         //   (on the server's address); 0 shards: all to --server
    ShardPref shard = ShardPref::none; // --shard: through the shard chunnel, negotiated with
                                       //   the kv server's service port (--server)
    uint32_t spin_us = 0;      // poll instead of sleeping when the next event is this close
    bool preload = false;      // set every key once before the run
    bool json = false;         // one JSON object instead of the table
    bool progress = false;     // a line per second on stderr
};

// Exit code: 0 on success; 1 when nothing came back or any reply was unexpected (errors > 0);
// 2 when the run could not start (bad options, no socket, preload failed).
int run_load(const LoadOptions& o);

} // namespace bertha::kv
