// The memcached text protocol over UDP: the one place it is parsed and built (examples/kv's
// server and client, the shard chunnel, the offload tests). Wire facts shared with BPF (frame
// header, key bound) come from bpf/include/bertha/kv.h.
//
// Zero allocation: parsed requests and responses hold string_views into the datagram (keep
// it alive while you use them); builders append into a caller's buffer through Writer.
// Supported: get, gets (multi-key), set, add, replace, delete, and every reply they give,
// plus ERROR / CLIENT_ERROR <msg> / SERVER_ERROR <msg>. Messages are one datagram each
// (seq 0, total 1); several commands in one datagram are parsed one after the other
// (Request::wire_size says where the next one starts).
#pragma once

#include "bertha/kv.h"

#include <array>
#include <cstddef>
#include <cstdint>
#include <expected>
#include <span>
#include <string_view>

namespace bertha::kv {

inline constexpr size_t kHeaderSize = BERTHA_MC_UDP_HDR;
inline constexpr size_t kMaxKey = BERTHA_KV_MAX_KEY;
// Keys of one get/gets, and VALUE items of one response (memcached has no such bound; a
// request over it gets CLIENT_ERROR too many keys).
inline constexpr size_t kMaxKeys = 128;
// The largest value a set may carry: one response datagram must hold it (65507 bytes of UDP
// payload, less the frame header and the VALUE line).
inline constexpr size_t kMaxValue = 65000;
// memcached answers multi-get responses in datagrams of at most this many bytes.
inline constexpr size_t kMemcachedMaxDatagram = 1400;

// ---- errors ----------------------------------------------------------------------------------
enum class Errc : uint8_t {
    short_frame,      // fewer than 8 bytes: no frame header (memcached drops it silently)
    multi_packet,     // total != 1 or seq != 0: a message over several datagrams
    incomplete,       // no '\n' ends the command line
    unknown_command,  // not a verb we know, or a known verb with no key
    bad_command_line, // wrong token count, bad number, bad noreply
    key_too_long,     // a key over 250 bytes
    bad_key,          // a key with a control character (DEL or below 0x20)
    too_many_keys,    // a get with more than kMaxKeys keys
    bad_data_chunk,   // data not followed by \r\n right after the declared byte count
    too_large,        // a value over kMaxValue
    bad_response,     // a response that does not parse (client side)
};

// What memcached answers for a request that failed to parse.
enum class ErrorReply : uint8_t { none, error, client_error, server_error };

struct ProtoError {
    Errc code;
    std::string_view message; // static text; for replies it is the text after "CLIENT_ERROR "
    // parse_request: where the next command starts, as memcached resynchronizes after this
    // error (the next line, or past a data block it swallows); 0: nowhere (stop).
    size_t resume = 0;
    ErrorReply reply() const noexcept;
};

template <class T> using PResult = std::expected<T, ProtoError>;

std::string_view to_string(Errc code) noexcept;

// ---- output ----------------------------------------------------------------------------------
// Appends into a caller's buffer; a write that does not fit sets overflow and writes nothing.
class Writer {
  public:
    explicit Writer(std::span<char> buf) noexcept : buf_(buf) {}
    void put(std::string_view s) noexcept;
    void put_u64(uint64_t v) noexcept;
    void put_i64(int64_t v) noexcept;
    size_t size() const noexcept { return n_; }
    bool ok() const noexcept { return !overflow_; }
    std::string_view view() const noexcept { return {buf_.data(), n_}; }
    void truncate(size_t n) noexcept {
        if (n < n_) n_ = n;
    }
    size_t room() const noexcept { return buf_.size() - n_; }

  private:
    std::span<char> buf_;
    size_t n_ = 0;
    bool overflow_ = false;
};

// ---- the frame header ------------------------------------------------------------------------
struct Frame {
    uint16_t request_id = 0;
    uint16_t seq = 0;
    uint16_t total = 1;
    uint16_t reserved = 0;
    std::string_view body; // the bytes after the header
};

// Splits a datagram into header and body. Fails only on a short datagram.
PResult<Frame> parse_frame(std::string_view datagram) noexcept;
// Is this a whole message in one datagram (seq 0, total 1)? memcached answers others with
// "SERVER_ERROR multi-packet request not supported".
PResult<void> require_single(const Frame& f) noexcept;
void put_frame_header(Writer& w, uint16_t request_id, uint16_t seq = 0,
                      uint16_t total = 1) noexcept;

// ---- requests --------------------------------------------------------------------------------
enum class Verb : uint8_t { get, gets, set, add, replace, del };
std::string_view to_string(Verb v) noexcept; // the wire word: "delete" for del
constexpr bool is_retrieval(Verb v) noexcept {
    return v == Verb::get || v == Verb::gets;
}
constexpr bool is_storage(Verb v) noexcept {
    return v == Verb::set || v == Verb::add || v == Verb::replace;
}

struct Request {
    Verb verb = Verb::get;
    uint8_t nkeys = 0;
    std::array<std::string_view, kMaxKeys> keys{};
    uint32_t flags = 0;    // storage
    int32_t exptime = 0;   // storage: 0 never, < 0 already expired, seconds or unix time
    std::string_view data; // storage
    bool noreply = false;  // storage, delete
    size_t wire_size = 0;  // bytes of the body this request took (parse only)

    std::string_view key() const noexcept { return keys[0]; }
    std::span<const std::string_view> key_list() const noexcept { return {keys.data(), nkeys}; }
};

// Is this a valid key (1..250 bytes, no space or control character)?
PResult<void> check_key(std::string_view key) noexcept;

// Parses the first command of `body` (a frame's body). Line ends: "\r\n" (or a bare "\n", as
// memcached accepts); a data block must be followed by exactly "\r\n".
PResult<Request> parse_request(std::string_view body) noexcept;
// Appends the command; checks keys and counts first (nothing is written on error).
PResult<void> build_request(Writer& w, const Request& r) noexcept;

// ---- responses -------------------------------------------------------------------------------
enum class Status : uint8_t {
    values, // zero or more VALUE items, then END
    stored,
    not_stored,
    exists,
    not_found,
    deleted,
    error,        // "ERROR"
    client_error, // "CLIENT_ERROR <message>"
    server_error, // "SERVER_ERROR <message>"
};
std::string_view to_string(Status s) noexcept; // the wire word, e.g. "NOT_STORED"

struct Value {
    std::string_view key;
    uint32_t flags = 0;
    std::string_view data;
    bool has_cas = false;
    uint64_t cas = 0;
};

struct Response {
    Status status = Status::values;
    std::string_view message; // client_error, server_error
    uint8_t nvalues = 0;
    std::array<Value, kMaxKeys> values{};
    size_t wire_size = 0; // parse only

    std::span<const Value> value_list() const noexcept { return {values.data(), nvalues}; }
};

// "VALUE <key> <flags> <bytes>[ <cas>]\r\n<data>\r\n"
void put_value(Writer& w, const Value& v) noexcept;
void put_end(Writer& w) noexcept;
// One status line: STORED, NOT_STORED, EXISTS, NOT_FOUND, DELETED, END (values), ERROR,
// CLIENT_ERROR <message>, SERVER_ERROR <message>.
void put_status(Writer& w, Status s, std::string_view message = {}) noexcept;
// The reply memcached gives for a request that failed to parse (nothing for ErrorReply::none).
void put_error_reply(Writer& w, const ProtoError& e) noexcept;
void build_response(Writer& w, const Response& r) noexcept;

// Parses one whole response at the start of `body`; a values response runs to its END.
PResult<Response> parse_response(std::string_view body) noexcept;

} // namespace bertha::kv
