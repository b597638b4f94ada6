// The memcached text protocol over UDP: parsing and building (protocol.hpp). The replies to
// bad input are memcached 1.6's own words (proto_text.c), so a client cannot tell the two
// servers apart on the cases we support.
#include "kv/protocol.hpp"

#include <arpa/inet.h>
#include <charconv>
#include <cstring>
#include <limits>
#include <optional>

namespace bertha::kv {

namespace {

constexpr std::string_view kBadLine = "bad command line format";

constexpr ProtoError err(Errc c, std::string_view m, size_t resume = 0) noexcept {
    return ProtoError{c, m, resume};
}
// The same error, resuming at `at`.
std::unexpected<ProtoError> at(ProtoError e, size_t resume) noexcept {
    e.resume = resume;
    return std::unexpected(e);
}

// The next token of `rest` (runs of spaces separate tokens, as in memcached); empty at the end.
std::string_view next_token(std::string_view& rest) noexcept {
    size_t b = 0;
    while (b < rest.size() && rest[b] == ' ') ++b;
    size_t e = b;
    while (e < rest.size() && rest[e] != ' ') ++e;
    std::string_view tok = rest.substr(b, e - b);
    rest.remove_prefix(e);
    return tok;
}

// Strict decimal: digits only (an optional leading '-' where allowed), no overflow.
template <class T> bool parse_num(std::string_view s, T& out) noexcept {
    if (s.empty() || s.size() > 20) return false;
    if (s[0] == '+') return false;
    if (s[0] == '-' && !std::numeric_limits<T>::is_signed) return false;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && p == s.data() + s.size();
}

// One line of `body`: its text without the line end, and the bytes it took with the end.
struct Line {
    std::string_view text;
    size_t size;
};
std::optional<Line> take_line(std::string_view body, bool strict_crlf) noexcept {
    size_t nl = body.find('\n');
    if (nl == std::string_view::npos) return std::nullopt;
    std::string_view text = body.substr(0, nl);
    if (!text.empty() && text.back() == '\r')
        text.remove_suffix(1);
    else if (strict_crlf)
        return std::nullopt;
    return Line{text, nl + 1};
}

uint16_t load_be16(const char* p) noexcept {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return ntohs(v);
}

} // namespace

std::string_view to_string(Errc code) noexcept {
    switch (code) {
    case Errc::short_frame:
        return "short_frame";
    case Errc::multi_packet:
        return "multi_packet";
    case Errc::incomplete:
        return "incomplete";
    case Errc::unknown_command:
        return "unknown_command";
    case Errc::bad_command_line:
        return "bad_command_line";
    case Errc::key_too_long:
        return "key_too_long";
    case Errc::bad_key:
        return "bad_key";
    case Errc::too_many_keys:
        return "too_many_keys";
    case Errc::bad_data_chunk:
        return "bad_data_chunk";
    case Errc::too_large:
        return "too_large";
    case Errc::bad_response:
        return "bad_response";
    }
    return "?";
}

ErrorReply ProtoError::reply() const noexcept {
    switch (code) {
    case Errc::short_frame:
    case Errc::bad_response:
        return ErrorReply::none;
    case Errc::unknown_command:
        return ErrorReply::error;
    case Errc::multi_packet:
    case Errc::too_large:
        return ErrorReply::server_error;
    default:
        return ErrorReply::client_error;
    }
}

// ---- Writer ----------------------------------------------------------------------------------
void Writer::put(std::string_view s) noexcept {
    if (overflow_ || s.size() > room()) {
        overflow_ = true;
        return;
    }
    if (!s.empty()) std::memcpy(buf_.data() + n_, s.data(), s.size());
    n_ += s.size();
}

void Writer::put_u64(uint64_t v) noexcept {
    char tmp[24];
    auto r = std::to_chars(tmp, tmp + sizeof tmp, v);
    put({tmp, size_t(r.ptr - tmp)});
}

void Writer::put_i64(int64_t v) noexcept {
    char tmp[24];
    auto r = std::to_chars(tmp, tmp + sizeof tmp, v);
    put({tmp, size_t(r.ptr - tmp)});
}

// ---- frame -----------------------------------------------------------------------------------
PResult<Frame> parse_frame(std::string_view d) noexcept {
    if (d.size() < kHeaderSize)
        return std::unexpected(err(Errc::short_frame, "datagram shorter than the 8-byte header"));
    Frame f;
    f.request_id = load_be16(d.data() + offsetof(bertha_mc_udp_hdr, request_id));
    f.seq = load_be16(d.data() + offsetof(bertha_mc_udp_hdr, seq));
    f.total = load_be16(d.data() + offsetof(bertha_mc_udp_hdr, total));
    f.reserved = load_be16(d.data() + offsetof(bertha_mc_udp_hdr, reserved));
    f.body = d.substr(kHeaderSize);
    return f;
}

PResult<void> require_single(const Frame& f) noexcept {
    if (f.total != 1 || f.seq != 0)
        return std::unexpected(err(Errc::multi_packet, "multi-packet request not supported"));
    return {};
}

void put_frame_header(Writer& w, uint16_t request_id, uint16_t seq, uint16_t total) noexcept {
    bertha_mc_udp_hdr h{htons(request_id), htons(seq), htons(total), 0};
    w.put({reinterpret_cast<const char*>(&h), sizeof h});
}

// ---- requests --------------------------------------------------------------------------------
std::string_view to_string(Verb v) noexcept {
    switch (v) {
    case Verb::get:
        return "get";
    case Verb::gets:
        return "gets";
    case Verb::set:
        return "set";
    case Verb::add:
        return "add";
    case Verb::replace:
        return "replace";
    case Verb::del:
        return "delete";
    }
    return "?";
}

PResult<void> check_key(std::string_view key) noexcept {
    if (key.empty()) return std::unexpected(err(Errc::bad_key, kBadLine));
    if (key.size() > kMaxKey) return std::unexpected(err(Errc::key_too_long, kBadLine));
    for (unsigned char c : key)
        if (c <= 0x20 || c == 0x7f) return std::unexpected(err(Errc::bad_key, kBadLine));
    return {};
}

PResult<Request> parse_request(std::string_view body) noexcept {
    auto line = take_line(body, false);
    if (!line) return std::unexpected(err(Errc::incomplete, kBadLine));
    std::string_view rest = line->text;
    std::string_view verb = next_token(rest);
    Request r;
    r.wire_size = line->size;
    const size_t next = line->size; // memcached goes on at the next line after most errors

    if (verb == "get" || verb == "gets") {
        r.verb = verb == "get" ? Verb::get : Verb::gets;
        for (size_t i = 0; i <= kMaxKeys; ++i) {
            std::string_view k = next_token(rest);
            if (k.empty()) break;
            if (r.nkeys == kMaxKeys) return at(err(Errc::too_many_keys, "too many keys"), next);
            if (auto ok = check_key(k); !ok) return at(ok.error(), next);
            r.keys[r.nkeys++] = k;
        }
        if (r.nkeys == 0) return at(err(Errc::unknown_command, "ERROR"), next);
        return r;
    }

    // The other verbs take at most 5 tokens after the verb: more means memcached's ERROR.
    std::array<std::string_view, 6> t{};
    size_t n = 0;
    for (; n < t.size(); ++n) {
        t[n] = next_token(rest);
        if (t[n].empty()) break;
    }

    if (verb == "set" || verb == "add" || verb == "replace") {
        r.verb = verb == "set" ? Verb::set : verb == "add" ? Verb::add : Verb::replace;
        if (n != 4 && n != 5) return at(err(Errc::unknown_command, "ERROR"), next);
        if (auto ok = check_key(t[0]); !ok) return at(ok.error(), next);
        int32_t bytes = 0;
        if (!parse_num(t[1], r.flags) || !parse_num(t[2], r.exptime) || !parse_num(t[3], bytes) ||
            bytes < 0)
            return at(err(Errc::bad_command_line, kBadLine), next);
        // memcached swallows the data block after these two (it waits for a block the
        // datagram does not hold; we stop there)
        const size_t past_data = body.size() - next >= size_t(bytes) + 2 ? next + bytes + 2 : 0;
        // memcached ignores a fifth token that is not "noreply".
        r.noreply = n == 5 && t[4] == "noreply";
        r.keys[0] = t[0];
        r.nkeys = 1;
        if (size_t(bytes) > kMaxValue)
            return at(err(Errc::too_large, "object too large for cache"), past_data);
        size_t start = line->size;
        if (past_data == 0 || body[start + bytes] != '\r' || body[start + bytes + 1] != '\n')
            return at(err(Errc::bad_data_chunk, "bad data chunk"), past_data);
        r.data = body.substr(start, bytes);
        r.wire_size = start + bytes + 2;
        return r;
    }

    if (verb == "delete") {
        r.verb = Verb::del;
        if (n < 1 || n > 3) return at(err(Errc::unknown_command, "ERROR"), next);
        if (auto ok = check_key(t[0]); !ok) return at(ok.error(), next);
        // "delete <key> 0", "delete <key> noreply", "delete <key> 0 noreply" (memcached's rule)
        bool valid = n == 1 || (n == 2 && (t[1] == "0" || t[1] == "noreply")) ||
                     (n == 3 && t[1] == "0" && t[2] == "noreply");
        if (!valid)
            return at(err(Errc::bad_command_line,
                          "bad command line format.  Usage: delete <key> [noreply]"),
                      next);
        r.noreply = t[n - 1] == "noreply";
        r.keys[0] = t[0];
        r.nkeys = 1;
        return r;
    }
    return at(err(Errc::unknown_command, "ERROR"), next);
}

PResult<void> build_request(Writer& w, const Request& r) noexcept {
    if (r.nkeys == 0 || r.nkeys > kMaxKeys || (!is_retrieval(r.verb) && r.nkeys != 1))
        return std::unexpected(err(Errc::bad_command_line, "wrong number of keys"));
    for (auto k : r.key_list())
        if (auto ok = check_key(k); !ok) return std::unexpected(ok.error());
    if (is_storage(r.verb) && r.data.size() > kMaxValue)
        return std::unexpected(err(Errc::too_large, "object too large for cache"));
    w.put(to_string(r.verb));
    for (auto k : r.key_list()) {
        w.put(" ");
        w.put(k);
    }
    if (is_storage(r.verb)) {
        w.put(" ");
        w.put_u64(r.flags);
        w.put(" ");
        w.put_i64(r.exptime);
        w.put(" ");
        w.put_u64(r.data.size());
    }
    if (r.noreply && !is_retrieval(r.verb)) w.put(" noreply");
    w.put("\r\n");
    if (is_storage(r.verb)) {
        w.put(r.data);
        w.put("\r\n");
    }
    return {};
}

// ---- responses -------------------------------------------------------------------------------
std::string_view to_string(Status s) noexcept {
    switch (s) {
    case Status::values:
        return "END";
    case Status::stored:
        return "STORED";
    case Status::not_stored:
        return "NOT_STORED";
    case Status::exists:
        return "EXISTS";
    case Status::not_found:
        return "NOT_FOUND";
    case Status::deleted:
        return "DELETED";
    case Status::error:
        return "ERROR";
    case Status::client_error:
        return "CLIENT_ERROR";
    case Status::server_error:
        return "SERVER_ERROR";
    }
    return "?";
}

void put_value(Writer& w, const Value& v) noexcept {
    w.put("VALUE ");
    w.put(v.key);
    w.put(" ");
    w.put_u64(v.flags);
    w.put(" ");
    w.put_u64(v.data.size());
    if (v.has_cas) {
        w.put(" ");
        w.put_u64(v.cas);
    }
    w.put("\r\n");
    w.put(v.data);
    w.put("\r\n");
}

void put_end(Writer& w) noexcept {
    w.put("END\r\n");
}

void put_status(Writer& w, Status s, std::string_view message) noexcept {
    w.put(to_string(s));
    if (s == Status::client_error || s == Status::server_error) {
        w.put(" ");
        w.put(message);
    }
    w.put("\r\n");
}

void put_error_reply(Writer& w, const ProtoError& e) noexcept {
    switch (e.reply()) {
    case ErrorReply::none:
        return;
    case ErrorReply::error:
        put_status(w, Status::error);
        return;
    case ErrorReply::client_error:
        put_status(w, Status::client_error, e.message);
        return;
    case ErrorReply::server_error:
        put_status(w, Status::server_error, e.message);
        return;
    }
}

void build_response(Writer& w, const Response& r) noexcept {
    if (r.status == Status::values) {
        for (const auto& v : r.value_list()) put_value(w, v);
        put_end(w);
        return;
    }
    put_status(w, r.status, r.message);
}

PResult<Response> parse_response(std::string_view body) noexcept {
    const auto bad = [](std::string_view m) { return std::unexpected(err(Errc::bad_response, m)); };
    Response r;
    size_t pos = 0;
    // At most kMaxKeys VALUE items and their END.
    for (size_t i = 0; i <= kMaxKeys; ++i) {
        auto line = take_line(body.substr(pos), true);
        if (!line) return bad("a response line does not end in \\r\\n");
        std::string_view rest = line->text;
        std::string_view word = next_token(rest);
        pos += line->size;
        if (word == "VALUE") {
            if (r.nvalues == kMaxKeys) return bad("too many VALUE items");
            Value v;
            v.key = next_token(rest);
            std::string_view flags = next_token(rest), bytes = next_token(rest);
            std::string_view cas = next_token(rest);
            uint32_t len = 0;
            if (!check_key(v.key) || !parse_num(flags, v.flags) || !parse_num(bytes, len) ||
                !next_token(rest).empty())
                return bad("malformed VALUE line");
            if (!cas.empty()) {
                if (!parse_num(cas, v.cas)) return bad("malformed cas in a VALUE line");
                v.has_cas = true;
            }
            if (body.size() - pos < size_t(len) + 2 || body.substr(pos + len, 2) != "\r\n")
                return bad("a VALUE's data does not match its byte count");
            v.data = body.substr(pos, len);
            pos += len + 2;
            r.values[r.nvalues++] = v;
            continue;
        }
        if (word == "END" && rest.empty()) {
            r.status = Status::values;
            r.wire_size = pos;
            return r;
        }
        if (r.nvalues) return bad("VALUE items not followed by END");
        r.wire_size = pos;
        if (word == "CLIENT_ERROR" || word == "SERVER_ERROR") {
            r.status = word == "CLIENT_ERROR" ? Status::client_error : Status::server_error;
            std::string_view msg = line->text.substr(word.size());
            if (!msg.empty() && msg[0] == ' ') msg.remove_prefix(1);
            r.message = msg;
            return r;
        }
        if (!rest.empty()) return bad("unexpected text after the status word");
        for (Status s : {Status::stored, Status::not_stored, Status::exists, Status::not_found,
                         Status::deleted, Status::error}) {
            if (word == to_string(s)) {
                r.status = s;
                return r;
            }
        }
        return bad("unknown response line");
    }
    return bad("too many VALUE items");
}

} // namespace bertha::kv
