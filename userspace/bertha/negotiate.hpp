// Negotiation, the decisions: what a host offers for its stack, which implementation the
// server picks for every chunnel, and how a refusal reads. No I/O here (see negotiate_conn.hpp);
// everything is a function of the two offers, so it is tested directly.
//
// Only multilateral chunnels are negotiated: which base or which local helper a host runs is
// its own business. An offer lists, per chunnel in stack order, the implementations this host
// accepts, in preference order, minus those it would have to run itself and cannot (pruned by
// discovery). The server answers per chunnel with the client's most preferred implementation
// that it accepts too (server preference breaks ties of equal rank): choosing per chunnel gives
// the first compatible stack in the client's order without enumerating every combination.
#pragma once

#include "bertha/addr.hpp"
#include "bertha/chunnel.hpp"
#include "bertha/error.hpp"
#include "bertha/wire.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

namespace bertha::negotiation {

struct Options {
    bool enabled = true;  // false: a pre-arranged stack, no exchange at all
    bool zero_rtt = true; // reuse a cached choice and send data at once
    std::chrono::microseconds first_timeout{5000}; // then doubling
    // 5+10+...+640 ms = 1275 ms in all. A server may load BPF programs for the connection
    // before it answers (its first offload attach on an interface: 15-25 ms natively, and
    // well over 300 ms under emulation on a busy host, seen in vmtest); the early tries keep a
    // lost datagram cheap.
    int tries = 8;
    std::chrono::milliseconds accept_idle{2000};   // a half-negotiated peer is dropped after
};

// The implementations of one chunnel slot, as the stack declares them (preference order) and
// the rank each has (select: 0, 1, 2, ...; an unordered select: all 0).
struct SlotDecl {
    std::vector<ChunnelInfo> alts;
    std::vector<uint8_t> ranks;
};

// This host's offer slot: implementations it would run itself and cannot are left out. An
// error when nothing is left (it names the chunnel and every reason).
Result<wire::Slot> offer_slot(const SlotDecl& decl, const HostFacts& host, Side side);

// The server's answer to an offer, given its own offer (built with Side::server). `params`
// returns what the server's implementation of slot i contributes.
struct Decision {
    std::optional<wire::Pick> pick;
    std::optional<wire::Refuse> refuse;
};
Decision
decide(const wire::Offer& client, const wire::Offer& server, uint64_t nonce,
       const std::function<std::vector<uint8_t>(size_t slot, const std::string& impl)>& params);

// The user-facing error for a refusal: names the chunnel and what each side offered.
Error refusal_error(const wire::Refuse& r, const Addr& peer);

uint64_t random_u64(); // nonces and conversation ids

// Client side: (server, offer fingerprint) -> the pick it answered last time. Process-wide.
class ZeroRttCache {
  public:
    static ZeroRttCache& instance();
    std::optional<wire::Pick> lookup(const Addr& server, uint64_t fingerprint);
    void store(const Addr& server, uint64_t fingerprint, const wire::Pick& pick);
    void erase(const Addr& server, uint64_t fingerprint);
    void clear();

  private:
    struct Key {
        Addr server;
        uint64_t fp;
        friend bool operator==(const Key&, const Key&) = default;
    };
    struct KeyHash {
        size_t operator()(const Key& k) const noexcept { return k.server.hash() ^ (k.fp * 31); }
    };
    std::mutex mu_;
    std::unordered_map<Key, wire::Pick, KeyHash> map_;
};

// Server side: one nonce per distinct offer, so a returning client's cached choice can be
// recognised. Bounded: past `capacity` distinct offers the oldest are forgotten (their clients
// then get a fresh choice, which is always safe).
class NonceTable {
  public:
    explicit NonceTable(size_t capacity = 65536) : capacity_(capacity) {}
    // The pick for this offer fingerprint: the remembered one, or `fresh()` remembered now.
    const wire::Pick& pick_for(uint64_t fp, const std::function<wire::Pick()>& fresh);
    const wire::Pick* find(uint64_t fp) const;

  private:
    size_t capacity_;
    std::unordered_map<uint64_t, wire::Pick> map_;
    std::vector<uint64_t> order_;
    size_t next_evict_ = 0;
};

} // namespace bertha::negotiation
