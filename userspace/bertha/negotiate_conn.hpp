// Negotiation, the exchange: the layers that carry it over a base connection.
//
//  - client_handshake(): the one round trip (offer -> pick | refuse) with its own
//    retransmission, before the stack is built.
//  - NegClientConn / NegServerConn: the bottom layer of every negotiated connection, right
//    above the base. On the data path each received datagram costs one 4-byte magic compare:
//    negotiation datagrams (late or duplicated) are taken out and never reach the application;
//    a server answers a retransmitted offer again; zero-RTT data is tagged and checked.
//  - Negotiated<Conn>: the client's top wrapper. With zero-RTT it keeps copies of what the
//    application sent until the server accepts the cached choice; if the server answers with a
//    fresh choice instead, it rebuilds the stack under that choice and sends the copies again.
//
// Zero-RTT data: while the server has not yet accepted the cached choice, each data datagram
// carries a 12-byte prefix in its head-room [kDataMagic u32 | nonce u64]. The server delivers
// prefixed data only when the nonce is the one it accepted, so data sent under a stale choice
// is dropped rather than misread, and the client sends it again under the fresh one.
#pragma once

#include "bertha/buffer.hpp"
#include "bertha/chunnel.hpp"
#include "bertha/negotiate.hpp"
#include "bertha/wire.hpp"

#include <cstring>
#include <deque>
#include <functional>
#include <memory>

namespace bertha::negotiation {

inline constexpr uint32_t kDataMagic = 0xC49B1EB8; // kMagic + 1: "data under a cached choice"
inline constexpr size_t kDataPrefix = 12;

inline bool read_prefix(const Msg& m, uint64_t& nonce) {
    if (m.size() < kDataPrefix) return false;
    const auto* p = reinterpret_cast<const uint8_t*>(m.data());
    if ((uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]) != kDataMagic)
        return false;
    nonce = 0;
    for (int i = 0; i < 8; ++i) nonce = nonce << 8 | p[4 + i];
    return true;
}

inline bool push_prefix(Msg& m, uint64_t nonce) {
    auto* p = reinterpret_cast<uint8_t*>(m.push(kDataPrefix));
    if (!p) return false;
    for (int i = 0; i < 4; ++i) p[i] = uint8_t(kDataMagic >> (24 - 8 * i));
    for (int i = 0; i < 8; ++i) p[4 + i] = uint8_t(nonce >> (56 - 8 * i));
    return true;
}

// Send encoded datagrams over a Msg connection (negotiation traffic: not the hot path).
template <class Conn>
Result<void> send_datagrams(Conn& c, const std::vector<std::vector<uint8_t>>& dgs,
                            const Addr* to = nullptr) {
    std::vector<Msg> out(dgs.size());
    auto n = c.alloc(out);
    if (!n) return std::unexpected(std::move(n.error()));
    if (*n < dgs.size())
        return fail(Errc::no_buffers, "negotiation", "no buffers for negotiation messages");
    for (size_t i = 0; i < dgs.size(); ++i) {
        out[i].assign(std::as_bytes(std::span(dgs[i])));
        if (to) out[i].set_peer(*to);
    }
    auto s = c.send(out);
    if (!s) return std::unexpected(std::move(s.error()));
    return {};
}

// Hand messages kept aside (data that came during the handshake) to a receive batch first.
inline size_t drain(std::deque<Msg>& held, std::span<Msg> batch) {
    size_t n = 0;
    while (n < batch.size() && !held.empty()) {
        batch[n++] = std::move(held.front());
        held.pop_front();
    }
    return n;
}

inline std::span<const uint8_t> bytes_of(const Msg& m) {
    return {reinterpret_cast<const uint8_t*>(m.data()), m.size()};
}

// State shared by the client's bottom layer and its top wrapper (stable across moves).
struct ClientState {
    enum class Phase { off, established, zero_rtt_pending };
    Phase phase = Phase::off;
    Options opts;
    Addr server;
    uint64_t conv = 0;
    uint64_t fingerprint = 0;
    wire::Pick pick;                 // the choice the stack runs now
    std::optional<wire::Pick> adopt; // a fresh choice to rebuild under (zero-RTT refused)
    bool acked = false;              // the server accepted the zero-RTT choice
    std::vector<std::vector<uint8_t>> zero_rtt; // the datagrams, for retransmission
    Clock::time_point next_retx{};
    std::chrono::microseconds timeout{};
    int tries_left = 0;
    std::optional<Error> error;
    uint64_t dropped = 0; // negotiation datagrams taken off the data path
};

// ---------------------------------------------------------------------------------------------
// Client: the bottom layer.

template <Connection Base>
requires std::same_as<typename Base::Data, Msg>
class NegClientConn {
  public:
    using Data = Msg;
    NegClientConn(Base&& b, std::shared_ptr<ClientState> st, std::vector<Msg>&& held)
        : base_(std::move(b)), st_(std::move(st)) {
        for (auto& m : held) held_.push_back(std::move(m));
    }

    Result<size_t> send(std::span<Msg> batch) {
        if (st_->phase == ClientState::Phase::zero_rtt_pending) {
            if (auto r = poll(); !r) return std::unexpected(std::move(r.error()));
            if (st_->phase == ClientState::Phase::zero_rtt_pending)
                for (Msg& m : batch)
                    if (m && !push_prefix(m, st_->pick.nonce))
                        return fail(Errc::invalid_argument, "negotiation",
                                    "no head-room for the zero-RTT tag (12 bytes)");
        }
        return base_.send(batch);
    }

    Result<size_t> recv(std::span<Msg> batch, Deadline deadline) {
        for (;;) {
            if (size_t n = drain(held_, batch)) return n;
            Deadline until = deadline;
            bool pending = st_->phase == ClientState::Phase::zero_rtt_pending;
            if (pending && st_->next_retx < until) until = st_->next_retx;
            auto got = base_.recv(batch, until);
            if (!got) return got;
            size_t kept = filter(batch.first(*got));
            if (pending) {
                if (auto r = retransmit_due(); !r) return std::unexpected(std::move(r.error()));
            }
            // An answer that changes the stack (or an error) goes up at once, so the top
            // can rebuild before more data is read under the old choice: an early 0.
            if (kept || st_->adopt || st_->error) return kept;
            if (Clock::now() >= deadline) return size_t(0);
        }
    }

    Result<size_t> alloc(std::span<Msg> out) requires CanAlloc<Base> { return base_.alloc(out); }
    void describe(std::vector<std::string>& out) const { base_.describe(out); }
    int wait_fd() const requires HasWaitFd<Base> { return base_.wait_fd(); }
    Base& inner() { return base_; }
    const ClientState& state() const { return *st_; }

  private:
    // Take negotiation datagrams out of a received batch; returns the data kept (compacted).
    size_t filter(std::span<Msg> batch) {
        size_t kept = 0;
        for (size_t i = 0; i < batch.size(); ++i) {
            Msg& m = batch[i];
            if (!wire::looks_like_negotiation(m.bytes())) {
                if (kept != i) batch[kept] = std::move(m);
                ++kept;
                continue;
            }
            handle(bytes_of(m));
            ++st_->dropped;
            m.release();
        }
        return kept;
    }

    void handle(std::span<const uint8_t> d) {
        wire::Header h;
        wire::Error err;
        if (!wire::parse_header(d, h, err) || h.conv != st_->conv) return;
        if (st_->phase != ClientState::Phase::zero_rtt_pending) return; // late or duplicated
        if (!reasm_.feed(h, d.subspan(wire::kHeaderSize))) return;
        std::span<const uint8_t> body = reasm_.body();
        if (h.type == wire::Type::ack) {
            wire::Ack a;
            if (wire::decode(body, a, err) && a.nonce == st_->pick.nonce) {
                st_->acked = true;
                st_->phase = ClientState::Phase::established;
            }
        } else if (h.type == wire::Type::pick && (h.flags & wire::flag_zero_rtt_refused)) {
            wire::Pick p;
            if (wire::decode(body, p, err)) {
                ZeroRttCache::instance().store(st_->server, st_->fingerprint, p);
                st_->adopt = std::move(p);
                st_->phase = ClientState::Phase::established;
            }
        } else if (h.type == wire::Type::refuse) {
            wire::Refuse r;
            if (wire::decode(body, r, err)) {
                ZeroRttCache::instance().erase(st_->server, st_->fingerprint);
                st_->error = refusal_error(r, st_->server);
                st_->phase = ClientState::Phase::established;
            }
        }
    }

    // While zero-RTT is pending, sending also looks for the server's answer (no wait).
    Result<void> poll() {
        Msg scratch[8];
        auto got = base_.recv(std::span(scratch), no_wait);
        if (!got) return std::unexpected(std::move(got.error()));
        size_t kept = filter(std::span(scratch, *got));
        for (size_t i = 0; i < kept; ++i) held_.push_back(std::move(scratch[i]));
        return retransmit_due();
    }

    Result<void> retransmit_due() {
        if (st_->phase != ClientState::Phase::zero_rtt_pending) return {};
        auto now = Clock::now();
        if (now < st_->next_retx) return {};
        if (st_->tries_left <= 0) {
            st_->phase = ClientState::Phase::established;
            st_->error = Error{Errc::system, "negotiation",
                               "zero-RTT: " + st_->server.to_string() + " did not answer after " +
                                   std::to_string(st_->opts.tries) + " tries",
                               ETIMEDOUT};
            return {};
        }
        --st_->tries_left;
        st_->timeout *= 2;
        st_->next_retx = now + st_->timeout;
        return send_datagrams(base_, st_->zero_rtt);
    }

    Base base_;
    std::shared_ptr<ClientState> st_;
    std::deque<Msg> held_; // data that arrived while the answer was awaited
    wire::Reassembler reasm_;
};

// The client's one round trip. Data that arrives meanwhile is kept in `held` for the
// application. Returns the pick, or the refusal as an error, or a timeout.
template <Connection Base>
Result<wire::Pick> client_handshake(Base& base, const Addr& server, const wire::Offer& offer,
                                    const Options& opts, uint64_t conv, std::vector<Msg>& held) {
    auto dgs = wire::frame(wire::Type::offer, 0, conv, wire::encode(offer));
    if (dgs.empty())
        return fail(Errc::invalid_argument, "negotiation",
                    "the offer is larger than the negotiation format allows (" +
                        std::to_string(wire::kMaxBody) + " bytes)");
    auto timeout = opts.first_timeout;
    std::vector<Msg> batch(32);
    wire::Reassembler reasm;
    for (int attempt = 0; attempt < opts.tries; ++attempt) {
        if (auto s = send_datagrams(base, dgs); !s) return std::unexpected(std::move(s.error()));
        Deadline until = Clock::now() + timeout;
        timeout *= 2;
        for (;;) {
            auto got = base.recv(batch, until);
            if (!got) return std::unexpected(std::move(got.error()));
            if (*got == 0) break; // this try timed out
            for (size_t i = 0; i < *got; ++i) {
                Msg& m = batch[i];
                if (!wire::looks_like_negotiation(m.bytes())) {
                    if (held.size() < 1024) held.push_back(std::move(m));
                    continue;
                }
                wire::Header h;
                wire::Error err;
                auto d = bytes_of(m);
                if (!wire::parse_header(d, h, err) || h.conv != conv) continue;
                if (!reasm.feed(h, d.subspan(wire::kHeaderSize))) continue;
                if (h.type == wire::Type::pick) {
                    wire::Pick p;
                    if (!wire::decode(reasm.body(), p, err))
                        return fail(Errc::incompatible, "negotiation",
                                    "the server's answer is malformed: " + err.what);
                    return p;
                }
                if (h.type == wire::Type::refuse) {
                    wire::Refuse r;
                    if (!wire::decode(reasm.body(), r, err))
                        return fail(Errc::incompatible, "negotiation",
                                    "the server refused, in a malformed message: " + err.what);
                    return std::unexpected(refusal_error(r, server));
                }
            }
        }
    }
    std::chrono::microseconds total{0};
    for (int i = 0, t = 1; i < opts.tries; ++i, t *= 2) total += opts.first_timeout * t;
    return std::unexpected(Error{Errc::system, "negotiation",
                                 "no answer from " + server.to_string() + " after " +
                                     std::to_string(opts.tries) + " tries over " +
                                     std::to_string(total.count() / 1000) +
                                     " ms (is a Bertha server listening there?)",
                                 ETIMEDOUT});
}

// ---------------------------------------------------------------------------------------------
// Client: the top wrapper.

template <Connection Conn>
requires std::same_as<typename Conn::Data, Msg>
class Negotiated {
  public:
    using Data = Msg;
    using Rebuild = std::function<Result<Conn>(Conn&&, const wire::Pick&)>;

    Negotiated(Conn&& c, std::shared_ptr<ClientState> st, Rebuild rebuild)
        : conn_(std::move(c)), st_(std::move(st)), rebuild_(std::move(rebuild)) {}

    Result<size_t> send(std::span<Msg> batch) {
        if (auto r = settle(); !r) return std::unexpected(std::move(r.error()));
        if (st_->phase == ClientState::Phase::zero_rtt_pending) {
            if (auto r = retain(batch); !r) return std::unexpected(std::move(r.error()));
        }
        auto n = conn_.send(batch);
        if (auto r = settle(); !r) return std::unexpected(std::move(r.error()));
        return n;
    }
    // Returns 0 only at the deadline: an early 0 from below (a negotiation answer that
    // rebuilt the stack) is absorbed here.
    Result<size_t> recv(std::span<Msg> batch, Deadline deadline) {
        for (;;) {
            auto n = conn_.recv(batch, deadline);
            if (auto r = settle(); !r) return std::unexpected(std::move(r.error()));
            if (!n || *n || Clock::now() >= deadline) return n;
        }
    }
    Result<size_t> alloc(std::span<Msg> out) requires CanAlloc<Conn> { return conn_.alloc(out); }
    void describe(std::vector<std::string>& out) const { conn_.describe(out); }

    // How this connection was set up: "pre-arranged", "1-rtt", "0-rtt (pending)", ...
    std::string negotiation() const {
        switch (st_->phase) {
        case ClientState::Phase::off:
            return "pre-arranged";
        case ClientState::Phase::zero_rtt_pending:
            return "0-rtt (awaiting the server)";
        case ClientState::Phase::established:
            return zero_rtt_ ? (st_->acked ? "0-rtt (accepted)" : "0-rtt (refused, re-sent)")
                             : "1-rtt";
        }
        return "?";
    }
    const wire::Pick& pick() const { return st_->pick; }
    uint64_t negotiation_dropped() const { return st_->dropped; }
    Conn& inner() { return conn_; }
    void mark_zero_rtt() { zero_rtt_ = true; }

  private:
    // Keep a copy of each message until the server accepts the cached choice.
    Result<void> retain(std::span<Msg> batch) {
        std::vector<Msg> copies(batch.size());
        auto n = conn_.alloc(copies);
        if (!n) return std::unexpected(std::move(n.error()));
        for (size_t i = 0; i < batch.size() && i < *n; ++i) {
            copies[i].assign(batch[i].bytes());
            copies[i].set_peer(batch[i].peer());
            retained_.push_back(std::move(copies[i]));
        }
        if (*n < batch.size())
            return fail(Errc::no_buffers, "negotiation",
                        "zero-RTT: no buffers left to keep copies until the server answers");
        return {};
    }

    // Act on what the bottom layer learned: accepted (drop copies), refused with a fresh
    // choice (rebuild, send copies again), failed (report once).
    Result<void> settle() {
        if (st_->error) {
            Error e = std::move(*st_->error);
            st_->error.reset();
            retained_.clear();
            return std::unexpected(std::move(e));
        }
        if (st_->acked && !retained_.empty()) retained_.clear();
        if (!st_->adopt) return {};
        wire::Pick fresh = std::move(*st_->adopt);
        st_->adopt.reset();
        auto rebuilt = rebuild_(std::move(conn_), fresh);
        if (!rebuilt) return std::unexpected(std::move(rebuilt.error()));
        conn_ = std::move(*rebuilt);
        st_->pick = std::move(fresh);
        if (retained_.empty()) return {};
        std::vector<Msg> again;
        for (auto& m : retained_) again.push_back(std::move(m));
        retained_.clear();
        auto s = conn_.send(again);
        if (!s) return std::unexpected(std::move(s.error()));
        return {};
    }

    Conn conn_;
    std::shared_ptr<ClientState> st_;
    Rebuild rebuild_;
    std::vector<Msg> retained_;
    bool zero_rtt_ = false;
};

// ---------------------------------------------------------------------------------------------
// Server: the bottom layer of an accepted peer.

template <Connection Base>
requires std::same_as<typename Base::Data, Msg>
class NegServerConn {
  public:
    using Data = Msg;
    // `answer`: the datagrams sent for conversation `conv` (sent again on a duplicate).
    // `nonce`: zero-RTT data tagged with it is delivered; other tags are stale and dropped.
    NegServerConn(Base&& b, uint64_t conv, std::vector<std::vector<uint8_t>> answer, uint64_t nonce,
                  std::vector<Msg>&& held)
        : base_(std::move(b)), conv_(conv), answer_(std::move(answer)), nonce_(nonce) {
        size_t kept = filter(std::span(held));
        for (size_t i = 0; i < kept; ++i) held_.push_back(std::move(held[i]));
    }

    Result<size_t> send(std::span<Msg> batch) { return base_.send(batch); }
    Result<size_t> recv(std::span<Msg> batch, Deadline deadline) {
        for (;;) {
            if (size_t n = drain(held_, batch)) return n;
            auto got = base_.recv(batch, deadline);
            if (!got || *got == 0) return got;
            if (size_t kept = filter(batch.first(*got))) return kept;
            if (Clock::now() >= deadline) return size_t(0);
        }
    }
    Result<size_t> alloc(std::span<Msg> out) requires CanAlloc<Base> { return base_.alloc(out); }
    void describe(std::vector<std::string>& out) const { base_.describe(out); }
    int wait_fd() const requires HasWaitFd<Base> { return base_.wait_fd(); }
    Base& inner() { return base_; }
    uint64_t negotiation_dropped() const { return dropped_; }
    uint64_t stale_dropped() const { return stale_; }

  private:
    size_t filter(std::span<Msg> batch) {
        size_t kept = 0;
        for (size_t i = 0; i < batch.size(); ++i) {
            Msg& m = batch[i];
            uint64_t tag;
            if (wire::looks_like_negotiation(m.bytes())) {
                if (starts_over(m)) { // the rest of the batch belongs to the new connection
                    for (size_t k = i + 1; k < batch.size(); ++k) batch[k].release();
                    return kept;
                }
                answer_duplicate(bytes_of(m));
                ++dropped_;
                m.release();
                continue;
            }
            if (read_prefix(m, tag)) {
                if (tag != nonce_) {
                    ++stale_; // sent under a choice this server did not accept
                    m.release();
                    continue;
                }
                m.pull(kDataPrefix);
            }
            if (kept != i) batch[kept] = std::move(m);
            ++kept;
        }
        return kept;
    }

    // An offer of another conversation from this peer's address: a new client that got the
    // same address and port (or this one, restarted). Hand it back to the listener.
    bool starts_over(Msg& m) {
        if constexpr (requires(Base & b) { b.restart(std::move(m)); }) {
            wire::Header h;
            wire::Error err;
            if (conv_ == 0 || !wire::parse_header(bytes_of(m), h, err) || h.conv == conv_)
                return false;
            if (h.type != wire::Type::offer && h.type != wire::Type::zero_rtt) return false;
            base_.restart(std::move(m));
            return true;
        } else {
            return false;
        }
    }

    void answer_duplicate(std::span<const uint8_t> d) {
        wire::Header h;
        wire::Error err;
        if (!wire::parse_header(d, h, err) || h.conv != conv_) return;
        if (h.type != wire::Type::offer && h.type != wire::Type::zero_rtt) return;
        if (h.part + 1 != h.parts) return; // answer once per retransmitted message
        (void)send_datagrams(base_, answer_);
    }

    Base base_;
    uint64_t conv_;
    std::vector<std::vector<uint8_t>> answer_;
    uint64_t nonce_;
    std::deque<Msg> held_;
    uint64_t dropped_ = 0, stale_ = 0;
};

} // namespace bertha::negotiation
