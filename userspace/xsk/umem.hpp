// The UMEM: a BufferPool's whole mapping registered with the kernel as AF_XDP frame memory, one
// pool slot per UMEM chunk, with the fill and completion rings that belong to it (libxdp's
// xsk_umem__create). It owns the registration, not the memory: the pool outlives it, so a
// failed zero-copy bind can be retried in copy mode over a fresh UMEM on the same pool.
#pragma once

#include "bertha/buffer.hpp"
#include "bertha/error.hpp"

#include <cstdint>
#include <memory>
#include <string>
#include <xdp/xsk.h>

namespace bertha::xsk {

class Umem {
  public:
    // fill_size and comp_size: powers of two. The pool's slot size is the chunk size (2048 or
    // 4096); its mapping is page-aligned (mmap), as the kernel requires.
    static Result<std::unique_ptr<Umem>> create(BufferPool& pool, uint32_t fill_size,
                                                uint32_t comp_size, const std::string& who);
    ~Umem();
    Umem(const Umem&) = delete;
    Umem& operator=(const Umem&) = delete;

    xsk_umem* get() const noexcept { return umem_; }
    // libxdp keeps pointers to these two: the Umem never moves (it lives behind a unique_ptr).
    xsk_ring_prod fill{};
    xsk_ring_cons comp{};

    // Chunk addresses are offsets into the mapping; a chunk is a pool slot.
    uint64_t addr_of(uint32_t slot) const noexcept { return uint64_t(slot) * chunk_; }
    uint32_t slot_of(uint64_t addr) const noexcept { return uint32_t(addr / chunk_); }
    uint32_t chunk_size() const noexcept { return chunk_; }

  private:
    Umem() = default;
    xsk_umem* umem_ = nullptr;
    uint32_t chunk_ = 0;
};

} // namespace bertha::xsk
