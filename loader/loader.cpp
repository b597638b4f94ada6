#include "loader/loader.hpp"

#include "bertha/log.hpp"
#include "loader/bpffs.hpp"
#include "loader/roots.hpp"
#include "loader/stages.hpp"

#include "dispatcher.skel.h"

#include <algorithm>
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <mutex>
#include <net/if.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

namespace bertha::load {

std::string_view to_string(Hook h) noexcept { return h == Hook::xdp ? "xdp" : "tc-egress"; }

std::string_view counter_name(unsigned c) noexcept {
    static constexpr std::string_view names[BERTHA_COUNTERS] = {"pass", "tx",   "redirect", "drop",
                                                                "hit",  "miss", "error"};
    return c < BERTHA_COUNTERS ? names[c] : "?";
}

Result<StageSpec> StageSpec::parse(std::string_view text) {
    StageSpec s;
    auto colon = text.find(':');
    s.name = std::string(text.substr(0, colon));
    if (colon != std::string_view::npos) s.config = std::string(text.substr(colon + 1));
    auto ok = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'; };
    if (s.name.empty() || s.name.size() >= BERTHA_NAME_LEN || !std::all_of(s.name.begin(), s.name.end(), ok))
        return fail(Errc::invalid_argument, "stage",
                    "'" + std::string(text) + "': a stage is NAME[:key=val,...], NAME of at most " +
                        std::to_string(BERTHA_NAME_LEN - 1) + " characters [a-z0-9_]");
    if (s.config.size() >= BERTHA_CONFIG_LEN)
        return fail(Errc::invalid_argument, "stage " + s.name,
                    "configuration longer than " + std::to_string(BERTHA_CONFIG_LEN - 1) +
                        " characters");
    // A spec is one field of an agent request and a C string in the chain record: printable
    // ASCII, no spaces, no NUL.
    for (size_t i = 0; i < s.config.size(); ++i) {
        auto c = static_cast<unsigned char>(s.config[i]);
        if (c <= 0x20 || c >= 0x7f)
            return fail(Errc::invalid_argument, "stage " + s.name,
                        "configuration has a space, control or non-ASCII byte at offset " +
                            std::to_string(i) + " (key=val,... of printable ASCII)");
    }
    return s;
}

std::string StageSpec::text() const { return config.empty() ? name : name + ":" + config; }

std::string FlowKey::text() const {
    std::string s = ifname + " " + std::string(to_string(hook)) + " udp/" + std::to_string(port);
    if (peer) s += (hook == Hook::xdp ? " from " : " to ") + peer->to_string();
    return s;
}

namespace {

constexpr const char* kMapNames[] = {"bertha_flows",   "bertha_xdp_chain", "bertha_tc_chain",
                                     "bertha_stats",   "bertha_scratch",   "bertha_chains",
                                     "bertha_ports"};
constexpr std::string_view kComponent = "bertha-load";
constexpr const char* kXsksMap = "bertha_xsks";

bertha_flow_key wire_key(const FlowKey& k) {
    bertha_flow_key w{};
    w.hook = uint8_t(k.hook);
    w.proto = IPPROTO_UDP;
    w.port = htons(k.port);
    if (k.peer) {
        w.peer_port = htons(k.peer->port());
        if (k.peer->family() == AF_INET) {
            w.family = 4;
            auto* sin = reinterpret_cast<const sockaddr_in*>(k.peer->sa());
            std::memcpy(w.peer, &sin->sin_addr, 4);
        } else {
            w.family = 6;
            auto* sin6 = reinterpret_cast<const sockaddr_in6*>(k.peer->sa());
            std::memcpy(w.peer, &sin6->sin6_addr, 16);
        }
    }
    return w;
}

FlowKey key_of(const bertha_flow_key& w, const std::string& ifname) {
    FlowKey k;
    k.ifname = ifname;
    k.hook = Hook(w.hook);
    k.port = ntohs(w.port);
    if (w.family == 4 || w.family == 6) {
        sockaddr_storage ss{};
        if (w.family == 4) {
            auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
            sin->sin_family = AF_INET;
            sin->sin_port = w.peer_port;
            std::memcpy(&sin->sin_addr, w.peer, 4);
            k.peer = Addr::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), sizeof(sockaddr_in));
        } else {
            auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
            sin6->sin6_family = AF_INET6;
            sin6->sin6_port = w.peer_port;
            std::memcpy(&sin6->sin6_addr, w.peer, 16);
            k.peer = Addr::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), sizeof(sockaddr_in6));
        }
    }
    return k;
}

bool same_key(const bertha_flow_key& a, const bertha_flow_key& b) {
    return std::memcmp(&a, &b, sizeof a) == 0;
}

bertha_flow_key any_peer(bertha_flow_key k) {
    k.family = 0;
    k.peer_port = 0;
    std::memset(k.peer, 0, sizeof k.peer);
    return k;
}

// One interface's pinned state, opened (or created) for one operation.
struct Iface {
    std::string ifname, dir_name, dir;
    int ifindex = 0;
    Fd maps[std::size(kMapNames)];
    Fd xsks; // bertha_xsks, once an xsk stage made it (chunnels/xsk)
    SharedMaps shared;

    int flows() const { return maps[0].get(); }
    int chain_array(Hook h) const { return maps[h == Hook::xdp ? 1 : 2].get(); }
    int stats() const { return maps[3].get(); }
    int scratch() const { return maps[4].get(); }
    int chains() const { return maps[5].get(); }
    int ports() const { return maps[6].get(); }

    // The port's entry in bertha_ports: its any-peer chain and whether peer flows exist.
    bertha_flow port_entry(const bertha_flow_key& k) const {
        uint32_t idx = bertha_port_index(k.hook, ntohs(k.port));
        bertha_flow v{};
        if (bpf_map_lookup_elem(ports(), &idx, &v) != 0) v = {};
        return v;
    }
    bool set_port_entry(const bertha_flow_key& k, bertha_flow v) const {
        uint32_t idx = bertha_port_index(k.hook, ntohs(k.port));
        if (!(v.flags & BERTHA_FLOW_CHAIN)) v.chain = 0;
        return bpf_map_update_elem(ports(), &idx, &v, BPF_ANY) == 0;
    }
    RootTarget target() const { return RootTarget{ifname, ifindex, dir, &shared}; }
    std::string component() const { return "interface " + ifname; }

    std::vector<bertha_chain_record> records() const {
        std::vector<bertha_chain_record> out(BERTHA_MAX_CHAINS);
        for (uint32_t i = 0; i < BERTHA_MAX_CHAINS; ++i)
            if (bpf_map_lookup_elem(chains(), &i, &out[i]) != 0) out[i] = {};
        return out;
    }
};

bool exists(const std::string& path) {
    struct stat st{};
    return ::stat(path.c_str(), &st) == 0;
}

// Remove every pin in the directory, then the directory.
void remove_dir(const std::string& dir) {
    if (DIR* d = ::opendir(dir.c_str())) {
        while (dirent* e = ::readdir(d))
            if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, ".."))
                ::unlink((dir + "/" + e->d_name).c_str());
        ::closedir(d);
    }
    ::rmdir(dir.c_str());
}

std::vector<std::string> list_dir(const std::string& dir) {
    std::vector<std::string> out;
    if (DIR* d = ::opendir(dir.c_str())) {
        while (dirent* e = ::readdir(d))
            if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, ".."))
                out.emplace_back(e->d_name);
        ::closedir(d);
    }
    std::sort(out.begin(), out.end());
    return out;
}

// Create the interface's maps: the dispatcher object declares them; it is loaded with no
// program so that libbpf creates exactly those maps, which are then pinned.
Result<void> create_maps(Iface& f) {
    Owned<dispatcher, dispatcher__destroy> skel(dispatcher__open());
    if (!skel) return fail_sys(f.component(), "open the dispatcher skeleton", errno);
    bpf_program* p = nullptr;
    bpf_object__for_each_program(p, skel->obj) bpf_program__set_autoload(p, false);
    LibbpfCapture capture;
    if (int err = bpf_object__load(skel->obj); err)
        return fail_sys(f.component(), "create the interface's maps: " + capture.text(), -err);
    for (size_t i = 0; i < std::size(kMapNames); ++i) {
        bpf_map* m = bpf_object__find_map_by_name(skel->obj, kMapNames[i]);
        int fd = m ? fcntl(bpf_map__fd(m), F_DUPFD_CLOEXEC, 3) : -1;
        if (fd < 0) return fail_sys(f.component(), std::string("map ") + kMapNames[i], errno);
        f.maps[i] = Fd(fd);
        auto path = f.dir + "/" + kMapNames[i];
        if (bpf_obj_pin(fd, path.c_str()) != 0)
            return fail_sys(f.component(), "pin " + path, errno);
    }
    return {};
}

} // namespace

struct Loader::Impl {
    Options opts;
    std::string root;
    std::mutex mu; // one operation at a time in this process (the flock covers other processes)

    Result<Iface> open_iface(std::string_view ifname, bool create, std::string dir_name = {}) {
        Iface f;
        f.ifname = std::string(ifname);
        f.dir_name = dir_name.empty() ? iface_dir_name(ifname) : dir_name;
        f.dir = root + "/" + f.dir_name;
        f.ifindex = int(if_nametoindex(f.ifname.c_str()));
        if (dir_name.empty() && f.ifindex == 0 && create)
            return fail(Errc::invalid_argument, f.component(), "no such interface");
        bool fresh = false;
        if (!exists(f.dir + "/" + kMapNames[0])) {
            if (!create) return fail(Errc::unavailable, f.component(), "nothing of Bertha's here");
            if (::mkdir(f.dir.c_str(), 0700) != 0 && errno != EEXIST)
                return fail_sys(f.component(), "mkdir " + f.dir, errno);
            fresh = true;
            if (auto r = create_maps(f); !r) {
                remove_dir(f.dir);
                return std::unexpected(r.error());
            }
        } else {
            for (size_t i = 0; i < std::size(kMapNames); ++i) {
                auto path = f.dir + "/" + kMapNames[i];
                f.maps[i] = Fd(bpf_obj_get(path.c_str()));
                if (!f.maps[i])
                    return fail_sys(f.component(), "open the pinned map " + path, errno);
            }
        }
        for (size_t i = 0; i < std::size(kMapNames); ++i)
            f.shared.fds.emplace_back(kMapNames[i], f.maps[i].get());
        if (!fresh && exists(f.dir + "/" + kXsksMap)) {
            f.xsks = Fd(bpf_obj_get((f.dir + "/" + kXsksMap).c_str()));
            if (!f.xsks) return fail_sys(f.component(), std::string("open the pinned ") + kXsksMap, errno);
            f.shared.fds.emplace_back(kXsksMap, f.xsks.get());
        }
        if (fresh) log(LogLevel::debug, kComponent, "created " + f.dir);
        return f;
    }

    // The interface's XSKMAP, made and pinned with its first xsk stage. Not made with the other
    // maps: an interface without AF_XDP sockets has no use for it.
    Result<void> ensure_xsks(Iface& f) {
        if (f.xsks) return {};
        Fd m(bpf_map_create(BPF_MAP_TYPE_XSKMAP, kXsksMap, sizeof(uint32_t), sizeof(uint32_t),
                            BERTHA_XSKS, nullptr));
        if (!m) return fail_sys(f.component(), std::string("create ") + kXsksMap + " (an XSKMAP)", errno);
        auto path = f.dir + "/" + kXsksMap;
        if (bpf_obj_pin(m.get(), path.c_str()) != 0) return fail_sys(f.component(), "pin " + path, errno);
        f.xsks = std::move(m);
        f.shared.fds.emplace_back(kXsksMap, f.xsks.get());
        return {};
    }

    // Detach the roots that no chain needs any more; with no chain left, everything goes.
    Result<void> tidy(Iface& f, bool keep_empty) {
        auto recs = f.records();
        bool any[2] = {false, false};
        for (auto& r : recs)
            if (r.used) any[r.hook & 1] = true;
        if (!any[1])
            if (auto r = detach_tc_root(f.target()); !r) return r;
        if (!any[0] && !any[1] && !keep_empty) {
            if (auto r = detach_xdp_root(f.target()); !r) return r;
            for (auto& m : f.maps) m.reset();
            remove_dir(f.dir);
            lock_path_remove(f.dir_name); // the caller holds it
        }
        return {};
    }

    Result<void> ensure_root(Iface& f, Hook hook) {
        if (hook == Hook::tc_egress) return attach_tc_root(f.target(), opts);
        std::string why;
        if (auto r = attach_xdp_root(f.target(), opts, &why); !r) return r;
        if (!why.empty())
            // Said, not shouted: `status` and `attach` show the mode; lo and many virtual
            // devices have no native XDP, and that is no fault.
            log(LogLevel::info, kComponent,
                f.ifname + ": XDP dispatcher runs in generic mode (" + why + ")");
        return {};
    }

    Result<uint32_t> attach(const FlowKey& key, std::span<const StageSpec> stages) {
        const std::string component = "flow " + key.text();
        if (key.port == 0) return fail(Errc::invalid_argument, component, "a flow needs a port");
        if (stages.empty() || stages.size() > BERTHA_MAX_STAGES)
            return fail(Errc::invalid_argument, component,
                        "a chain has 1 to " + std::to_string(BERTHA_MAX_STAGES) + " stages");
        bool wants_xsks = false;
        for (size_t i = 0; i < stages.size(); ++i) {
            auto& s = stages[i];
            if (auto p = StageSpec::parse(s.text()); !p) return std::unexpected(p.error());
            for (auto& info : known_stages())
                if (info.name == s.name && info.ends_chain && i + 1 != stages.size())
                    return fail(Errc::invalid_argument, component,
                                "stage " + s.name + " redirects the packet: it must be the last");
            wants_xsks |= s.name == "xsk";
        }
        auto lock = IfaceLock::take(iface_dir_name(key.ifname));
        if (!lock) return std::unexpected(lock.error());
        auto f = open_iface(key.ifname, true);
        if (!f) return std::unexpected(f.error());
        auto undo = [&](Error e) -> Result<uint32_t> {
            (void)tidy(*f, false);
            return std::unexpected(std::move(e));
        };
        const auto wkey = wire_key(key);
        auto recs = f->records();
        for (uint32_t c = 0; c < BERTHA_MAX_CHAINS; ++c) {
            auto& r = recs[c];
            if (!r.used || !same_key(r.key, wkey)) continue;
            bool same = r.nstages == stages.size();
            for (size_t i = 0; same && i < stages.size(); ++i)
                same = stages[i].name == r.names[i] && stages[i].config == r.config[i];
            if (!same) {
                std::string have;
                for (unsigned i = 0; i < r.nstages; ++i)
                    have += (i ? " -> " : "") + StageSpec{r.names[i], r.config[i]}.text();
                return fail(Errc::incompatible, component,
                            "already has the chain " + have + " (" + std::to_string(r.refs) +
                                " reference(s)); detach it first");
            }
            // The root first: a refused attach must not leave a reference behind.
            if (auto e = ensure_root(*f, key.hook); !e) return std::unexpected(e.error());
            r.refs++;
            if (bpf_map_update_elem(f->chains(), &c, &r, BPF_ANY) != 0)
                return fail_sys(component, "update the chain record", errno);
            return c;
        }
        uint32_t chain = BERTHA_NO_CHAIN;
        for (uint32_t c = 0; c < BERTHA_MAX_CHAINS && chain == BERTHA_NO_CHAIN; ++c)
            if (!recs[c].used) chain = c;
        if (chain == BERTHA_NO_CHAIN)
            return undo(Error{Errc::unavailable, f->component(),
                              "all " + std::to_string(BERTHA_MAX_CHAINS) + " chains are in use", 0});
        if (auto e = ensure_root(*f, key.hook); !e) return undo(e.error());
        if (wants_xsks)
            if (auto e = ensure_xsks(*f); !e) return undo(e.error());

        // Load every stage before touching the chain: a refusal changes nothing.
        std::vector<Fd> progs;
        for (auto& s : stages) {
            uint32_t slot = chain * BERTHA_MAX_STAGES + uint32_t(progs.size());
            StagePlace place{slot, progs.size() + 1 < stages.size() ? slot + 1 : BERTHA_NO_SLOT};
            auto fd = load_stage(s, key.hook, f->shared, f->ifname, place);
            if (!fd) return undo(fd.error());
            progs.push_back(std::move(*fd));
        }
        bertha_chain_record rec{};
        rec.used = 1;
        rec.hook = uint8_t(key.hook);
        rec.nstages = uint8_t(stages.size());
        rec.refs = 1;
        rec.key = wkey;
        // Last stage first: the chain is whole before its first stage can be reached.
        for (size_t i = stages.size(); i-- > 0;) {
            uint32_t slot = chain * BERTHA_MAX_STAGES + uint32_t(i);
            int fd = progs[i].get();
            if (bpf_map_update_elem(f->chain_array(key.hook), &slot, &fd, BPF_ANY) != 0)
                return undo(Error{Errc::system, component, "insert stage " + stages[i].name, errno});
            bpf_prog_info info{};
            uint32_t len = sizeof info;
            bpf_obj_get_info_by_fd(fd, &info, &len);
            rec.prog_ids[i] = info.id;
            std::strncpy(rec.names[i], stages[i].name.c_str(), BERTHA_NAME_LEN - 1);
            std::strncpy(rec.config[i], stages[i].config.c_str(), BERTHA_CONFIG_LEN - 1);
        }
        if (bpf_map_update_elem(f->chains(), &chain, &rec, BPF_ANY) != 0)
            return undo(Error{Errc::system, component, "write the chain record", errno});
        // Enter the flow last: from here on, its packets run the chain.
        bertha_flow entry = f->port_entry(wkey);
        if (key.peer) {
            // The peer's flow first, then the flag that makes the dispatcher look for it.
            bertha_flow value{chain, BERTHA_FLOW_CHAIN};
            if (bpf_map_update_elem(f->flows(), &wkey, &value, BPF_ANY) != 0)
                return undo(Error{Errc::system, component, "enter the flow", errno});
            entry.flags |= BERTHA_FLOW_PEERS;
        } else {
            entry.chain = chain;
            entry.flags |= BERTHA_FLOW_CHAIN;
        }
        if (!f->set_port_entry(wkey, entry))
            return undo(Error{Errc::system, component, "enter the flow", errno});
        log(LogLevel::debug, kComponent, "attached chain " + std::to_string(chain) + " for " + key.text());
        return chain;
    }

    Result<void> remove_chain(Iface& f, uint32_t chain, const bertha_chain_record& rec) {
        const auto anyk = any_peer(rec.key);
        bool peer_specific = rec.key.family != 0;
        // Do other peer-specific flows remain on this hook and port?
        bool other_peers = false;
        auto recs = f.records();
        for (uint32_t c = 0; c < BERTHA_MAX_CHAINS; ++c)
            if (c != chain && recs[c].used && recs[c].key.family != 0 &&
                same_key(any_peer(recs[c].key), anyk))
                other_peers = true;
        // The flow leaves the tables first: no new packet enters the chain being removed.
        bertha_flow entry = f.port_entry(rec.key);
        if (peer_specific) {
            if (!other_peers) entry.flags &= ~BERTHA_FLOW_PEERS;
        } else {
            entry.flags &= ~BERTHA_FLOW_CHAIN;
        }
        f.set_port_entry(rec.key, entry);
        if (peer_specific) bpf_map_delete_elem(f.flows(), &rec.key);
        for (uint32_t i = 0; i < BERTHA_MAX_STAGES; ++i) {
            uint32_t slot = chain * BERTHA_MAX_STAGES + i;
            bpf_map_delete_elem(f.chain_array(Hook(rec.hook)), &slot);
        }
        if (f.xsks) // sockets still open on this chain stop receiving from it
            for (uint32_t q = 0; q < BERTHA_XSK_QUEUES; ++q) {
                uint32_t idx = bertha_xsk_index(chain, q);
                bpf_map_delete_elem(f.xsks.get(), &idx);
            }
        bertha_chain_record empty{};
        if (bpf_map_update_elem(f.chains(), &chain, &empty, BPF_ANY) != 0)
            return fail_sys(f.component(), "clear chain record " + std::to_string(chain), errno);
        // Its counters start from zero when the id is reused.
        std::vector<uint8_t> zeros(size_t(libbpf_num_possible_cpus()) * sizeof(bertha_stage_counters));
        for (uint32_t i = 0; i < BERTHA_MAX_STAGES; ++i) {
            uint32_t idx = bertha_stats_index(rec.hook, chain * BERTHA_MAX_STAGES + i);
            bpf_map_update_elem(f.stats(), &idx, zeros.data(), BPF_ANY);
        }
        return {};
    }

    Result<void> detach(const FlowKey& key, bool all_refs) {
        auto lock = IfaceLock::take(iface_dir_name(key.ifname));
        if (!lock) return std::unexpected(lock.error());
        auto f = open_iface(key.ifname, false);
        if (!f) {
            if (!exists(root + "/" + iface_dir_name(key.ifname)))
                lock_path_remove(iface_dir_name(key.ifname)); // nothing of ours: no lock file
            return std::unexpected(f.error());
        }
        const auto wkey = wire_key(key);
        auto recs = f->records();
        for (uint32_t c = 0; c < BERTHA_MAX_CHAINS; ++c) {
            auto& r = recs[c];
            if (!r.used || !same_key(r.key, wkey)) continue;
            if (r.refs > 1 && !all_refs) {
                r.refs--;
                if (bpf_map_update_elem(f->chains(), &c, &r, BPF_ANY) != 0)
                    return fail_sys(f->component(), "update the chain record", errno);
                return {};
            }
            if (auto e = remove_chain(*f, c, r); !e) return e;
            return tidy(*f, false);
        }
        return fail(Errc::invalid_argument, "flow " + key.text(), "no such flow is attached");
    }

    // set_xsk (fd >= 0) and clear_xsk (fd < 0).
    Result<void> xsk_entry(const FlowKey& key, uint32_t queue, int fd) {
        const std::string component = "flow " + key.text();
        if (queue >= BERTHA_XSK_QUEUES)
            return fail(Errc::invalid_argument, component,
                        "RX queue " + std::to_string(queue) + ": AF_XDP sockets sit on queues 0 to " +
                            std::to_string(BERTHA_XSK_QUEUES - 1));
        auto lock = IfaceLock::take(iface_dir_name(key.ifname));
        if (!lock) return std::unexpected(lock.error());
        auto f = open_iface(key.ifname, false);
        if (!f) return std::unexpected(f.error());
        const auto wkey = wire_key(key);
        auto recs = f->records();
        for (uint32_t c = 0; c < BERTHA_MAX_CHAINS; ++c) {
            auto& r = recs[c];
            if (!r.used || !same_key(r.key, wkey)) continue;
            bool own_xsk = r.nstages > 0 && std::string_view(r.names[r.nstages - 1]) == "xsk" &&
                           r.config[r.nstages - 1][0] == '\0';
            if (!own_xsk || !f->xsks)
                return fail(Errc::invalid_argument, component,
                            "its chain does not end in an xsk stage of its own: no socket of it "
                            "receives anything");
            uint32_t idx = bertha_xsk_index(c, queue);
            if (fd >= 0) {
                uint32_t v = uint32_t(fd);
                if (bpf_map_update_elem(f->xsks.get(), &idx, &v, BPF_ANY) != 0)
                    return fail_sys(component, "put the AF_XDP socket of queue " + std::to_string(queue) +
                                                   " in " + kXsksMap, errno);
            } else if (bpf_map_delete_elem(f->xsks.get(), &idx) != 0 && errno != ENOENT) {
                return fail_sys(component, "take the socket of queue " + std::to_string(queue) +
                                               " out of " + kXsksMap, errno);
            }
            return {};
        }
        return fail(Errc::invalid_argument, component, "no such flow is attached");
    }

    Result<void> detach_all(std::string_view ifname) {
        auto dir_name = iface_dir_name(ifname);
        auto lock = IfaceLock::take(dir_name);
        if (!lock) return std::unexpected(lock.error());
        auto f = open_iface(ifname, false, dir_name);
        if (!f) {
            // Roots without maps (an interrupted attach): still detach what the pins name.
            Iface bare;
            bare.ifname = std::string(ifname);
            bare.dir = root + "/" + dir_name;
            bare.ifindex = int(if_nametoindex(bare.ifname.c_str()));
            if (!exists(bare.dir)) {
                lock_path_remove(dir_name); // nothing of ours here: leave no lock file either
                return std::unexpected(f.error());
            }
            (void)detach_tc_root(bare.target());
            (void)detach_xdp_root(bare.target());
            remove_dir(bare.dir);
            lock_path_remove(dir_name);
            return {};
        }
        auto recs = f->records();
        for (uint32_t c = 0; c < BERTHA_MAX_CHAINS; ++c)
            if (recs[c].used)
                if (auto e = remove_chain(*f, c, recs[c]); !e) return e;
        return tidy(*f, false);
    }

    Result<IfaceStatus> status_of(const std::string& dir_name) {
        auto ifname = ifname_of_dir(dir_name);
        IfaceStatus s;
        s.ifname = ifname;
        s.dir = root + "/" + dir_name;
        s.pins = list_dir(s.dir);
        // An interface of another network namespace cannot be looked at from here.
        bool here = dir_name == iface_dir_name(ifname);
        s.ifindex = here ? int(if_nametoindex(ifname.c_str())) : 0;
        RootTarget t{ifname, s.ifindex, s.dir, nullptr};
        s.xdp = xdp_root_status(t);
        s.tc = tc_root_status(t);
        auto f = open_iface(ifname, false, dir_name);
        if (!f) return s; // roots without maps: shown, so that `detach --all` can clean them
        f->ifindex = s.ifindex;
        auto recs = f->records();
        for (uint32_t c = 0; c < BERTHA_MAX_CHAINS; ++c) {
            auto& r = recs[c];
            if (!r.used) continue;
            ChainStatus cs;
            cs.chain = c;
            cs.key = key_of(r.key, ifname);
            cs.refs = r.refs;
            for (unsigned i = 0; i < r.nstages && i < BERTHA_MAX_STAGES; ++i) {
                cs.stages.push_back(StageSpec{std::string(r.names[i], strnlen(r.names[i], BERTHA_NAME_LEN)),
                                              std::string(r.config[i], strnlen(r.config[i], BERTHA_CONFIG_LEN))});
                cs.prog_ids.push_back(r.prog_ids[i]);
            }
            s.chains.push_back(std::move(cs));
        }
        return s;
    }

    Result<std::vector<IfaceStatus>> status(std::string_view ifname) {
        std::vector<IfaceStatus> out;
        std::vector<std::string> dirs;
        if (!ifname.empty())
            dirs.push_back(iface_dir_name(ifname));
        else
            dirs = list_dir(root);
        for (auto& d : dirs) {
            if (!ifname.empty() && !exists(root + "/" + d))
                return fail(Errc::unavailable, "interface " + std::string(ifname),
                            "nothing of Bertha's here");
            auto s = status_of(d);
            if (!s) return std::unexpected(s.error());
            out.push_back(std::move(*s));
        }
        return out;
    }

    Result<std::vector<StageStats>> stats(std::string_view ifname) {
        auto f = open_iface(ifname, false);
        if (!f) return std::unexpected(f.error());
        const int ncpu = libbpf_num_possible_cpus();
        std::vector<bertha_stage_counters> per(size_t(std::max(ncpu, 1)));
        auto read = [&](uint32_t hook, uint32_t slot, StageStats& st) {
            uint32_t idx = bertha_stats_index(hook, slot);
            if (bpf_map_lookup_elem(f->stats(), &idx, per.data()) != 0) return;
            for (auto& c : per)
                for (unsigned k = 0; k < BERTHA_COUNTERS; ++k) st.counters[k] += c.v[k];
        };
        std::vector<StageStats> out;
        for (uint32_t hook = 0; hook < BERTHA_HOOKS; ++hook) {
            StageStats d;
            d.chain = BERTHA_NO_CHAIN;
            d.hook = Hook(hook);
            d.stage = "dispatcher";
            d.key.ifname = f->ifname;
            d.key.hook = Hook(hook);
            read(hook, BERTHA_DISP_SLOT, d);
            out.push_back(d);
        }
        auto recs = f->records();
        for (uint32_t c = 0; c < BERTHA_MAX_CHAINS; ++c) {
            auto& r = recs[c];
            if (!r.used) continue;
            for (uint32_t i = 0; i < r.nstages && i < BERTHA_MAX_STAGES; ++i) {
                StageStats st;
                st.chain = c;
                st.position = i;
                st.hook = Hook(r.hook);
                st.stage = std::string(r.names[i], strnlen(r.names[i], BERTHA_NAME_LEN));
                st.key = key_of(r.key, f->ifname);
                read(r.hook, c * BERTHA_MAX_STAGES + i, st);
                out.push_back(std::move(st));
            }
        }
        return out;
    }

    Result<Explanation> explain(std::string_view ifname, Hook hook, std::span<const uint8_t> pkt) {
        auto f = open_iface(ifname, false);
        if (!f) return std::unexpected(f.error());
        auto prog = root_prog(f->target(), hook);
        if (!prog) return std::unexpected(prog.error());
        if (pkt.size() < 14)
            return fail(Errc::invalid_argument, "explain",
                        "a packet starts with a 14-byte Ethernet header (got " +
                            std::to_string(pkt.size()) + " bytes)");
        // The run's trail is in this CPU's scratch: stay on one CPU, and check by the sequence
        // number that no real packet ran on it between the run and the read.
        cpu_set_t old_set, one;
        sched_getaffinity(0, sizeof old_set, &old_set);
        int cpu = sched_getcpu();
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        sched_setaffinity(0, sizeof one, &one);
        struct Restore {
            cpu_set_t* s;
            ~Restore() { sched_setaffinity(0, sizeof *s, s); }
        } restore{&old_set};
        const int ncpu = libbpf_num_possible_cpus();
        std::vector<bertha_scratch> scratch(size_t(std::max(ncpu, 1)));
        const uint32_t hk = uint32_t(hook);
        Explanation ex;
        ex.hook = hook;
        for (int attempt = 0; attempt < 8; ++attempt) {
            if (bpf_map_lookup_elem(f->scratch(), &hk, scratch.data()) != 0)
                return fail_sys(f->component(), "read the scratch map", errno);
            uint32_t before = scratch[size_t(cpu)].seq;
            ex.out.assign(pkt.size() + 256, 0);
            LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = pkt.data(), .data_out = ex.out.data(),
                        .data_size_in = uint32_t(pkt.size()),
                        .data_size_out = uint32_t(ex.out.size()), .repeat = 1);
            if (bpf_prog_test_run_opts(prog->get(), &o) != 0)
                return fail_sys(f->component(), "BPF_PROG_TEST_RUN of the root program", errno);
            if (bpf_map_lookup_elem(f->scratch(), &hk, scratch.data()) != 0)
                return fail_sys(f->component(), "read the scratch map", errno);
            const auto& s = scratch[size_t(cpu)];
            if (s.seq != before + 1) continue; // a real packet ran here too: again
            ex.verdict = int(o.retval);
            ex.out.resize(o.data_size_out);
            ex.changed = ex.out.size() != pkt.size() ||
                         !std::equal(ex.out.begin(), ex.out.end(), pkt.begin());
            static constexpr const char* parse_names[] = {
                "a UDP datagram", "truncated", "not IP", "not UDP", "an IP fragment",
                "a malformed header", "too many VLAN tags or IPv6 extension headers"};
            ex.parse = s.pkt.status < std::size(parse_names) ? parse_names[s.pkt.status] : "?";
            if (s.pkt.status == BERTHA_PARSE_OK)
                ex.parse += " (IPv" + std::to_string(s.pkt.ip_version) + ", " +
                            std::to_string(s.pkt.sport) + " -> " + std::to_string(s.pkt.dport) +
                            ", " + std::to_string(s.pkt.payload_len) + " B payload)";
            auto recs = f->records();
            for (uint32_t i = 0; i < s.trail_len && i < BERTHA_TRAIL; ++i) {
                ExplainStep st;
                auto slot = s.trail[i].slot;
                st.did = std::string(counter_name(s.trail[i].counter));
                if (slot == BERTHA_DISP_SLOT) {
                    st.stage = "dispatcher";
                } else {
                    st.chain = slot / BERTHA_MAX_STAGES;
                    st.position = slot % BERTHA_MAX_STAGES;
                    auto& r = recs[st.chain];
                    st.stage = r.used ? std::string(r.names[st.position],
                                                    strnlen(r.names[st.position], BERTHA_NAME_LEN))
                                      : "?";
                }
                ex.steps.push_back(std::move(st));
            }
            if (hook == Hook::xdp) {
                static constexpr const char* v[] = {"XDP_ABORTED", "XDP_DROP", "XDP_PASS", "XDP_TX",
                                                    "XDP_REDIRECT"};
                ex.verdict_name = ex.verdict >= 0 && ex.verdict < 5 ? v[ex.verdict] : "?";
            } else {
                ex.verdict_name = ex.verdict == -1  ? "TC_ACT_UNSPEC (continue)"
                                  : ex.verdict == 0 ? "TC_ACT_OK"
                                  : ex.verdict == 2 ? "TC_ACT_SHOT"
                                  : ex.verdict == 7 ? "TC_ACT_REDIRECT"
                                                    : "TC action " + std::to_string(ex.verdict);
            }
            return ex;
        }
        return fail(Errc::unavailable, f->component(),
                    "real traffic kept running on CPU " + std::to_string(cpu) +
                        " during the run; try again");
    }
};

Loader::Loader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Loader::Loader(Loader&&) noexcept = default;
Loader& Loader::operator=(Loader&&) noexcept = default;
Loader::~Loader() = default;

Result<Loader> Loader::open(Options opts) {
    auto root = resolve_root(opts.root, true);
    if (!root) return std::unexpected(root.error());
    auto impl = std::make_unique<Impl>();
    impl->opts = std::move(opts);
    impl->root = *root;
    return Loader(std::move(impl));
}

const std::string& Loader::root() const noexcept { return impl_->root; }

Result<void> Loader::attach_dispatcher(std::string_view ifname) {
    std::lock_guard g(impl_->mu);
    auto lock = IfaceLock::take(iface_dir_name(ifname));
    if (!lock) return std::unexpected(lock.error());
    auto f = impl_->open_iface(ifname, true);
    if (!f) return std::unexpected(f.error());
    if (auto r = impl_->ensure_root(*f, Hook::xdp); !r) {
        (void)impl_->tidy(*f, false);
        return r;
    }
    return {};
}

Result<uint32_t> Loader::attach(const FlowKey& key, std::span<const StageSpec> stages) {
    std::lock_guard g(impl_->mu);
    return impl_->attach(key, stages);
}

Result<void> Loader::detach(const FlowKey& key, bool all_refs) {
    std::lock_guard g(impl_->mu);
    return impl_->detach(key, all_refs);
}

Result<void> Loader::detach_all(std::string_view ifname) {
    std::lock_guard g(impl_->mu);
    return impl_->detach_all(ifname);
}

Result<void> Loader::set_xsk(const FlowKey& key, uint32_t queue, int xsk_fd) {
    if (xsk_fd < 0)
        return fail(Errc::invalid_argument, "flow " + key.text(), "set_xsk: no socket (fd < 0)");
    std::lock_guard g(impl_->mu);
    return impl_->xsk_entry(key, queue, xsk_fd);
}

Result<void> Loader::clear_xsk(const FlowKey& key, uint32_t queue) {
    std::lock_guard g(impl_->mu);
    return impl_->xsk_entry(key, queue, -1);
}

Result<std::vector<IfaceStatus>> Loader::status(std::string_view ifname) {
    std::lock_guard g(impl_->mu);
    return impl_->status(ifname);
}

Result<std::vector<StageStats>> Loader::stats(std::string_view ifname) {
    std::lock_guard g(impl_->mu);
    return impl_->stats(ifname);
}

Result<Explanation> Loader::explain(std::string_view ifname, Hook hook,
                                    std::span<const uint8_t> pkt) {
    std::lock_guard g(impl_->mu);
    return impl_->explain(ifname, hook, pkt);
}

} // namespace bertha::load
