#include "xsk/umem.hpp"

#include "bertha/log.hpp"

#include <cerrno>
#include <cstring>

namespace bertha::xsk {

Result<std::unique_ptr<Umem>> Umem::create(BufferPool& pool, uint32_t fill_size, uint32_t comp_size,
                                           const std::string& who) {
    const uint32_t chunk = pool.slot_size();
    if (chunk != 2048 && chunk != 4096)
        return fail(Errc::invalid_argument, who,
                    "UMEM chunks are 2048 or 4096 bytes; the pool's slots are " +
                        std::to_string(chunk));
    std::unique_ptr<Umem> u(new Umem());
    u->chunk_ = chunk;
    xsk_umem_config cfg{};
    cfg.fill_size = fill_size;
    cfg.comp_size = comp_size;
    cfg.frame_size = chunk;
    cfg.frame_headroom = 0; // the kernel still leaves XDP_PACKET_HEADROOM in front of frames
    cfg.flags = 0;          // aligned chunks
    const uint64_t bytes = uint64_t(pool.slots()) * chunk;
    int err = xsk_umem__create(&u->umem_, pool.slot(0), bytes, &u->fill, &u->comp, &cfg);
    if (err) {
        u->umem_ = nullptr;
        std::string what = "registering " + std::to_string(bytes >> 10) + " KiB of UMEM (" +
                           std::to_string(pool.slots()) + " chunks of " + std::to_string(chunk) +
                           " bytes)";
        if (-err == ENOBUFS) // the kernel charges UMEM to RLIMIT_MEMLOCK without CAP_IPC_LOCK
            what += " over the locked-memory limit (RLIMIT_MEMLOCK; CAP_IPC_LOCK lifts it)";
        return fail_sys(who, what, -err);
    }
    return u;
}

Umem::~Umem() {
    if (!umem_) return;
    int err = xsk_umem__delete(umem_);
    if (err) log(LogLevel::warn, "xsk", std::string("xsk_umem__delete: ") + std::strerror(-err));
}

} // namespace bertha::xsk
