#include "bertha/negotiate.hpp"

#include <random>

namespace bertha::negotiation {

namespace {

static_assert(uint8_t(Match::exact) == uint8_t(wire::Match::exact) &&
              uint8_t(Match::compositional) == uint8_t(wire::Match::compositional));
static_assert(uint8_t(Where::both) == uint8_t(wire::RunsAt::both) &&
              uint8_t(Where::client) == uint8_t(wire::RunsAt::client) &&
              uint8_t(Where::server) == uint8_t(wire::RunsAt::server));

std::string join(const std::vector<std::string>& v) {
    std::string out;
    for (auto& s : v) out += (out.empty() ? "" : ", ") + s;
    return out.empty() ? "nothing" : out;
}

std::vector<std::string> names(const wire::Slot& s) {
    std::vector<std::string> out;
    for (auto& a : s.alts) out.push_back(a.impl);
    return out;
}

} // namespace

Result<wire::Slot> offer_slot(const SlotDecl& decl, const HostFacts& host, Side side) {
    wire::Slot slot;
    const ChunnelInfo& first = decl.alts.front();
    slot.type_id = first.type_id;
    slot.match = wire::Match(first.match);
    slot.chunnel = std::string(first.chunnel);
    std::string why;
    for (size_t i = 0; i < decl.alts.size(); ++i) {
        const ChunnelInfo& in = decl.alts[i];
        if (runs_at(in.where, side) && !host.meets(in.needs)) {
            why += (why.empty() ? "" : "; ") + name_of(in) + " " + host.why_not(in.needs);
            continue; // pruned: this host would have to run it and cannot
        }
        slot.alts.push_back({decl.ranks[i], wire::RunsAt(in.where), std::string(in.impl)});
    }
    if (slot.alts.empty())
        return fail(Errc::unavailable, slot.chunnel,
                    "no implementation of '" + slot.chunnel + "' can run on this host: " + why);
    return slot;
}

Decision decide(const wire::Offer& client, const wire::Offer& server, uint64_t nonce,
                const std::function<std::vector<uint8_t>(size_t, const std::string&)>& params) {
    Decision d;
    auto refuse = [&](wire::RefuseReason reason, size_t i, const wire::Slot* c, const wire::Slot* s,
                      std::string message) {
        wire::Refuse r;
        r.reason = reason;
        r.slot = uint8_t(i);
        const wire::Slot* named = c ? c : s;
        r.type_id = named ? named->type_id : 0;
        r.chunnel = named ? named->chunnel : "stack";
        if (c) r.client_offered = names(*c);
        if (s) r.server_offered = names(*s);
        if (message.size() > wire::kMaxMessageText) message.resize(wire::kMaxMessageText);
        r.message = std::move(message);
        d.refuse = std::move(r);
        return d;
    };

    size_t n = std::max(client.slots.size(), server.slots.size());
    for (size_t i = 0; i < n; ++i) {
        const wire::Slot* c = i < client.slots.size() ? &client.slots[i] : nullptr;
        const wire::Slot* s = i < server.slots.size() ? &server.slots[i] : nullptr;
        if (!c || !s || c->type_id != s->type_id || c->match != s->match)
            return refuse(wire::RefuseReason::stack_mismatch, i, c, s,
                          "chunnel " + std::to_string(i + 1) + " of the stack is '" +
                              (c ? c->chunnel : std::string("missing")) + "' at the client but '" +
                              (s ? s->chunnel : std::string("missing")) + "' at the server");
    }

    wire::Pick pick;
    pick.nonce = nonce;
    for (size_t i = 0; i < n; ++i) {
        const wire::Slot& c = client.slots[i];
        const wire::Slot& s = server.slots[i];
        const wire::Alt* best = nullptr;
        size_t best_server_pos = 0;
        for (const wire::Alt& a : c.alts) {
            if (best && a.rank > best->rank) break; // ranks are non-decreasing (canonical)
            for (size_t k = 0; k < s.alts.size(); ++k) {
                if (s.alts[k].impl != a.impl || s.alts[k].runs_at != a.runs_at) continue;
                if (!best || k < best_server_pos) best = &a, best_server_pos = k;
                break;
            }
        }
        if (!best)
            return refuse(wire::RefuseReason::no_compatible, i, &c, &s,
                          "no implementation of '" + c.chunnel + "' is accepted by both ends");
        wire::Choice choice;
        choice.type_id = c.type_id;
        choice.impl = best->impl;
        choice.runs_at = best->runs_at;
        if (params) choice.params = params(i, best->impl);
        pick.choices.push_back(std::move(choice));
    }
    d.pick = std::move(pick);
    return d;
}

Error refusal_error(const wire::Refuse& r, const Addr& peer) {
    std::string msg = "negotiation with " + peer.to_string() + " refused (" +
                      std::string(wire::to_string(r.reason)) + ")";
    if (r.reason == wire::RefuseReason::no_compatible)
        msg += ": chunnel '" + r.chunnel + "': this client offered " + join(r.client_offered) +
               "; the server accepts " + join(r.server_offered);
    if (!r.message.empty()) msg += ": " + r.message;
    return Error{Errc::incompatible, r.chunnel, std::move(msg), 0};
}

uint64_t random_u64() {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    return rng();
}

ZeroRttCache& ZeroRttCache::instance() {
    static ZeroRttCache cache;
    return cache;
}

std::optional<wire::Pick> ZeroRttCache::lookup(const Addr& server, uint64_t fp) {
    std::lock_guard lock(mu_);
    auto it = map_.find(Key{server, fp});
    if (it == map_.end()) return std::nullopt;
    return it->second;
}

void ZeroRttCache::store(const Addr& server, uint64_t fp, const wire::Pick& pick) {
    std::lock_guard lock(mu_);
    map_[Key{server, fp}] = pick;
}

void ZeroRttCache::erase(const Addr& server, uint64_t fp) {
    std::lock_guard lock(mu_);
    map_.erase(Key{server, fp});
}

void ZeroRttCache::clear() {
    std::lock_guard lock(mu_);
    map_.clear();
}

const wire::Pick& NonceTable::pick_for(uint64_t fp, const std::function<wire::Pick()>& fresh) {
    if (auto it = map_.find(fp); it != map_.end()) return it->second;
    if (map_.size() >= capacity_ && !order_.empty()) {
        map_.erase(order_[next_evict_]);
        order_[next_evict_] = fp;
        next_evict_ = (next_evict_ + 1) % order_.size();
    } else {
        order_.push_back(fp);
    }
    return map_.emplace(fp, fresh()).first->second;
}

const wire::Pick* NonceTable::find(uint64_t fp) const {
    auto it = map_.find(fp);
    return it == map_.end() ? nullptr : &it->second;
}

} // namespace bertha::negotiation
