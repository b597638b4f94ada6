// The root programs on an interface's hooks: the XDP dispatcher (a pinned bpf_link; native mode,
// else generic, and which one is reported) and the TC egress root (a tcx link where the kernel
// has tcx, else a clsact filter). Internal to libbertha-load.
#pragma once

#include "bertha/error.hpp"
#include "loader/kernel_objects.hpp"
#include "loader/loader.hpp"
#include "loader/stages.hpp"

#include <string>

namespace bertha::load {

// Pin names inside an interface's directory.
inline constexpr const char* kXdpRootPin = "xdp_root";
inline constexpr const char* kXdpLinkPin = "xdp_link";
inline constexpr const char* kTcRootPin = "tc_root";
inline constexpr const char* kTcLinkPin = "tc_link";
// Present when the loader created the clsact qdisc (so it removes it again, if nothing else
// uses it by then): a second pin of the egress root, since bpffs holds only BPF objects.
inline constexpr const char* kClsactOursPin = "tc_clsact_ours";
// clsact filter identity: ours, whatever else is on the hook.
inline constexpr uint32_t kClsactHandle = 0xbe27;
inline constexpr uint32_t kClsactPriority = 0xbe27 & 0x7fff;

struct RootTarget {
    std::string ifname;
    int ifindex = 0;
    std::string dir; // pin directory
    const SharedMaps* maps = nullptr;
};

// Attach the XDP dispatcher (idempotent). `why_generic` receives the reason when native mode
// was not used.
Result<void> attach_xdp_root(const RootTarget& t, const Options& opts, std::string* why_generic);
Result<void> detach_xdp_root(const RootTarget& t);
Result<void> attach_tc_root(const RootTarget& t, const Options& opts);
Result<void> detach_tc_root(const RootTarget& t);

HookStatus xdp_root_status(const RootTarget& t);
HookStatus tc_root_status(const RootTarget& t);

// The root program's fd (for explain), from its pin.
Result<Fd> root_prog(const RootTarget& t, Hook hook);

// Name and id of a program by id, "id 42" when it cannot be looked up.
std::string describe_prog(uint32_t id);

} // namespace bertha::load
