// KvClient (client.hpp): one datagram out, then wait on the link (link.hpp: an unconnected UDP
// socket, or a shard chunnel connection) until the reply or the deadline. Replies are matched
// by request id only.
#include "client.hpp"

#include <cerrno>
#include <poll.h>
#include <random>
#include <sys/socket.h>

namespace bertha::kv {

namespace {
constexpr size_t kDatagram = 65536;
constexpr const char* kComp = "kv client";
} // namespace

KvClient::KvClient(std::unique_ptr<Link> link, Addr server, ClientOptions o)
    : link_(std::move(link)), server_(server), opts_(o), buf_(kDatagram) {
    // Start the ids somewhere random, so two runs do not take each other's late replies.
    next_id_ = uint16_t(std::random_device{}());
}

Result<KvClient> KvClient::open(const Addr& server, ClientOptions o) {
    auto link = o.shard == ShardPref::none ? socket_link(server.family()) : shard_link(server, o.shard);
    if (!link) return std::unexpected(std::move(link.error()));
    return KvClient(std::move(*link), server, o);
}

Result<std::string> KvClient::call(std::string_view body, size_t replies) {
    const uint16_t id = next_id_++;
    std::vector<char> out(kHeaderSize + body.size());
    Writer w(out);
    put_frame_header(w, id);
    w.put(body);
    iovec iov{out.data(), w.size()};
    mmsghdr mh{};
    mh.msg_hdr.msg_name = const_cast<sockaddr*>(server_.sa());
    mh.msg_hdr.msg_namelen = server_.len();
    mh.msg_hdr.msg_iov = &iov;
    mh.msg_hdr.msg_iovlen = 1;
    if (link_->send(std::span(&mh, 1)) != 1) {
        std::string why = link_->last_error();
        if (why.empty()) return fail_sys(kComp, "send to " + server_.to_string(), errno);
        return fail(bertha::Errc::unavailable, kComp, "send to " + server_.to_string() + ": " + why);
    }

    const auto deadline = std::chrono::steady_clock::now() + opts_.timeout;
    std::string acc; // the reply so far: memcached may send one datagram per reply line group
    // Each pass either returns or consumes one datagram; the deadline bounds the rest.
    for (int pass = 0; pass < 100000; ++pass) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) break;
        iovec riov{buf_.data(), buf_.size()};
        mmsghdr rh{};
        rh.msg_hdr.msg_iov = &riov;
        rh.msg_hdr.msg_iovlen = 1;
        int r = link_->recv(std::span(&rh, 1));
        if (r == 0) {
            link_->wait(left);
            continue;
        }
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            if (!link_->last_error().empty())
                return fail(bertha::Errc::unavailable, kComp, link_->last_error());
            // e.g. ECONNREFUSED from an ICMP port unreachable: nobody listens there
            return fail_sys(kComp, "no server at " + server_.to_string(), errno);
        }
        const size_t n = rh.msg_len;
        auto f = parse_frame({buf_.data(), n});
        if (!f || f->request_id != id) {
            ++stale_;
            continue;
        }
        // memcached marks some one-datagram replies (a multi-get, in 1.6) "0 of 0": whole too.
        if (f->seq == 0 && f->total == 0) f->total = 1;
        if (auto single = require_single(*f); !single)
            return fail(bertha::Errc::unavailable, kComp,
                        "a reply from " + server_.to_string() + " is datagram " +
                            std::to_string(f->seq) + " of " + std::to_string(f->total) +
                            ": replies over several numbered datagrams are not supported");
        acc.append(f->body);
        if (replies > 0 && complete(acc, replies)) return acc;
    }
    if (replies == 0) return acc;
    return fail(bertha::Errc::unavailable, kComp,
                (acc.empty() ? "no reply from " : "an incomplete reply from ") +
                    server_.to_string() + " within " + std::to_string(opts_.timeout.count()) +
                    " ms");
}

bool KvClient::complete(std::string_view acc, size_t replies) {
    for (size_t i = 0; i < replies; ++i) {
        auto r = parse_response(acc);
        if (!r) return false;
        acc.remove_prefix(r->wire_size);
    }
    return acc.empty();
}

Result<Response> KvClient::exchange(const Request& r, std::string& reply) {
    Writer w(buf_);
    if (auto ok = build_request(w, r); !ok)
        return fail(bertha::Errc::invalid_argument, kComp, std::string(ok.error().message));
    if (!w.ok())
        return fail(bertha::Errc::invalid_argument, kComp, "request too large for a datagram");
    std::string body(w.view());
    auto got = call(body);
    if (!got) return std::unexpected(got.error());
    reply = std::move(*got);
    auto resp = parse_response(reply);
    if (!resp)
        return fail(bertha::Errc::incompatible, kComp,
                    "unreadable reply from " + server_.to_string() + ": " +
                        std::string(resp.error().message));
    switch (resp->status) {
    case Status::error:
    case Status::client_error:
    case Status::server_error:
        return fail(bertha::Errc::invalid_argument, kComp,
                    server_.to_string() + " answered " + std::string(to_string(resp->status)) +
                        (resp->message.empty() ? "" : " ") + std::string(resp->message));
    default:
        return *resp;
    }
}

Result<std::vector<Item>> KvClient::get(std::span<const std::string_view> keys, bool with_cas) {
    if (keys.empty() || keys.size() > kMaxKeys)
        return fail(bertha::Errc::invalid_argument, kComp,
                    "a get takes 1 to " + std::to_string(kMaxKeys) + " keys");
    Request r;
    r.verb = with_cas ? Verb::gets : Verb::get;
    for (auto k : keys) r.keys[r.nkeys++] = k;
    std::string reply;
    auto resp = exchange(r, reply);
    if (!resp) return std::unexpected(resp.error());
    if (resp->status != Status::values)
        return fail(bertha::Errc::incompatible, kComp,
                    "a get answered " + std::string(to_string(resp->status)));
    std::vector<Item> items;
    for (const auto& v : resp->value_list())
        items.push_back(Item{std::string(v.key), v.flags, std::string(v.data), v.has_cas, v.cas});
    return items;
}

Result<std::optional<Item>> KvClient::get(std::string_view key, bool with_cas) {
    auto items = get(std::span<const std::string_view>(&key, 1), with_cas);
    if (!items) return std::unexpected(items.error());
    if (items->empty()) return std::optional<Item>{};
    if ((*items)[0].key != key)
        return fail(bertha::Errc::incompatible, kComp, "a get of one key answered another key");
    return std::optional<Item>(std::move((*items)[0]));
}

Result<Status> KvClient::store(Verb verb, std::string_view key, std::string_view data,
                               uint32_t flags, int32_t exptime) {
    if (!is_storage(verb)) return fail(bertha::Errc::invalid_argument, kComp, "not a storage verb");
    Request r;
    r.verb = verb;
    r.keys[0] = key;
    r.nkeys = 1;
    r.flags = flags;
    r.exptime = exptime;
    r.data = data;
    std::string reply;
    auto resp = exchange(r, reply);
    if (!resp) return std::unexpected(resp.error());
    if (resp->status != Status::stored && resp->status != Status::not_stored &&
        resp->status != Status::exists && resp->status != Status::not_found)
        return fail(bertha::Errc::incompatible, kComp,
                    "a store answered " + std::string(to_string(resp->status)));
    return resp->status;
}

Result<Status> KvClient::del(std::string_view key) {
    Request r;
    r.verb = Verb::del;
    r.keys[0] = key;
    r.nkeys = 1;
    std::string reply;
    auto resp = exchange(r, reply);
    if (!resp) return std::unexpected(resp.error());
    if (resp->status != Status::deleted && resp->status != Status::not_found)
        return fail(bertha::Errc::incompatible, kComp,
                    "a delete answered " + std::string(to_string(resp->status)));
    return resp->status;
}

} // namespace bertha::kv
