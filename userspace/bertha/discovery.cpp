// Discovery, probe by probe. Each probe returns a Feature (yes/no and why) and may not leave a
// trace: reads are preferred (netlink, sysfs, the kernel's config); where a trial is the only
// way (a BPF program load, an XDP attach on kernels without xdp-features, a clsact qdisc when the
// kernel config is not readable), the trial is undone before the probe returns, or it happens in
// a private network namespace that disappears with it.
#include "bertha/discovery.hpp"

#include "bertha/fd.hpp"
#include "bertha/json.hpp"

#include <arpa/inet.h>
#include <atomic>
#include <bit>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <ifaddrs.h>
#include <iterator>
#include <linux/capability.h>
#include <linux/ethtool.h>
#include <linux/genetlink.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <linux/netlink.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <linux/sockios.h>
#include <map>
#include <memory>
#include <mutex>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <thread>
#include <unistd.h>
#include <utility>
#include <zlib.h>

namespace bertha {
namespace {

// UAPI newer than Debian 12's linux-libc-dev (6.1), defined here from the kernel's own headers
// (the kernel keeps these values stable).
// include/uapi/linux/netdev.h (Linux 6.3): the netdev generic-netlink family.
constexpr char kNetdevFamily[] = "netdev";
constexpr uint8_t kNetdevCmdDevGet = 1;          // NETDEV_CMD_DEV_GET
constexpr uint16_t kNetdevAttrIfindex = 1;       // NETDEV_A_DEV_IFINDEX
constexpr uint16_t kNetdevAttrXdpFeatures = 3;   // NETDEV_A_DEV_XDP_FEATURES
constexpr uint64_t kXdpActBasic = 1u << 0;       // NETDEV_XDP_ACT_BASIC
constexpr uint64_t kXdpActXskZerocopy = 1u << 3; // NETDEV_XDP_ACT_XSK_ZEROCOPY
constexpr const char* kXdpActNames[] = {"basic",      "redirect", "ndo-xmit",   "xsk-zerocopy",
                                        "hw-offload", "rx-sg",    "ndo-xmit-sg"};
// include/uapi/linux/bpf.h (Linux 6.6): enum bpf_attach_type's tcx hooks.
constexpr uint32_t kBpfTcxEgress = 47; // BPF_TCX_EGRESS

constexpr int kNetlinkTimeoutMs = 1000;
constexpr char kNoInterface[] =
    "no interface: XDP native and AF_XDP are properties of the interface towards a peer, and "
    "none was given (probe with a peer, or name the interface)";
constexpr char kProbeProgName[] = "bertha_probe";

Feature yes(std::string why) {
    return Feature{true, std::move(why)};
}
Feature no(std::string why) {
    return Feature{false, std::move(why)};
}
std::string errstr(int err) {
    return std::strerror(err);
}

// ---- small RAII and helpers -------------------------------------------------------------------


std::string ifname_of(int ifindex) {
    char buf[IF_NAMESIZE] = {};
    if (!if_indextoname(static_cast<unsigned>(ifindex), buf))
        return "ifindex " + std::to_string(ifindex);
    return buf;
}

std::string ip_text(int family, const void* addr) {
    char buf[INET6_ADDRSTRLEN] = {};
    if (!inet_ntop(family, addr, buf, sizeof buf)) return "?";
    return buf;
}

// ---- netlink: one request, its replies, bounded by a receive timeout --------------------------

// Appends attributes to a request built in a fixed buffer.
struct NlRequest {
    alignas(nlmsghdr) char buf[512] = {};
    nlmsghdr* hdr() { return reinterpret_cast<nlmsghdr*>(buf); }

    NlRequest(uint16_t type, uint16_t flags, size_t payload) {
        hdr()->nlmsg_len = NLMSG_LENGTH(payload);
        hdr()->nlmsg_type = type;
        hdr()->nlmsg_flags = flags;
    }
    template <class T> T* payload() { return static_cast<T*>(NLMSG_DATA(hdr())); }
    void attr(uint16_t type, const void* data, size_t len) {
        auto* a = reinterpret_cast<nlattr*>(buf + NLMSG_ALIGN(hdr()->nlmsg_len));
        a->nla_type = type;
        a->nla_len = static_cast<uint16_t>(NLA_HDRLEN + len);
        if (len) std::memcpy(reinterpret_cast<char*>(a) + NLA_HDRLEN, data, len); // flags: no data
        hdr()->nlmsg_len = NLMSG_ALIGN(hdr()->nlmsg_len) + NLA_ALIGN(a->nla_len);
    }
    // A nested attribute: nest() opens it, end(offset) closes it.
    size_t nest(uint16_t type) {
        size_t at = NLMSG_ALIGN(hdr()->nlmsg_len);
        attr(type | NLA_F_NESTED, nullptr, 0);
        return at;
    }
    void end(size_t at) {
        reinterpret_cast<nlattr*>(buf + at)->nla_len = static_cast<uint16_t>(hdr()->nlmsg_len - at);
    }
};

// Calls f(type, data, len) for each attribute in [begin, begin + len).
template <class F> void for_each_attr(const void* begin, size_t len, F&& f) {
    const char* p = static_cast<const char*>(begin);
    while (len >= NLA_HDRLEN) {
        const auto* a = reinterpret_cast<const nlattr*>(p);
        if (a->nla_len < NLA_HDRLEN || a->nla_len > len) return;
        f(uint16_t(a->nla_type & NLA_TYPE_MASK), p + NLA_HDRLEN, size_t(a->nla_len - NLA_HDRLEN));
        size_t step = NLA_ALIGN(a->nla_len);
        if (step >= len) return;
        p += step;
        len -= step;
    }
}

class Netlink {
  public:
    static Result<Netlink> open(int protocol) {
        Fd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, protocol));
        if (!fd) return fail_sys("discovery", "netlink socket", errno);
        timeval tv{kNetlinkTimeoutMs / 1000, (kNetlinkTimeoutMs % 1000) * 1000};
        ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        int one = 1; // the kernel's own words with an error (extended ack)
        ::setsockopt(fd.get(), SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
        sockaddr_nl local{};
        local.nl_family = AF_NETLINK;
        if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&local), sizeof local) != 0)
            return fail_sys("discovery", "netlink bind", errno);
        return Netlink(std::move(fd));
    }

    // Sends `req` and hands every reply message to on_msg until the kernel's ack, error or the
    // end of a dump. Returns the kernel's errno (0 for success).
    template <class F> Result<int> transact(NlRequest& req, F&& on_msg) {
        nlmsghdr* h = req.hdr();
        h->nlmsg_seq = ++seq_;
        h->nlmsg_flags |= NLM_F_REQUEST;
        const bool dump = (h->nlmsg_flags & NLM_F_DUMP) == NLM_F_DUMP;
        if (!dump) h->nlmsg_flags |= NLM_F_ACK;
        sockaddr_nl kernel{};
        kernel.nl_family = AF_NETLINK;
        if (::sendto(fd_.get(), h, h->nlmsg_len, 0, reinterpret_cast<sockaddr*>(&kernel),
                     sizeof kernel) < 0)
            return fail_sys("discovery", "netlink send", errno);
        std::vector<char> buf(64 * 1024);
        for (;;) {
            ssize_t n = ::recv(fd_.get(), buf.data(), buf.size(), 0);
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    return fail(Errc::unavailable, "discovery",
                                "netlink: no answer within " + std::to_string(kNetlinkTimeoutMs) +
                                    " ms");
                return fail_sys("discovery", "netlink receive", errno);
            }
            size_t left = size_t(n);
            for (auto* m = reinterpret_cast<nlmsghdr*>(buf.data()); NLMSG_OK(m, left);
                 m = NLMSG_NEXT(m, left)) {
                if (m->nlmsg_seq != seq_) continue; // a stale answer
                if (m->nlmsg_type == NLMSG_DONE) return 0;
                if (m->nlmsg_type == NLMSG_ERROR) {
                    const auto* e = static_cast<const nlmsgerr*>(NLMSG_DATA(m));
                    extack_.clear();
                    if (e->error != 0 && (m->nlmsg_flags & NLM_F_ACK_TLVS)) {
                        // The TLVs follow the error and the request it echoes (unless capped).
                        size_t off = NLMSG_HDRLEN + sizeof(nlmsgerr);
                        if (!(m->nlmsg_flags & NLM_F_CAPPED))
                            off += e->msg.nlmsg_len - NLMSG_HDRLEN;
                        if (off < m->nlmsg_len)
                            for_each_attr(reinterpret_cast<const char*>(m) + off,
                                          m->nlmsg_len - off,
                                          [&](uint16_t type, const void* data, size_t len) {
                                              if (type == NLMSGERR_ATTR_MSG && len > 1)
                                                  extack_.assign(
                                                      static_cast<const char*>(data),
                                                      strnlen(static_cast<const char*>(data), len));
                                          });
                    }
                    return -e->error; // 0: the ack
                }
                on_msg(m);
            }
        }
    }

    // The kernel's message with the last error, if it gave one.
    const std::string& extack() const noexcept { return extack_; }

  private:
    explicit Netlink(Fd fd) : fd_(std::move(fd)) {}
    Fd fd_;
    uint32_t seq_ = 0;
    std::string extack_;
};

// ---- kernel, privilege, agent, BTF ------------------------------------------------------------

void probe_kernel(ProbeReport& r) {
    utsname u{};
    if (::uname(&u) == 0) r.kernel_release = u.release;
    std::sscanf(r.kernel_release.c_str(), "%d.%d", &r.kernel_major, &r.kernel_minor);
}
bool kernel_at_least(const ProbeReport& r, int major, int minor) {
    return r.kernel_major > major || (r.kernel_major == major && r.kernel_minor >= minor);
}

// The effective capability set (two 32-bit words, version 3).
uint64_t effective_caps() {
    __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2]{};
    if (::syscall(SYS_capget, &hdr, data) != 0) return 0;
    return uint64_t(data[0].effective) | uint64_t(data[1].effective) << 32;
}
bool has_cap(uint64_t caps, int cap) {
    return (caps >> cap) & 1;
}

Feature probe_privilege(unsigned euid) {
    uint64_t caps = effective_caps();
    std::string missing;
    auto need = [&](bool ok, const char* name) {
        if (!ok) missing += (missing.empty() ? "" : ", ") + std::string(name);
    };
    need(has_cap(caps, CAP_NET_ADMIN), "CAP_NET_ADMIN");
    need(has_cap(caps, CAP_BPF) || has_cap(caps, CAP_SYS_ADMIN), "CAP_BPF");
    std::string who = "euid " + std::to_string(euid);
    if (missing.empty())
        return yes(std::string("CAP_NET_ADMIN and ") +
                   (has_cap(caps, CAP_BPF) ? "CAP_BPF" : "CAP_SYS_ADMIN") + " effective (" + who +
                   ")");
    return no(who + " without " + missing +
              " (run as root, grant the capabilities, or use the agent)");
}

std::string agent_path() {
    const char* env = std::getenv("BERTHA_AGENT_SOCKET");
    return env && *env ? std::string(env) : std::string(kAgentSocket);
}

// Connects and hangs up at once: the agent sees a client that leaves without a word.
Feature probe_agent(const std::string& path) {
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    if (path.size() >= sizeof sun.sun_path) return no("agent socket path too long: " + path);
    std::memcpy(sun.sun_path, path.c_str(), path.size() + 1);
    int last = 0;
    for (int type : {SOCK_SEQPACKET, SOCK_STREAM}) {
        Fd fd(::socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        if (!fd) return no("unix socket: " + errstr(errno));
        if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sun), sizeof sun) == 0)
            return yes("agent listening at " + path);
        last = errno;
        if (last == EAGAIN) return yes("agent listening at " + path + " (its backlog is full)");
        if (last != EPROTOTYPE) break; // wrong socket type: try the other one
    }
    return no("no agent listening at " + path + " (" + errstr(last) +
              "); start one with `bertha-load serve --policy FILE`");
}

Feature probe_btf() {
    const char* path = "/sys/kernel/btf/vmlinux";
    Fd fd(::open(path, O_RDONLY | O_CLOEXEC));
    if (!fd)
        return no(std::string(path) + " not readable (" + errstr(errno) +
                  "): the kernel lacks CONFIG_DEBUG_INFO_BTF, CO-RE programs cannot load");
    struct stat st {};
    ::fstat(fd.get(), &st);
    return yes(std::string(path) + " readable (" + std::to_string(st.st_size / 1024) + " KiB)");
}

// ---- BPF program loading ----------------------------------------------------------------------

// r0 = verdict; exit. The smallest program of its type; loaded, never attached (except by the
// XDP trial attach, which detaches it at once).
Fd load_trivial(bpf_prog_type type, int verdict, int& err) {
    bpf_insn insns[2]{};
    insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K;
    insns[0].dst_reg = BPF_REG_0;
    insns[0].imm = verdict;
    insns[1].code = BPF_JMP | BPF_EXIT;
    int fd = bpf_prog_load(type, kProbeProgName, "GPL", insns, 2, nullptr);
    err = fd < 0 ? -fd : 0;
    return Fd(fd < 0 ? -1 : fd);
}

Feature probe_load(bpf_prog_type type, int verdict, const char* what) {
    int err = 0;
    Fd fd = load_trivial(type, verdict, err);
    if (fd)
        return yes(std::string("BPF_PROG_LOAD of a two-instruction ") + what +
                   " program succeeded");
    std::string why = std::string("BPF_PROG_LOAD of a two-instruction ") + what +
                      " program failed: " + errstr(err);
    if (err == EPERM) why += " (needs CAP_BPF and CAP_NET_ADMIN)";
    return no(why);
}

// ---- TC: tcx and clsact -----------------------------------------------------------------------

// Does the kernel's BTF know enum bpf_attach_type's BPF_TCX_EGRESS? Read-only, unprivileged.
std::optional<bool> btf_knows_tcx() {
    btf* b = btf__parse("/sys/kernel/btf/vmlinux", nullptr);
    if (!b) return std::nullopt;
    std::optional<bool> found;
    int id = btf__find_by_name_kind(b, "bpf_attach_type", BTF_KIND_ENUM);
    if (id > 0) {
        found = false;
        const btf_type* t = btf__type_by_id(b, id);
        const struct btf_enum* e = btf_enum(t);
        for (int i = 0; i < btf_vlen(t); ++i, ++e)
            if (std::strcmp(btf__name_by_offset(b, e->name_off), "BPF_TCX_EGRESS") == 0)
                found = true;
    }
    btf__free(b);
    return found;
}

Feature probe_tcx(const ProbeReport& r, int ifindex) {
    // Authoritative and read-only: ask for the programs on the interface's tcx egress hook.
    bpf_attr attr{};
    attr.query.target_fd = static_cast<uint32_t>(ifindex); // target_ifindex for tcx
    attr.query.attach_type = kBpfTcxEgress;
    long rc = ifindex > 0 ? ::syscall(SYS_bpf, BPF_PROG_QUERY, &attr, sizeof attr) : -1;
    int err = rc == 0 ? 0 : ifindex > 0 ? errno : ENODEV;
    std::string on = " on " + ifname_of(ifindex);
    if (rc == 0)
        return yes("BPF_PROG_QUERY answered for the tcx egress hook" + on + " (" +
                   std::to_string(attr.query.prog_cnt) + " programs attached)");
    if (err == EINVAL)
        return no("the kernel has no tcx hook (BPF_PROG_QUERY: Invalid argument); tcx needs Linux "
                  "6.6+");
    // Without privilege the query is refused: the kernel's BTF, then its version, decide.
    if (auto known = btf_knows_tcx())
        return *known ? yes("kernel BTF has BPF_TCX_EGRESS (BPF_PROG_QUERY: " + errstr(err) + ")")
                      : no("kernel BTF lacks BPF_TCX_EGRESS: tcx needs Linux 6.6+");
    if (kernel_at_least(r, 6, 6)) return yes("kernel " + r.kernel_release + " is 6.6 or later");
    return no("kernel " + r.kernel_release + " is older than 6.6 (tcx arrived in 6.6)");
}

// CONFIG_<key> from /proc/config.gz or /boot/config-<release>: "y", "m", "n", or nullopt.
std::optional<std::string> kernel_config(const std::string& key, const std::string& release,
                                         std::string& source) {
    const std::string want = key + "=", unset = "# " + key + " is not set";
    auto match = [&](const char* line) -> std::optional<std::string> {
        std::string_view l(line);
        while (!l.empty() && (l.back() == '\n' || l.back() == '\r')) l.remove_suffix(1);
        if (l.starts_with(want)) return std::string(l.substr(want.size()));
        if (l == unset) return std::string("n");
        return std::nullopt;
    };
    char line[512];
    if (gzFile gz = gzopen("/proc/config.gz", "rb")) {
        std::optional<std::string> v;
        while (!v && gzgets(gz, line, sizeof line)) v = match(line);
        gzclose(gz);
        source = "/proc/config.gz";
        return v ? v : std::optional<std::string>("n");
    }
    std::string boot = "/boot/config-" + release;
    if (FILE* f = std::fopen(boot.c_str(), "re")) {
        std::optional<std::string> v;
        while (!v && std::fgets(line, sizeof line, f)) v = match(line);
        std::fclose(f);
        source = boot;
        return v ? v : std::optional<std::string>("n");
    }
    return std::nullopt;
}

// Is a clsact qdisc on `ifindex` already? (RTM_GETQDISC dump: read-only, unprivileged.)
bool has_clsact(int ifindex) {
    auto nl = Netlink::open(NETLINK_ROUTE);
    if (!nl) return false;
    NlRequest req(RTM_GETQDISC, NLM_F_DUMP, sizeof(tcmsg));
    req.payload<tcmsg>()->tcm_family = AF_UNSPEC;
    bool found = false;
    auto rc = nl->transact(req, [&](const nlmsghdr* m) {
        if (m->nlmsg_type != RTM_NEWQDISC) return;
        const auto* t = static_cast<const tcmsg*>(NLMSG_DATA(m));
        if (t->tcm_ifindex != ifindex) return;
        for_each_attr(reinterpret_cast<const char*>(t) + NLMSG_ALIGN(sizeof *t),
                      m->nlmsg_len - NLMSG_LENGTH(NLMSG_ALIGN(sizeof *t)),
                      [&](uint16_t type, const void* data, size_t len) {
                          if (type == TCA_KIND &&
                              std::strncmp(static_cast<const char*>(data), "clsact", len) == 0)
                              found = true;
                      });
    });
    return rc && *rc == 0 && found;
}

// Creates a clsact qdisc on the loopback of a private network namespace, made for this probe on
// a thread of its own and gone with it: nothing on the host changes. Needs CAP_SYS_ADMIN.
Feature trial_clsact() {
    Feature out;
    std::thread([&] {
        if (::unshare(CLONE_NEWNET) != 0) {
            out = no("a private network namespace for a trial qdisc was refused (" + errstr(errno) +
                     ")");
            return;
        }
        auto nl = Netlink::open(NETLINK_ROUTE);
        if (!nl) {
            out = no(nl.error().what());
            return;
        }
        NlRequest req(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL, sizeof(tcmsg));
        auto* t = req.payload<tcmsg>();
        t->tcm_family = AF_UNSPEC;
        t->tcm_ifindex = 1; // lo is always 1 in a new namespace
        t->tcm_parent = TC_H_CLSACT;
        t->tcm_handle = TC_H_MAKE(TC_H_CLSACT, 0);
        req.attr(TCA_KIND, "clsact", sizeof "clsact");
        auto rc = nl->transact(req, [](const nlmsghdr*) {});
        if (!rc)
            out = no(rc.error().what());
        else if (*rc == 0)
            out = yes("a clsact qdisc was created in a private network namespace");
        else
            out = no("creating a clsact qdisc failed: " + errstr(*rc));
    }).join();
    return out;
}

Feature probe_clsact(const ProbeReport& r, int ifindex, bool privileged) {
    if (has_clsact(ifindex)) return yes("a clsact qdisc is already on " + ifname_of(ifindex));
    std::string source;
    auto v = kernel_config("CONFIG_NET_SCH_INGRESS", r.kernel_release, source);
    if (v && *v == "y") return yes("CONFIG_NET_SCH_INGRESS=y (" + source + ")");
    if (v && *v == "m")
        return yes("CONFIG_NET_SCH_INGRESS=m (" + source + "): sch_ingress loads on first use");
    if (v) return no("CONFIG_NET_SCH_INGRESS is not set (" + source + "): no clsact qdisc");
    if (!privileged)
        return no("not determined: no kernel config to read (/proc/config.gz, /boot/config-" +
                  r.kernel_release + ") and a trial qdisc needs privilege");
    return trial_clsact();
}

// ---- interfaces: route, driver, xdp-features, attachments, AF_XDP ----------------------------

std::string driver_of(const std::string& ifname) {
    Fd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd) return "";
    ethtool_drvinfo info{};
    info.cmd = ETHTOOL_GDRVINFO;
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, ifname.c_str(), IF_NAMESIZE - 1);
    ifr.ifr_data = reinterpret_cast<char*>(&info);
    if (::ioctl(fd.get(), SIOCETHTOOL, &ifr) != 0) return "";
    return info.driver;
}

// The netdev family's xdp-features of `ifindex` (Linux 6.3+), or why they are not known.
Result<uint64_t> xdp_features(int ifindex) {
    auto nl = Netlink::open(NETLINK_GENERIC);
    if (!nl) return std::unexpected(nl.error());
    NlRequest fam(GENL_ID_CTRL, 0, sizeof(genlmsghdr));
    fam.payload<genlmsghdr>()->cmd = CTRL_CMD_GETFAMILY;
    fam.payload<genlmsghdr>()->version = 1;
    fam.attr(CTRL_ATTR_FAMILY_NAME, kNetdevFamily, sizeof kNetdevFamily);
    uint16_t family = 0;
    auto rc = nl->transact(fam, [&](const nlmsghdr* m) {
        for_each_attr(static_cast<const char*>(NLMSG_DATA(m)) + GENL_HDRLEN,
                      m->nlmsg_len - NLMSG_LENGTH(GENL_HDRLEN),
                      [&](uint16_t type, const void* data, size_t len) {
                          if (type == CTRL_ATTR_FAMILY_ID && len >= 2)
                              std::memcpy(&family, data, 2);
                      });
    });
    if (!rc) return std::unexpected(rc.error());
    if (*rc != 0 || family == 0)
        return fail(Errc::unavailable, "discovery",
                    "the kernel has no netdev netlink family (" + errstr(*rc) +
                        "): xdp-features need Linux 6.3+");

    NlRequest get(family, 0, sizeof(genlmsghdr));
    get.payload<genlmsghdr>()->cmd = kNetdevCmdDevGet;
    get.payload<genlmsghdr>()->version = 1;
    uint32_t idx = static_cast<uint32_t>(ifindex);
    get.attr(kNetdevAttrIfindex, &idx, sizeof idx);
    std::optional<uint64_t> features;
    rc = nl->transact(get, [&](const nlmsghdr* m) {
        for_each_attr(static_cast<const char*>(NLMSG_DATA(m)) + GENL_HDRLEN,
                      m->nlmsg_len - NLMSG_LENGTH(GENL_HDRLEN),
                      [&](uint16_t type, const void* data, size_t len) {
                          if (type == kNetdevAttrXdpFeatures && len >= 8) {
                              uint64_t v;
                              std::memcpy(&v, data, 8);
                              features = v;
                          }
                      });
    });
    if (!rc) return std::unexpected(rc.error());
    if (*rc != 0) return fail(Errc::unavailable, "discovery", "netdev dev-get: " + errstr(*rc));
    if (!features)
        return fail(Errc::unavailable, "discovery", "netdev dev-get answered without xdp-features");
    return *features;
}

std::string feature_names(uint64_t bits) {
    std::string out;
    for (size_t i = 0; i < std::size(kXdpActNames); ++i)
        if (bits & (uint64_t(1) << i))
            out += (out.empty() ? "" : ", ") + std::string(kXdpActNames[i]);
    return out.empty() ? "none" : out;
}

std::vector<XdpAttachment> attached_xdp(int ifindex) {
    std::vector<XdpAttachment> out;
    bpf_xdp_query_opts q{};
    q.sz = sizeof q;
    if (bpf_xdp_query(ifindex, 0, &q) != 0) return out;
    auto add = [&](uint32_t id, const char* mode) {
        if (!id) return;
        XdpAttachment a{id, mode, ""};
        int fd = bpf_prog_get_fd_by_id(id); // needs CAP_SYS_ADMIN; the id alone otherwise
        if (fd >= 0) {
            bpf_prog_info info{};
            uint32_t len = sizeof info;
            if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0) a.name = info.name;
            ::close(fd);
        }
        out.push_back(std::move(a));
    };
    add(q.drv_prog_id, "native");
    add(q.skb_prog_id, "generic");
    add(q.hw_prog_id, "offload");
    return out;
}

std::string describe(const std::vector<XdpAttachment>& v) {
    std::string out;
    for (auto& a : v)
        out += (out.empty() ? "" : ", ") + std::string("id ") + std::to_string(a.prog_id) +
               (a.name.empty() ? "" : " " + a.name) + " (" + a.mode + ")";
    return out;
}

// Sets the XDP program of `ifindex` (RTM_SETLINK, IFLA_XDP): `fd` -1 removes it. With
// `expected` >= 0 the kernel acts only if that program is the one attached (XDP_FLAGS_REPLACE).
// Raw netlink rather than libbpf's bpf_xdp_attach, which prints the kernel's refusal on stderr:
// here it goes into the reason. Returns errno (0: done) and the kernel's words in `why`.
int set_xdp(int ifindex, int fd, int expected, uint32_t flags, std::string& why) {
    auto nl = Netlink::open(NETLINK_ROUTE);
    if (!nl) {
        why = nl.error().what();
        return nl.error().sys_errno ? nl.error().sys_errno : EIO;
    }
    NlRequest req(RTM_SETLINK, 0, sizeof(ifinfomsg));
    auto* ifi = req.payload<ifinfomsg>();
    ifi->ifi_family = AF_UNSPEC;
    ifi->ifi_index = ifindex;
    size_t nest = req.nest(IFLA_XDP);
    req.attr(IFLA_XDP_FD, &fd, sizeof fd);
    if (expected >= 0) {
        flags |= XDP_FLAGS_REPLACE;
        req.attr(IFLA_XDP_EXPECTED_FD, &expected, sizeof expected);
    }
    req.attr(IFLA_XDP_FLAGS, &flags, sizeof flags);
    req.end(nest);
    auto rc = nl->transact(req, [](const nlmsghdr*) {});
    if (!rc) {
        why = rc.error().what();
        return EIO;
    }
    why = *rc ? errstr(*rc) + (nl->extack().empty() ? "" : ": " + nl->extack()) : "";
    return *rc;
}

// Fallback for kernels without xdp-features: attach an XDP_PASS program in driver mode, only if
// no program is attached (XDP_FLAGS_UPDATE_IF_NOEXIST), and detach exactly that program at once
// (XDP_FLAGS_REPLACE with its fd). Note that some NIC drivers reconfigure their rings when a
// program comes or goes, a pause of milliseconds: this is why xdp-features are preferred.
Feature trial_attach_native(InterfaceFacts& i, const Feature& loadable) {
    const std::string& dev = i.name;
    for (auto& a : i.existing_xdp)
        if (a.mode == "native")
            return yes("a program is already attached to " + dev + " in native mode (id " +
                       std::to_string(a.prog_id) + ")");
    if (!i.existing_xdp.empty())
        return no("not determined: " + describe(i.existing_xdp) + " is attached to " + dev +
                  "; the trial attach is skipped so as not to disturb it");
    if (!loadable)
        return no("not determined: the trial attach needs an XDP program (" + loadable.why + ")");
    int err = 0;
    Fd prog = load_trivial(BPF_PROG_TYPE_XDP, XDP_PASS, err);
    if (!prog) return no("not determined: " + errstr(err));
    std::string why;
    err = set_xdp(i.ifindex, prog.get(), -1, XDP_FLAGS_DRV_MODE | XDP_FLAGS_UPDATE_IF_NOEXIST, why);
    if (err != 0) {
        const std::string drv = i.driver.empty() ? dev : "driver " + i.driver;
        if (err == EOPNOTSUPP)
            return no(drv + " has no native XDP (trial attach in driver mode: " + why + ")");
        if (err == EBUSY || err == EEXIST)
            return no("not determined: a program appeared on " + dev + " during the probe (" + why +
                      ")");
        return no("trial attach in driver mode failed: " + why);
    }
    // Detach exactly our program; a second try if the first is refused for a passing reason.
    err = set_xdp(i.ifindex, -1, prog.get(), XDP_FLAGS_DRV_MODE, why);
    if (err != 0) err = set_xdp(i.ifindex, -1, prog.get(), XDP_FLAGS_DRV_MODE, why);
    std::string undone = err == 0
                             ? "detached at once"
                             : "DETACH FAILED (" + why + "): remove it with `ip link set dev " +
                                   dev + " xdpdrv off`";
    return yes("trial attach of an XDP_PASS program in driver mode succeeded, " + undone);
}

void probe_xdp_native(InterfaceFacts& i, const ProbeOptions& opts, const Feature& loadable) {
    auto feats = xdp_features(i.ifindex);
    if (feats) {
        i.xdp_features = *feats;
        i.xdp_features_known = true;
    }
    const std::string drv = i.driver.empty() ? i.name : "driver " + i.driver;
    bool trial = opts.xdp_method == XdpMethod::trial_attach ||
                 (opts.xdp_method == XdpMethod::automatic && !feats);
    if (!trial) {
        i.xdp_method = XdpMethod::features;
        if (!feats)
            i.xdp_native = no("xdp-features unavailable: " + feats.error().message);
        else if (*feats & kXdpActBasic)
            i.xdp_native =
                yes(drv + " advertises native XDP (xdp-features: " + feature_names(*feats) + ")");
        else
            i.xdp_native =
                no(drv + " does not advertise native XDP (xdp-features: " + feature_names(*feats) +
                   "); generic XDP only");
        return;
    }
    i.xdp_method = XdpMethod::trial_attach;
    i.xdp_native = trial_attach_native(i, loadable);
    if (!feats && opts.xdp_method == XdpMethod::automatic)
        i.xdp_native.why += " [xdp-features unavailable: " + feats.error().message + "]";
}

// Copy mode: a socket with a one-page UMEM and the rings bind needs, bound to queue 0 with
// XDP_COPY. In copy mode bind is bookkeeping only (the driver is not involved) and nothing is
// redirected to the socket without an XDP program; closing it undoes the bind.
Feature probe_xsk_copy(const InterfaceFacts& i, const Feature& socket_ok) {
    if (!socket_ok) return socket_ok;
    Fd fd(::socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0));
    if (!fd) return no("socket(AF_XDP): " + errstr(errno));
    const size_t len = 4096;
    void* area = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (area == MAP_FAILED) return no("mmap for a UMEM: " + errstr(errno));
    std::unique_ptr<void, void (*)(void*)> unmap(area, [](void* p) { ::munmap(p, 4096); });
    xdp_umem_reg reg{};
    reg.addr = reinterpret_cast<uint64_t>(area);
    reg.len = len;
    reg.chunk_size = 2048;
    int ring = 4;
    auto set = [&](int opt, const void* v, socklen_t l) {
        return ::setsockopt(fd.get(), SOL_XDP, opt, v, l) == 0;
    };
    if (!set(XDP_UMEM_REG, &reg, sizeof reg)) return no("XDP_UMEM_REG: " + errstr(errno));
    if (!set(XDP_UMEM_FILL_RING, &ring, sizeof ring) ||
        !set(XDP_UMEM_COMPLETION_RING, &ring, sizeof ring) || !set(XDP_RX_RING, &ring, sizeof ring))
        return no("AF_XDP ring setup: " + errstr(errno));
    sockaddr_xdp sxdp{};
    sxdp.sxdp_family = AF_XDP;
    sxdp.sxdp_ifindex = static_cast<uint32_t>(i.ifindex);
    sxdp.sxdp_queue_id = 0;
    sxdp.sxdp_flags = XDP_COPY;
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sxdp), sizeof sxdp) == 0)
        return yes("an AF_XDP socket bound to " + i.name + " queue 0 in copy mode");
    if (errno == EBUSY) // another socket, or this process's previous probe still being released
        return yes("queue 0 of " + i.name +
                   " is held by an AF_XDP socket already (EBUSY): AF_XDP works on " + i.name);
    return no("AF_XDP bind to " + i.name + " queue 0 in copy mode failed: " + errstr(errno));
}

Feature probe_xsk_zerocopy(const InterfaceFacts& i, const Feature& copy) {
    const std::string drv = i.driver.empty() ? i.name : "driver " + i.driver;
    if (!i.xdp_features_known)
        return no("not determined: the kernel has no xdp-features (Linux 6.3+), and a trial "
                  "zero-copy bind would reconfigure the NIC's queue, so it is not attempted");
    if (!(i.xdp_features & kXdpActXskZerocopy))
        return no(drv + " does not advertise xsk-zerocopy (xdp-features: " +
                  feature_names(i.xdp_features) + "); copy mode only");
    if (!copy) return no(drv + " advertises xsk-zerocopy, but AF_XDP is not usable: " + copy.why);
    return yes(drv + " advertises xsk-zerocopy (xdp-features)");
}

// ---- the summary ------------------------------------------------------------------------------

void summarize(ProbeReport& r) {
    HostFacts& f = r.facts;
    const bool loader_xdp = r.bpf_xdp.yes || r.agent.yes;
    const bool loader_tc = r.bpf_sched_cls.yes || r.agent.yes;

    if (r.agent.yes)
        f.grant(Need::privilege);
    else if (r.privileged.yes && (r.bpf_xdp.yes || r.bpf_sched_cls.yes))
        f.grant(Need::privilege);
    else if (r.privileged.yes)
        f.deny(Need::privilege, "capabilities present but " + r.bpf_xdp.why + "; " + r.agent.why);
    else
        f.deny(Need::privilege, r.privileged.why + "; " + r.agent.why);

    if (!r.interface) {
        f.deny(Need::xdp, r.no_interface);
        f.deny(Need::af_xdp, r.no_interface);
    } else {
        const InterfaceFacts& i = *r.interface;
        if (!i.xdp_native)
            f.deny(Need::xdp, i.name + ": no native XDP: " + i.xdp_native.why);
        else if (!loader_xdp)
            f.deny(Need::xdp,
                   i.name + " has native XDP but " + r.bpf_xdp.why + ", and " + r.agent.why);
        else
            f.grant(Need::xdp);
        if (i.xsk_copy)
            f.grant(Need::af_xdp);
        else
            f.deny(Need::af_xdp, i.name + ": " + i.xsk_copy.why);
    }

    if (!r.tcx && !r.clsact)
        f.deny(Need::tc, "neither tcx (" + r.tcx.why + ") nor clsact (" + r.clsact.why + ")");
    else if (!loader_tc)
        f.deny(Need::tc, r.bpf_sched_cls.why + ", and " + r.agent.why);
    else
        f.grant(Need::tc);

    if (r.btf)
        f.grant(Need::btf);
    else
        f.deny(Need::btf, r.btf.why);
}

std::atomic<uint64_t> g_generation{0};

// ---- output -----------------------------------------------------------------------------------

std::string json_string(std::string_view s) { return json_quote(s); }

std::string json_feature(const Feature& f) {
    return std::string("{\"available\": ") + (f.yes ? "true" : "false") +
           ", \"reason\": " + json_string(f.why) + "}";
}

constexpr Need kAllNeeds[] = {Need::privilege, Need::xdp, Need::tc, Need::af_xdp, Need::btf};

std::string line(std::string_view indent, std::string_view label, const Feature& f) {
    std::string out(indent);
    out += label;
    out.append(label.size() < 18 ? 18 - label.size() : 1, ' ');
    out += f.yes ? "yes" : "no ";
    if (!f.why.empty()) out += "  " + f.why;
    return out + "\n";
}

Feature need_feature(const HostFacts& f, Need n) {
    if (f.meets(n)) return yes("");
    return no(f.reasons[std::countr_zero(uint32_t(n))]);
}

} // namespace

std::string_view to_string(XdpMethod m) noexcept {
    switch (m) {
    case XdpMethod::automatic:
        return "auto";
    case XdpMethod::features:
        return "xdp-features";
    case XdpMethod::trial_attach:
        return "trial-attach";
    }
    return "unknown";
}

Result<Route> route_to(const Addr& peer) {
    if (peer.family() != AF_INET && peer.family() != AF_INET6)
        return fail(Errc::invalid_argument, "discovery", "no route to an empty address");
    auto nl = Netlink::open(NETLINK_ROUTE);
    if (!nl) return std::unexpected(nl.error());
    NlRequest req(RTM_GETROUTE, 0, sizeof(rtmsg));
    auto* rt = req.payload<rtmsg>();
    rt->rtm_family = static_cast<unsigned char>(peer.family());
    if (peer.family() == AF_INET) {
        const auto* v4 = reinterpret_cast<const sockaddr_in*>(peer.sa());
        rt->rtm_dst_len = 32;
        req.attr(RTA_DST, &v4->sin_addr, 4);
    } else {
        const auto* v6 = reinterpret_cast<const sockaddr_in6*>(peer.sa());
        rt->rtm_dst_len = 128;
        req.attr(RTA_DST, &v6->sin6_addr, 16);
        if (v6->sin6_scope_id) { // link-local: the scope names the interface
            uint32_t oif = v6->sin6_scope_id;
            req.attr(RTA_OIF, &oif, sizeof oif);
        }
    }
    Route out;
    out.peer = peer;
    auto rc = nl->transact(req, [&](const nlmsghdr* m) {
        if (m->nlmsg_type != RTM_NEWROUTE) return;
        const auto* r = static_cast<const rtmsg*>(NLMSG_DATA(m));
        for_each_attr(reinterpret_cast<const char*>(r) + NLMSG_ALIGN(sizeof *r),
                      m->nlmsg_len - NLMSG_LENGTH(NLMSG_ALIGN(sizeof *r)),
                      [&](uint16_t type, const void* data, size_t len) {
                          if (type == RTA_OIF && len >= 4) std::memcpy(&out.ifindex, data, 4);
                          if (type == RTA_PREFSRC) out.source = ip_text(r->rtm_family, data);
                          if (type == RTA_GATEWAY) out.gateway = ip_text(r->rtm_family, data);
                      });
    });
    std::string host = peer.to_string();
    if (!rc) return std::unexpected(rc.error());
    if (*rc != 0) return fail_sys("discovery", "no route to " + host, *rc);
    if (out.ifindex <= 0)
        return fail(Errc::unavailable, "discovery", "the route to " + host + " names no interface");
    out.ifname = ifname_of(out.ifindex);
    return out;
}

ProbeReport probe_now(int ifindex, const ProbeOptions& opts, std::string no_interface) {
    auto t0 = std::chrono::steady_clock::now();
    ProbeReport r;
    r.generation = ++g_generation;
    r.euid = ::geteuid();
    probe_kernel(r);
    r.privileged = probe_privilege(r.euid);
    r.agent_path = agent_path();
    r.agent = probe_agent(r.agent_path);
    r.btf = probe_btf();
    r.bpf_xdp = probe_load(BPF_PROG_TYPE_XDP, XDP_PASS, "XDP");
    r.bpf_sched_cls = probe_load(BPF_PROG_TYPE_SCHED_CLS, 0 /* TC_ACT_OK */, "SCHED_CLS");
    {
        Fd fd(::socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0));
        if (fd)
            r.af_xdp = yes("socket(AF_XDP, SOCK_RAW, 0) succeeded");
        else
            r.af_xdp = no("socket(AF_XDP, SOCK_RAW, 0): " + errstr(errno) +
                          (errno == EPERM          ? " (needs CAP_NET_RAW)"
                           : errno == EAFNOSUPPORT ? " (the kernel lacks CONFIG_XDP_SOCKETS)"
                                                   : ""));
    }
    // The TC hooks are looked at on the interface if there is one, else on loopback.
    int tc_if = ifindex > 0 ? ifindex : static_cast<int>(if_nametoindex("lo"));
    r.tcx = probe_tcx(r, tc_if);
    r.clsact = probe_clsact(r, tc_if, r.privileged.yes);

    if (ifindex > 0) {
        InterfaceFacts i;
        i.ifindex = ifindex;
        i.name = ifname_of(ifindex);
        i.driver = driver_of(i.name);
        i.existing_xdp = attached_xdp(ifindex);
        probe_xdp_native(i, opts, r.bpf_xdp);
        if (r.bpf_xdp)
            i.xdp_generic = yes("XDP programs load here, and skb-mode XDP runs on any interface");
        else if (r.agent)
            i.xdp_generic = yes("the agent loads XDP programs; skb-mode XDP runs on any interface");
        else
            i.xdp_generic = no(r.bpf_xdp.why);
        i.xsk_copy = probe_xsk_copy(i, r.af_xdp);
        i.xsk_zerocopy = probe_xsk_zerocopy(i, i.xsk_copy);
        r.interface = std::move(i);
    } else {
        r.no_interface = no_interface.empty() ? std::string(kNoInterface) : std::move(no_interface);
    }
    summarize(r);
    r.took = std::chrono::duration_cast<std::chrono::microseconds>(
        std::chrono::steady_clock::now() - t0);
    return r;
}

// ---- the per-process cache --------------------------------------------------------------------

namespace {

struct Cache {
    std::mutex mu;
    std::map<std::string, std::unique_ptr<ProbeReport>> live;
    // Reports dropped by probe_refresh stay allocated: callers may hold references and
    // HostFacts pointers into them. A refresh is rare; this is a few KiB each.
    std::vector<std::unique_ptr<ProbeReport>> retired;
};
Cache& cache() {
    static Cache c;
    return c;
}

const ProbeReport& cached(const std::string& key, int ifindex, const std::string& no_interface) {
    Cache& c = cache();
    std::lock_guard lock(c.mu);
    auto it = c.live.find(key);
    if (it == c.live.end())
        it =
            c.live.emplace(key, std::make_unique<ProbeReport>(probe_now(ifindex, {}, no_interface)))
                .first;
    return *it->second;
}

} // namespace

const ProbeReport& probe(const Addr* peer) {
    if (!peer || peer->empty()) return cached("none", 0, kNoInterface);
    auto route = route_to(*peer);
    if (!route) {
        std::string why = route.error().what();
        return cached("error:" + why, 0, why);
    }
    return cached("if:" + std::to_string(route->ifindex), route->ifindex, "");
}

const ProbeReport& probe_interface(std::string_view ifname) {
    std::string name(ifname);
    unsigned idx = if_nametoindex(name.c_str());
    if (idx == 0) {
        std::string why = "no interface named '" + name + "'";
        return cached("error:" + why, 0, why);
    }
    return cached("if:" + std::to_string(idx), int(idx), "");
}

const ProbeReport& probe_local(const Addr& local) {
    if (local.empty()) return probe(nullptr);
    ifaddrs* list = nullptr;
    if (::getifaddrs(&list) != 0) return probe(nullptr);
    std::unique_ptr<ifaddrs, void (*)(ifaddrs*)> owner(list, ::freeifaddrs);
    // Compare the address bytes only (not the port, nor an IPv6 scope the caller left out).
    auto same_ip = [&](const sockaddr* sa) {
        if (!sa || sa->sa_family != local.family()) return false;
        if (sa->sa_family == AF_INET)
            return reinterpret_cast<const sockaddr_in*>(sa)->sin_addr.s_addr ==
                   reinterpret_cast<const sockaddr_in*>(local.sa())->sin_addr.s_addr;
        return std::memcmp(&reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr,
                           &reinterpret_cast<const sockaddr_in6*>(local.sa())->sin6_addr,
                           sizeof(in6_addr)) == 0;
    };
    int idx = 0;
    for (ifaddrs* a = list; a && !idx; a = a->ifa_next)
        if (same_ip(a->ifa_addr)) idx = static_cast<int>(if_nametoindex(a->ifa_name));
    if (idx == 0) return probe(nullptr); // a wildcard (or foreign) address: no one interface
    return cached("if:" + std::to_string(idx), idx, "");
}

void probe_refresh() {
    Cache& c = cache();
    std::lock_guard lock(c.mu);
    for (auto& [key, report] : c.live) c.retired.push_back(std::move(report));
    c.live.clear();
}

// ---- output -----------------------------------------------------------------------------------

std::string ProbeReport::text(const Route* route) const {
    char took_ms[32];
    std::snprintf(took_ms, sizeof took_ms, "%.1f ms", double(took.count()) / 1000.0);
    std::string out = "bertha probe: kernel " + kernel_release + " (" +
                      std::to_string(kernel_major) + "." + std::to_string(kernel_minor) +
                      "), euid " + std::to_string(euid) + ", probed in " + took_ms + "\n";
    out += "host\n";
    out += line("  ", "privileged", privileged);
    out += line("  ", "agent", agent);
    out += line("  ", "btf", btf);
    out += line("  ", "bpf xdp load", bpf_xdp);
    out += line("  ", "bpf tc load", bpf_sched_cls);
    out += line("  ", "tc tcx", tcx);
    out += line("  ", "tc clsact", clsact);
    out += line("  ", "af_xdp socket", af_xdp);
    if (route) {
        out += "route\n  " + route->peer.to_string() + " dev " + route->ifname;
        if (!route->gateway.empty()) out += " via " + route->gateway;
        if (!route->source.empty()) out += " src " + route->source;
        out += "\n";
    }
    if (interface) {
        const InterfaceFacts& i = *interface;
        out += "interface " + i.name + " (ifindex " + std::to_string(i.ifindex) + ", driver " +
               (i.driver.empty() ? "none" : i.driver) + ")\n";
        out += "  xdp features      " +
               (i.xdp_features_known ? feature_names(i.xdp_features) : std::string("unknown")) +
               "\n";
        out += "  xdp method        " +
               std::string(i.xdp_method == XdpMethod::trial_attach
                               ? "trial-attach (XDP_PASS in driver mode, detached at once)"
                               : "xdp-features (netdev netlink, read-only)") +
               "\n";
        out += line("  ", "xdp native", i.xdp_native);
        out += line("  ", "xdp generic", i.xdp_generic);
        out += "  xdp attached      " +
               (i.existing_xdp.empty() ? std::string("none") : describe(i.existing_xdp)) + "\n";
        out += line("  ", "af_xdp copy", i.xsk_copy);
        out += line("  ", "af_xdp zerocopy", i.xsk_zerocopy);
    } else {
        out += "interface\n  " + no_interface + "\n";
    }
    out += "needs (select never picks an implementation that needs a 'no')\n";
    for (Need n : kAllNeeds) out += line("  ", to_string(n), need_feature(facts, n));
    return out;
}

std::string ProbeReport::json(const Route* route) const {
    std::string o = "{\n";
    auto key = [&](std::string_view k, const std::string& v, bool last = false) {
        o += "  " + json_string(k) + ": " + v + (last ? "\n" : ",\n");
    };
    key("kernel", "{\"release\": " + json_string(kernel_release) +
                      ", \"major\": " + std::to_string(kernel_major) +
                      ", \"minor\": " + std::to_string(kernel_minor) + "}");
    key("euid", std::to_string(euid));
    key("privileged", json_feature(privileged));
    key("agent", "{\"available\": " + std::string(agent.yes ? "true" : "false") + ", \"reason\": " +
                     json_string(agent.why) + ", \"path\": " + json_string(agent_path) + "}");
    key("btf", json_feature(btf));
    key("bpf_xdp", json_feature(bpf_xdp));
    key("bpf_sched_cls", json_feature(bpf_sched_cls));
    key("tcx", json_feature(tcx));
    key("clsact", json_feature(clsact));
    key("af_xdp", json_feature(af_xdp));
    if (route)
        key("route", "{\"peer\": " + json_string(route->peer.to_string()) +
                         ", \"ifname\": " + json_string(route->ifname) +
                         ", \"ifindex\": " + std::to_string(route->ifindex) +
                         ", \"source\": " + json_string(route->source) +
                         ", \"gateway\": " + json_string(route->gateway) + "}");
    if (interface) {
        const InterfaceFacts& i = *interface;
        std::string feats = "null";
        if (i.xdp_features_known) {
            feats = "[";
            for (size_t b = 0; b < std::size(kXdpActNames); ++b)
                if (i.xdp_features & (uint64_t(1) << b))
                    feats += (feats.size() > 1 ? ", " : "") + json_string(kXdpActNames[b]);
            feats += "]";
        }
        std::string att = "[";
        for (auto& a : i.existing_xdp)
            att += (att.size() > 1 ? ", " : "") + std::string("{\"id\": ") +
                   std::to_string(a.prog_id) + ", \"mode\": " + json_string(a.mode) +
                   ", \"name\": " + json_string(a.name) + "}";
        att += "]";
        key("interface",
            "{\"name\": " + json_string(i.name) + ", \"ifindex\": " + std::to_string(i.ifindex) +
                ", \"driver\": " + json_string(i.driver) + ",\n    \"xdp_features\": " + feats +
                ", \"xdp_method\": " + json_string(to_string(i.xdp_method)) +
                ",\n    \"xdp_native\": " + json_feature(i.xdp_native) +
                ",\n    \"xdp_generic\": " + json_feature(i.xdp_generic) +
                ",\n    \"af_xdp_copy\": " + json_feature(i.xsk_copy) +
                ",\n    \"af_xdp_zerocopy\": " + json_feature(i.xsk_zerocopy) +
                ",\n    \"xdp_attached\": " + att + "}");
    } else {
        key("interface", "null");
        key("no_interface", json_string(no_interface));
    }
    std::string needs = "{";
    for (Need n : kAllNeeds)
        needs += (needs.size() > 1 ? ",\n    " : "\n    ") + json_string(to_string(n)) + ": " +
                 json_feature(need_feature(facts, n));
    key("needs", needs + "}");
    key("generation", std::to_string(generation));
    key("took_us", std::to_string(took.count()), true);
    return o + "}\n";
}

} // namespace bertha
