// bertha::XskSocket on a real link: two hosts as network namespaces joined by a veth pair. Host A
// runs the test program xsk_redirect_test (native XDP on its veth end), which redirects UDP to
// one port into the XskSocket; host B is a plain kernel UDP socket. The socket receives B's
// datagrams and echoes them back; B's kernel accepts the echoes only if MACs, addresses and
// checksums are right (its veth end has receive checksum offload off, so the UDP checksum is
// verified in software, and its UDP checksum-error counter must stay 0).
//
// Needs root (namespaces, XDP). The namespaces are the test thread's own (unshare): they are
// removed with everything in them when the fixture ends, also when a check fails or the
// process dies, and the thread goes back to the namespace it came from.
#include "bertha/fd.hpp"
#include "xsk/frame.hpp"
#include "xsk/iface.hpp"
#include "xsk/xsk.hpp"

#include "xsk_redirect_test.skel.h"

#include <algorithm>
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <linux/ethtool.h>
#include <linux/if_link.h>
#include <linux/if_packet.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <optional>
#include <poll.h>
#include <sched.h>
#include <sstream>
#include <stdexcept>
#include <string>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

using namespace bertha;
using namespace std::chrono_literals;

namespace {

constexpr uint16_t kPort = 7000;  // redirected to the XskSocket
constexpr uint16_t kOther = 7001; // left to the kernel
constexpr int kOctet = 77;        // 198.18.77.1 (A) and .2 (B); 2001:2:0:77::1 and ::2
// ICMP echo types (netinet/ip_icmp.h would clash with linux/ip.h, which parse.h includes)
constexpr uint8_t kIcmpEcho = 8, kIcmpEchoReply = 0, kIcmp6Echo = 128, kIcmp6EchoReply = 129;

// ---- processes and namespaces ------------------------------------------------------------------

// Runs a shell command in the calling thread's network namespace; returns exit status + output.
std::pair<int, std::string> sh(const std::string& cmd) {
    std::string out;
    FILE* f = ::popen((cmd + " 2>&1").c_str(), "r");
    if (!f) return {-1, "popen failed"};
    char buf[512];
    for (int guard = 0; guard < 10000 && std::fgets(buf, sizeof buf, f); ++guard) out += buf;
    int st = ::pclose(f);
    return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}
void must(const std::string& cmd) {
    auto [rc, out] = sh(cmd);
    if (rc != 0)
        throw std::runtime_error("'" + cmd + "' failed (" + std::to_string(rc) + "): " + out);
}

int open_ns() {
    int fd = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw std::runtime_error(std::string("open netns: ") + std::strerror(errno));
    return fd;
}
void enter(int ns) {
    if (::setns(ns, CLONE_NEWNET) != 0)
        throw std::runtime_error(std::string("setns: ") + std::strerror(errno));
}

// An ethtool feature switch (ETHTOOL_SRXCSUM, ETHTOOL_SGRO, ...) in the current namespace.
void ethtool_set(const char* ifname, uint32_t cmd, bool on) {
    Fd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    ethtool_value v{cmd, on ? 1u : 0u};
    ifreq ifr{};
    std::snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", ifname);
    ifr.ifr_data = reinterpret_cast<char*>(&v);
    if (::ioctl(s.get(), SIOCETHTOOL, &ifr) != 0)
        throw std::runtime_error(std::string("ethtool on ") + ifname + ": " + std::strerror(errno));
}

// Host A (the XskSocket's: the test thread's namespace while the fixture lives) and host B,
// joined by the veth pair xa <-> xb.
class TwoHosts {
  public:
    static constexpr const char* kIfA = "xa";
    static constexpr const char* kIfB = "xb";

    struct Options {
        bool gro_b = false;     // GRO on B's end (NAPI for what A transmits)
        bool rx_csum_b = false; // B's receive checksum offload; off: B verifies in software
    };

    TwoHosts() : TwoHosts(Options{}) {}
    explicit TwoHosts(Options opt) : host_(open_ns()), back_{host_.get()} {
        if (::unshare(CLONE_NEWNET) != 0)
            throw std::runtime_error(std::string("unshare(CLONE_NEWNET) (root needed): ") +
                                     std::strerror(errno));
        b_ = Fd(open_ns());
        must("ip link set lo up");
        enter(host_.get());
        if (::unshare(CLONE_NEWNET) != 0)
            throw std::runtime_error(std::string("unshare: ") + std::strerror(errno));
        a_ = Fd(open_ns());
        must("ip link set lo up");
        // One queue each way, so that every packet arrives on queue 0 (a veth has one RX queue
        // unless asked for more).
        must(std::string("ip link add ") + kIfA +
             " numtxqueues 1 numrxqueues 1 type veth peer name " + kIfB +
             " numtxqueues 1 numrxqueues 1 netns /proc/" + std::to_string(::getpid()) + "/fd/" +
             std::to_string(b_.get()));
        // No duplicate address detection: the kernel solicits neighbours from the link-local
        // address, which would stay tentative for a second or two after the link comes up.
        must(fmt("echo 0 > /proc/sys/net/ipv6/conf/%s/accept_dad", kIfA));
        must(fmt("ip addr add 198.18.%d.1/24 dev %s", kOctet, kIfA));
        must(fmt("ip -6 addr add 2001:2:0:%d::1/64 dev %s nodad", kOctet, kIfA));
        must(fmt("ip link set %s up", kIfA));
        ifindex_a = int(::if_nametoindex(kIfA));
        in_b([&] {
            must(fmt("echo 0 > /proc/sys/net/ipv6/conf/%s/accept_dad", kIfB));
            must(fmt("ip addr add 198.18.%d.2/24 dev %s", kOctet, kIfB));
            must(fmt("ip -6 addr add 2001:2:0:%d::2/64 dev %s nodad", kOctet, kIfB));
            must(fmt("ip link set %s up", kIfB));
            ethtool_set(kIfB, ETHTOOL_SRXCSUM, opt.rx_csum_b);
            if (opt.gro_b) ethtool_set(kIfB, ETHTOOL_SGRO, true);
        });
        // IPv6 configures a link (link-local and multicast routes) only once the kernel has
        // seen its carrier come up, asynchronously: until then a neighbour solicitation to B
        // would be dropped there ("no route"). Wait for it on both ends, bounded.
        wait_for_multicast_route(kIfA);
        in_b([&] { wait_for_multicast_route(kIfB); });
    }
    ~TwoHosts() = default; // back_ returns the thread home; closing a_ and b_ ends A and B

    // Runs f in host B, then comes back to A (also when f throws).
    template <class F> auto in_b(F&& f) -> decltype(f()) {
        enter(b_.get());
        struct Back {
            int a;
            ~Back() { ::setns(a, CLONE_NEWNET); }
        } back{a_.get()};
        return f();
    }

    template <class... A> static std::string fmt(const char* f, A... args) {
        char buf[256];
        std::snprintf(buf, sizeof buf, f, args...);
        return buf;
    }
    static Addr a4(uint16_t port) { return addr("198.18.77.1", port); }
    static Addr b4(uint16_t port) { return addr("198.18.77.2", port); }
    static Addr a6(uint16_t port) { return addr("[2001:2:0:77::1]", port); }
    static Addr b6(uint16_t port) { return addr("[2001:2:0:77::2]", port); }
    static Addr addr(const std::string& host, uint16_t port) {
        return *Addr::parse(host + ":" + std::to_string(port));
    }

    int ifindex_a = 0;

  private:
    static void wait_for_multicast_route(const char* ifname) {
        const std::string cmd = std::string("ip -6 route show table local dev ") + ifname;
        const auto deadline = after(5s);
        for (int guard = 0; guard < 500 && Clock::now() < deadline; ++guard) {
            if (sh(cmd).second.find("ff00::/8") != std::string::npos) return;
            ::usleep(10000);
        }
        throw std::runtime_error(std::string("IPv6 never came up on ") + ifname);
    }

    struct Return {
        int ns;
        ~Return() { ::setns(ns, CLONE_NEWNET); }
    };
    Fd host_;
    Fd b_, a_;
    Return back_; // destroyed first: the thread goes home, then the last references to A and B go
};

// The test XDP program, natively on A's veth end, redirecting kPort into its XSKMAP.
class RedirectProg {
  public:
    RedirectProg(int ifindex, uint16_t port) : ifindex_(ifindex) {
        skel_ = xsk_redirect_test::open();
        if (!skel_) throw std::runtime_error("xsk_redirect_test: open failed");
        skel_->rodata->xsk_port = port;
        if (int err = xsk_redirect_test::load(skel_)) {
            xsk_redirect_test::destroy(skel_);
            throw std::runtime_error(std::string("xsk_redirect_test: load: ") +
                                     std::strerror(-err));
        }
        int err = bpf_xdp_attach(ifindex_, bpf_program__fd(skel_->progs.xsk_redir_test),
                                 XDP_FLAGS_DRV_MODE, nullptr);
        if (err) {
            xsk_redirect_test::destroy(skel_);
            throw std::runtime_error(std::string("attach in driver mode: ") + std::strerror(-err));
        }
        attached_ = true;
    }
    ~RedirectProg() {
        detach();
        xsk_redirect_test::destroy(skel_);
    }
    void detach() {
        if (attached_) bpf_xdp_detach(ifindex_, XDP_FLAGS_DRV_MODE, nullptr);
        attached_ = false;
    }
    int insert(uint32_t queue, int xsk_fd) {
        int rc = bpf_map_update_elem(bpf_map__fd(skel_->maps.xsk_test_socks), &queue, &xsk_fd, 0);
        return rc ? -errno : 0;
    }
    uint32_t id() const {
        bpf_prog_info info{};
        uint32_t len = sizeof info;
        bpf_obj_get_info_by_fd(bpf_program__fd(skel_->progs.xsk_redir_test), &info, &len);
        return info.id;
    }
    // 0 redirected, 1 passed (not ours), 2 passed (ours, no socket)
    uint64_t count(uint32_t key) const {
        int cpus = libbpf_num_possible_cpus();
        std::vector<uint64_t> v(size_t(cpus > 0 ? cpus : 1));
        if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.xsk_test_counts), &key, v.data()) != 0)
            return 0;
        uint64_t sum = 0;
        for (auto x : v) sum += x;
        return sum;
    }

  private:
    xsk_redirect_test* skel_ = nullptr;
    int ifindex_;
    bool attached_ = false;
};

// The XDP program attached to an interface in driver mode (0 for none), from the kernel.
uint32_t attached_prog(int ifindex) {
    bpf_xdp_query_opts q{};
    q.sz = sizeof q;
    if (bpf_xdp_query(ifindex, 0, &q) != 0) return 0;
    return q.prog_id;
}

// AF_XDP sockets open in the current namespace (/proc/net/protocols counts them per namespace).
int xdp_sockets_here() {
    std::ifstream f("/proc/thread-self/net/protocols");
    std::string line;
    for (int guard = 0; guard < 200 && std::getline(f, line); ++guard) {
        std::istringstream in(line);
        std::string name;
        long size = 0, sockets = -1;
        if (in >> name >> size >> sockets && name == "XDP") return int(sockets);
    }
    return -1;
}

// A counter of /proc/thread-self/net/snmp (e.g. "Udp" "InCsumErrors") or snmp6
// ("Udp6InCsumErrors").
long snmp(const std::string& proto, const std::string& field) {
    if (proto == "snmp6") {
        std::ifstream f("/proc/thread-self/net/snmp6");
        std::string k;
        long v;
        for (int guard = 0; guard < 1000 && f >> k >> v;) {
            ++guard;
            if (k == field) return v;
        }
        return -1;
    }
    std::ifstream f("/proc/thread-self/net/snmp");
    std::string names, values;
    for (int guard = 0; guard < 100 && std::getline(f, names) && std::getline(f, values); ++guard) {
        std::istringstream n(names), v(values);
        std::string key, val;
        n >> key;
        v >> val;
        if (key != proto + ":") continue;
        while (n >> key && v >> val)
            if (key == field) return std::stol(val);
    }
    return -1;
}

// ---- a kernel UDP socket -----------------------------------------------------------------------

struct KernelUdp {
    Fd fd;
    Addr local;

    explicit KernelUdp(const Addr& bind_to) {
        fd = Fd(::socket(bind_to.family(), SOCK_DGRAM | SOCK_CLOEXEC, 0));
        if (!fd) throw std::runtime_error("socket");
        int sz = 8 << 20;
        ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof sz);
        if (::bind(fd.get(), bind_to.sa(), bind_to.len()) != 0)
            throw std::runtime_error("bind " + bind_to.to_string() + ": " + std::strerror(errno));
        sockaddr_in6 sa{};
        socklen_t len = sizeof sa;
        ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&sa), &len);
        local = Addr::from_sockaddr(reinterpret_cast<sockaddr*>(&sa), len);
    }
    bool send(const Addr& to, const std::string& text) {
        return ::sendto(fd.get(), text.data(), text.size(), 0, to.sa(), to.len()) ==
               ssize_t(text.size());
    }
    // One datagram within `wait`, or nullopt.
    std::optional<std::pair<std::string, Addr>> recv(std::chrono::milliseconds wait) {
        pollfd p{fd.get(), POLLIN, 0};
        if (::poll(&p, 1, int(wait.count())) <= 0) return std::nullopt;
        char buf[65536];
        sockaddr_in6 sa{};
        socklen_t len = sizeof sa;
        ssize_t n = ::recvfrom(fd.get(), buf, sizeof buf, MSG_DONTWAIT,
                               reinterpret_cast<sockaddr*>(&sa), &len);
        if (n < 0) return std::nullopt;
        return std::pair{std::string(buf, size_t(n)),
                         Addr::from_sockaddr(reinterpret_cast<sockaddr*>(&sa), len)};
    }
};

// ---- the XskSocket side -----------------------------------------------------------------------

XskOptions small_options(const Addr& local, uint32_t ring = 256) {
    XskOptions o;
    o.ifname = TwoHosts::kIfA;
    o.queue = 0;
    o.local = local;
    o.fill_size = o.comp_size = o.rx_size = o.tx_size = ring;
    return o;
}

std::string text(const Msg& m) {
    return std::string(reinterpret_cast<const char*>(m.data()), m.size());
}
bool put(Msg& m, const std::string& s) {
    return m.assign(std::as_bytes(std::span(s.data(), s.size())));
}

// Receives until `n` datagrams arrived or `wait` passed.
std::vector<Msg> recv_n(XskSocket& s, size_t n, std::chrono::milliseconds wait = 2000ms) {
    std::vector<Msg> got;
    std::vector<Msg> batch(64);
    const auto deadline = after(wait);
    for (int guard = 0; guard < 100000 && got.size() < n && Clock::now() < deadline; ++guard) {
        auto r = s.recv(batch, deadline);
        REQUIRE_MESSAGE(r, (r ? "" : r.error().what()));
        for (size_t i = 0; i < *r; ++i) got.push_back(std::move(batch[i]));
    }
    return got;
}

// Payload i: "<tag>-<i>-" padded with a pattern to a length that varies with i (odd ones too).
std::string payload(const std::string& tag, size_t i, size_t max = 1400) {
    std::string s = tag + "-" + std::to_string(i) + "-";
    size_t len = std::min(max, s.size() + (i * 37) % 300);
    for (size_t k = s.size(); k < len; ++k) s += char('a' + (k * 7 + i) % 26);
    return s;
}

// B sends `n` datagrams to the socket, the socket echoes each back in place (a received frame
// sent from where it lies), B checks every echo: payload, source address and port.
void echo_round(TwoHosts& net, XskSocket& xs, KernelUdp& b, const Addr& xsk_addr,
                const std::string& tag, size_t n) {
    net.in_b([&] {
        for (size_t i = 0; i < n; ++i) REQUIRE(b.send(xsk_addr, payload(tag, i)));
    });
    auto got = recv_n(xs, n);
    REQUIRE(got.size() == n);
    // Every datagram exactly once. Not necessarily in order: B's first datagrams wait in its
    // kernel for A's MAC (ARP), and with two CPUs a later one can leave before that queue is
    // flushed (seen under qemu on 6.1 and 6.12).
    std::vector<std::string> want, have;
    for (size_t i = 0; i < n; ++i) want.push_back(payload(tag, i)), have.push_back(text(got[i]));
    std::sort(want.begin(), want.end());
    std::sort(have.begin(), have.end());
    CHECK(have == want);
    std::vector<std::string> sent_back;
    for (size_t i = 0; i < n; ++i) {
        CHECK(got[i].peer() == b.local);
        CHECK(got[i].headroom() >=
              XskSocket::kXdpHeadroom + xsk::udp_headers_len(b.local.family()));
        sent_back.push_back(text(got[i]));
    }
    auto sent = xs.send(got);
    REQUIRE_MESSAGE(sent, (sent ? "" : sent.error().what()));
    CHECK(*sent == n);
    for (auto& m : got) CHECK_FALSE(m); // consumed
    auto left = xs.flush(after(2s));
    REQUIRE(left);
    CHECK(*left == 0);
    net.in_b([&] {
        for (size_t i = 0; i < n; ++i) {
            auto e = b.recv(2000ms);
            REQUIRE_MESSAGE(e, "echo " << i << " of " << n << " never reached B");
            CHECK(e->first == sent_back[i]);
            CHECK(e->second == xsk_addr);
        }
    });
}

void check_no_csum_errors(TwoHosts& net) {
    net.in_b([&] {
        CHECK(snmp("Udp", "InCsumErrors") == 0);
        CHECK(snmp("Udp", "InErrors") == 0);
        CHECK(snmp("snmp6", "Udp6InCsumErrors") == 0);
        CHECK(snmp("snmp6", "Udp6InErrors") == 0);
    });
}

// An ICMP echo from B to A answered by A's kernel: traffic that is not the flow's still
// reaches the kernel while the socket runs.
bool ping_from_b(TwoHosts& net, bool v6) {
    return net.in_b([&] {
        Fd s(::socket(v6 ? AF_INET6 : AF_INET, SOCK_RAW | SOCK_CLOEXEC,
                      v6 ? int(IPPROTO_ICMPV6) : int(IPPROTO_ICMP)));
        REQUIRE(s);
        uint8_t pkt[16] = {v6 ? kIcmp6Echo : kIcmpEcho,
                           0,
                           0,
                           0,
                           0x12,
                           0x34,
                           0,
                           1,
                           'b',
                           'e',
                           'r',
                           't',
                           'h',
                           'a',
                           '!',
                           '!'};
        if (!v6) { // ICMPv4 checksum (the kernel fills in ICMPv6's)
            uint32_t sum = 0;
            for (size_t i = 0; i < sizeof pkt; i += 2) sum += uint32_t(pkt[i] << 8 | pkt[i + 1]);
            while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
            pkt[2] = uint8_t(~sum >> 8);
            pkt[3] = uint8_t(~sum);
        }
        Addr to = v6 ? TwoHosts::a6(0) : TwoHosts::a4(0);
        if (::sendto(s.get(), pkt, sizeof pkt, 0, to.sa(), to.len()) != ssize_t(sizeof pkt))
            return false;
        const auto deadline = after(2s);
        for (int guard = 0; guard < 100 && Clock::now() < deadline; ++guard) {
            pollfd p{s.get(), POLLIN, 0};
            if (::poll(&p, 1, 200) <= 0) continue;
            uint8_t buf[1500];
            ssize_t n = ::recv(s.get(), buf, sizeof buf, 0);
            const uint8_t* icmp = buf + (v6 ? 0 : 20); // raw IPv4 sockets see the IP header
            if (n < (v6 ? 8 : 28)) continue;
            if (icmp[0] == (v6 ? kIcmp6EchoReply : kIcmpEchoReply) && icmp[4] == 0x12 &&
                icmp[5] == 0x34)
                return true;
        }
        return false;
    });
}

void check_the_kernel_still_gets_the_rest(TwoHosts& net, XskSocket& xs, bool v6) {
    // Another UDP port: A's kernel socket gets it, the XskSocket does not.
    KernelUdp a_other(v6 ? TwoHosts::a6(kOther) : TwoHosts::a4(kOther));
    KernelUdp b = net.in_b([&] { return KernelUdp(v6 ? TwoHosts::b6(0) : TwoHosts::b4(0)); });
    net.in_b([&] { REQUIRE(b.send(a_other.local, "for the kernel")); });
    auto got = a_other.recv(2000ms);
    REQUIRE(got);
    CHECK(got->first == "for the kernel");
    CHECK(got->second == b.local);
    std::vector<Msg> none(4);
    auto r = xs.recv(none, after(50ms));
    REQUIRE(r);
    CHECK(*r == 0);
    CHECK(ping_from_b(net, v6));
}

} // namespace

// ------------------------------------------------------------------------------------------------

TEST_CASE("xsk socket: IPv4 datagrams from a kernel socket are received with payload and peer, "
          "echoed in place, and accepted by the sender's kernel (GRO off and on at the sender)") {
    // GRO on B's end gives it NAPI; off (veth's default) B receives through the backlog. The
    // socket's copy-mode transmissions must reach B either way.
    for (bool gro : {false, true}) {
        CAPTURE(gro);
        TwoHosts::Options hosts;
        hosts.gro_b = gro;
        TwoHosts net(hosts);
        RedirectProg prog(net.ifindex_a, kPort);
        auto xs = XskSocket::open(small_options(TwoHosts::a4(kPort)));
        REQUIRE_MESSAGE(xs, (xs ? "" : xs.error().what()));
        // veth has no AF_XDP zero-copy: automatic falls back to copy mode, and says so.
        CHECK(xs->mode() == XskMode::copy);
        std::vector<std::string> names;
        xs->describe(names);
        CHECK(names == std::vector<std::string>{"xsk/copy"});
        REQUIRE(prog.insert(0, xs->fd()) == 0);
        KernelUdp b = net.in_b([] { return KernelUdp(TwoHosts::b4(0)); });

        echo_round(net, *xs, b, TwoHosts::a4(kPort), "v4", 100);
        CHECK(prog.count(0) >= 100);
        CHECK(xs->stats().rx == 100);
        CHECK(xs->stats().tx == 100);
        CHECK(xs->stats().invalid == 0);
        CHECK(xs->stats().copied == 0); // echoed from the frames they arrived in
        check_no_csum_errors(net);
        check_the_kernel_still_gets_the_rest(net, *xs, false);
        // The same socket keeps working afterwards.
        echo_round(net, *xs, b, TwoHosts::a4(kPort), "again", 10);
    }
}

TEST_CASE("xsk socket: verify_udp_checksum accepts complete checksums and counts wrong ones as "
          "invalid") {
    TwoHosts net;
    RedirectProg prog(net.ifindex_a, kPort);
    XskOptions o = small_options(TwoHosts::a4(kPort));
    o.verify_udp_checksum = true;
    auto xs = XskSocket::open(o);
    REQUIRE_MESSAGE(xs, (xs ? "" : xs.error().what()));
    REQUIRE(prog.insert(0, xs->fd()) == 0);
    KernelUdp b = net.in_b([] { return KernelUdp(TwoHosts::b4(0)); });

    // B's kernel leaves the UDP checksum to veth's offload by default: such a frame reaches
    // XDP with only the pseudo-header sum in it (CHECKSUM_PARTIAL), and verification refuses
    // it. Reported, not asserted: it is the kernel's behaviour on veth, not the socket's.
    net.in_b([&] { REQUIRE(b.send(TwoHosts::a4(kPort), "offloaded checksum")); });
    auto got = recv_n(*xs, 1, 300ms);
    MESSAGE("with the sender's TX checksum offload on, "
            << got.size() << " of 1 passed verification (invalid: " << xs->stats().invalid << ")");
    got.clear();

    // Checksums computed in software by B: all pass, and the echo round works.
    net.in_b([] { ethtool_set(TwoHosts::kIfB, ETHTOOL_STXCSUM, false); });
    const uint64_t invalid = xs->stats().invalid;
    echo_round(net, *xs, b, TwoHosts::a4(kPort), "verified", 50);
    CHECK(xs->stats().invalid == invalid);

    // A datagram built by hand and sent from B over a packet socket: received while its
    // checksum is right, counted invalid (its frame recycled, nothing returned) once it is not.
    auto a_if = xsk::interface_info(TwoHosts::kIfA);
    REQUIRE(a_if);
    auto p = BufferPool::create(1, 2048, 0);
    REQUIRE(p);
    Msg frame(p->get(), uint32_t((*p)->take()), 128, 0);
    REQUIRE(put(frame, "hand-made"));
    const xsk::Mac b_mac{0x02, 0, 0, 0, 0, 0x0b}; // any: A does not check the source MAC
    REQUIRE(xsk::push_udp_headers(
        frame, xsk::FrameEnds{b_mac, a_if->mac, b.local, TwoHosts::a4(kPort)}, 1));
    auto inject = [&] {
        net.in_b([&] {
            Fd ps(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0));
            REQUIRE(ps);
            sockaddr_ll sll{};
            sll.sll_family = AF_PACKET;
            sll.sll_ifindex = int(::if_nametoindex(TwoHosts::kIfB));
            sll.sll_halen = 6;
            std::memcpy(sll.sll_addr, a_if->mac.data(), 6);
            REQUIRE(::sendto(ps.get(), frame.data(), frame.size(), 0,
                             reinterpret_cast<sockaddr*>(&sll),
                             sizeof sll) == ssize_t(frame.size()));
        });
    };
    inject();
    got = recv_n(*xs, 1, 1000ms);
    REQUIRE(got.size() == 1);
    CHECK(text(got[0]) == "hand-made");
    got.clear();
    reinterpret_cast<uint8_t*>(frame.data())[14 + 20 + 7] ^= 0x5a; // the UDP checksum's low byte
    inject();
    std::vector<Msg> none(4);
    auto r = xs->recv(none, after(300ms));
    REQUIRE(r);
    CHECK(*r == 0);
    CHECK(xs->stats().invalid == invalid + 1);
    echo_round(net, *xs, b, TwoHosts::a4(kPort), "still", 5);
}

TEST_CASE("xsk socket: IPv6 datagrams are received, echoed in place and accepted by the sender's "
          "kernel; ICMPv6 and other ports still reach the kernel") {
    TwoHosts net;
    RedirectProg prog(net.ifindex_a, kPort);
    auto xs = XskSocket::open(small_options(TwoHosts::a6(kPort)));
    REQUIRE_MESSAGE(xs, (xs ? "" : xs.error().what()));
    REQUIRE(prog.insert(0, xs->fd()) == 0);
    KernelUdp b = net.in_b([] { return KernelUdp(TwoHosts::b6(0)); });

    echo_round(net, *xs, b, TwoHosts::a6(kPort), "v6", 100);
    CHECK(xs->stats().rx == 100);
    CHECK(xs->stats().tx == 100);
    check_no_csum_errors(net);
    check_the_kernel_still_gets_the_rest(net, *xs, true);
    echo_round(net, *xs, b, TwoHosts::a6(kPort), "again", 10);
}

TEST_CASE("xsk socket: sends first to a neighbour the kernel has not resolved yet, from alloc'd "
          "and from foreign messages, to a default peer; an unresolvable one fails by name") {
    for (bool v6 : {false, true}) {
        CAPTURE(v6);
        TwoHosts net;
        RedirectProg prog(net.ifindex_a, kPort);
        const Addr local = v6 ? TwoHosts::a6(kPort) : TwoHosts::a4(kPort);
        KernelUdp b =
            net.in_b([&] { return KernelUdp(v6 ? TwoHosts::b6(5555) : TwoHosts::b4(5555)); });
        XskOptions o = small_options(local);
        o.peer = b.local; // "connected"
        o.resolve_timeout = 300ms;
        auto xs = XskSocket::open(o);
        REQUIRE_MESSAGE(xs, (xs ? "" : xs.error().what()));
        REQUIRE(prog.insert(0, xs->fd()) == 0);
        // A has never heard from B: no neighbour entry until the socket asks the kernel.
        CHECK(sh(std::string("ip neigh show dev ") + TwoHosts::kIfA)
                  .second.find(v6 ? "2001:2:0:77::2 " : "198.18.77.2 ") == std::string::npos);

        // alloc'd messages, to the default peer (no peer set)
        std::vector<Msg> out(8);
        auto got = xs->alloc(out);
        REQUIRE(got);
        REQUIRE(*got == 8);
        for (size_t i = 0; i < 8; ++i) {
            CHECK(out[i].headroom() == XskSocket::kAllocHeadroom);
            REQUIRE(put(out[i], payload("alloc", i)));
        }
        auto sent = xs->send(out);
        REQUIRE_MESSAGE(sent, (sent ? "" : sent.error().what()));
        CHECK(*sent == 8);

        // messages from another pool (copied into frames), with their own peer set
        auto other = BufferPool::create(8, 2048, 0);
        REQUIRE(other);
        std::vector<Msg> foreign;
        for (size_t i = 0; i < 8; ++i) {
            int64_t slot = (*other)->take();
            REQUIRE(slot >= 0);
            foreign.emplace_back(other->get(), uint32_t(slot), 0, 0);
            REQUIRE(put(foreign.back(), payload("foreign", i)));
            foreign.back().set_peer(b.local);
        }
        sent = xs->send(foreign);
        REQUIRE_MESSAGE(sent, (sent ? "" : sent.error().what()));
        CHECK(*sent == 8);
        CHECK(xs->stats().copied == 8);
        CHECK((*other)->free_count() == 8); // the originals went back to their pool
        auto left = xs->flush(after(2s));
        REQUIRE(left);
        CHECK(*left == 0);

        net.in_b([&] {
            for (const char* tag : {"alloc", "foreign"})
                for (size_t i = 0; i < 8; ++i) {
                    auto e = b.recv(2000ms);
                    REQUIRE_MESSAGE(e, tag << " " << i << " never reached B");
                    CHECK(e->first == payload(tag, i));
                    CHECK(e->second == local);
                }
        });
        check_no_csum_errors(net);

        // Nobody has 198.18.77.99 / 2001:2:0:77::99: the error names the interface and address.
        const Addr ghost =
            v6 ? TwoHosts::addr("[2001:2:0:77::99]", 9) : TwoHosts::addr("198.18.77.99", 9);
        std::vector<Msg> one(1);
        REQUIRE(xs->alloc(one));
        REQUIRE(put(one[0], "to nobody"));
        one[0].set_peer(ghost);
        auto bad = xs->send(one);
        REQUIRE_FALSE(bad);
        INFO(bad.error().what());
        CHECK(bad.error().what().find("xsk on xa") != std::string::npos);
        CHECK(bad.error().what().find(v6 ? "2001:2:0:77::99" : "198.18.77.99") !=
              std::string::npos);
        CHECK(bool(one[0])); // not consumed

        // No route at all (A knows only its /24 and /64).
        one[0].set_peer(v6 ? TwoHosts::addr("[2001:2:0:99::1]", 9)
                           : TwoHosts::addr("198.18.99.1", 9));
        bad = xs->send(one);
        REQUIRE_FALSE(bad);
        CHECK(bad.error().what().find("route to") != std::string::npos);

        // Our own address: not a host on the link.
        one[0].set_peer(v6 ? TwoHosts::a6(9) : TwoHosts::a4(9));
        bad = xs->send(one);
        REQUIRE_FALSE(bad);
        CHECK(bad.error().what().find("an address of this host") != std::string::npos);

        // The largest datagram the MTU allows goes through whole; one byte more is refused
        // before anything is sent.
        CHECK(xs->max_payload() == (v6 ? 1500 - 48 : 1500 - 28));
        one[0].set_peer(b.local);
        const std::string biggest =
            payload("max", 1, xs->max_payload()) + std::string(xs->max_payload(), 'x');
        REQUIRE(put(one[0], biggest.substr(0, xs->max_payload() + 1)));
        bad = xs->send(one);
        REQUIRE_FALSE(bad);
        CHECK(bad.error().code == Errc::invalid_argument);
        CHECK(bad.error().what().find("MTU 1500") != std::string::npos);
        REQUIRE(put(one[0], biggest.substr(0, xs->max_payload())));
        sent = xs->send(one);
        REQUIRE_MESSAGE(sent, (sent ? "" : sent.error().what()));
        CHECK(*sent == 1);
        net.in_b([&] {
            auto e = b.recv(2000ms);
            REQUIRE(e);
            CHECK(e->first == biggest.substr(0, xs->max_payload()));
        });
        check_no_csum_errors(net);
    }
}

TEST_CASE("xsk socket: bursts of three times the ring sizes do not wedge it: receive and send "
          "still work afterwards") {
    constexpr uint32_t kRing = 64;
    TwoHosts net;
    RedirectProg prog(net.ifindex_a, kPort);
    XskOptions o = small_options(TwoHosts::a4(kPort), kRing);
    o.rx_frames = kRing; // the fill ring is the only reserve: a burst empties it
    auto xs = XskSocket::open(o);
    REQUIRE_MESSAGE(xs, (xs ? "" : xs.error().what()));
    REQUIRE(prog.insert(0, xs->fd()) == 0);
    KernelUdp b = net.in_b([] { return KernelUdp(TwoHosts::b4(0)); });

    // Receive side: 3 x ring datagrams while nobody reads.
    net.in_b([&] {
        for (size_t i = 0; i < 3 * kRing; ++i)
            REQUIRE(b.send(TwoHosts::a4(kPort), payload("burst", i)));
    });
    auto got = recv_n(*xs, 3 * kRing, 300ms);
    CHECK(got.size() > 0);
    CHECK(got.size() <= kRing); // no more than the rings held: the rest was dropped, not queued
    auto k = xs->kernel_stats();
    REQUIRE(k);
    MESSAGE("burst: " << got.size() << " of " << 3 * kRing << " received; kernel: rx_ring_full "
                      << k->rx_ring_full << ", fill ring empty " << k->rx_fill_ring_empty_descs
                      << ", dropped " << k->rx_dropped);
    got.clear(); // every frame back to the fill ring
    echo_round(net, *xs, b, TwoHosts::a4(kPort), "after-rx-burst", 16);

    // Send side: 3 x ring messages in one send. TX ring and send frames are kRing each, and
    // messages from another pool need a send frame each: send must wait for completions.
    auto other = BufferPool::create(3 * kRing, 2048, 0);
    REQUIRE(other);
    std::vector<Msg> out;
    for (size_t i = 0; i < 3 * kRing; ++i) {
        int64_t slot = (*other)->take();
        REQUIRE(slot >= 0);
        out.emplace_back(other->get(), uint32_t(slot), 0, 0);
        REQUIRE(put(out.back(), payload("txburst", i)));
        out.back().set_peer(b.local);
    }
    const uint64_t tx_before = xs->stats().tx;
    size_t sent_total = 0;
    for (int guard = 0; guard < 100 && sent_total < out.size(); ++guard) {
        auto s = xs->send(std::span(out).subspan(sent_total));
        REQUIRE_MESSAGE(s, (s ? "" : s.error().what()));
        sent_total += *s;
    }
    CHECK(sent_total == 3 * kRing);
    CHECK(xs->stats().tx_ring_full > 0); // it had to wait for frames: there are only kRing
    auto left = xs->flush(after(2s));
    REQUIRE(left);
    CHECK(*left == 0);
    CHECK(xs->stats().tx - tx_before == sent_total);
    CHECK((*other)->free_count() == 3 * kRing); // every original went back to its pool
    size_t echoed = 0;
    net.in_b([&] {
        for (int guard = 0; guard < 10000; ++guard) {
            auto e = b.recv(200ms);
            if (!e) break;
            CHECK(e->first == payload("txburst", echoed)); // in order, none lost on veth
            ++echoed;
        }
    });
    MESSAGE("tx burst: " << echoed << " of " << sent_total << " reached B; waited for TX room "
                         << xs->stats().tx_ring_full << " times");
    CHECK(echoed == sent_total);
    echo_round(net, *xs, b, TwoHosts::a4(kPort), "after-tx-burst", 16);
    check_no_csum_errors(net);
}

TEST_CASE("xsk socket: open refuses what cannot work, with the interface, queue and reason") {
    TwoHosts net;
    // zero-copy on veth: the driver has no AF_XDP zero-copy
    XskOptions o = small_options(TwoHosts::a4(kPort));
    o.mode = XskMode::zerocopy;
    auto zc = XskSocket::open(o);
    REQUIRE_FALSE(zc);
    INFO(zc.error().what());
    CHECK(zc.error().what().find("xsk on xa queue 0") != std::string::npos);
    CHECK(zc.error().what().find("zero-copy") != std::string::npos);
    CHECK(zc.error().sys_errno != 0);

    // a queue the interface does not have
    o.mode = XskMode::automatic;
    o.queue = 1;
    auto q = XskSocket::open(o);
    REQUIRE_FALSE(q);
    CHECK(q.error().what().find("queue 1 does not exist") != std::string::npos);

    // a second socket on a queue that has one
    o.queue = 0;
    auto first = XskSocket::open(o);
    REQUIRE_MESSAGE(first, (first ? "" : first.error().what()));
    auto second = XskSocket::open(o);
    REQUIRE_FALSE(second);
    CHECK(second.error().what().find("xsk on xa queue 0") != std::string::npos);

    // no such interface, no port, bad ring size
    o.ifname = "nosuchif0";
    CHECK_FALSE(XskSocket::open(o));
    o.ifname = TwoHosts::kIfA;
    o.local = TwoHosts::a4(0);
    CHECK_FALSE(XskSocket::open(o));
    o.local = TwoHosts::a4(kPort);
    o.rx_size = 100;
    CHECK_FALSE(XskSocket::open(o));
}

TEST_CASE("xsk socket: queues() counts RX queues, and one socket binds per queue") {
    TwoHosts net;
    auto one = XskSocket::queues(TwoHosts::kIfA);
    REQUIRE(one);
    CHECK(*one == 1);
    must("ip link add xq numrxqueues 3 numtxqueues 3 type veth peer name xqp numrxqueues 3 "
         "numtxqueues 3");
    must("ip link set xq up && ip link set xqp up");
    auto three = XskSocket::queues("xq");
    REQUIRE(three);
    CHECK(*three == 3);
    std::vector<XskSocket> socks;
    for (uint32_t q = 0; q < *three; ++q) {
        XskOptions o = small_options(TwoHosts::a4(kPort), 64);
        o.ifname = "xq";
        o.queue = q;
        auto s = XskSocket::open(o);
        REQUIRE_MESSAGE(s, (s ? "" : s.error().what()));
        CHECK(s->queue() == q);
        socks.push_back(std::move(*s));
    }
    CHECK(xdp_sockets_here() == 3);
    socks.clear();
    CHECK(xdp_sockets_here() == 0);
    CHECK_FALSE(XskSocket::queues("nosuchif0"));
}

TEST_CASE("xsk socket: it loads no XDP program of its own, and closing leaves no socket behind") {
    auto netns_inode = [] {
        struct stat st {};
        ::stat("/proc/thread-self/ns/net", &st);
        return st.st_ino;
    };
    const auto home = netns_inode();
    std::optional<TwoHosts> hosts(std::in_place);
    TwoHosts& net = *hosts;
    CHECK(netns_inode() != home);
    {
        RedirectProg prog(net.ifindex_a, kPort);
        const uint32_t ours = prog.id();
        REQUIRE(ours != 0);
        REQUIRE(xdp_sockets_here() == 0);
        {
            auto xs = XskSocket::open(small_options(TwoHosts::a4(kPort)));
            REQUIRE_MESSAGE(xs, (xs ? "" : xs.error().what()));
            REQUIRE(prog.insert(0, xs->fd()) == 0);
            CHECK(xdp_sockets_here() == 1);
            // Only the test's program is attached: libxdp loaded nothing.
            CHECK(attached_prog(net.ifindex_a) == ours);
            auto [rc, link] = sh(std::string("ip link show dev ") + TwoHosts::kIfA);
            CHECK(rc == 0);
            CHECK(link.find("prog/xdp id " + std::to_string(ours)) != std::string::npos);
            // Moving it keeps one socket.
            XskSocket moved = std::move(*xs);
            CHECK(moved.fd() >= 0);
            CHECK(xdp_sockets_here() == 1);
        }
        CHECK(xdp_sockets_here() == 0);
        CHECK(attached_prog(net.ifindex_a) == ours);
    }
    CHECK(attached_prog(net.ifindex_a) == 0);
    auto [rc, link] = sh(std::string("ip link show dev ") + TwoHosts::kIfA);
    CHECK(rc == 0);
    CHECK(link.find("xdp") == std::string::npos);
    hosts.reset(); // the thread is back where it started
    CHECK(netns_inode() == home);
}
