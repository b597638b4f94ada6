#include "loader/stages.hpp"

#include "bertha/kv.h"
#include "count.skel.h"
#include "shard.skel.h"
#include "xsk.skel.h"

#include <bpf/btf.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>

namespace bertha::load {
namespace {

// One entry per stage: what it is, and how its skeleton is opened and configured. The skeleton
// is destroyed when load() returns; the program lives on through the returned fd.
struct StageDef {
    StageInfo info;
    std::function<Result<Fd>(Hook, const Config&, const SharedMaps&, std::string_view, StagePlace)>
        load;
};

Result<Fd> load_count(Hook hook, const Config&, const SharedMaps& maps, std::string_view ifname,
                      StagePlace place) {
    Owned<count, count__destroy> skel(count__open());
    if (!skel) return fail_sys("stage count", "open the count skeleton", errno);
    auto* prog = hook == Hook::xdp ? skel->progs.count_xdp : skel->progs.count_tc;
    return load_program(skel->obj, prog, maps, ifname, place);
}

Result<void> set_rodata_u32(bpf_object* obj, const char* var, uint32_t value,
                            const std::string& component);

// xsk: `sockets=CHAIN` redirects into that chain's sockets instead of its own chain's.
Result<Fd> load_xsk(Hook, const Config& config, const SharedMaps& maps, std::string_view ifname,
                    StagePlace place) {
    Owned<xsk, xsk__destroy> skel(xsk__open());
    if (!skel) return fail_sys("stage xsk", "open the xsk skeleton", errno);
    for (auto& [key, value] : config) { // parse_config admits only "sockets"
        char* end = nullptr;
        unsigned long chain = std::strtoul(value.c_str(), &end, 10);
        if (value.empty() || *end || chain >= BERTHA_MAX_CHAINS)
            return fail(Errc::invalid_argument, "stage xsk",
                        "sockets=" + value + ": not a chain id (0 to " +
                            std::to_string(BERTHA_MAX_CHAINS - 1) + ")");
        if (auto r = set_rodata_u32(skel->obj, "xsk_chain", uint32_t(chain), "stage xsk"); !r)
            return std::unexpected(r.error());
    }
    return load_program(skel->obj, skel->progs.xsk_xdp, maps, ifname, place);
}

// shard: `shards=N,base=P` (both required): N shards (1 to BERTHA_SHARD_MAX), shard i on UDP port
// P + i, all of them ports (P + N - 1 <= 65535).
Result<Fd> load_shard(Hook, const Config& config, const SharedMaps& maps, std::string_view ifname,
                      StagePlace place) {
    const std::string component = "stage shard";
    std::optional<unsigned long> shards, base;
    for (auto& [key, value] : config) { // parse_config admits only "shards" and "base"
        char* end = nullptr;
        unsigned long v = std::strtoul(value.c_str(), &end, 10);
        bool ok = !value.empty() && value[0] >= '0' && value[0] <= '9' && !*end;
        if (key == "shards") {
            if (!ok || v < 1 || v > BERTHA_SHARD_MAX)
                return fail(Errc::invalid_argument, component,
                            "shards=" + value + ": not a shard count (1 to " +
                                std::to_string(BERTHA_SHARD_MAX) + ")");
            shards = v;
        } else {
            if (!ok || v < 1 || v > 65535)
                return fail(Errc::invalid_argument, component,
                            "base=" + value + ": not a UDP port (1 to 65535)");
            base = v;
        }
    }
    if (!shards || !base)
        return fail(Errc::invalid_argument, component,
                    "needs shards=N,base=PORT (shard i listens on UDP port PORT+i)");
    if (*base + *shards - 1 > 65535)
        return fail(Errc::invalid_argument, component,
                    "base=" + std::to_string(*base) + " with shards=" + std::to_string(*shards) +
                        ": the last shard's port " + std::to_string(*base + *shards - 1) +
                        " is above 65535");
    Owned<shard, shard__destroy> skel(shard__open());
    if (!skel) return fail_sys(component, "open the shard skeleton", errno);
    if (auto r = set_rodata_u32(skel->obj, "shard_count", uint32_t(*shards), component); !r)
        return std::unexpected(r.error());
    if (auto r = set_rodata_u32(skel->obj, "shard_base", uint32_t(*base), component); !r)
        return std::unexpected(r.error());
    return load_program(skel->obj, skel->progs.shard_steer, maps, ifname, place);
}

// Write a __u32 `const volatile` global of the object's rodata, found by name through BTF.
Result<void> set_rodata_u32(bpf_object* obj, const char* var, uint32_t value,
                            const std::string& component) {
    bpf_map* rodata = nullptr;
    bpf_map* m = nullptr;
    bpf_object__for_each_map(m, obj) {
        std::string_view name = bpf_map__name(m);
        if (name.size() >= 7 && name.substr(name.size() - 7) == ".rodata") rodata = m;
    }
    const btf* b = bpf_object__btf(obj);
    int sec = b ? btf__find_by_name_kind(b, ".rodata", BTF_KIND_DATASEC) : -1;
    size_t size = 0;
    auto* data = rodata ? static_cast<const uint8_t*>(bpf_map__initial_value(rodata, &size))
                        : nullptr;
    if (sec > 0 && data) {
        const btf_type* t = btf__type_by_id(b, uint32_t(sec));
        const btf_var_secinfo* vs = btf_var_secinfos(t);
        for (unsigned i = 0; i < btf_vlen(t); ++i, ++vs) {
            const btf_type* v = btf__type_by_id(b, vs->type);
            if (std::strcmp(btf__name_by_offset(b, v->name_off), var) != 0) continue;
            if (vs->size != sizeof value || vs->offset + sizeof value > size) break;
            std::vector<uint8_t> image(data, data + size); // libbpf 1.1 lends it read-only
            std::memcpy(image.data() + vs->offset, &value, sizeof value);
            if (int err = bpf_map__set_initial_value(rodata, image.data(), image.size()); err)
                return fail_sys(component, std::string("set ") + var, -err);
            return {};
        }
    }
    return fail(Errc::invalid_argument, component,
                std::string("has no __u32 rodata variable ") + var +
                    " (a stage includes bertha/stage.h)");
}

const std::vector<StageDef>& registry() {
    static const std::vector<StageDef> defs = {
        {{"count", "counts every data datagram of the flow (pass; negotiation: miss) and hands it "
          "on untouched", true, true,
          {}},
         load_count},
        {{"shard",
          "steers a memcached UDP request to its key's shard: rewrites the destination port to "
          "base+shard (hit), else hands it on untouched (pass)",
          true, false, {"shards", "base"}},
         load_shard},
        {{"xsk",
          "redirects the flow into its AF_XDP sockets (one per RX queue; miss: none there, to "
          "the kernel)",
          true, false, {"sockets"}, true},
         load_xsk},
    };
    return defs;
}

const StageDef* find(std::string_view name) {
    for (auto& d : registry())
        if (d.info.name == name) return &d;
    return nullptr;
}

std::string known_names() {
    std::string s;
    for (auto& d : registry()) s += (s.empty() ? "" : ", ") + std::string(d.info.name);
    return s;
}

} // namespace

std::vector<StageInfo> known_stages() {
    std::vector<StageInfo> out;
    for (auto& d : registry()) out.push_back(d.info);
    return out;
}

Result<Config> parse_config(const StageInfo& info, std::string_view text) {
    Config out;
    const std::string component = "stage " + std::string(info.name);
    while (!text.empty()) {
        auto comma = text.find(',');
        auto item = text.substr(0, comma);
        text = comma == std::string_view::npos ? std::string_view{} : text.substr(comma + 1);
        auto eq = item.find('=');
        if (eq == std::string_view::npos || eq == 0)
            return fail(Errc::invalid_argument, component,
                        "configuration '" + std::string(item) + "' is not key=value");
        auto key = item.substr(0, eq);
        bool known = false;
        for (auto k : info.keys) known |= k == key;
        if (!known) {
            std::string keys;
            for (auto k : info.keys) keys += (keys.empty() ? "" : ", ") + std::string(k);
            return fail(Errc::invalid_argument, component,
                        "unknown key '" + std::string(key) + "' (it takes " +
                            (keys.empty() ? std::string("no configuration") : keys) + ")");
        }
        out.emplace_back(std::string(key), std::string(item.substr(eq + 1)));
    }
    return out;
}

Result<Fd> load_stage(const StageSpec& stage, Hook hook, const SharedMaps& maps,
                      std::string_view ifname, StagePlace place) {
    const StageDef* def = find(stage.name);
    if (!def)
        return fail(Errc::invalid_argument, "stage " + stage.name,
                    "no such stage (known: " + known_names() + ")");
    if ((hook == Hook::xdp && !def->info.xdp) || (hook == Hook::tc_egress && !def->info.tc))
        return fail(Errc::invalid_argument, "stage " + stage.name,
                    "has no program for the " + std::string(to_string(hook)) + " hook");
    auto config = parse_config(def->info, stage.config);
    if (!config) return std::unexpected(config.error());
    return def->load(hook, *config, maps, ifname, place);
}

Result<Fd> load_program(bpf_object* obj, bpf_program* prog, const SharedMaps& maps,
                        std::string_view ifname, std::optional<StagePlace> place) {
    const std::string name = bpf_program__name(prog);
    const std::string component = std::string(ifname) + ": program " + name;
    if (place) {
        if (auto r = set_rodata_u32(obj, "bertha_slot", place->slot, component); !r)
            return std::unexpected(r.error());
        if (auto r = set_rodata_u32(obj, "bertha_next_slot", place->next, component); !r)
            return std::unexpected(r.error());
    }
    bpf_program* p = nullptr;
    bpf_object__for_each_program(p, obj) bpf_program__set_autoload(p, p == prog);
    for (auto& [map_name, fd] : maps.fds) {
        bpf_map* m = bpf_object__find_map_by_name(obj, map_name.c_str());
        if (!m) continue;
        if (int err = bpf_map__reuse_fd(m, fd); err)
            return fail_sys(component, "reuse the interface's map " + map_name, -err);
    }
    LibbpfCapture capture;
    if (int err = bpf_object__load(obj); err) {
        Error e{Errc::system, component, "load refused: " + std::string(std::strerror(-err)),
                -err};
        auto log = capture.verifier_log();
        if (!log.empty()) e.message += "\nverifier log:\n" + log;
        return std::unexpected(std::move(e));
    }
    int fd = fcntl(bpf_program__fd(prog), F_DUPFD_CLOEXEC, 3);
    if (fd < 0) return fail_sys(component, "dup the program fd", errno);
    return Fd(fd);
}

} // namespace bertha::load
