// What a base's listener needs whatever moves its datagrams (io_uring udp, AF_XDP xsk): one
// queue of received messages per accepted peer, and new peers waiting in arrival order to be
// accepted. The base receives on its one socket (or sockets) and hands every message to
// route(); accept() takes the next new peer; a peer's connection reads its own queue.
// Storage is reserved up front per queue: routing a message never allocates, except the first
// time a new peer needs a queue beyond all the ones used before.
#pragma once

#include "bertha/addr.hpp"
#include "bertha/buffer.hpp"
#include "bertha/chunnel.hpp"
#include "bertha/error.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

namespace bertha {

// A fixed-capacity FIFO of messages; storage is allocated once.
class MsgRing {
  public:
    explicit MsgRing(uint32_t capacity) : slots_(pow2(capacity)), mask_(slots_.size() - 1) {}
    bool push(Msg&& m) {
        if (count_ == slots_.size()) return false;
        slots_[(head_ + count_++) & mask_] = std::move(m);
        return true;
    }
    Msg& front() { return slots_[head_]; }
    Msg pop() {
        Msg m = std::move(slots_[head_]);
        head_ = (head_ + 1) & mask_;
        --count_;
        return m;
    }
    size_t size() const { return count_; }
    void clear() {
        while (count_) pop();
    }

  private:
    static size_t pow2(uint32_t v) {
        size_t p = 1;
        while (p < v) p <<= 1;
        return p;
    }
    std::vector<Msg> slots_;
    size_t mask_, head_ = 0, count_ = 0;
};

class PeerTable {
  public:
    PeerTable(uint32_t peer_queue, uint32_t backlog) : peer_queue_(peer_queue), backlog_cap_(backlog) {}

    enum class Routed { queued, new_peer, queue_full, backlog_full };

    // Take a received message: into its peer's queue, or as the first message of a new peer.
    // Always takes it: queued, or dropped (queue_full: a known peer's queue was full;
    // backlog_full: a new peer found the accept backlog full) for the caller to count.
    Routed route(Msg&& m) {
        auto it = by_peer_.find(m.peer());
        if (it != by_peer_.end()) {
            if (!queues_[it->second]->ring.push(std::move(m))) return Routed::queue_full;
            return Routed::queued;
        }
        if (backlog_size() >= backlog_cap_) return Routed::backlog_full;
        uint32_t q;
        if (!free_queues_.empty()) {
            q = free_queues_.back();
            free_queues_.pop_back();
        } else {
            q = uint32_t(queues_.size());
            queues_.push_back(std::make_unique<Queue>(peer_queue_));
        }
        Queue& queue = *queues_[q];
        queue.peer = m.peer();
        by_peer_.emplace(queue.peer, q);
        queue.ring.push(std::move(m));
        if (backlog_head_ == backlog_.size()) backlog_.clear(), backlog_head_ = 0;
        backlog_.push_back(q);
        return Routed::new_peer;
    }

    // The next new peer's queue, if one is waiting.
    std::optional<uint32_t> next_new() {
        if (!backlog_size()) return std::nullopt;
        return backlog_[backlog_head_++];
    }
    size_t backlog_size() const { return backlog_.size() - backlog_head_; }

    MsgRing& queue(uint32_t q) { return queues_[q]->ring; }
    const Addr& peer(uint32_t q) const { return queues_[q]->peer; }

    // The peer's connection closed: its queue is emptied and reused; its next message is a new
    // peer's.
    void close(uint32_t q) {
        Queue& queue = *queues_[q];
        queue.ring.clear();
        by_peer_.erase(queue.peer);
        free_queues_.push_back(q);
    }

  private:
    struct Queue {
        explicit Queue(uint32_t cap) : ring(cap) {}
        MsgRing ring;
        Addr peer;
    };
    uint32_t peer_queue_, backlog_cap_;
    std::vector<std::unique_ptr<Queue>> queues_;
    std::vector<uint32_t> free_queues_;
    std::unordered_map<Addr, uint32_t, AddrHash> by_peer_;
    std::vector<uint32_t> backlog_; // new peers in arrival order (FIFO via head index)
    size_t backlog_head_ = 0;
};

// A peer connection's recv: what its queue holds, else `pump(deadline)` (the listener's
// receive, which routes into every queue) until something lands in this one or the deadline
// passes. Other peers' traffic keeps the pump busy: the deadline still holds.
template <class Pump>
Result<size_t> recv_queued(MsgRing& q, std::span<Msg> batch, Deadline deadline, Pump&& pump) {
    if (batch.empty()) return size_t(0);
    for (;;) {
        size_t n = 0;
        while (n < batch.size() && q.size()) batch[n++] = q.pop();
        if (n) return n;
        auto r = pump(deadline);
        if (!r) return std::unexpected(std::move(r.error()));
        if (q.size() == 0 && (*r == 0 || Clock::now() >= deadline)) return size_t(0);
    }
}

// A listener's accept: the next new peer's queue, pumping until one arrives or the deadline.
template <class Pump>
Result<std::optional<uint32_t>> accept_queued(PeerTable& t, Deadline deadline, Pump&& pump) {
    for (;;) {
        if (auto q = t.next_new()) return q;
        auto r = pump(deadline);
        if (!r) return std::unexpected(std::move(r.error()));
        if (!t.backlog_size() && (*r == 0 || Clock::now() >= deadline))
            return std::optional<uint32_t>{};
    }
}

} // namespace bertha
