// kv_proxy: the shard router (userspace/kv/router.hpp) as a process, in the manner of mcrouter
// or twemproxy: memcached's UDP protocol on the service port, each request sent to its key's
// shard (port BASE + shard on SHARDS-HOST), the reply relayed back from the service port. Gets
// over several shards are split and merged. Next to the XDP `shard` stage it serves what the
// stage passes on; alone it serves everything.
//
//   kv_proxy --listen 198.18.0.1:11211 --shards-at 198.18.0.1 --base 12000 --shards 4
//            [--duration-s S] [--timeout-ms T]
//
// Stops on SIGINT/SIGTERM (or after the duration) and prints its counters.
#include "bertha/kv.h"
#include "kv/router.hpp"

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <cstdio>

using namespace bertha;

namespace {
std::atomic<bool> g_stop{false};
void on_stop(int) { g_stop.store(true); }
} // namespace

int main(int argc, char** argv) {
    CLI::App app{"kv_proxy: route memcached UDP requests to their key's shard (and merge split gets)"};
    std::string listen, shards_at;
    unsigned base = 0, shards = 1;
    double duration_s = 0;
    int timeout_ms = 1000;
    app.add_option("--listen", listen, "the service address:port")->required();
    app.add_option("--shards-at", shards_at, "the shards' address (shard i on BASE+i)")->required();
    app.add_option("--base", base, "shard 0's UDP port")->required()->check(CLI::Range(1, 65535));
    app.add_option("--shards", shards, "number of shards")->check(CLI::Range(1, BERTHA_SHARD_MAX));
    app.add_option("--duration-s", duration_s, "stop after this long (0: on a signal)");
    app.add_option("--timeout-ms", timeout_ms, "forget an unanswered request after this long")
        ->check(CLI::Range(1, 60000));
    CLI11_PARSE(app, argc, argv);
    std::signal(SIGINT, on_stop);
    std::signal(SIGTERM, on_stop);

    auto at = Addr::parse(listen);
    // An address without a port: 198.18.0.1, [2001:2::1] or 2001:2::1.
    std::string host_text = shards_at;
    if (host_text.find(':') == std::string::npos || host_text.back() == ']')
        host_text += ":0";
    else if (host_text.front() != '[')
        host_text = "[" + host_text + "]:0";
    auto host = Addr::parse(host_text);
    if (!at || !host) {
        std::fprintf(stderr, "kv_proxy: %s\n", (!at ? at.error() : host.error()).what().c_str());
        return 2;
    }
    kv::RouterOptions o;
    o.listen = *at;
    o.shards_at = *host;
    o.base = uint16_t(base);
    o.shards = shards;
    o.timeout = std::chrono::milliseconds(timeout_ms);
    auto r = kv::Router::open(o);
    if (!r) {
        std::fprintf(stderr, "kv_proxy: %s\n", r.error().what().c_str());
        return 1;
    }
    std::printf("kv_proxy: listening on %s, %u shard(s) at %s ports %u..%u\n",
                r->local().to_string().c_str(), shards, shards_at.c_str(), base, base + shards - 1);
    std::fflush(stdout);
    const Deadline until = duration_s > 0 ? after(std::chrono::duration_cast<Clock::duration>(
                                                std::chrono::duration<double>(duration_s)))
                                          : Deadline::max();
    auto ran = r->run(g_stop, until);
    const auto& s = r->stats();
    std::printf("kv_proxy: requests %llu, forwarded %llu, split %llu, replies %llu, merged %llu, "
                "expired %llu, busy %llu, stray %llu\n",
                (unsigned long long)s.requests, (unsigned long long)s.forwarded,
                (unsigned long long)s.split, (unsigned long long)s.replies,
                (unsigned long long)s.merged, (unsigned long long)s.expired,
                (unsigned long long)s.busy, (unsigned long long)s.stray);
    if (!ran) {
        std::fprintf(stderr, "kv_proxy: %s\n", ran.error().what().c_str());
        return 1;
    }
    return 0;
}
