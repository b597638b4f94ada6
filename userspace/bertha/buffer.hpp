// Message buffers. The base chunnel owns one BufferPool: a single mapping cut into equal slots.
// A Msg lends one slot upward with head-room in front of the payload, so a chunnel can push or
// pull its header in place instead of copying the payload. Dropping a Msg gives the slot back.
#pragma once

#include "bertha/addr.hpp"
#include "bertha/error.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

namespace bertha {

class BufferPool {
  public:
    // Slots [0, kernel_slots) are handed to the kernel (an io_uring provided-buffer ring) and
    // come back through `recycle`; the rest are kept on a free stack for sending.
    using RecycleFn = void (*)(void* ctx, uint32_t slot) noexcept;

    static Result<std::unique_ptr<BufferPool>> create(uint32_t slots, uint32_t slot_size,
                                                      uint32_t kernel_slots);
    ~BufferPool();
    BufferPool(const BufferPool&) = delete;
    BufferPool& operator=(const BufferPool&) = delete;

    std::byte* slot(uint32_t id) const noexcept { return base_ + size_t(id) * slot_size_; }
    uint32_t slot_size() const noexcept { return slot_size_; }
    uint32_t slots() const noexcept { return slots_; }
    uint32_t kernel_slots() const noexcept { return kernel_slots_; }
    uint32_t free_count() const noexcept { return uint32_t(free_.size()); }

    // A free sending slot, or nullopt-like -1 when all are lent out.
    int64_t take() noexcept {
        if (free_.empty()) return -1;
        uint32_t id = free_.back();
        free_.pop_back();
        return id;
    }
    void give_back(uint32_t id) noexcept {
        if (id < kernel_slots_ && recycle_)
            recycle_(recycle_ctx_, id);
        else
            free_.push_back(id);
    }
    void set_recycle(RecycleFn fn, void* ctx) noexcept {
        recycle_ = fn;
        recycle_ctx_ = ctx;
    }

  private:
    BufferPool() = default;
    std::byte* base_ = nullptr;
    size_t map_len_ = 0;
    uint32_t slots_ = 0, slot_size_ = 0, kernel_slots_ = 0;
    std::vector<uint32_t> free_; // reserved to `slots` at creation: pushes never allocate
    RecycleFn recycle_ = nullptr;
    void* recycle_ctx_ = nullptr;
};

// One datagram in a lent buffer: [headroom | payload | tailroom] inside one pool slot.
// Move-only; destroying or overwriting a Msg returns its slot to the pool.
class Msg {
  public:
    enum Flags : uint32_t { truncated = 1u };

    Msg() noexcept = default;
    Msg(BufferPool* pool, uint32_t slot, uint32_t offset, uint32_t length) noexcept
        : pool_(pool), slot_(slot), off_(offset), len_(length) {}
    Msg(Msg&& o) noexcept { steal(o); }
    Msg& operator=(Msg&& o) noexcept {
        if (this != &o) {
            release();
            steal(o);
        }
        return *this;
    }
    Msg(const Msg&) = delete;
    Msg& operator=(const Msg&) = delete;
    ~Msg() { release(); }

    explicit operator bool() const noexcept { return pool_ != nullptr; }

    std::byte* data() const noexcept { return pool_->slot(slot_) + off_; }
    size_t size() const noexcept { return len_; }
    std::span<std::byte> bytes() const noexcept { return {data(), len_}; }
    size_t headroom() const noexcept { return off_; }
    size_t tailroom() const noexcept { return pool_->slot_size() - off_ - len_; }

    // Grow the payload at the front by n bytes (a header) and return where to write it,
    // or nullptr when the head-room is too small.
    std::byte* push(size_t n) noexcept {
        if (n > off_) return nullptr;
        off_ -= uint32_t(n);
        len_ += uint32_t(n);
        return data();
    }
    // Drop n bytes from the front (a header that has been read). False if n > size().
    bool pull(size_t n) noexcept {
        if (n > len_) return false;
        off_ += uint32_t(n);
        len_ -= uint32_t(n);
        return true;
    }
    // Set the payload length within the slot. False if it does not fit.
    bool resize(size_t n) noexcept {
        if (n > pool_->slot_size() - off_) return false;
        len_ = uint32_t(n);
        return true;
    }
    // Copy bytes into the payload (for producers that build messages from scratch).
    bool assign(std::span<const std::byte> src) noexcept {
        if (!resize(src.size())) return false;
        if (!src.empty()) std::memcpy(data(), src.data(), src.size());
        return true;
    }

    const Addr& peer() const noexcept { return peer_; }
    void set_peer(const Addr& a) noexcept { peer_ = a; }
    bool is_truncated() const noexcept { return flags_ & truncated; }
    void set_flags(uint32_t f) noexcept { flags_ = f; }

    void release() noexcept {
        if (pool_) pool_->give_back(slot_);
        pool_ = nullptr;
    }
    uint32_t slot() const noexcept { return slot_; }

  private:
    void steal(Msg& o) noexcept {
        pool_ = o.pool_;
        slot_ = o.slot_;
        off_ = o.off_;
        len_ = o.len_;
        flags_ = o.flags_;
        peer_ = o.peer_;
        o.pool_ = nullptr;
    }
    BufferPool* pool_ = nullptr;
    uint32_t slot_ = 0, off_ = 0, len_ = 0, flags_ = 0;
    Addr peer_;
};

} // namespace bertha
