// KvClient: a small blocking client of the memcached text protocol over UDP, for a kv shard
// port, memcached itself (`memcached -U PORT`), or a kv server's service port through the shard
// chunnel (ClientOptions::shard). Each call is one request
// datagram with a fresh request id; the reply is matched by that id, from whatever source
// port it comes (a shard behind a proxy or an XDP port rewrite answers from its own port), and
// replies to earlier, timed-out requests are counted and skipped.
#pragma once

#include "bertha/addr.hpp"
#include "bertha/error.hpp"
#include "bertha/fd.hpp"
#include "kv/protocol.hpp"
#include "link.hpp"

#include <chrono>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bertha::kv {

struct ClientOptions {
    std::chrono::milliseconds timeout{1000}; // per request
    ShardPref shard = ShardPref::none;       // through the shard chunnel (server: a service port)
};

struct Item {
    std::string key;
    uint32_t flags = 0;
    std::string data;
    bool has_cas = false;
    uint64_t cas = 0;
};

class KvClient {
  public:
    static Result<KvClient> open(const Addr& server, ClientOptions o = {});

    // Multi-get: the items found, in request order (missing keys are left out).
    Result<std::vector<Item>> get(std::span<const std::string_view> keys, bool with_cas = false);
    Result<std::optional<Item>> get(std::string_view key, bool with_cas = false);
    // set / add / replace: Status::stored or Status::not_stored.
    Result<Status> store(Verb verb, std::string_view key, std::string_view data, uint32_t flags = 0,
                         int32_t exptime = 0);
    Result<Status> set(std::string_view key, std::string_view data, uint32_t flags = 0,
                       int32_t exptime = 0) {
        return store(Verb::set, key, data, flags, exptime);
    }
    // Status::deleted or Status::not_found.
    Result<Status> del(std::string_view key);

    // The raw exchange: sends `body` (one or more commands) in one datagram and returns the
    // replies' bytes once `replies` whole replies arrived (in one datagram, as from a kv shard,
    // or several with the same request id, as memcached sends them). replies == 0: whatever
    // arrives within the timeout (for noreply). The typed calls above are built on it.
    Result<std::string> call(std::string_view body, size_t replies = 1);

    const Addr& server() const { return server_; }
    std::string via() const { return link_->describe(); } // "udp socket", or the chunnel stack
    uint64_t stale_replies() const { return stale_; }

  private:
    KvClient(std::unique_ptr<Link> link, Addr server, ClientOptions o);
    Result<Response> exchange(const Request& r, std::string& reply);
    static bool complete(std::string_view acc, size_t replies);

    std::unique_ptr<Link> link_;
    Addr server_;
    ClientOptions opts_;
    uint16_t next_id_ = 1;
    uint64_t stale_ = 0;
    std::vector<char> buf_;
};

} // namespace bertha::kv
