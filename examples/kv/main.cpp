// kv: a memcached-style key-value service over UDP (the memcached text protocol), the
// application of issue 7. `kv server` runs the shards; `kv get/gets/set/add/replace/delete`
// try it by hand; `kv check` checks memcached's semantics on a port (ours or memcached's).
#include "check.hpp"
#include "client.hpp"
#include "load.hpp"
#include "bertha/kv.h"
#include "server.hpp"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <vector>

namespace {

using namespace bertha::kv;

int fail_with(const bertha::Error& e) {
    std::fprintf(stderr, "%s\n", e.what().c_str());
    return 2;
}

bertha::Result<KvClient> connect(const std::string& server, int timeout_ms, ShardPref shard) {
    auto addr = bertha::Addr::parse(server);
    if (!addr) return std::unexpected(addr.error());
    return KvClient::open(*addr, ClientOptions{std::chrono::milliseconds(timeout_ms), shard});
}

const char* kShardHelp =
    "through the shard chunnel, negotiated with a kv server's service port (--server): auto "
    "(xdp where the server can, else proxy), xdp, proxy, client (client-side hashing first); "
    "none: a plain socket to --server";
const std::vector<std::string> kShardChoices{"none", "auto", "xdp", "proxy", "client"};

} // namespace

int main(int argc, char** argv) {
    CLI::App app{"Bertha kv example: a memcached-style key-value service over UDP (memcached's "
                 "text protocol), its shard servers, and a client."};
    app.require_subcommand(1);

    ServerOptions so;
    auto* server = app.add_subcommand(
        "server", "run N shards (shard i answers on UDP port PORT+1+i) and the shard chunnel's "
                  "service port PORT");
    server->add_option("--bind", so.bind, "local address, e.g. 198.18.0.1 or 127.0.0.1")
        ->capture_default_str();
    server->add_option("--port", so.port, "the service port P; shards use P+1 .. P+N")
        ->check(CLI::Range(1, 65534))
        ->capture_default_str();
    server->add_option("--shards", so.shards, "shard worker threads, one table and port each")
        ->check(CLI::Range(size_t(1), size_t(BERTHA_SHARD_MAX)))
        ->capture_default_str();
    server->add_option("--duration-s", so.duration_s, "stop after this many seconds (0: never)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    server->add_option("--batch", so.batch, "datagrams per recvmmsg/sendmmsg")
        ->check(CLI::Range(size_t(1), size_t(256)))
        ->capture_default_str();
    std::string backend = "builtin";
    server
        ->add_option("--backend", backend,
                     "builtin: shard threads; memcached: one memcached process per shard "
                     "(UDP only, on the same ports), started and stopped by the server; "
                     "external: the shards already run on those ports (the service port only)")
        ->check(CLI::IsMember({"builtin", "memcached", "external"}))
        ->capture_default_str();
    server
        ->add_option("--memcached-bin", so.memcached.binary,
                     "with --backend memcached: the memcached binary (a path, or found in PATH)")
        ->capture_default_str();
    server
        ->add_option("--memcached-threads", so.memcached.threads,
                     "with --backend memcached: worker threads per memcached (-t)")
        ->check(CLI::Range(1u, 64u))
        ->capture_default_str();
    server
        ->add_option("--memcached-mb", so.memcached.memory_mb,
                     "with --backend memcached: item memory per memcached in MB (-m)")
        ->check(CLI::Range(1u, 65536u))
        ->capture_default_str();
    server->add_flag("!--no-service", so.service,
                     "leave the service port free (no shard chunnel listener there)");
    server->add_flag("!--no-xdp", so.xdp,
                     "do not offer shard/xdp on the service port (proxy or client only)");
    server->add_option("--idle-s", so.idle_s, "close a client's connection after this long unused")
        ->check(CLI::Range(1u, 86400u))
        ->capture_default_str();

    std::string addr, shard = "none";
    int timeout_ms = 1000;
    auto shard_opt = [&](CLI::App* sub) {
        sub->add_option("--shard", shard, kShardHelp)
            ->check(CLI::IsMember(kShardChoices))
            ->capture_default_str();
    };
    auto client_opts = [&](CLI::App* sub) {
        shard_opt(sub);
        sub->add_option("--server", addr, "a shard or service port, e.g. 127.0.0.1:11212")
            ->required();
        sub->add_option("--timeout-ms", timeout_ms, "wait this long for the reply")
            ->check(CLI::Range(1, 60000))
            ->capture_default_str();
    };

    std::vector<std::string> keys;
    auto* get = app.add_subcommand("get", "get one or more keys (exit 1 if any is missing)");
    auto* gets = app.add_subcommand("gets", "get with cas values");
    for (auto* sub : {get, gets}) {
        client_opts(sub);
        sub->add_option("keys", keys, "keys")->required();
    }

    std::string key, value;
    uint32_t flags = 0;
    int32_t exptime = 0;
    std::vector<std::pair<CLI::App*, Verb>> stores;
    for (auto [name, verb] : {std::pair{"set", Verb::set}, std::pair{"add", Verb::add},
                              std::pair{"replace", Verb::replace}}) {
        auto* sub = app.add_subcommand(name, std::string(name) + " a key (exit 1 if NOT_STORED)");
        client_opts(sub);
        sub->add_option("key", key, "key")->required();
        sub->add_option("value", value, "value")->required();
        sub->add_option("--flags", flags, "opaque 32-bit flags")->capture_default_str();
        sub->add_option("--exptime", exptime, "seconds (or a unix time); 0: never")
            ->capture_default_str();
        stores.emplace_back(sub, verb);
    }
    auto* del = app.add_subcommand("delete", "delete a key (exit 1 if NOT_FOUND)");
    client_opts(del);
    del->add_option("key", key, "key")->required();

    CheckOptions co;
    auto* check = app.add_subcommand(
        "check", "check memcached's semantics for every supported verb on one port (a kv "
                 "shard, or memcached -U PORT); exit 1 on any failure");
    check->add_option("--server", co.server, "e.g. 127.0.0.1:11212")->required();
    check->add_option("--prefix", co.prefix, "prefix of every key (default: unique per run)");
    check->add_option("--timeout-ms", co.timeout_ms, "per request")->capture_default_str();
    shard_opt(check);

    LoadOptions lo;
    std::string mode = "closed", dist = "uniform";
    auto* load = app.add_subcommand(
        "load", "generate load on a memcached UDP port: closed loop (a window in flight) or open "
                "loop (Poisson arrivals), uniform or Zipf keys; report throughput and "
                "p50/p95/p99/p99.9/max latency (exit 1 if nothing came back or any reply was "
                "unexpected)");
    load->add_option("--server", lo.server, "a shard or service port, or memcached -U PORT")
        ->required();
    load->add_option("--mode", mode, "closed: --window in flight; open: Poisson at --rate")
        ->check(CLI::IsMember({"closed", "open"}))
        ->capture_default_str();
    load->add_option("--window", lo.window, "closed loop: requests in flight")
        ->check(CLI::Range(1u, 16384u))
        ->capture_default_str();
    load->add_option("--rate", lo.rate, "open loop: requests per second (Poisson arrivals)")
        ->check(CLI::Range(1.0, 10e6))
        ->capture_default_str();
    load->add_option("--keys", lo.keys, "key space: key:0 .. key:K-1")
        ->check(CLI::Range(uint64_t(1), uint64_t(100000000)))
        ->capture_default_str();
    load->add_option("--dist", dist, "key popularity")
        ->check(CLI::IsMember({"uniform", "zipf"}))
        ->capture_default_str();
    load->add_option("--zipf-s", lo.zipf_s, "Zipf exponent: P(rank k) ~ k^-s")
        ->check(CLI::Range(0.0, 10.0))
        ->capture_default_str();
    load->add_option("--key-size", lo.key_size, "bytes per key, \"key:<n>\" zero-padded")
        ->check(CLI::Range(1u, 250u))
        ->capture_default_str();
    load->add_option("--value-size", lo.value_size, "bytes per value (sets and preload)")
        ->check(CLI::Range(0u, 65000u))
        ->capture_default_str();
    load->add_option("--get-ratio", lo.get_ratio, "share of gets; the rest are sets")
        ->check(CLI::Range(0.0, 1.0))
        ->capture_default_str();
    load->add_option("--warmup-s", lo.warmup_s, "seconds run but not recorded")
        ->check(CLI::Range(0.0, 3600.0))
        ->capture_default_str();
    load->add_option("--duration-s", lo.duration_s, "seconds measured")
        ->check(CLI::Range(0.01, 3600.0))
        ->capture_default_str();
    load->add_option("--timeout-ms", lo.timeout_ms, "a request outstanding this long is lost")
        ->check(CLI::Range(1u, 60000u))
        ->capture_default_str();
    load->add_option("--batch", lo.batch, "datagrams per sendmmsg/recvmmsg")
        ->check(CLI::Range(1u, 256u))
        ->capture_default_str();
    load->add_option("--seed", lo.seed, "keys, operations and arrival times")
        ->capture_default_str();
    load->add_option("--shards", lo.shards,
                     "client-side sharding: send each request to --base + its key's shard (the "
                     "server's address; bertha/kv.h's hash, as shard/client)")
        ->check(CLI::Range(0, BERTHA_SHARD_MAX));
    shard_opt(load);
    load->add_option("--base", lo.base, "with --shards: shard 0's UDP port")
        ->check(CLI::Range(0, 65535));
    load->add_option("--spin-us", lo.spin_us,
                     "poll instead of sleeping when the next arrival or reply deadline is at most "
                     "this far (open loop: keeps the send schedule at high rates; burns the CPU)")
        ->check(CLI::Range(0u, 10000u))
        ->capture_default_str();
    load->add_flag("--preload", lo.preload, "set every key once before the run, so gets hit");
    load->add_flag("--json", lo.json, "one JSON object instead of the table");
    load->add_flag("--progress", lo.progress, "a line per second on stderr");

    CLI11_PARSE(app, argc, argv);
    const ShardPref pref = *parse_shard_pref(shard);
    lo.shard = co.shard = pref;

    if (load->parsed()) {
        lo.open_loop = mode == "open";
        lo.zipf = dist == "zipf";
        if (lo.shards && (lo.base == 0 || lo.base + lo.shards - 1 > 65535)) {
            std::fprintf(stderr, "kv load: --shards needs --base, with base + shards - 1 <= 65535\n");
            return 2;
        }
        return run_load(lo);
    }

    if (server->parsed()) {
        so.backend = backend == "memcached" ? Backend::memcached
                     : backend == "external"  ? Backend::external
                                              : Backend::builtin;
        return run_server(so);
    }
    if (check->parsed()) return run_check(co);

    auto c = connect(addr, timeout_ms, pref);
    if (!c) return fail_with(c.error());
    if (get->parsed() || gets->parsed()) {
        std::vector<std::string_view> views(keys.begin(), keys.end());
        auto items = c->get(views, gets->parsed());
        if (!items) return fail_with(items.error());
        for (const auto& it : *items) {
            std::printf("%s flags=%u bytes=%zu", it.key.c_str(), it.flags, it.data.size());
            if (it.has_cas) std::printf(" cas=%lu", (unsigned long)it.cas);
            std::printf(": %s\n", it.data.c_str());
        }
        return items->size() == keys.size() ? 0 : 1;
    }
    for (auto [sub, verb] : stores) {
        if (!sub->parsed()) continue;
        auto s = c->store(verb, key, value, flags, exptime);
        if (!s) return fail_with(s.error());
        std::printf("%s\n", std::string(to_string(*s)).c_str());
        return *s == Status::stored ? 0 : 1;
    }
    auto d = c->del(key);
    if (!d) return fail_with(d.error());
    std::printf("%s\n", std::string(to_string(*d)).c_str());
    return *d == Status::deleted ? 0 : 1;
}
