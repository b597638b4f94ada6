// The stages the loader can put in a chain, and how one is loaded: its skeleton is opened, its
// configuration written into rodata, the interface's shared maps handed over, and its program
// for the hook loaded. Internal to libbertha-load; a new offload registers itself in stages.cpp.
#pragma once

#include "bertha/error.hpp"
#include "loader/kernel_objects.hpp"
#include "loader/loader.hpp"

#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace bertha::load {

// The interface's shared maps, by the names every object declares (bertha/stage.h).
struct SharedMaps {
    std::vector<std::pair<std::string, int>> fds; // name -> fd
};

using Config = std::vector<std::pair<std::string, std::string>>;

// Parse "key=val,key=val" against the keys a stage accepts.
Result<Config> parse_config(const StageInfo& info, std::string_view text);

// Where a stage sits in its chain: written into its rodata (bertha/stage.h) before load.
struct StagePlace {
    uint32_t slot = 0;
    uint32_t next = BERTHA_NO_SLOT; // the next stage's slot; BERTHA_NO_SLOT for the last
};

// Load `stage` for `hook` with the interface's maps. Returns the program's fd (the object is
// closed: the fd, then the program array, keep the program alive). `ifname` names errors.
Result<Fd> load_stage(const StageSpec& stage, Hook hook, const SharedMaps& maps,
                      std::string_view ifname, StagePlace place = {});

// Shared by the stage loaders and the root programs: hand `obj` the interface's maps, write the
// stage's place (stages only), load only `prog` (the object's other programs stay unloaded),
// and return a dup of its fd. A refusal carries the interface, the program and the verifier log.
Result<Fd> load_program(bpf_object* obj, bpf_program* prog, const SharedMaps& maps,
                        std::string_view ifname, std::optional<StagePlace> place = {});

} // namespace bertha::load
