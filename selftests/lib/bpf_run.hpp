// Run a loaded BPF program on one packet with BPF_PROG_TEST_RUN: verdict and packet out.
#pragma once

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace bertha::test {

struct RunResult {
    int err = 0;          // 0, or -errno from the syscall
    uint32_t verdict = 0; // XDP_PASS, XDP_TX, ...
    std::vector<uint8_t> out;
    uint32_t duration_ns = 0; // kernel-measured, averaged over `repeat`
};

inline RunResult run_prog(int prog_fd, const std::vector<uint8_t>& in, int repeat = 1) {
    RunResult r;
    r.out.resize(in.size() + 256);
    LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = in.data(), .data_out = r.out.data(),
                .data_size_in = uint32_t(in.size()), .data_size_out = uint32_t(r.out.size()),
                .repeat = repeat);
    r.err = bpf_prog_test_run_opts(prog_fd, &opts);
    if (r.err) r.err = -errno;
    r.verdict = opts.retval;
    r.out.resize(r.err ? 0 : opts.data_size_out);
    r.duration_ns = opts.duration;
    return r;
}

} // namespace bertha::test
