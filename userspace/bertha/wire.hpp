// The negotiation wire format: the one definition of every message two Bertha endpoints
// exchange before data. Plain C++20 with no dependency on the rest of libbertha, so that the
// same code builds into the library (g++) and into the libFuzzer target (clang).
//
// Every datagram is a 24-byte header and a payload. A message body larger than one datagram is
// split into parts that share a conversation id and are reassembled in order.
//
//   0  magic    u32  0xC49B1EB7: with the CRC, a datagram is taken for negotiation only when
//                    80 bits agree, so application data is never mistaken for it
//   4  version  u8   1
//   5  type     u8   Type
//   6  part     u8   0-based index of this part
//   7  parts    u8   number of parts (1..kMaxParts)
//   8  length   u16  this datagram's length, header included
//  10  flags    u16  Flags; unknown bits are rejected
//  12  crc      u32  CRC-32C of the whole datagram with this field zero
//  16  conv     u64  conversation id: random per connection attempt
//
// All integers are big-endian. Encoding is canonical: one message has exactly one encoding, and
// decoding rejects anything else (so decode-then-encode gives back the same bytes).
#pragma once

#include "bertha/negotiation.h" // the magic and header size, shared with BPF stages

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bertha::wire {

inline constexpr uint32_t kMagic = BERTHA_NEG_MAGIC;
inline constexpr uint8_t kVersion = 1;
inline constexpr size_t kHeaderSize = BERTHA_NEG_HEADER_SIZE;
inline constexpr size_t kMaxDatagram = 1200; // fits any IPv6 path (1280) with room to spare
inline constexpr size_t kMaxParts = 64;
inline constexpr size_t kMaxBody = kMaxParts * (kMaxDatagram - kHeaderSize);
inline constexpr size_t kMaxSlots = 64;        // multilateral chunnels in one stack
inline constexpr size_t kMaxAlts = 16;         // implementations offered for one chunnel
inline constexpr size_t kMaxName = 48;         // chunnel or implementation name
inline constexpr size_t kMaxParams = 1024;     // parameters one chunnel contributes
inline constexpr size_t kMaxMessageText = 512; // a refusal's explanation

// The limits fit together: the largest message every per-field limit allows can be framed.
inline constexpr size_t kMaxOfferBody =
    1 + kMaxSlots * (4 + 1 + 1 + kMaxName + 1 + kMaxAlts * (1 + 1 + 1 + kMaxName));
inline constexpr size_t kMaxPickBody = 8 + 1 + kMaxSlots * (4 + 1 + kMaxName + 1 + 2 + kMaxParams);
inline constexpr size_t kMaxRefuseBody =
    1 + 1 + 4 + 1 + kMaxName + 2 * (1 + kMaxAlts * (1 + kMaxName)) + 2 + kMaxMessageText;
static_assert(8 + kMaxOfferBody <= kMaxBody, "the largest zero-rtt message must fit in kMaxParts");
static_assert(kMaxPickBody <= kMaxBody, "the largest pick must fit in kMaxParts");
static_assert(kMaxRefuseBody <= kMaxBody, "the largest refusal must fit in kMaxParts");

enum class Type : uint8_t {
    offer = 1,    // client -> server: every implementation it can run, per chunnel
    pick = 2,     // server -> client: one implementation per chunnel, a nonce, parameters
    refuse = 3,   // server -> client: no compatible stack, and which chunnel failed
    zero_rtt = 4, // client -> server: a cached pick's nonce, plus the offer in case it is stale
    ack = 5,      // server -> client: the zero-RTT choice is accepted
    // 16..31 are reserved for reconfiguration (prepare, commit, abort) in a later version.
};

enum Flags : uint16_t {
    flag_zero_rtt_refused = 1, // on a pick: the client's cached choice was stale; data sent
                               // under it was dropped and must be sent again
    flags_known = 1,
};

enum class Match : uint8_t { exact = 0, compositional = 1 };
enum class RunsAt : uint8_t { both = 0, client = 1, server = 2 };

enum class RefuseReason : uint8_t {
    no_compatible = 1,  // a chunnel has no implementation both ends accept
    stack_mismatch = 2, // the two stacks do not have the same chunnels in the same order
    bad_version = 3,    // the offer's version is not one this server speaks
    malformed = 4,      // the offer could not be decoded
};

struct Alt {
    uint8_t rank = 0; // the client's preference: lower first; equal ranks: server decides
    RunsAt runs_at = RunsAt::both;
    std::string impl;
    friend bool operator==(const Alt&, const Alt&) = default;
};
struct Slot {
    uint32_t type_id = 0;
    Match match = Match::exact;
    std::string chunnel;
    std::vector<Alt> alts;
    friend bool operator==(const Slot&, const Slot&) = default;
};
struct Offer {
    std::vector<Slot> slots;
    friend bool operator==(const Offer&, const Offer&) = default;
};
struct ZeroRtt {
    uint64_t nonce = 0;
    Offer offer;
    friend bool operator==(const ZeroRtt&, const ZeroRtt&) = default;
};
struct Choice {
    uint32_t type_id = 0;
    std::string impl;
    RunsAt runs_at = RunsAt::both;
    std::vector<uint8_t> params;
    friend bool operator==(const Choice&, const Choice&) = default;
};
struct Pick {
    uint64_t nonce = 0;
    std::vector<Choice> choices;
    friend bool operator==(const Pick&, const Pick&) = default;
};
struct Refuse {
    RefuseReason reason = RefuseReason::no_compatible;
    uint8_t slot = 0;
    uint32_t type_id = 0;
    std::string chunnel;
    std::vector<std::string> client_offered, server_offered;
    std::string message;
    friend bool operator==(const Refuse&, const Refuse&) = default;
};
struct Ack {
    uint64_t nonce = 0;
    friend bool operator==(const Ack&, const Ack&) = default;
};

struct Header {
    Type type = Type::offer;
    uint8_t part = 0, parts = 1;
    uint16_t length = 0, flags = 0;
    uint64_t conv = 0;
};

// Why a datagram or body was rejected: a code, where, and a sentence.
enum class Errc : uint8_t {
    not_negotiation, // no magic: application data, not ours
    truncated,       // shorter than its fields say
    bad_length,      // the length field disagrees with the datagram
    bad_checksum,
    bad_version,
    bad_type,
    bad_flags,
    bad_part,
    bad_field, // a field out of range (name characters, counts, enum values)
    too_large,
    trailing_bytes,
    not_canonical,
};
struct Error {
    Errc code = Errc::bad_field;
    size_t offset = 0;
    std::string what; // "offer: slot 2 implementation 1: name has a character outside [a-z0-9._-]"
};

// The fast test the data path runs on every received datagram: does it start with the magic?
// The same test as the BPF stages' (negotiation.h), so offloads and fallbacks agree on it.
inline bool looks_like_negotiation(std::span<const std::byte> d) noexcept {
    auto* p = reinterpret_cast<const unsigned char*>(d.data());
    return bertha_is_negotiation(p, unsigned(std::min(d.size(), size_t(UINT32_MAX))), p + d.size());
}

uint32_t crc32c(std::span<const uint8_t> data, uint32_t crc = 0) noexcept;

// Checks everything in the header (magic, version, type, part, length, flags, checksum).
bool parse_header(std::span<const uint8_t> datagram, Header& out, Error& err);

// Splits a body into datagrams of at most `max_datagram` bytes. Fails (returns empty) only when
// the body exceeds kMaxBody.
std::vector<std::vector<uint8_t>> frame(Type type, uint16_t flags, uint64_t conv,
                                        std::span<const uint8_t> body,
                                        size_t max_datagram = kMaxDatagram);

std::vector<uint8_t> encode(const Offer&);
std::vector<uint8_t> encode(const ZeroRtt&);
std::vector<uint8_t> encode(const Pick&);
std::vector<uint8_t> encode(const Refuse&);
std::vector<uint8_t> encode(const Ack&);

bool decode(std::span<const uint8_t> body, Offer& out, Error& err);
bool decode(std::span<const uint8_t> body, ZeroRtt& out, Error& err);
bool decode(std::span<const uint8_t> body, Pick& out, Error& err);
bool decode(std::span<const uint8_t> body, Refuse& out, Error& err);
bool decode(std::span<const uint8_t> body, Ack& out, Error& err);

// A 64-bit fingerprint of an offer's canonical encoding: the zero-RTT cache key.
uint64_t fingerprint(const Offer&);

// Collects the parts of one message. Bounded: at most kMaxParts parts of one conversation.
class Reassembler {
  public:
    // Feed one datagram's header and payload. Returns true when the message is complete; then
    // body() holds it until the next feed. Parts of another conversation or type start over.
    bool feed(const Header& h, std::span<const uint8_t> payload);
    const std::vector<uint8_t>& body() const { return body_; }
    void reset();

  private:
    uint64_t conv_ = 0;
    Type type_ = Type::offer;
    uint8_t parts_ = 0, have_ = 0;
    uint16_t flags_ = 0;
    std::vector<std::vector<uint8_t>> got_;
    std::vector<uint8_t> body_;
};

std::string_view to_string(Type) noexcept;
std::string_view to_string(RefuseReason) noexcept;

} // namespace bertha::wire
