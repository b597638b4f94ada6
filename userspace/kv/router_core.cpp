#include "kv/router_core.hpp"

#include "kv/protocol.hpp"
#include "shard/steer.hpp"

#include <array>
#include <string>
#include <vector>

namespace bertha::kv {

namespace {

constexpr std::string_view kWho = "kv router";
constexpr size_t kSweep = 256;       // pending entries looked at for expiry per sweep
constexpr size_t kReplyChunk = 1400; // merged replies go out in datagrams this big, as memcached's
constexpr size_t kMaxDatagram = 65536;
constexpr uint16_t kNoGroup = 0xffff;
// A reply whose end cannot be seen (the answer to several commands in one datagram) is relayed
// datagram by datagram, and its id is kept until the shard has been quiet this long.
constexpr auto kLinger = std::chrono::milliseconds(20);

// Is `body` one whole response? memcached (1.6) sends a reply as one or more datagrams, each
// marked "0 of 1" (or an empty "0 of 0"), so the frame header cannot say when a reply is over:
// its text does (a values response runs to END; anything else is one line). A scan of the
// items' lengths, on every reply: parse_response would build the whole response.
bool whole_response(std::string_view body) {
    if (body.empty()) return false;
    while (body.starts_with("VALUE ")) {
        const size_t eol = body.find("\r\n");
        if (eol == std::string_view::npos) return false;
        // "VALUE <key> <flags> <bytes> [<cas>]": <bytes> is the fourth token
        std::string_view line = body.substr(0, eol);
        size_t at = 0;
        std::string_view tok[5];
        int n = 0;
        while (n < 5 && at < line.size()) {
            size_t sp = line.find(' ', at);
            if (sp == std::string_view::npos) sp = line.size();
            tok[n++] = line.substr(at, sp - at);
            at = sp + 1;
        }
        if (n < 4) return false;
        uint64_t bytes = 0;
        for (char c : tok[3]) {
            if (c < '0' || c > '9' || bytes > 1u << 30) return false;
            bytes = bytes * 10 + uint64_t(c - '0');
        }
        const uint64_t item = eol + 2 + bytes + 2;
        if (item > body.size()) return false;
        body.remove_prefix(size_t(item));
    }
    if (body.starts_with("VALUE") ) return false;
    // one line, and nothing after it: "END", "STORED", an error, ...
    const size_t eol = body.find("\r\n");
    return eol != std::string_view::npos && eol + 2 == body.size();
}
bool is_error(std::string_view body) {
    return body.starts_with("ERROR") || body.starts_with("CLIENT_ERROR") ||
           body.starts_with("SERVER_ERROR");
}

uint16_t get16(const char* p) { return uint16_t(uint8_t(p[0]) << 8 | uint8_t(p[1])); }
void put16(char* p, uint16_t v) { p[0] = char(v >> 8), p[1] = char(v & 0xff); }

} // namespace

struct RouterCore::Impl {
    RouterCoreOptions o;
    RouterStats stats;

    struct Pending {
        bool used = false;
        bool one_command = false; // its reply is one response (else: lingers, see kLinger)
        bool answered = false;    // lingering after its reply: released quietly by the sweep
        uint16_t group = kNoGroup; // a part of a split get, or a request forwarded whole
        uint16_t client_id = 0;
        Addr client;
        Clock::time_point expires{};
        std::string part; // a split get's part: its reply's text so far
    };
    struct Group {
        bool used = false, failed = false;
        uint16_t client_id = 0, parts_left = 0;
        Addr client;
        std::string body; // merged VALUE items (or the first part's error reply)
        std::vector<std::string> keys; // the request's keys, in order: the merged reply's order
    };
    std::vector<Pending> pending;
    std::vector<Group> groups;
    uint32_t mask = 0;
    uint32_t next_id = 0;
    size_t next_group = 0, sweep_at = 0;
    Clock::time_point next_sweep{};

    uint32_t shard_of(std::string_view key) const {
        return bertha_shard_of(
            bertha_shard_hash(reinterpret_cast<const unsigned char*>(key.data()), key.size()),
            o.shards);
    }

    std::optional<uint16_t> take_id() {
        for (size_t k = 0; k < pending.size(); ++k) {
            uint16_t id = uint16_t(next_id++ & mask);
            if (!pending[id].used) return id;
        }
        return std::nullopt;
    }
    void release(uint16_t id) {
        Pending& p = pending[id];
        p.used = false;
        p.group = kNoGroup;
        p.part.clear();
    }
    void drop_group(size_t g, const Pending* except) {
        Group& grp = groups[g];
        grp.used = false; // its other parts find no group and are dropped
        grp.body.clear();
        for (auto& q : pending)
            if (q.used && q.group == g && &q != except) q.used = false, q.group = kNoGroup;
    }

    std::optional<uint32_t> request(char* d, size_t len, const Addr& client, RouterSink& sink) {
        ++stats.requests;
        const std::string_view dg(d, len);
        auto frame = parse_frame(dg);
        if (!frame) { // shorter than the frame header: memcached drops it too
            ++stats.malformed;
            return std::nullopt;
        }
        const auto bytes = std::span(reinterpret_cast<const uint8_t*>(d), len);
        uint32_t s = 0;
        bool one_command = false;
        if (auto steered = shard::steer(bytes, o.shards)) {
            s = *steered;
            one_command = true; // the steering rule takes one whole command only
        } else {
            std::optional<Request> req;
            if (require_single(*frame))
                if (auto r = parse_request(frame->body)) req = *r;
            if (req && is_retrieval(req->verb) && req->wire_size == frame->body.size() &&
                req->nkeys > 1) {
                split(*frame, *req, client, sink);
                return std::nullopt;
            }
            // Not the steering rule's, and not a get to split: one shard answers it as
            // memcached would (its error, or its commands in order).
            s = req && req->nkeys > 0 ? shard_of(req->key()) : 0;
            one_command = req && req->wire_size == frame->body.size();
        }
        auto id = take_id();
        if (!id) {
            ++stats.busy;
            return std::nullopt;
        }
        Pending& p = pending[*id];
        p.used = true;
        p.one_command = one_command;
        p.answered = false;
        p.group = kNoGroup;
        p.client_id = get16(d);
        p.client = client;
        p.expires = Clock::now() + o.timeout;
        put16(d, *id); // the upstream id; the client's goes back on the reply
        ++stats.forwarded;
        return s;
    }

    // A get/gets over several shards: one get per shard, their VALUE items merged. The slow
    // path: the parts are built in their own buffer and handed to the sink one by one.
    void split(const Frame& f, const Request& req, const Addr& client, RouterSink& sink) {
        size_t g = groups.size();
        for (size_t k = 0; k < groups.size() && g == groups.size(); ++k) {
            size_t i = (next_group + k) % groups.size();
            if (!groups[i].used) g = i;
        }
        if (g == groups.size()) {
            ++stats.busy;
            return;
        }
        next_group = (g + 1) % groups.size();
        std::array<std::vector<std::string_view>, BERTHA_SHARD_MAX> by_shard{};
        std::vector<uint32_t> used_shards;
        for (auto key : req.key_list()) {
            uint32_t s = shard_of(key);
            if (by_shard[s].empty()) used_shards.push_back(s);
            by_shard[s].push_back(key);
        }
        Group& grp = groups[g];
        grp = Group{true, false, f.request_id, 0, client, {}, {}};
        for (auto key : req.key_list()) grp.keys.emplace_back(key);
        // Every part's id first: a get is sent whole or not at all.
        std::vector<uint16_t> ids;
        for (size_t k = 0; k < used_shards.size(); ++k) {
            auto id = take_id();
            if (!id) {
                ++stats.busy;
                for (uint16_t i : ids) release(i);
                grp.used = false;
                return;
            }
            pending[*id].used = true; // reserved, so that take_id moves on
            ids.push_back(*id);
        }
        const auto expires = Clock::now() + o.timeout;
        std::array<char, kMaxDatagram> buf;
        for (size_t k = 0; k < used_shards.size(); ++k) {
            const uint32_t s = used_shards[k];
            Pending& p = pending[ids[k]];
            p.group = uint16_t(g);
            p.one_command = true;
            p.answered = false;
            p.client = client;
            p.expires = expires;
            p.part.clear();
            Request part;
            part.verb = req.verb;
            part.nkeys = uint8_t(by_shard[s].size());
            for (size_t i = 0; i < part.nkeys; ++i) part.keys[i] = by_shard[s][i];
            Writer w(buf);
            put_frame_header(w, ids[k]);
            if (!build_request(w, part) || !w.ok()) { // cannot happen: the keys parsed
                release(ids[k]);
                continue;
            }
            ++grp.parts_left;
            sink.to_shard(std::string_view(buf.data(), w.size()), s);
        }
        if (grp.parts_left == 0) grp.used = false;
        ++stats.split;
    }

    std::optional<Addr> reply(char* d, size_t len, RouterSink& sink) {
        auto frame = parse_frame(std::string_view(d, len));
        if (!frame || frame->request_id > mask) {
            ++stats.stray;
            return std::nullopt;
        }
        Pending& p = pending[frame->request_id];
        if (!p.used) {
            ++stats.stray;
            return std::nullopt;
        }
        if (p.group == kNoGroup) {
            put16(d, p.client_id);
            ++stats.replies;
            Addr to = p.client;
            if (p.one_command && whole_response(frame->body) && !is_error(frame->body)) {
                release(frame->request_id);
            } else if (!p.one_command || is_error(frame->body)) {
                // Relayed as it comes; forgotten once the shard is quiet. (An error may be
                // followed by more: memcached answers a storage command's bad line, then its
                // data line as a command of its own.)
                p.answered = true;
                p.expires = Clock::now() + kLinger;
            }
            return to;
        }
        p.part.append(frame->body); // memcached sends a reply's datagrams in order
        if (!whole_response(p.part)) return std::nullopt;
        Group& grp = groups[p.group];
        std::string_view text = p.part;
        if (text.ends_with("END\r\n")) {
            text.remove_suffix(5);
            grp.body.append(text);
        } else if (!grp.failed) { // an error from one shard is the whole get's answer
            grp.failed = true;
            grp.body.assign(text);
        }
        release(frame->request_id);
        if (--grp.parts_left == 0) finish(grp, sink);
        return std::nullopt;
    }

    // The parts' items in the request's key order, as memcached answers a multi-get (a key
    // asked twice is answered twice; a missing key is left out).
    void reorder(Group& grp) {
        grp.body.append("END\r\n");
        auto r = parse_response(grp.body);
        if (!r || r->status != Status::values) return; // cannot happen: each part parsed
        std::vector<bool> used(r->nvalues);
        std::string out;
        for (const auto& key : grp.keys)
            for (size_t i = 0; i < r->nvalues; ++i) {
                const Value& v = r->values[i];
                if (used[i] || v.key != key) continue;
                used[i] = true;
                out += "VALUE " + key + " " + std::to_string(v.flags) + " " +
                       std::to_string(v.data.size());
                if (v.has_cas) out += " " + std::to_string(v.cas);
                out += "\r\n";
                out.append(v.data);
                out += "\r\n";
                break;
            }
        out += "END\r\n";
        grp.body = std::move(out);
    }

    void finish(Group& grp, RouterSink& sink) {
        if (!grp.failed) reorder(grp);
        const size_t chunk = kReplyChunk - kHeaderSize;
        const size_t total = (grp.body.size() + chunk - 1) / chunk;
        std::array<char, kReplyChunk> buf;
        for (size_t i = 0; i < total; ++i) {
            Writer w(buf);
            put_frame_header(w, grp.client_id, uint16_t(i), uint16_t(total));
            w.put(std::string_view(grp.body).substr(i * chunk, chunk));
            sink.to_client(std::string_view(buf.data(), w.size()), grp.client);
            ++stats.replies;
        }
        ++stats.merged;
        grp.used = false;
        grp.body.clear();
    }

    void sweep() {
        const auto now = Clock::now();
        // A slice of the table a millisecond at most: callers call this on every receive.
        if (now < next_sweep) return;
        next_sweep = now + std::chrono::milliseconds(1);
        for (size_t k = 0; k < std::min(kSweep, pending.size()); ++k) {
            size_t id = sweep_at++ & mask;
            Pending& p = pending[id];
            if (!p.used || p.expires > now) continue;
            if (p.group != kNoGroup) drop_group(p.group, &p);
            if (!p.answered) ++stats.expired;
            release(uint16_t(id));
        }
    }
};

Result<RouterCore> RouterCore::make(const RouterCoreOptions& o) {
    if (o.shards < 1 || o.shards > BERTHA_SHARD_MAX)
        return fail(bertha::Errc::invalid_argument, std::string(kWho),
                    "shards must be 1 to " + std::to_string(BERTHA_SHARD_MAX));
    if (o.ids < 2 || o.ids > 65536 || (o.ids & (o.ids - 1)))
        return fail(bertha::Errc::invalid_argument, std::string(kWho),
                    "ids must be a power of two from 2 to 65536");
    if (o.groups < 1 || o.groups >= kNoGroup)
        return fail(bertha::Errc::invalid_argument, std::string(kWho), "groups must be 1 to 65534");
    auto p = std::make_unique<Impl>();
    p->o = o;
    p->pending.resize(o.ids);
    p->groups.resize(o.groups);
    p->mask = o.ids - 1;
    return RouterCore(std::move(p));
}

RouterCore::RouterCore(std::unique_ptr<Impl> p) : p_(std::move(p)) {}
RouterCore::RouterCore(RouterCore&&) noexcept = default;
RouterCore& RouterCore::operator=(RouterCore&&) noexcept = default;
RouterCore::~RouterCore() = default;

std::optional<uint32_t> RouterCore::request(char* d, size_t len, const Addr& client,
                                            RouterSink& sink) {
    return p_->request(d, len, client, sink);
}
std::optional<Addr> RouterCore::reply(char* d, size_t len, RouterSink& sink) {
    return p_->reply(d, len, sink);
}
void RouterCore::sweep() { p_->sweep(); }
uint32_t RouterCore::shard_of(std::string_view key) const { return p_->shard_of(key); }
uint32_t RouterCore::shards() const { return p_->o.shards; }
const RouterStats& RouterCore::stats() const { return p_->stats; }

} // namespace bertha::kv
