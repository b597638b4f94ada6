// How kv's client and load generator move datagrams: over a plain UDP socket of their own (to
// a shard, memcached, or any port), or over a connection of the shard chunnel's stack to a kv
// server's service port, negotiated when the link opens (--shard). The calls have recvmmsg /
// sendmmsg's shape so that the load generator's batches pass through unchanged.
#pragma once

#include "bertha/addr.hpp"
#include "bertha/error.hpp"
#include "bertha/fd.hpp"

#include <chrono>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <sys/socket.h>

namespace bertha::kv {

// Which shard implementations the client offers, in its order of preference.
enum class ShardPref {
    none,   // no chunnel: a plain socket, datagrams go where they are addressed
    any,    // shard/xdp, shard/proxy, shard/client: the server's best
    xdp,    // shard/xdp only (refused where the server cannot run it)
    proxy,  // shard/proxy only
    client, // shard/client first, then xdp, then proxy
};
Result<ShardPref> parse_shard_pref(std::string_view text); // none|auto|xdp|proxy|client
std::string_view to_string(ShardPref p);

class Link {
  public:
    virtual ~Link() = default;
    // Send datagrams; each goes to its msg_name on a socket link (the chunnel picks on a shard
    // link). Like sendmmsg: how many went, or -1 with errno.
    virtual int send(std::span<mmsghdr> msgs) = 0;
    // What has arrived, without waiting: like recvmmsg with MSG_DONTWAIT (msg_len set; 0 when
    // nothing; -1 with errno on an error).
    virtual int recv(std::span<mmsghdr> msgs) = 0;
    // Sleep until recv may have something, or `for_at_most` passes.
    virtual void wait(std::chrono::nanoseconds for_at_most) = 0;
    // "udp socket" or the stack: "shard/proxy (4 shards on ports 12000..12003) > udp/io_uring".
    virtual std::string describe() const = 0;
    // The last error a -1 stood for, in words (a shard link's connection error).
    virtual std::string last_error() const { return {}; }
};

// A plain unconnected UDP socket of `family`.
Result<std::unique_ptr<Link>> socket_link(int family);
// A shard chunnel connection to the kv server's service port, negotiated now.
Result<std::unique_ptr<Link>> shard_link(const Addr& service, ShardPref pref);

} // namespace bertha::kv
