#include "loader/roots.hpp"

#include "dispatcher.skel.h"
#include "egress.skel.h"

#include <bpf/bpf.h>
#include <cerrno>
#include <cstring>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

namespace bertha::load {
namespace {

// include/uapi/linux/bpf.h (Linux 6.6): enum bpf_attach_type's tcx egress hook. Debian 12's
// headers are 6.1, so the value is written here; discovery probes the kernel for it.
constexpr auto kBpfTcxEgress = static_cast<bpf_attach_type>(47);

std::string pin(const RootTarget& t, const char* name) { return t.dir + "/" + name; }

Fd get_pin(const std::string& path) { return Fd(bpf_obj_get(path.c_str())); }

uint32_t prog_id_of(int fd) {
    bpf_prog_info info{};
    uint32_t len = sizeof info;
    return bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.id : 0;
}

bpf_link_info link_info(int fd) {
    bpf_link_info info{};
    uint32_t len = sizeof info;
    if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) info = {};
    return info;
}

Result<void> pin_fd(int fd, const std::string& path, const std::string& component) {
    ::unlink(path.c_str()); // a stale pin of an earlier, interrupted run
    if (bpf_obj_pin(fd, path.c_str()) != 0) return fail_sys(component, "pin " + path, errno);
    return {};
}

std::string component_of(const RootTarget& t) { return "interface " + t.ifname; }

// Load a root program (the maps are the interface's) and pin it.
template <class Skel, void (*Destroy)(Skel*)>
Result<Fd> load_root(Skel* raw, bpf_program* (*prog_of)(Skel*), const RootTarget& t,
                     const char* pin_name) {
    Owned<Skel, Destroy> skel(raw);
    if (!skel) return fail_sys(component_of(t), "open the root program's skeleton", errno);
    auto fd = load_program(skel->obj, prog_of(skel.get()), *t.maps, t.ifname);
    if (!fd) return fd;
    if (auto r = pin_fd(fd->get(), pin(t, pin_name), component_of(t)); !r)
        return std::unexpected(r.error());
    return fd;
}

// Detach whatever XDP program is on the interface (for --force): netlink-attached ones in either
// mode, and link-attached ones through their link.
Result<void> evict_xdp(const RootTarget& t, uint32_t prog_id) {
    for (uint32_t mode : {XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE}) bpf_xdp_detach(t.ifindex, mode, nullptr);
    uint32_t now = 0;
    if (bpf_xdp_query_id(t.ifindex, 0, &now) == 0 && now == 0) return {};
    for (uint32_t id = 0; bpf_link_get_next_id(id, &id) == 0;) {
        Fd fd(bpf_link_get_fd_by_id(id));
        if (!fd) continue;
        auto info = link_info(fd.get());
        if (info.type == BPF_LINK_TYPE_XDP && int(info.xdp.ifindex) == t.ifindex) {
            if (bpf_link_detach(fd.get()) != 0)
                return fail_sys(component_of(t), "detach the XDP link of " + describe_prog(prog_id),
                                errno);
            return {};
        }
    }
    return fail(Errc::system, component_of(t),
                "could not remove " + describe_prog(prog_id) + " from the XDP hook");
}

// How many TC filters sit on the interface's clsact qdisc (both directions); -1 if unknown.
// A netlink filter dump: bounded by a one-second receive timeout.
int clsact_filters(int ifindex) {
    Fd nl(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
    if (!nl) return -1;
    timeval tv{1, 0};
    ::setsockopt(nl.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int total = 0;
    for (uint32_t dir : {TC_H_MIN_INGRESS, TC_H_MIN_EGRESS}) {
        struct {
            nlmsghdr nh;
            tcmsg tc;
        } req{};
        req.nh.nlmsg_len = sizeof req;
        req.nh.nlmsg_type = RTM_GETTFILTER;
        req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
        req.nh.nlmsg_seq = dir;
        req.tc.tcm_family = AF_UNSPEC;
        req.tc.tcm_ifindex = ifindex;
        req.tc.tcm_parent = TC_H_MAKE(TC_H_CLSACT, dir);
        if (::send(nl.get(), &req, sizeof req, 0) < 0) return -1;
        for (bool done = false; !done;) {
            alignas(nlmsghdr) char buf[16384];
            ssize_t n = ::recv(nl.get(), buf, sizeof buf, 0);
            if (n <= 0) return -1;
            for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, size_t(n));
                 h = NLMSG_NEXT(h, n)) {
                if (h->nlmsg_type == NLMSG_DONE) done = true;
                else if (h->nlmsg_type == NLMSG_ERROR) return -1;
                else if (h->nlmsg_type == RTM_NEWTFILTER) ++total;
            }
        }
    }
    return total;
}

} // namespace

std::string describe_prog(uint32_t id) {
    Fd fd(bpf_prog_get_fd_by_id(id));
    if (!fd) return "program id " + std::to_string(id);
    bpf_prog_info info{};
    uint32_t len = sizeof info;
    if (bpf_obj_get_info_by_fd(fd.get(), &info, &len) != 0 || !info.name[0])
        return "program id " + std::to_string(id);
    return "program '" + std::string(info.name) + "' (id " + std::to_string(id) + ")";
}

Result<void> attach_xdp_root(const RootTarget& t, const Options& opts, std::string* why_generic) {
    const auto component = component_of(t);
    Fd root = get_pin(pin(t, kXdpRootPin));
    if (!root) {
        auto fd = load_root<dispatcher, dispatcher__destroy>(
            dispatcher__open(), [](dispatcher* s) { return s->progs.bertha_disp; }, t, kXdpRootPin);
        if (!fd) return std::unexpected(fd.error());
        root = std::move(*fd);
    }
    const uint32_t ours = prog_id_of(root.get());
    uint32_t current = 0;
    bpf_xdp_query_id(t.ifindex, 0, &current);
    if (current == ours && get_pin(pin(t, kXdpLinkPin))) return {}; // attached already
    if (current != 0 && current != ours) {
        if (!opts.force)
            return fail(Errc::unavailable, component,
                        describe_prog(current) +
                            " is attached to the XDP hook and is not Bertha's; detach it "
                            "(ip link set dev " + t.ifname +
                            " xdp off, or xdp-loader unload) or pass --force to replace it");
        if (auto r = evict_xdp(t, current); !r) return r;
    }
    std::string native_error;
    Fd link;
    if (opts.xdp_mode != XdpMode::generic) {
        LIBBPF_OPTS(bpf_link_create_opts, lo, .flags = XDP_FLAGS_DRV_MODE);
        link = Fd(bpf_link_create(root.get(), t.ifindex, BPF_XDP, &lo));
        if (!link) native_error = std::strerror(errno);
        if (!link && opts.xdp_mode == XdpMode::native)
            return fail_sys(component, "attach " + describe_prog(ours) + " in native XDP mode",
                            errno);
    }
    if (!link) {
        LIBBPF_OPTS(bpf_link_create_opts, lo, .flags = XDP_FLAGS_SKB_MODE);
        link = Fd(bpf_link_create(root.get(), t.ifindex, BPF_XDP, &lo));
        if (!link)
            return fail_sys(component, "attach " + describe_prog(ours) + " in generic XDP mode" +
                                           (native_error.empty() ? "" : " (native mode: " +
                                                                            native_error + ")"),
                            errno);
        if (why_generic)
            *why_generic = native_error.empty() ? "generic mode was asked for"
                                                : "native mode refused: " + native_error;
    }
    if (auto r = pin_fd(link.get(), pin(t, kXdpLinkPin), component); !r) {
        bpf_link_detach(link.get());
        return r;
    }
    return {};
}

Result<void> detach_xdp_root(const RootTarget& t) {
    if (Fd link = get_pin(pin(t, kXdpLinkPin))) {
        // Detach through the link even if someone else holds an fd to it: nothing of ours stays.
        if (bpf_link_detach(link.get()) != 0 && errno != ENOLINK && errno != EINVAL)
            return fail_sys(component_of(t), "detach the XDP link", errno);
    }
    ::unlink(pin(t, kXdpLinkPin).c_str());
    ::unlink(pin(t, kXdpRootPin).c_str());
    return {};
}

Result<void> attach_tc_root(const RootTarget& t, const Options& opts) {
    const auto component = component_of(t);
    if (tc_root_status(t).attached) return {};
    Fd root = get_pin(pin(t, kTcRootPin));
    if (!root) {
        auto fd = load_root<egress, egress__destroy>(
            egress__open(), [](egress* s) { return s->progs.bertha_egress; }, t, kTcRootPin);
        if (!fd) return std::unexpected(fd.error());
        root = std::move(*fd);
    }
    std::string tcx_error;
    if (opts.tc_mode != TcMode::clsact) {
        Fd link(bpf_link_create(root.get(), t.ifindex, kBpfTcxEgress, nullptr));
        if (link) {
            if (auto r = pin_fd(link.get(), pin(t, kTcLinkPin), component); !r) {
                bpf_link_detach(link.get());
                return r;
            }
            return {};
        }
        tcx_error = std::strerror(errno);
        if (opts.tc_mode == TcMode::tcx)
            return fail_sys(component, "attach the egress root on tcx", errno);
    }
    LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = t.ifindex, .attach_point = BPF_TC_EGRESS);
    int err;
    {
        LibbpfCapture quiet; // an existing qdisc is fine: keep libbpf from printing that it is
        err = bpf_tc_hook_create(&hook);
    }
    if (err && err != -EEXIST)
        return fail_sys(component,
                        "create the clsact qdisc" +
                            (tcx_error.empty() ? "" : " (tcx: " + tcx_error + ")"),
                        -err);
    if (err == 0)
        if (auto r = pin_fd(root.get(), pin(t, kClsactOursPin), component); !r) return r;
    LIBBPF_OPTS(bpf_tc_opts, to, .prog_fd = root.get(), .flags = BPF_TC_F_REPLACE,
                .handle = kClsactHandle, .priority = kClsactPriority);
    if (int e = bpf_tc_attach(&hook, &to); e)
        return fail_sys(component, "attach the egress root as a clsact filter", -e);
    return {};
}

Result<void> detach_tc_root(const RootTarget& t) {
    if (Fd link = get_pin(pin(t, kTcLinkPin))) {
        if (bpf_link_detach(link.get()) != 0 && errno != ENOLINK && errno != EINVAL)
            return fail_sys(component_of(t), "detach the tcx link", errno);
        ::unlink(pin(t, kTcLinkPin).c_str());
    } else if (t.ifindex > 0 && get_pin(pin(t, kTcRootPin))) {
        LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = t.ifindex, .attach_point = BPF_TC_EGRESS);
        LIBBPF_OPTS(bpf_tc_opts, to, .handle = kClsactHandle, .priority = kClsactPriority);
        int err;
        {
            LibbpfCapture quiet; // a qdisc already gone is fine
            err = bpf_tc_detach(&hook, &to);
        }
        if (err && err != -ENOENT && err != -EINVAL)
            return fail_sys(component_of(t), "remove the egress clsact filter", -err);
        // The qdisc too, if we made it and nobody else has put a filter on it since.
        if (Fd ours = get_pin(pin(t, kClsactOursPin)); ours && clsact_filters(t.ifindex) == 0) {
            LIBBPF_OPTS(bpf_tc_hook, whole, .ifindex = t.ifindex,
                        .attach_point = bpf_tc_attach_point(BPF_TC_INGRESS | BPF_TC_EGRESS));
            bpf_tc_hook_destroy(&whole);
        }
    }
    ::unlink(pin(t, kClsactOursPin).c_str());
    ::unlink(pin(t, kTcRootPin).c_str());
    return {};
}

HookStatus xdp_root_status(const RootTarget& t) {
    HookStatus s;
    Fd root = get_pin(pin(t, kXdpRootPin));
    if (!root) return s;
    s.prog_id = prog_id_of(root.get());
    if (Fd link = get_pin(pin(t, kXdpLinkPin))) s.link_id = link_info(link.get()).id;
    if (t.ifindex <= 0) return s;
    LIBBPF_OPTS(bpf_xdp_query_opts, q);
    if (bpf_xdp_query(t.ifindex, 0, &q) != 0 || q.prog_id != s.prog_id) return s;
    s.attached = true;
    s.mode = q.attach_mode == XDP_ATTACHED_DRV   ? "native"
             : q.attach_mode == XDP_ATTACHED_SKB ? "generic"
             : q.attach_mode == XDP_ATTACHED_HW  ? "offload"
                                                 : "multi";
    return s;
}

HookStatus tc_root_status(const RootTarget& t) {
    HookStatus s;
    Fd root = get_pin(pin(t, kTcRootPin));
    if (!root) return s;
    s.prog_id = prog_id_of(root.get());
    if (Fd link = get_pin(pin(t, kTcLinkPin))) {
        auto info = link_info(link.get());
        s.link_id = info.id;
        s.attached = info.prog_id == s.prog_id && t.ifindex > 0;
        s.mode = "tcx";
        return s;
    }
    if (t.ifindex <= 0) return s;
    LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = t.ifindex, .attach_point = BPF_TC_EGRESS);
    LIBBPF_OPTS(bpf_tc_opts, to, .handle = kClsactHandle, .priority = kClsactPriority);
    LibbpfCapture quiet; // "no qdisc" is an answer here, not something to print
    if (bpf_tc_query(&hook, &to) == 0 && to.prog_id == s.prog_id) {
        s.attached = true;
        s.mode = "clsact";
    }
    return s;
}

Result<Fd> root_prog(const RootTarget& t, Hook hook) {
    Fd fd = get_pin(pin(t, hook == Hook::xdp ? kXdpRootPin : kTcRootPin));
    if (!fd)
        return fail(Errc::unavailable, component_of(t),
                    "no " + std::string(to_string(hook)) + " root is loaded (attach a flow first)");
    return fd;
}

} // namespace bertha::load
