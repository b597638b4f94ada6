// bertha::wire: the negotiation wire codec. Every message round-trips unchanged, has exactly one
// encoding, survives being split into datagrams, and every malformed header or body is refused
// with the precise code and a reason a user can read.
#include "bertha/wire.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <initializer_list>
#include <string>
#include <vector>

using namespace bertha::wire;
using Bytes = std::vector<uint8_t>;

namespace {

constexpr uint64_t kConv = 0x0123456789abcdefull;

Offer sample_offer() {
    Offer o;
    o.slots.push_back(Slot{0x5348'4152,
                           Match::compositional,
                           "shard",
                           {Alt{0, RunsAt::server, "shard-xdp"}, Alt{1, RunsAt::server, "shard-tc"},
                            Alt{1, RunsAt::client, "shard-user"}}});
    o.slots.push_back(
        Slot{0x4b56'0001, Match::exact, "kv.serialize", {Alt{0, RunsAt::both, "v1"}}});
    o.slots.push_back(
        Slot{0xffff'ffff,
             Match::compositional,
             "cache_hot-keys",
             {Alt{3, RunsAt::server, "cache-xdp"}, Alt{200, RunsAt::both, "cache-user"}}});
    return o;
}

ZeroRtt sample_zero_rtt() {
    return ZeroRtt{0xfeed'face'cafe'beefull, sample_offer()};
}

Pick sample_pick() {
    Pick p;
    p.nonce = 0x8000'0000'0000'0001ull;
    p.choices.push_back(Choice{0x5348'4152, "shard-xdp", RunsAt::server, {0, 1, 2, 0xff, 0x80}});
    p.choices.push_back(Choice{0x4b56'0001, "v1", RunsAt::both, {}});
    p.choices.push_back(Choice{0xffff'ffff, "cache-user", RunsAt::client, Bytes(300, 0xa5)});
    return p;
}

Refuse sample_refuse() {
    return Refuse{RefuseReason::no_compatible,
                  2,
                  0xffff'ffff,
                  "cache_hot-keys",
                  {"cache-xdp", "cache-user"},
                  {"cache-user-v2"},
                  "no implementation of cache_hot-keys is accepted by both ends (try v2)"};
}

Ack sample_ack() {
    return Ack{0xfeed'face'cafe'beefull};
}

Type type_of(const Offer&) {
    return Type::offer;
}
Type type_of(const ZeroRtt&) {
    return Type::zero_rtt;
}
Type type_of(const Pick&) {
    return Type::pick;
}
Type type_of(const Refuse&) {
    return Type::refuse;
}
Type type_of(const Ack&) {
    return Type::ack;
}

// Recomputes a hand-edited datagram's checksum, so that only the field under test is wrong.
void reseal(Bytes& d) {
    d[12] = d[13] = d[14] = d[15] = 0;
    uint32_t crc = crc32c(d);
    d[12] = uint8_t(crc >> 24), d[13] = uint8_t(crc >> 16), d[14] = uint8_t(crc >> 8),
    d[15] = uint8_t(crc);
}

// One datagram carrying `body`, its header fields overwritable before resealing.
Bytes datagram(Type t, const Bytes& body, uint16_t flags = 0) {
    auto parts = frame(t, flags, kConv, body);
    REQUIRE(parts.size() == 1);
    return parts[0];
}

// Parses every datagram, feeds the reassembler in the given order and returns the body once the
// last one completes it; fails the test if it completes early or never.
Bytes reassemble(const std::vector<Bytes>& dgrams, Type want_type, uint16_t want_flags = 0) {
    Reassembler r;
    for (size_t i = 0; i < dgrams.size(); ++i) {
        Header h;
        Error err;
        REQUIRE_MESSAGE(parse_header(dgrams[i], h, err), err.what);
        CHECK(h.type == want_type);
        CHECK(h.flags == want_flags);
        CHECK(h.conv == kConv);
        CHECK(h.length == dgrams[i].size());
        CHECK(h.parts == dgrams.size());
        bool done = r.feed(h, std::span(dgrams[i]).subspan(kHeaderSize));
        REQUIRE(done == (i + 1 == dgrams.size()));
    }
    return r.body();
}

template <class M> M through_the_wire(const M& m, uint16_t flags = 0) {
    Bytes body = encode(m);
    auto dgrams = frame(type_of(m), flags, kConv, body);
    REQUIRE(!dgrams.empty());
    Bytes got = reassemble(dgrams, type_of(m), flags);
    CHECK(got == body);
    M out;
    Error err;
    REQUIRE_MESSAGE(decode(got, out, err), err.what);
    return out;
}

void sample(Offer& m) {
    m = sample_offer();
}
void sample(ZeroRtt& m) {
    m = sample_zero_rtt();
}
void sample(Pick& m) {
    m = sample_pick();
}
void sample(Refuse& m) {
    m = sample_refuse();
}
void sample(Ack& m) {
    m = sample_ack();
}

// Decoding must fail with `code`, a message containing `why`, and leave `out` as it was.
template <class M> void refused(const Bytes& body, Errc code, const std::string& why) {
    M out;
    sample(out);
    const M before = out;
    Error err;
    CHECK_FALSE(decode(body, out, err));
    CHECK(err.code == code);
    CHECK_MESSAGE(err.what.find(why) != std::string::npos, err.what, " lacks '", why, "'");
    CHECK(err.offset <= body.size());
    CHECK(out == before);
}

void header_refused(const Bytes& d, Errc code, size_t offset, const std::string& why) {
    Header h;
    Error err;
    CHECK_FALSE(parse_header(d, h, err));
    CHECK(err.code == code);
    CHECK(err.offset == offset);
    CHECK_MESSAGE(err.what.find(why) != std::string::npos, err.what, " lacks '", why, "'");
}

// 40-character implementation names, unique within the slot.
Offer big_offer(size_t slots, size_t alts) {
    Offer o;
    for (size_t s = 0; s < slots; ++s) {
        Slot slot{uint32_t(s), Match(s % 2), "chunnel-" + std::to_string(s), {}};
        for (size_t a = 0; a < alts; ++a) {
            std::string name = "impl-" + std::to_string(s) + "-" + std::to_string(a) + "-";
            name.resize(40, 'x');
            slot.alts.push_back(Alt{uint8_t(a), RunsAt(a % 3), name});
        }
        o.slots.push_back(std::move(slot));
    }
    return o;
}

} // namespace

// ---- round trips ------------------------------------------------------------------------------

TEST_CASE("wire: an offer with several slots and alternatives round-trips unchanged") {
    CHECK(through_the_wire(sample_offer()) == sample_offer());
    CHECK(through_the_wire(Offer{}) == Offer{}); // an empty stack is a valid offer
}

TEST_CASE("wire: a zero-rtt message with its nonce and offer round-trips unchanged") {
    CHECK(through_the_wire(sample_zero_rtt()) == sample_zero_rtt());
}

TEST_CASE("wire: a pick with parameters and the zero-rtt-refused flag round-trips unchanged") {
    CHECK(through_the_wire(sample_pick()) == sample_pick());
    CHECK(through_the_wire(sample_pick(), flag_zero_rtt_refused) == sample_pick());
    Pick max_params = sample_pick();
    max_params.choices[2].params.assign(kMaxParams, 0x5a);
    CHECK(through_the_wire(max_params) == max_params);
}

TEST_CASE("wire: a refusal with both offered lists and a message round-trips unchanged") {
    CHECK(through_the_wire(sample_refuse()) == sample_refuse());
    Refuse empty_lists = sample_refuse();
    empty_lists.reason = RefuseReason::malformed;
    empty_lists.client_offered.clear();
    empty_lists.server_offered.clear();
    empty_lists.message.clear();
    CHECK(through_the_wire(empty_lists) == empty_lists);
}

TEST_CASE("wire: an ack round-trips unchanged") {
    CHECK(through_the_wire(sample_ack()) == sample_ack());
    CHECK(through_the_wire(Ack{~0ull}) == Ack{~0ull});
}

TEST_CASE("wire: a framed datagram's header carries exactly what frame was given") {
    Bytes body = encode(sample_pick());
    Bytes d = datagram(Type::pick, body, flag_zero_rtt_refused);
    CHECK(d.size() == kHeaderSize + body.size());
    Header h;
    Error err;
    REQUIRE(parse_header(d, h, err));
    CHECK(h.type == Type::pick);
    CHECK(h.part == 0);
    CHECK(h.parts == 1);
    CHECK(h.length == d.size());
    CHECK(h.flags == flag_zero_rtt_refused);
    CHECK(h.conv == kConv);
    CHECK(Bytes(d.begin(), d.begin() + 12) == Bytes{0xC4, 0x9B, 0x1E, 0xB7, 1, 2, 0, 1,
                                                    uint8_t(d.size() >> 8), uint8_t(d.size()), 0,
                                                    1});
    CHECK(Bytes(d.begin() + 16, d.begin() + 24) ==
          Bytes{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef});
    CHECK(Bytes(d.begin() + kHeaderSize, d.end()) == body);
}

// ---- canonical encoding -----------------------------------------------------------------------

TEST_CASE("wire: the encoding of a small offer is exactly the documented bytes") {
    Offer o{{Slot{0x01020304, Match::compositional, "ab", {Alt{7, RunsAt::server, "x"}}}}};
    CHECK(encode(o) == Bytes{1,              // one slot
                             1, 2, 3, 4,     // type id, big-endian
                             1,              // compositional
                             2, 'a', 'b',    // chunnel name
                             1,              // one implementation
                             7, 2, 1, 'x'}); // rank, runs at server, name
    CHECK(encode(Ack{0x0102030405060708ull}) == Bytes{1, 2, 3, 4, 5, 6, 7, 8});
}

TEST_CASE("wire: decoding then re-encoding every message body gives back the same bytes") {
    auto same = [](auto msg) {
        Bytes b = encode(msg);
        decltype(msg) back;
        Error err;
        REQUIRE_MESSAGE(decode(b, back, err), err.what);
        CHECK(encode(back) == b);
    };
    same(sample_offer());
    same(Offer{});
    same(big_offer(8, 16));
    same(sample_zero_rtt());
    same(sample_pick());
    same(Pick{});
    same(sample_refuse());
    same(sample_ack());
}

TEST_CASE("wire: the same offer always encodes to the same bytes") {
    Offer a = sample_offer(), b = sample_offer();
    Bytes first = encode(a);
    CHECK(encode(a) == first);
    CHECK(encode(b) == first);
    Offer copy = a;
    CHECK(encode(copy) == first);
    CHECK(encode(ZeroRtt{1, a}) == encode(ZeroRtt{1, b}));
}

TEST_CASE("wire: offer fingerprints are equal for equal offers and differ when one field does") {
    const Offer base = sample_offer();
    CHECK(fingerprint(base) == fingerprint(sample_offer()));
    CHECK(fingerprint(base) != fingerprint(Offer{}));

    std::vector<std::pair<const char*, Offer>> changed;
    auto with = [&](const char* what, auto&& edit) {
        Offer o = base;
        edit(o);
        REQUIRE(!(o == base));
        changed.emplace_back(what, std::move(o));
    };
    with("type id", [](Offer& o) { o.slots[1].type_id ^= 1; });
    with("match", [](Offer& o) { o.slots[0].match = Match::exact; });
    with("chunnel name", [](Offer& o) { o.slots[1].chunnel = "kv.serializf"; });
    with("rank", [](Offer& o) { o.slots[2].alts[1].rank = 201; });
    with("runs-at", [](Offer& o) { o.slots[0].alts[2].runs_at = RunsAt::both; });
    with("implementation name", [](Offer& o) { o.slots[0].alts[1].impl = "shard-tx"; });
    with("one more implementation", [](Offer& o) {
        o.slots[1].alts.push_back(Alt{1, RunsAt::both, "v2"});
    });
    with("one implementation fewer", [](Offer& o) { o.slots[0].alts.pop_back(); });
    with("one slot fewer", [](Offer& o) { o.slots.pop_back(); });
    with("slots swapped", [](Offer& o) { std::swap(o.slots[0], o.slots[2]); });
    with("equal-rank implementations swapped",
         [](Offer& o) { std::swap(o.slots[0].alts[1], o.slots[0].alts[2]); });

    for (auto& [what, o] : changed) {
        CAPTURE(what);
        CHECK(fingerprint(o) != fingerprint(base));
        CHECK(fingerprint(o) == fingerprint(Offer(o)));
    }
}

// ---- splitting into datagrams -----------------------------------------------------------------

// 48 slots x 16 implementations with 40-character names: 33,831 bytes, 29 parts (28 full).
TEST_CASE("wire: an offer larger than one datagram is split into parts of at most kMaxDatagram") {
    Offer o = big_offer(48, 16);
    Bytes body = encode(o);
    REQUIRE(body.size() == 33831);
    auto dgrams = frame(Type::offer, 0, kConv, body);
    REQUIRE(dgrams.size() == 29);
    size_t payload = 0;
    for (size_t i = 0; i < dgrams.size(); ++i) {
        CAPTURE(i);
        CHECK(dgrams[i].size() <= kMaxDatagram);
        CHECK(dgrams[i][6] == i);
        CHECK(dgrams[i][7] == dgrams.size());
        payload += dgrams[i].size() - kHeaderSize;
    }
    CHECK(dgrams.front().size() == kMaxDatagram);
    CHECK(payload == body.size());

    Bytes got = reassemble(dgrams, Type::offer);
    CHECK(got == body);
    Offer back;
    Error err;
    REQUIRE_MESSAGE(decode(got, back, err), err.what);
    CHECK(back == o);
}

TEST_CASE("wire: a split offer reassembles when its parts arrive out of order") {
    Bytes body = encode(big_offer(48, 16));
    auto dgrams = frame(Type::offer, 0, kConv, body);
    REQUIRE(dgrams.size() > 2);

    auto reversed = dgrams;
    std::reverse(reversed.begin(), reversed.end());
    CHECK(reassemble(reversed, Type::offer) == body);

    auto shuffled = dgrams; // a fixed interleaving: odd parts first, then even
    std::stable_partition(shuffled.begin(), shuffled.end(),
                          [](const Bytes& d) { return d[6] % 2; });
    CHECK(reassemble(shuffled, Type::offer) == body);
}

TEST_CASE("wire: a duplicated part neither completes nor corrupts a split message") {
    Bytes body = encode(big_offer(48, 16));
    auto dgrams = frame(Type::offer, 0, kConv, body);
    REQUIRE(dgrams.size() > 3);

    // A forged copy of part 1 with different bytes (same header, checksum resealed): the first
    // copy is kept, the second is ignored.
    Bytes forged = dgrams[1];
    std::fill(forged.begin() + kHeaderSize, forged.end(), uint8_t('z'));
    reseal(forged);

    Reassembler r;
    auto feed = [&](const Bytes& d) {
        Header h;
        Error err;
        REQUIRE_MESSAGE(parse_header(d, h, err), err.what);
        return r.feed(h, std::span(d).subspan(kHeaderSize));
    };
    for (size_t i = 0; i + 1 < dgrams.size(); ++i) {
        CHECK_FALSE(feed(dgrams[i]));
        CHECK_FALSE(feed(dgrams[i])); // retransmitted: not counted twice
        if (i >= 1) CHECK_FALSE(feed(forged));
    }
    CHECK(feed(dgrams.back()));
    CHECK(r.body() == body);
}

TEST_CASE("wire: a body of exactly kMaxBody is framed in kMaxParts parts; one byte more is not") {
    Bytes body(kMaxBody, 0x42);
    auto dgrams = frame(Type::pick, 0, kConv, body);
    REQUIRE(dgrams.size() == kMaxParts);
    for (auto& d : dgrams) CHECK(d.size() == kMaxDatagram);
    CHECK(reassemble(dgrams, Type::pick) == body);

    body.push_back(0x42);
    CHECK(frame(Type::pick, 0, kConv, body).empty());
}

TEST_CASE("wire: an empty body is one header-only datagram") {
    auto dgrams = frame(Type::offer, 0, kConv, {});
    REQUIRE(dgrams.size() == 1);
    CHECK(dgrams[0].size() == kHeaderSize);
    CHECK(reassemble(dgrams, Type::offer).empty());
}

// ---- header rejections ------------------------------------------------------------------------

TEST_CASE("wire: application data without the magic is not negotiation") {
    std::string http = "GET /index.html HTTP/1.1\r\nHost: 198.18.0.1\r\n\r\n";
    header_refused(Bytes(http.begin(), http.end()), Errc::not_negotiation, 0, "application data");
    Bytes d = datagram(Type::ack, encode(sample_ack()));
    d[3] ^= 0x01; // one bit off the magic
    header_refused(d, Errc::not_negotiation, 0, "no negotiation magic");
    header_refused(Bytes(d.begin(), d.begin() + kHeaderSize - 1), Errc::not_negotiation, 0,
                   "application data");
}

TEST_CASE("wire: every version other than 1 is refused, naming both versions") {
    Bytes good = datagram(Type::offer, encode(sample_offer()));
    for (int v = 0; v < 256; ++v) {
        if (v == kVersion) continue;
        CAPTURE(v);
        Bytes d = good;
        d[4] = uint8_t(v);
        reseal(d);
        header_refused(d, Errc::bad_version, 4,
                       "version " + std::to_string(v) + " is not supported (this build speaks 1)");
    }
}

TEST_CASE("wire: every unknown message type is refused") {
    Bytes good = datagram(Type::offer, encode(sample_offer()));
    for (int t = 0; t < 256; ++t) {
        if (t >= 1 && t <= 5) continue;
        CAPTURE(t);
        Bytes d = good;
        d[5] = uint8_t(t);
        reseal(d);
        header_refused(d, Errc::bad_type, 5, "message type " + std::to_string(t) + " unknown");
    }
}

TEST_CASE("wire: impossible part numbers are refused") {
    Bytes good = datagram(Type::offer, encode(sample_offer()));
    struct Case {
        uint8_t part, parts;
    };
    for (Case c : {Case{1, 1}, Case{5, 3}, Case{255, 255}, Case{0, 0}, Case{0, kMaxParts + 1},
                   Case{31, 255}}) {
        CAPTURE(int(c.part));
        CAPTURE(int(c.parts));
        Bytes d = good;
        d[6] = c.part;
        d[7] = c.parts;
        reseal(d);
        header_refused(d, Errc::bad_part, 6,
                       "part " + std::to_string(c.part) + " of " + std::to_string(c.parts) +
                           " is impossible (at most " + std::to_string(kMaxParts) + " parts)");
    }
    Bytes last = good; // the largest legal numbering is accepted
    last[6] = kMaxParts - 1;
    last[7] = kMaxParts;
    reseal(last);
    Header h;
    Error err;
    CHECK(parse_header(last, h, err));
}

TEST_CASE("wire: a length field that disagrees with the datagram is refused") {
    Bytes good = datagram(Type::offer, encode(sample_offer()));
    const size_t n = good.size();
    for (int delta : {-1, +1, -int(n), 0x1000}) {
        CAPTURE(delta);
        Bytes d = good;
        size_t claimed = size_t(int(n) + delta);
        d[8] = uint8_t(claimed >> 8), d[9] = uint8_t(claimed);
        reseal(d);
        header_refused(d, Errc::bad_length, 8,
                       "length field says " + std::to_string(claimed) + " bytes, datagram has " +
                           std::to_string(n));
    }
    Bytes longer = good; // a byte appended after framing
    longer.push_back(0);
    header_refused(longer, Errc::bad_length, 8,
                   "says " + std::to_string(n) + " bytes, datagram has " + std::to_string(n + 1));
}

TEST_CASE("wire: a datagram over kMaxDatagram is refused even when its length field agrees") {
    Bytes d = datagram(Type::pick, encode(sample_pick()));
    d.resize(kMaxDatagram + 1, 0);
    d[8] = uint8_t(d.size() >> 8), d[9] = uint8_t(d.size());
    reseal(d);
    header_refused(d, Errc::too_large, 8, "1201 bytes, more than 1200");
}

TEST_CASE("wire: unknown flag bits, and any flag on a message other than a pick, are refused") {
    Bytes pick = datagram(Type::pick, encode(sample_pick()));
    for (int bit = 1; bit < 16; ++bit) {
        CAPTURE(bit);
        Bytes d = pick;
        uint16_t flags = uint16_t(1u << bit);
        d[10] = uint8_t(flags >> 8), d[11] = uint8_t(flags);
        reseal(d);
        header_refused(d, Errc::bad_flags, 10, "unknown flag bits " + std::to_string(flags));
    }
    for (Type t : {Type::offer, Type::refuse, Type::zero_rtt, Type::ack}) {
        CAPTURE(std::string(to_string(t)));
        Bytes d = datagram(t, {}, flag_zero_rtt_refused);
        header_refused(d, Errc::bad_flags, 10, "flags are only defined on a pick");
    }
}

TEST_CASE("wire: a single flipped bit anywhere in a datagram is never accepted") {
    const Bytes good = datagram(Type::pick, encode(sample_pick()), flag_zero_rtt_refused);
    Header h;
    Error err;
    REQUIRE(parse_header(good, h, err));
    size_t refused = 0;
    for (size_t bit = 0; bit < good.size() * 8; ++bit) {
        Bytes d = good;
        d[bit / 8] ^= uint8_t(1u << (bit % 8));
        CAPTURE(bit);
        bool accepted = parse_header(d, h, err);
        CHECK_FALSE(accepted);
        refused += !accepted;
        // Past the fields the header checks itself (the checksum, conversation and payload),
        // only the checksum can catch the change.
        if (bit / 8 >= 12) CHECK(err.code == Errc::bad_checksum);
        if (err.code == Errc::bad_checksum)
            CHECK(err.what.find("checksum mismatch") != err.what.npos);
    }
    CHECK(refused == good.size() * 8);
}

// ---- body rejections --------------------------------------------------------------------------

TEST_CASE("wire: every truncation of every valid body is refused as truncated") {
    auto each_prefix = [](auto msg) {
        using M = decltype(msg);
        Bytes b = encode(msg);
        for (size_t n = 0; n < b.size(); ++n) {
            CAPTURE(n);
            refused<M>(Bytes(b.begin(), b.begin() + long(n)), Errc::truncated, "truncated in ");
        }
    };
    each_prefix(sample_offer());
    each_prefix(sample_zero_rtt());
    each_prefix(sample_pick());
    each_prefix(sample_refuse());
    each_prefix(sample_ack());
}

TEST_CASE("wire: trailing bytes after any message are refused") {
    auto with_tail = [](auto msg) {
        using M = decltype(msg);
        Bytes b = encode(msg);
        b.push_back(0);
        refused<M>(b, Errc::trailing_bytes, "1 bytes after the end of the message");
        Bytes copy = encode(msg); // a whole second message after the first
        b.insert(b.end(), copy.begin(), copy.end());
        refused<M>(b, Errc::trailing_bytes, "after the end of the message");
    };
    with_tail(sample_offer());
    with_tail(sample_zero_rtt());
    with_tail(sample_pick());
    with_tail(sample_refuse());
    with_tail(sample_ack());
}

TEST_CASE("wire: counts over the limits are refused") {
    Offer slots = big_offer(kMaxSlots + 1, 1);
    refused<Offer>(encode(slots), Errc::too_large, "65 chunnels, more than 64");
    refused<ZeroRtt>(encode(ZeroRtt{1, slots}), Errc::too_large, "65 chunnels, more than 64");
    slots.slots.pop_back();
    Offer ok;
    Error err;
    CHECK(decode(encode(slots), ok, err)); // exactly kMaxSlots is fine

    Offer alts = big_offer(2, kMaxAlts + 1);
    refused<Offer>(encode(alts), Errc::bad_field, "slot 0: 17 implementations, outside 1..16");
    Offer none = sample_offer();
    none.slots[1].alts.clear();
    refused<Offer>(encode(none), Errc::bad_field, "slot 1: 0 implementations, outside 1..16");

    Pick choices;
    for (uint32_t i = 0; i <= kMaxSlots; ++i)
        choices.choices.push_back({i, "v1", RunsAt::both, {}});
    refused<Pick>(encode(choices), Errc::too_large, "65 choices, more than 64");

    Refuse client = sample_refuse();
    client.client_offered.assign(kMaxAlts + 1, "a");
    refused<Refuse>(encode(client), Errc::too_large, "17 names, more than 16");
    Refuse server = sample_refuse();
    server.server_offered.assign(kMaxAlts + 1, "a");
    refused<Refuse>(encode(server), Errc::too_large, "17 names, more than 16");

    Refuse text = sample_refuse();
    text.message.assign(kMaxMessageText + 1, 'm');
    refused<Refuse>(encode(text), Errc::too_large, "message is 513 bytes, more than 512");
    text.message.pop_back();
    Refuse back;
    CHECK(decode(encode(text), back, err));
    CHECK(back == text);
}

TEST_CASE("wire: names that are empty, too long or have a forbidden character are refused") {
    auto offer_named = [](std::string chunnel, std::string impl) {
        Offer o = sample_offer();
        o.slots[1].chunnel = std::move(chunnel);
        o.slots[1].alts[0].impl = std::move(impl);
        return encode(o);
    };
    refused<Offer>(offer_named("", "v1"), Errc::bad_field,
                   "chunnel name length 0 is outside 1..48");
    refused<Offer>(offer_named(std::string(kMaxName + 1, 'a'), "v1"), Errc::bad_field,
                   "chunnel name length 49 is outside 1..48");
    refused<Offer>(offer_named("kv", ""), Errc::bad_field,
                   "implementation name length 0 is outside 1..48");
    refused<Offer>(offer_named("kv", std::string(kMaxName + 1, 'a')), Errc::bad_field,
                   "implementation name length 49 is outside 1..48");
    Offer longest;
    Error err;
    CHECK(
        decode(offer_named(std::string(kMaxName, 'a'), std::string(kMaxName, 'b')), longest, err));

    for (char c : {'A', 'Z', ' ', '/', ':', '@', '\t', '\0', '\x7f', '\x80', '\xff'}) {
        CAPTURE(int(uint8_t(c)));
        std::string bad = std::string("kv") + c + "x";
        refused<Offer>(offer_named(bad, "v1"), Errc::bad_field,
                       "chunnel name has a character outside [a-z0-9._-]");
        refused<Offer>(offer_named("kv", bad), Errc::bad_field,
                       "implementation name has a character outside [a-z0-9._-]");
        Pick p = sample_pick();
        p.choices[1].impl = bad;
        refused<Pick>(encode(p), Errc::bad_field, "implementation name has a character outside");
        Refuse r = sample_refuse();
        r.server_offered[0] = bad;
        refused<Refuse>(encode(r), Errc::bad_field, "offered name has a character outside");
    }
}

TEST_CASE("wire: unknown match, runs-at and refusal reason values are refused") {
    Offer match = sample_offer();
    match.slots[2].match = Match(2);
    refused<Offer>(encode(match), Errc::bad_field, "slot 2: match rule 2 unknown");
    match.slots[2].match = Match(255);
    refused<Offer>(encode(match), Errc::bad_field, "slot 2: match rule 255 unknown");

    Offer where = sample_offer();
    where.slots[0].alts[1].runs_at = RunsAt(3);
    refused<Offer>(encode(where), Errc::bad_field, "slot 0 implementation 1: runs-at 3 unknown");

    Pick pick = sample_pick();
    pick.choices[2].runs_at = RunsAt(3);
    refused<Pick>(encode(pick), Errc::bad_field, "choice 2: runs-at 3 unknown");

    for (int reason : {0, 5, 255}) {
        CAPTURE(reason);
        Refuse r = sample_refuse();
        r.reason = RefuseReason(reason);
        refused<Refuse>(encode(r), Errc::bad_field,
                        "reason " + std::to_string(reason) + " unknown");
    }
}

TEST_CASE("wire: implementations out of rank order or offered twice are not canonical") {
    Offer order = sample_offer();
    std::swap(order.slots[0].alts[0], order.slots[0].alts[2]); // ranks 1, 1, 0
    refused<Offer>(encode(order), Errc::not_canonical,
                   "slot 0: implementations are not in preference (rank) order");
    refused<ZeroRtt>(encode(ZeroRtt{1, order}), Errc::not_canonical, "rank");

    Offer twice = sample_offer();
    twice.slots[2].alts[1].impl = twice.slots[2].alts[0].impl;
    refused<Offer>(encode(twice), Errc::not_canonical,
                   "slot 2: implementation 'cache-xdp' offered twice");

    // Equal ranks in either order are two different, valid offers (the server decides).
    Offer swapped = sample_offer();
    std::swap(swapped.slots[0].alts[1], swapped.slots[0].alts[2]);
    Offer back;
    Error err;
    CHECK(decode(encode(swapped), back, err));
    CHECK(back == swapped);
}

TEST_CASE("wire: pick parameters over kMaxParams are refused") {
    Pick p = sample_pick();
    p.choices[0].params.assign(kMaxParams + 1, 1);
    refused<Pick>(encode(p), Errc::too_large,
                  "parameters is " + std::to_string(kMaxParams + 1) + " bytes, more than " +
                      std::to_string(kMaxParams));
}

TEST_CASE("wire: a refusal message with a non-printable byte is refused") {
    for (char c : {'\n', '\r', '\t', '\0', '\x1b', '\x7f', '\x80', '\xe2'}) {
        CAPTURE(int(uint8_t(c)));
        Refuse r = sample_refuse();
        r.message = "no implementation" + std::string(1, c) + "matched";
        refused<Refuse>(encode(r), Errc::bad_field, "message has a non-printable byte");
    }
}

// ---- helpers ----------------------------------------------------------------------------------

TEST_CASE("wire: looks_like_negotiation needs a whole header that starts with the magic") {
    Bytes magic{0xC4, 0x9B, 0x1E, 0xB7};
    auto looks = [](const Bytes& b) { return looks_like_negotiation(std::as_bytes(std::span(b))); };
    CHECK_FALSE(looks({}));
    CHECK_FALSE(looks(magic));
    Bytes d = magic;
    d.resize(kHeaderSize - 1);
    CHECK_FALSE(looks(d));
    d.push_back(0);
    CHECK(looks(d));
    for (size_t i = 0; i < 4; ++i) {
        Bytes other = d;
        other[i] ^= 0x80;
        CHECK_FALSE(looks(other));
    }
    CHECK(looks(datagram(Type::ack, encode(sample_ack()))));
}

TEST_CASE("wire: crc32c gives the standard check value and can be computed in pieces") {
    std::string check = "123456789";
    Bytes b(check.begin(), check.end());
    CHECK(crc32c(b) == 0xE3069283u);
    CHECK(crc32c({}) == 0u);
    CHECK(crc32c(std::span(b).subspan(4), crc32c(std::span(b).first(4))) == 0xE3069283u);
}
