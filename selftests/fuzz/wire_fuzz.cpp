// libFuzzer target for the negotiation wire codec (userspace/bertha/wire.cpp), built with
// -DBERTHA_FUZZING so that parse_header skips the checksum and mutated datagrams reach the
// decoders. Properties checked on every input, each an abort() when violated:
//  - nothing crashes, reads out of bounds or hits undefined behaviour (ASan, UBSan);
//  - a refusal carries a reason and an offset inside the input;
//  - canonical encoding: whenever a body decodes, encoding the result gives back the same bytes;
//  - framing: a decoded body framed again parses and reassembles to the same bytes (frame
//    refuses it only when it is over kMaxBody);
//  - reassembly: the input read as a run of datagrams (each starting at a magic) never yields a
//    body larger than its parts can carry.
// Seeds: $(BUILD)/fuzz/wire_corpus DIR writes valid datagrams and bodies of every type.
#include "bertha/wire.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <type_traits>
#include <vector>

using namespace bertha::wire;

namespace {

using Span = std::span<const uint8_t>;

[[noreturn]] void violated(const char* property, Span body) {
    std::fprintf(stderr, "wire_fuzz: property violated: %s (body of %zu bytes:", property,
                 body.size());
    for (uint8_t b : body.first(std::min<size_t>(body.size(), 64)))
        std::fprintf(stderr, " %02x", b);
    std::fprintf(stderr, "%s)\n", body.size() > 64 ? " ..." : "");
    std::abort();
}

void check_refusal(const Error& err, Span in) {
    if (err.what.empty()) violated("a refusal without a reason", in);
    if (err.offset > in.size()) violated("a refusal offset past the input", in);
}

// A decoded body frames, parses and reassembles back to itself.
void check_framing(Type type, Span body) {
    auto dgrams = frame(type, type == Type::pick ? flag_zero_rtt_refused : 0, 42, body);
    if (body.size() > kMaxBody) {
        if (!dgrams.empty()) violated("frame accepted a body over kMaxBody", body);
        return;
    }
    if (dgrams.empty()) violated("frame refused a body within kMaxBody", body);
    Reassembler r;
    for (size_t i = 0; i < dgrams.size(); ++i) {
        Header h;
        Error err;
        if (dgrams[i].size() > kMaxDatagram) violated("frame made an oversized datagram", body);
        if (!parse_header(dgrams[i], h, err)) violated("frame made a datagram parse refuses", body);
        bool done = r.feed(h, Span(dgrams[i]).subspan(kHeaderSize));
        if (done != (i + 1 == dgrams.size()))
            violated("reassembly completed at the wrong part", body);
    }
    if (!std::equal(r.body().begin(), r.body().end(), body.begin(), body.end()))
        violated("reassembly changed the body", body);
}

template <class M> void check_decode(Type type, Span body) {
    M msg;
    Error err;
    if (!decode(body, msg, err)) return check_refusal(err, body);
    std::vector<uint8_t> again = encode(msg);
    if (!std::equal(again.begin(), again.end(), body.begin(), body.end()))
        violated("decode then encode changed the bytes", body);
    M back;
    if (!decode(again, back, err) || !(back == msg))
        violated("encode then decode changed the message", body);
    if constexpr (std::is_same_v<M, Offer>)
        if (fingerprint(msg) != fingerprint(back))
            violated("fingerprint of equal offers differs", body);
    check_framing(type, body);
}

void check_bodies(Span body) {
    check_decode<Offer>(Type::offer, body);
    check_decode<ZeroRtt>(Type::zero_rtt, body);
    check_decode<Pick>(Type::pick, body);
    check_decode<Refuse>(Type::refuse, body);
    check_decode<Ack>(Type::ack, body);
}

void decode_as(Type type, Span body) {
    switch (type) {
    case Type::offer:
        return check_decode<Offer>(type, body);
    case Type::zero_rtt:
        return check_decode<ZeroRtt>(type, body);
    case Type::pick:
        return check_decode<Pick>(type, body);
    case Type::refuse:
        return check_decode<Refuse>(type, body);
    case Type::ack:
        return check_decode<Ack>(type, body);
    }
    violated("parse_header accepted an unknown type", body);
}

// The input as consecutive datagrams, each starting at a magic, fed to one Reassembler.
void check_reassembly(Span in) {
    static constexpr uint8_t kMagicBytes[4] = {0xC4, 0x9B, 0x1E, 0xB7};
    auto is_magic = [&](size_t i) {
        return i + 4 <= in.size() && std::equal(kMagicBytes, kMagicBytes + 4, in.begin() + long(i));
    };
    Reassembler r;
    size_t start = 0;
    while (start < in.size()) {
        size_t end = start + 1;
        while (end < in.size() && !is_magic(end)) ++end;
        Span d = in.subspan(start, end - start);
        start = end;
        Header h;
        Error err;
        if (!parse_header(d, h, err)) {
            check_refusal(err, d);
            continue;
        }
        if (h.part >= h.parts || h.parts > kMaxParts || d.size() > kMaxDatagram ||
            h.length != d.size())
            violated("parse_header accepted an impossible header", d);
        if (!r.feed(h, d.subspan(kHeaderSize))) continue;
        if (r.body().size() > size_t(h.parts) * (kMaxDatagram - kHeaderSize))
            violated("reassembled body larger than its parts", d);
        decode_as(h.type, r.body());
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Span in(data, size);
    Header h;
    Error err;
    if (parse_header(in, h, err)) {
        if (in.size() > kMaxDatagram || h.length != in.size() || h.part >= h.parts)
            violated("parse_header accepted an impossible header", in);
    } else {
        check_refusal(err, in);
    }
    check_bodies(in);
    if (in.size() >= kHeaderSize) check_bodies(in.subspan(kHeaderSize));
    check_reassembly(in);
    return 0;
}
