// The kv server: N shard workers, each a thread with its own UDP socket (port P+1+i) and its
// own in-memory table, answering the memcached text protocol like memcached does for the verbs
// of kv/protocol.hpp. The service port P itself is left free for the shard chunnel (a proxy
// or its XDP offload) that later sits in front of the shards.
#pragma once

#include "bertha/error.hpp"
#include "kv/protocol.hpp"
#include "memcached_shards.hpp"

#include <cstdint>
#include <ctime>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

namespace bertha::kv {

// What answers on the shard ports: the built-in shard threads, or one memcached process each.
// builtin: shard threads; memcached: memcached processes started here; external: the shards
// already run on ports P+1..P+N (memcached started by someone else): only the service port.
enum class Backend { builtin, memcached, external };

struct ServerOptions {
    std::string bind = "127.0.0.1"; // address, without a port
    uint16_t port = 11211;          // the service port; shard i listens on port + 1 + i
    size_t shards = 1;
    double duration_s = 0; // stop after this long (0: at SIGINT/SIGTERM only)
    size_t batch = 16;     // datagrams per recvmmsg/sendmmsg (builtin)
    Backend backend = Backend::builtin;
    MemcachedOptions memcached; // Backend::memcached: binary, threads, memory per shard
    bool service = true;  // negotiate the shard chunnel on the service port (service.hpp)
    bool xdp = true;      // offer shard/xdp there where this host can run it
    unsigned idle_s = 30; // close a client's connection after this long unused
};

// One shard's items. Not thread-safe: each worker owns one.
class Table {
  public:
    // Applies one parsed request at unix time `now` and appends memcached's reply (nothing
    // for noreply).
    void apply(const Request& r, Writer& w, std::time_t now);
    size_t size() const { return items_.size(); }

  private:
    struct Item {
        std::string data;
        uint32_t flags = 0;
        std::time_t expires = 0; // unix seconds; 0: never
        uint64_t cas = 0;
    };
    struct Hash {
        using is_transparent = void;
        size_t operator()(std::string_view s) const noexcept {
            return std::hash<std::string_view>{}(s);
        }
    };
    Item* find(std::string_view key, std::time_t now);
    void store(const Request& r, std::time_t now);

    std::unordered_map<std::string, Item, Hash, std::equal_to<>> items_;
    uint64_t next_cas_ = 1;
};

struct AnswerStats {
    uint64_t commands = 0, errors = 0;
};

// Answers one request datagram: every command in it, in order, as memcached does. A command
// that does not parse gets memcached's error reply, and the rest of the datagram is read from
// where memcached resynchronizes (ProtoError::resume). Returns the bytes of the response
// datagram written to `out` (0: nothing to send: a short datagram, or only noreply commands).
// Unlike memcached, which may send one datagram per reply, all replies go in one datagram.
size_t answer(Table& t, std::string_view datagram, std::span<char> out, std::time_t now,
              AnswerStats& stats);

int run_server(const ServerOptions& o);

} // namespace bertha::kv
