// RAII for the kernel objects the loader holds, and the capture of libbpf's messages (the
// verifier log) while an object loads. Internal to libbertha-load.
#pragma once

#include "bertha/error.hpp"
#include "bertha/fd.hpp"

#include <bpf/libbpf.h>
#include <string>
#include <string_view>
#include <unistd.h>
#include <utility>

namespace bertha::load {

using bertha::Fd; // userspace/bertha/fd.hpp

// A skeleton (or any libbpf-owned object) destroyed with its own function.
template <class T, void (*Destroy)(T*)> class Owned {
  public:
    explicit Owned(T* p = nullptr) noexcept : p_(p) {}
    Owned(Owned&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
    Owned& operator=(Owned&&) = delete;
    ~Owned() {
        if (p_) Destroy(p_);
    }
    T* get() const noexcept { return p_; }
    T* operator->() const noexcept { return p_; }
    explicit operator bool() const noexcept { return p_ != nullptr; }

  private:
    T* p_;
};

// While alive, libbpf's warnings and debug messages (the verifier log of a failed load among
// them) go into text() instead of stderr. Loader calls are serialized, so one at a time.
class LibbpfCapture {
  public:
    LibbpfCapture();
    ~LibbpfCapture();
    LibbpfCapture(const LibbpfCapture&) = delete;
    LibbpfCapture& operator=(const LibbpfCapture&) = delete;
    const std::string& text() const noexcept;
    // The verifier's part of the messages (between libbpf's BEGIN/END markers), else all of it,
    // trimmed to its last `max` bytes.
    std::string verifier_log(size_t max = 8192) const;

  private:
    libbpf_print_fn_t previous_;
};

} // namespace bertha::load
