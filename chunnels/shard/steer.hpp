// Which shard the `shard` offload (shard.bpf.c) steers a request datagram to, or none: the C++
// reference the selftests check the XDP stage against byte for byte, and the decision the
// userspace proxy reuses for the datagrams the stage passes on (it must pick the same shard for
// what the stage would have steered). Plain C++ over the UDP payload; written the way memcached
// reads a request (find the line, split it into tokens, look at the verb's arguments), not as a
// copy of the stage's byte-at-a-time state machine, so that the two check each other.
//
// A request is steered when all of these hold (README.md has the reasons):
//  - the payload is the 8-byte memcached UDP frame header with total == 1, then the command;
//    it is not a negotiation datagram;
//  - the command line ends with "\n" or "\r\n" within the first BERTHA_SHARD_LINE_MAX bytes
//    after the header; it holds no control character (a '\r' only right before the '\n');
//  - tokens are separated by one or more spaces (leading and trailing spaces are ignored);
//  - the verb (token 0, case-sensitive) and its number of arguments are one of
//      get|gets <key>+                                     (all keys on one shard)
//      set|add|replace <key> <flags> <exptime> <bytes> [noreply]
//      cas <key> <flags> <exptime> <bytes> <cas unique> [noreply]
//      delete <key> [<time>] [noreply]
//  - every key is 1..BERTHA_KV_MAX_KEY bytes;
//  - the datagram holds that one command and nothing else: for get/gets/delete the line ends the
//    datagram; for a storage command <bytes> is decimal digits (at most BERTHA_SHARD_VALUE_MAX)
//    and the line is followed by exactly <bytes> bytes of data and "\r\n".
// The values of <flags>, <exptime>, <time>, <cas unique> and noreply are the shard's to check:
// it answers the same error the proxy would have got from it.
#pragma once

#include "bertha/kv.h"
#include "bertha/negotiation.h"
#include "shard/shard_wire.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace bertha::shard {

// The shard (0..shards-1) for the UDP payload of a request, or nullopt: pass it on.
inline std::optional<uint32_t> steer(std::span<const uint8_t> payload, uint32_t shards) {
    if (shards < 1 || shards > BERTHA_SHARD_MAX) return std::nullopt;
    if (payload.size() <= BERTHA_MC_UDP_HDR) return std::nullopt;
    if (bertha_is_negotiation(payload.data(), unsigned(payload.size()),
                              payload.data() + payload.size()))
        return std::nullopt;
    if (payload[4] != 0 || payload[5] != 1) return std::nullopt; // total: one datagram
    const std::string_view body(reinterpret_cast<const char*>(payload.data()) + BERTHA_MC_UDP_HDR,
                                payload.size() - BERTHA_MC_UDP_HDR);

    const size_t nl = body.substr(0, BERTHA_SHARD_LINE_MAX).find('\n');
    if (nl == std::string_view::npos) return std::nullopt;
    const size_t line_end = nl + 1; // the next command, or the data block, starts here
    std::string_view line = body.substr(0, nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);

    std::vector<std::string_view> tok;
    for (size_t i = 0; i < line.size();) {
        if (line[i] == ' ') {
            ++i;
            continue;
        }
        size_t j = i;
        while (j < line.size() && line[j] != ' ') {
            const auto c = static_cast<unsigned char>(line[j]);
            if (c < 0x21 || c == 0x7f) return std::nullopt; // control characters
            ++j;
        }
        tok.push_back(line.substr(i, j - i));
        i = j;
    }
    if (tok.size() < 2) return std::nullopt;
    const size_t nargs = tok.size() - 1;
    const std::string_view verb = tok[0];

    auto shard_of = [&](std::string_view key) -> std::optional<uint32_t> {
        if (key.empty() || key.size() > BERTHA_KV_MAX_KEY) return std::nullopt;
        return bertha_shard_of(
            bertha_shard_hash(reinterpret_cast<const unsigned char*>(key.data()), key.size()),
            shards);
    };

    if (verb == "get" || verb == "gets") {
        std::optional<uint32_t> first;
        for (size_t k = 1; k < tok.size(); ++k) {
            auto s = shard_of(tok[k]);
            if (!s || (first && *s != *first)) return std::nullopt;
            first = s;
        }
        return line_end == body.size() ? first : std::nullopt;
    }
    if (verb == "delete") {
        if (nargs > 3) return std::nullopt;
        auto s = shard_of(tok[1]);
        return line_end == body.size() ? s : std::nullopt;
    }
    const bool cas = verb == "cas";
    if (!cas && verb != "set" && verb != "add" && verb != "replace") return std::nullopt;
    if (cas ? (nargs < 5 || nargs > 6) : (nargs < 4 || nargs > 5)) return std::nullopt;
    auto s = shard_of(tok[1]);
    if (!s) return std::nullopt;
    size_t bytes = 0;
    for (char c : tok[4]) {
        if (c < '0' || c > '9') return std::nullopt;
        bytes = bytes * 10 + size_t(c - '0');
        if (bytes > BERTHA_SHARD_VALUE_MAX) return std::nullopt;
    }
    if (body.size() != line_end + bytes + 2 || !body.ends_with("\r\n")) return std::nullopt;
    return s;
}

} // namespace bertha::shard
