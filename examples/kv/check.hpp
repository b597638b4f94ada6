// `kv check`: memcached's semantics for the supported verbs, checked through KvClient against
// one server port (a kv shard, or memcached itself), so the two can be compared case by case.
#pragma once

#include "link.hpp"

#include <chrono>
#include <string>

namespace bertha::kv {

struct CheckOptions {
    std::string server; // "127.0.0.1:11212"
    std::string prefix; // prepended to every key (default: unique per run)
    int timeout_ms = 1000;
    ShardPref shard = ShardPref::none; // through the shard chunnel (server: a service port)
};

// Prints one line per check and a summary; returns 0 when every check passed.
int run_check(const CheckOptions& o);

} // namespace bertha::kv
