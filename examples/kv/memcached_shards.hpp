// `kv server --backend memcached`: the shards are real memcached processes instead of the
// built-in shard threads. MemcachedShards starts one memcached per shard (UDP only, on the
// server's address, shard i on port first_port + i), waits until each answers a `version`
// request over UDP, and stops every process it started, by its pid, when it is destroyed,
// including when starting fails half-way.
#pragma once

#include "bertha/error.hpp"

#include <chrono>
#include <cstdint>
#include <string>
#include <sys/types.h>
#include <utility>
#include <vector>

namespace bertha::kv {

struct MemcachedOptions {
    std::string binary = "memcached";              // a path, or a name looked up in PATH
    unsigned threads = 1;                          // memcached -t
    unsigned memory_mb = 64;                       // memcached -m
    std::chrono::milliseconds ready_timeout{3000}; // for all shards to answer `version`
};

class MemcachedShards {
  public:
    struct Shard {
        pid_t pid = -1;
        uint16_t port = 0;
        std::string log; // memcached's stdout and stderr ($TMPDIR or /tmp); removed at stop
    };

    // Starts `count` memcached processes on `bind` (an address without a port), shard i on UDP
    // port first_port + i, and returns once every one answers. On failure nothing it started
    // is left running, and the error names the shard's port and the tail of memcached's log.
    static Result<MemcachedShards> start(const std::string& bind, uint16_t first_port, size_t count,
                                         const MemcachedOptions& o);

    MemcachedShards(MemcachedShards&& o) noexcept
        : shards_(std::move(o.shards_)), ready_(std::exchange(o.ready_, false)) {
        o.shards_.clear();
    }
    MemcachedShards& operator=(MemcachedShards&& o) noexcept;
    MemcachedShards(const MemcachedShards&) = delete;
    MemcachedShards& operator=(const MemcachedShards&) = delete;
    ~MemcachedShards() { stop(); }

    const std::vector<Shard>& shards() const noexcept { return shards_; }

    // A shard whose process has exited on its own (not by stop()), with how it ended; an
    // empty message while all run. Reaps the process it reports.
    std::string check_exited();

    // SIGTERM to every shard's pid (again every 500 ms), up to 3 s for them to exit, then
    // SIGKILL; SIGKILL at once for shards of a start that failed. Reaps them and removes their
    // logs; returns one line per shard ("pid N exited with status 0", ...).
    std::vector<std::string> stop();

  private:
    MemcachedShards() = default;
    std::vector<Shard> shards_;
    bool ready_ = false; // every shard answered: stop gracefully
};

} // namespace bertha::kv
