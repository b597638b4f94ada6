#include "bertha/wire.hpp"

#include <array>
#include <cstring>

namespace bertha::wire {

namespace {

// ---- CRC-32C (Castagnoli), table-driven: negotiation is not a hot path ----------------------
constexpr std::array<uint32_t, 256> make_crc_table() {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
        uint32_t c = i;
        for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        t[i] = c;
    }
    return t;
}
constexpr auto kCrcTable = make_crc_table();

// ---- writing ----------------------------------------------------------------------------------
class Writer {
  public:
    void u8(uint8_t v) { b_.push_back(v); }
    void u16(uint16_t v) {
        u8(uint8_t(v >> 8));
        u8(uint8_t(v));
    }
    void u32(uint32_t v) {
        u16(uint16_t(v >> 16));
        u16(uint16_t(v));
    }
    void u64(uint64_t v) {
        u32(uint32_t(v >> 32));
        u32(uint32_t(v));
    }
    void str8(std::string_view s) { // callers bound s to kMaxName
        u8(uint8_t(s.size()));
        b_.insert(b_.end(), s.begin(), s.end());
    }
    void str16(std::string_view s) {
        u16(uint16_t(s.size()));
        b_.insert(b_.end(), s.begin(), s.end());
    }
    void bytes16(std::span<const uint8_t> s) {
        u16(uint16_t(s.size()));
        b_.insert(b_.end(), s.begin(), s.end());
    }
    std::vector<uint8_t> take() { return std::move(b_); }

  private:
    std::vector<uint8_t> b_;
};

// ---- reading: every read is bounds-checked; the first failure sticks --------------------------
class Reader {
  public:
    Reader(std::span<const uint8_t> b, const char* what, Error& err)
        : b_(b), what_(what), err_(err) {}

    bool ok() const { return ok_; }
    bool fail(Errc code, const std::string& why) {
        if (ok_) err_ = Error{code, pos_, std::string(what_) + ": " + why};
        ok_ = false;
        return false;
    }
    bool need(size_t n, const char* field) {
        if (!ok_) return false;
        if (b_.size() - pos_ < n)
            return fail(Errc::truncated, std::string("truncated in ") + field + " (needs " +
                                             std::to_string(n) + " bytes at offset " +
                                             std::to_string(pos_) + ", body has " +
                                             std::to_string(b_.size()) + ")");
        return true;
    }
    uint8_t u8(const char* field) {
        if (!need(1, field)) return 0;
        return b_[pos_++];
    }
    uint16_t u16(const char* field) {
        if (!need(2, field)) return 0;
        uint16_t v = uint16_t(b_[pos_] << 8 | b_[pos_ + 1]);
        pos_ += 2;
        return v;
    }
    uint32_t u32(const char* field) {
        uint32_t hi = u16(field);
        return hi << 16 | u16(field);
    }
    uint64_t u64(const char* field) {
        uint64_t hi = u32(field);
        return hi << 32 | u32(field);
    }
    // A name: 1..kMaxName characters of [a-z0-9._-].
    std::string name(const char* field) {
        uint8_t n = u8(field);
        if (!ok_) return {};
        if (n == 0 || n > kMaxName)
            return fail(Errc::bad_field, std::string(field) + " length " + std::to_string(n) +
                                             " is outside 1.." + std::to_string(kMaxName)),
                   std::string();
        if (!need(n, field)) return {};
        std::string s(reinterpret_cast<const char*>(b_.data() + pos_), n);
        for (char c : s)
            if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                  c == '-'))
                return fail(Errc::bad_field,
                            std::string(field) + " has a character outside [a-z0-9._-]"),
                       std::string();
        pos_ += n;
        return s;
    }
    // Free text (a refusal's message): printable ASCII only, so it is safe to show a user.
    std::string text(const char* field, size_t max) {
        uint16_t n = u16(field);
        if (!ok_) return {};
        if (n > max)
            return fail(Errc::too_large, std::string(field) + " is " + std::to_string(n) +
                                             " bytes, more than " + std::to_string(max)),
                   std::string();
        if (!need(n, field)) return {};
        std::string s(reinterpret_cast<const char*>(b_.data() + pos_), n);
        for (char c : s)
            if (c < 0x20 || c > 0x7e)
                return fail(Errc::bad_field, std::string(field) + " has a non-printable byte"),
                       std::string();
        pos_ += n;
        return s;
    }
    std::vector<uint8_t> bytes16(const char* field, size_t max) {
        uint16_t n = u16(field);
        if (!ok_) return {};
        if (n > max)
            return fail(Errc::too_large, std::string(field) + " is " + std::to_string(n) +
                                             " bytes, more than " + std::to_string(max)),
                   std::vector<uint8_t>();
        if (!need(n, field)) return {};
        std::vector<uint8_t> v(b_.begin() + long(pos_), b_.begin() + long(pos_ + n));
        pos_ += n;
        return v;
    }
    bool finish() {
        if (ok_ && pos_ != b_.size())
            return fail(Errc::trailing_bytes,
                        std::to_string(b_.size() - pos_) + " bytes after the end of the message");
        return ok_;
    }

  private:
    std::span<const uint8_t> b_;
    size_t pos_ = 0;
    const char* what_;
    Error& err_;
    bool ok_ = true;
};

bool valid_match(uint8_t v) {
    return v <= uint8_t(Match::compositional);
}
bool valid_runs_at(uint8_t v) {
    return v <= uint8_t(RunsAt::server);
}

void write_offer(Writer& w, const Offer& o) {
    w.u8(uint8_t(o.slots.size()));
    for (const Slot& s : o.slots) {
        w.u32(s.type_id);
        w.u8(uint8_t(s.match));
        w.str8(s.chunnel);
        w.u8(uint8_t(s.alts.size()));
        for (const Alt& a : s.alts) {
            w.u8(a.rank);
            w.u8(uint8_t(a.runs_at));
            w.str8(a.impl);
        }
    }
}

bool read_offer(Reader& r, Offer& o) {
    uint8_t nslots = r.u8("slot count");
    if (r.ok() && nslots > kMaxSlots)
        return r.fail(Errc::too_large,
                      std::to_string(nslots) + " chunnels, more than " + std::to_string(kMaxSlots));
    o.slots.clear();
    for (size_t i = 0; r.ok() && i < nslots; ++i) {
        Slot s;
        std::string at = "slot " + std::to_string(i);
        s.type_id = r.u32("type id");
        uint8_t m = r.u8("match");
        if (r.ok() && !valid_match(m))
            return r.fail(Errc::bad_field, at + ": match rule " + std::to_string(m) + " unknown");
        s.match = Match(m);
        s.chunnel = r.name("chunnel name");
        uint8_t nalts = r.u8("implementation count");
        if (r.ok() && (nalts == 0 || nalts > kMaxAlts))
            return r.fail(Errc::bad_field, at + ": " + std::to_string(nalts) +
                                               " implementations, outside 1.." +
                                               std::to_string(kMaxAlts));
        for (size_t k = 0; r.ok() && k < nalts; ++k) {
            Alt a;
            a.rank = r.u8("rank");
            uint8_t where = r.u8("runs-at");
            if (r.ok() && !valid_runs_at(where))
                return r.fail(Errc::bad_field, at + " implementation " + std::to_string(k) +
                                                   ": runs-at " + std::to_string(where) +
                                                   " unknown");
            a.runs_at = RunsAt(where);
            a.impl = r.name("implementation name");
            if (!r.ok()) return false;
            if (!s.alts.empty() && a.rank < s.alts.back().rank)
                return r.fail(Errc::not_canonical,
                              at + ": implementations are not in preference (rank) order");
            for (const Alt& prev : s.alts)
                if (prev.impl == a.impl)
                    return r.fail(Errc::not_canonical,
                                  at + ": implementation '" + a.impl + "' offered twice");
            s.alts.push_back(std::move(a));
        }
        o.slots.push_back(std::move(s));
    }
    return r.ok();
}

template <class T>
bool decode_with(std::span<const uint8_t> body, T& out, Error& err, const char* what, auto&& read) {
    Reader r(body, what, err);
    T tmp;
    read(r, tmp);
    if (!r.finish()) return false;
    out = std::move(tmp);
    return true;
}

} // namespace

uint32_t crc32c(std::span<const uint8_t> data, uint32_t crc) noexcept {
    crc = ~crc;
    for (uint8_t b : data) crc = kCrcTable[(crc ^ b) & 0xff] ^ (crc >> 8);
    return ~crc;
}

bool parse_header(std::span<const uint8_t> d, Header& h, Error& err) {
    auto fail = [&](Errc c, size_t off, std::string why) {
        err = Error{c, off, "negotiation header: " + std::move(why)};
        return false;
    };
    if (!looks_like_negotiation(std::as_bytes(d)))
        return fail(Errc::not_negotiation, 0, "no negotiation magic: application data");
    uint8_t version = d[4];
    if (version != kVersion)
        return fail(Errc::bad_version, 4,
                    "version " + std::to_string(version) + " is not supported (this build speaks " +
                        std::to_string(kVersion) + ")");
    uint8_t type = d[5];
    if (type < uint8_t(Type::offer) || type > uint8_t(Type::ack))
        return fail(Errc::bad_type, 5, "message type " + std::to_string(type) + " unknown");
    h.type = Type(type);
    h.part = d[6];
    h.parts = d[7];
    if (h.parts == 0 || h.parts > kMaxParts || h.part >= h.parts)
        return fail(Errc::bad_part, 6,
                    "part " + std::to_string(h.part) + " of " + std::to_string(h.parts) +
                        " is impossible (at most " + std::to_string(kMaxParts) + " parts)");
    h.length = uint16_t(d[8] << 8 | d[9]);
    if (h.length != d.size())
        return fail(Errc::bad_length, 8,
                    "length field says " + std::to_string(h.length) + " bytes, datagram has " +
                        std::to_string(d.size()));
    if (d.size() > kMaxDatagram)
        return fail(Errc::too_large, 8,
                    std::to_string(d.size()) + " bytes, more than " + std::to_string(kMaxDatagram));
    h.flags = uint16_t(d[10] << 8 | d[11]);
    if (h.flags & ~uint16_t(flags_known))
        return fail(Errc::bad_flags, 10, "unknown flag bits " + std::to_string(h.flags));
    if (h.flags && h.type != Type::pick)
        return fail(Errc::bad_flags, 10, "flags are only defined on a pick");
    uint32_t crc = uint32_t(d[12]) << 24 | uint32_t(d[13]) << 16 | uint32_t(d[14]) << 8 | d[15];
#ifndef BERTHA_FUZZING // the fuzzer cannot forge checksums; it must reach the decoders
    uint8_t zero[4] = {};
    uint32_t want = crc32c(d.first(12));
    want = crc32c(zero, want);
    want = crc32c(d.subspan(16), want);
    if (crc != want) return fail(Errc::bad_checksum, 12, "checksum mismatch: corrupted");
#else
    (void)crc;
#endif
    h.conv = 0;
    for (int i = 0; i < 8; ++i) h.conv = h.conv << 8 | d[16 + size_t(i)];
    return true;
}

std::vector<std::vector<uint8_t>> frame(Type type, uint16_t flags, uint64_t conv,
                                        std::span<const uint8_t> body, size_t max_datagram) {
    std::vector<std::vector<uint8_t>> out;
    if (max_datagram > kMaxDatagram || max_datagram <= kHeaderSize) max_datagram = kMaxDatagram;
    size_t per = max_datagram - kHeaderSize;
    size_t parts = body.empty() ? 1 : (body.size() + per - 1) / per;
    if (parts > kMaxParts) return out;
    for (size_t p = 0; p < parts; ++p) {
        size_t off = p * per, n = std::min(per, body.size() - std::min(off, body.size()));
        std::vector<uint8_t> d(kHeaderSize + n);
        d[0] = 0xC4, d[1] = 0x9B, d[2] = 0x1E, d[3] = 0xB7;
        d[4] = kVersion;
        d[5] = uint8_t(type);
        d[6] = uint8_t(p);
        d[7] = uint8_t(parts);
        d[8] = uint8_t(d.size() >> 8), d[9] = uint8_t(d.size());
        d[10] = uint8_t(flags >> 8), d[11] = uint8_t(flags);
        for (int i = 0; i < 8; ++i) d[16 + size_t(i)] = uint8_t(conv >> (56 - 8 * i));
        if (n) std::memcpy(d.data() + kHeaderSize, body.data() + off, n);
        uint32_t crc = crc32c(d); // the crc field is still zero
        d[12] = uint8_t(crc >> 24), d[13] = uint8_t(crc >> 16), d[14] = uint8_t(crc >> 8),
        d[15] = uint8_t(crc);
        out.push_back(std::move(d));
    }
    return out;
}

std::vector<uint8_t> encode(const Offer& o) {
    Writer w;
    write_offer(w, o);
    return w.take();
}

std::vector<uint8_t> encode(const ZeroRtt& z) {
    Writer w;
    w.u64(z.nonce);
    write_offer(w, z.offer);
    return w.take();
}

std::vector<uint8_t> encode(const Pick& p) {
    Writer w;
    w.u64(p.nonce);
    w.u8(uint8_t(p.choices.size()));
    for (const Choice& c : p.choices) {
        w.u32(c.type_id);
        w.str8(c.impl);
        w.u8(uint8_t(c.runs_at));
        w.bytes16(c.params);
    }
    return w.take();
}

std::vector<uint8_t> encode(const Refuse& r) {
    Writer w;
    w.u8(uint8_t(r.reason));
    w.u8(r.slot);
    w.u32(r.type_id);
    w.str8(r.chunnel);
    w.u8(uint8_t(r.client_offered.size()));
    for (auto& s : r.client_offered) w.str8(s);
    w.u8(uint8_t(r.server_offered.size()));
    for (auto& s : r.server_offered) w.str8(s);
    w.str16(r.message);
    return w.take();
}

std::vector<uint8_t> encode(const Ack& a) {
    Writer w;
    w.u64(a.nonce);
    return w.take();
}

bool decode(std::span<const uint8_t> body, Offer& out, Error& err) {
    return decode_with(body, out, err, "offer", [](Reader& r, Offer& o) { read_offer(r, o); });
}

bool decode(std::span<const uint8_t> body, ZeroRtt& out, Error& err) {
    return decode_with(body, out, err, "zero-rtt", [](Reader& r, ZeroRtt& z) {
        z.nonce = r.u64("nonce");
        read_offer(r, z.offer);
    });
}

bool decode(std::span<const uint8_t> body, Pick& out, Error& err) {
    return decode_with(body, out, err, "pick", [](Reader& r, Pick& p) {
        p.nonce = r.u64("nonce");
        uint8_t n = r.u8("choice count");
        if (r.ok() && n > kMaxSlots) {
            r.fail(Errc::too_large,
                   std::to_string(n) + " choices, more than " + std::to_string(kMaxSlots));
            return;
        }
        for (size_t i = 0; r.ok() && i < n; ++i) {
            Choice c;
            c.type_id = r.u32("type id");
            c.impl = r.name("implementation name");
            uint8_t where = r.u8("runs-at");
            if (r.ok() && !valid_runs_at(where)) {
                r.fail(Errc::bad_field, "choice " + std::to_string(i) + ": runs-at " +
                                            std::to_string(where) + " unknown");
                return;
            }
            c.runs_at = RunsAt(where);
            c.params = r.bytes16("parameters", kMaxParams);
            p.choices.push_back(std::move(c));
        }
    });
}

bool decode(std::span<const uint8_t> body, Refuse& out, Error& err) {
    return decode_with(body, out, err, "refuse", [](Reader& r, Refuse& f) {
        uint8_t reason = r.u8("reason");
        if (r.ok() && (reason < uint8_t(RefuseReason::no_compatible) ||
                       reason > uint8_t(RefuseReason::malformed))) {
            r.fail(Errc::bad_field, "reason " + std::to_string(reason) + " unknown");
            return;
        }
        f.reason = RefuseReason(reason);
        f.slot = r.u8("slot");
        f.type_id = r.u32("type id");
        f.chunnel = r.name("chunnel name");
        for (auto* list : {&f.client_offered, &f.server_offered}) {
            uint8_t n = r.u8("offered count");
            if (r.ok() && n > kMaxAlts) {
                r.fail(Errc::too_large,
                       std::to_string(n) + " names, more than " + std::to_string(kMaxAlts));
                return;
            }
            for (size_t i = 0; r.ok() && i < n; ++i) list->push_back(r.name("offered name"));
        }
        f.message = r.text("message", kMaxMessageText);
    });
}

bool decode(std::span<const uint8_t> body, Ack& out, Error& err) {
    return decode_with(body, out, err, "ack", [](Reader& r, Ack& a) { a.nonce = r.u64("nonce"); });
}

uint64_t fingerprint(const Offer& o) {
    std::vector<uint8_t> b = encode(o);
    uint64_t h = 1469598103934665603ull; // FNV-1a 64 over the canonical bytes
    for (uint8_t c : b) h = (h ^ c) * 1099511628211ull;
    return h;
}

bool Reassembler::feed(const Header& h, std::span<const uint8_t> payload) {
    if (h.parts == 1) {
        body_.assign(payload.begin(), payload.end());
        reset();
        return true;
    }
    if (have_ == 0 || h.conv != conv_ || h.type != type_ || h.parts != parts_ ||
        h.flags != flags_) {
        conv_ = h.conv;
        type_ = h.type;
        parts_ = h.parts;
        flags_ = h.flags;
        have_ = 0;
        got_.assign(h.parts, {});
    }
    // frame() fills every part of a multi-part message: an empty or repeated part is not ours.
    if (payload.empty() || !got_[h.part].empty()) return false;
    got_[h.part].assign(payload.begin(), payload.end());
    if (++have_ < parts_) return false;
    body_.clear();
    for (auto& part : got_) body_.insert(body_.end(), part.begin(), part.end());
    reset();
    return true;
}

void Reassembler::reset() {
    have_ = 0;
    parts_ = 0;
    got_.clear();
}

std::string_view to_string(Type t) noexcept {
    switch (t) {
    case Type::offer:
        return "offer";
    case Type::pick:
        return "pick";
    case Type::refuse:
        return "refuse";
    case Type::zero_rtt:
        return "zero-rtt";
    case Type::ack:
        return "ack";
    }
    return "unknown";
}

std::string_view to_string(RefuseReason r) noexcept {
    switch (r) {
    case RefuseReason::no_compatible:
        return "no compatible implementation";
    case RefuseReason::stack_mismatch:
        return "the stacks differ";
    case RefuseReason::bad_version:
        return "unsupported version";
    case RefuseReason::malformed:
        return "malformed offer";
    }
    return "unknown";
}

} // namespace bertha::wire
