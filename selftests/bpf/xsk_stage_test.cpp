// chunnels/xsk/xsk.bpf.c and the loader's AF_XDP socket entries (Loader::set_xsk/clear_xsk), on
// lo of a private network namespace (loader_fixture.hpp). A packet of the flow goes through the
// live dispatcher and chain with Loader::explain: with no socket on its queue the stage counts
// `miss` and the packet goes on to the kernel (XDP_PASS); with a real AF_XDP socket bound to lo
// queue 0 and entered for the flow, the stage redirects it (XDP_REDIRECT, counted `redirect`).
// BPF_PROG_TEST_RUN reports the verdict without delivering the frame, which is all the stage
// decides. Also: the entry goes when the socket closes or the chain is detached; the stage must
// be last; `sockets=CHAIN` redirects into another chain's sockets; wrong uses are refused.
#include "loader_fixture.hpp"
#include "packet.hpp"

#include <bpf/bpf.h>
#include <doctest/doctest.h>
#include <linux/bpf.h>
#include <linux/if_xdp.h>
#include <string>
#include <sys/mman.h>
#include <vector>
#include <xdp/xsk.h>

using namespace bertha;
using namespace bertha::test;
using load::Hook;

namespace {

const char *kUs = "198.18.0.1", *kPeer = "198.18.0.2";

load::FlowKey flow(uint16_t port) {
    load::FlowKey k;
    k.ifname = LoaderFixture::kIf;
    k.hook = Hook::xdp;
    k.port = port;
    return k;
}

std::vector<uint8_t> udp_to(uint16_t port) {
    Packet p;
    p.eth().ipv4(kPeer, kUs).udp(5000, port).payload("to the socket");
    return p.bytes();
}

// A minimal AF_XDP socket on lo queue 0 in copy mode, straight from libxdp (the test does not
// depend on bertha::XskSocket): UMEM, rings, bound; libxdp loads no program of its own.
class RawXsk {
  public:
    RawXsk() {
        size_t len = size_t(kFrames) * XSK_UMEM__DEFAULT_FRAME_SIZE;
        mem_ = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        REQUIRE(mem_ != MAP_FAILED);
        REQUIRE(xsk_umem__create(&umem_, mem_, len, &fill_, &comp_, nullptr) == 0);
        xsk_socket_config cfg{};
        cfg.rx_size = XSK_RING_CONS__DEFAULT_NUM_DESCS;
        cfg.tx_size = XSK_RING_PROD__DEFAULT_NUM_DESCS;
        cfg.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD;
        cfg.bind_flags = XDP_COPY;
        int err = xsk_socket__create(&xsk_, LoaderFixture::kIf, 0, umem_, &rx_, &tx_, &cfg);
        REQUIRE_MESSAGE(err == 0, "xsk_socket__create on lo queue 0: ", strerror(-err));
    }
    ~RawXsk() { close(); }
    int fd() const { return xsk_socket__fd(xsk_); }
    void close() {
        if (xsk_) xsk_socket__delete(xsk_);
        if (umem_) xsk_umem__delete(umem_);
        if (mem_ != MAP_FAILED && mem_)
            ::munmap(mem_, size_t(kFrames) * XSK_UMEM__DEFAULT_FRAME_SIZE);
        xsk_ = nullptr, umem_ = nullptr, mem_ = nullptr;
    }

  private:
    static constexpr uint32_t kFrames = 64;
    void* mem_ = nullptr;
    xsk_umem* umem_ = nullptr;
    xsk_socket* xsk_ = nullptr;
    xsk_ring_prod fill_{}, tx_{};
    xsk_ring_cons comp_{}, rx_{};
};

// What the xsk stage did with one packet of the flow, and the verdict.
struct Outcome {
    int verdict = -1;
    std::string did; // the xsk stage's counter, "" if it did not run
};

Outcome run(LoaderFixture& fx, uint16_t port) {
    auto ex = fx.loader().explain(LoaderFixture::kIf, Hook::xdp, udp_to(port));
    REQUIRE_MESSAGE(ex, "explain: ", (ex ? std::string() : ex.error().what()));
    Outcome o{ex->verdict, ""};
    for (auto& s : ex->steps)
        if (s.stage == "xsk") o.did = s.did;
    CHECK_FALSE(ex->changed); // redirected or passed, never modified
    return o;
}

} // namespace

TEST_CASE("xsk stage: no socket -> miss and XDP_PASS; a socket on the queue -> redirect") {
    LoaderFixture fx;
    auto& l = fx.loader();
    std::vector<load::StageSpec> xsk{{"xsk", ""}};
    auto chain = l.attach(flow(7500), xsk);
    REQUIRE_MESSAGE(chain, (chain ? std::string() : chain.error().what()));

    auto o = run(fx, 7500);
    CHECK(o.verdict == XDP_PASS);
    CHECK(o.did == "miss");

    {
        RawXsk sock;
        auto set = l.set_xsk(flow(7500), 0, sock.fd());
        REQUIRE_MESSAGE(set, (set ? std::string() : set.error().what()));
        o = run(fx, 7500);
        CHECK(o.verdict == XDP_REDIRECT);
        CHECK(o.did == "redirect");
        // Another port is not the flow's: the dispatcher passes it, the stage never runs.
        o = run(fx, 7501);
        CHECK(o.verdict == XDP_PASS);
        CHECK(o.did == "");

        REQUIRE(l.clear_xsk(flow(7500), 0));
        o = run(fx, 7500);
        CHECK(o.verdict == XDP_PASS);
        CHECK(o.did == "miss");
        REQUIRE(l.clear_xsk(flow(7500), 0)); // clearing an empty entry is no error

        REQUIRE(l.set_xsk(flow(7500), 0, sock.fd()));
        CHECK(run(fx, 7500).verdict == XDP_REDIRECT);
        sock.close(); // the kernel takes a closed socket out of the map itself
    }
    o = run(fx, 7500);
    CHECK(o.verdict == XDP_PASS);
    CHECK(o.did == "miss");

    auto st = l.status(LoaderFixture::kIf);
    REQUIRE(st);
    REQUIRE(st->size() == 1);
    bool pinned = false;
    for (auto& p : (*st)[0].pins) pinned |= p == "bertha_xsks";
    CHECK(pinned);
    REQUIRE(l.detach(flow(7500)));
    // The last chain gone: nothing of ours, the XSKMAP's pin included.
    auto gone = l.status(LoaderFixture::kIf);
    CHECK((!gone || gone->empty()));
}

TEST_CASE("xsk stage: a detached chain's entries go with it; a new chain starts empty") {
    LoaderFixture fx;
    auto& l = fx.loader();
    std::vector<load::StageSpec> xsk{{"xsk", ""}};
    std::vector<load::StageSpec> count{{"count", ""}};
    REQUIRE(l.attach(flow(7600), count)); // keeps the interface's maps alive throughout
    auto a = l.attach(flow(7601), xsk);
    REQUIRE(a);
    RawXsk sock;
    REQUIRE(l.set_xsk(flow(7601), 0, sock.fd()));
    CHECK(run(fx, 7601).verdict == XDP_REDIRECT);
    REQUIRE(l.detach(flow(7601)));
    // The same chain id again, for another port: the old socket must not receive its packets.
    auto b = l.attach(flow(7602), xsk);
    REQUIRE(b);
    CHECK(*b == *a);
    auto o = run(fx, 7602);
    CHECK(o.verdict == XDP_PASS);
    CHECK(o.did == "miss");
}

TEST_CASE("xsk stage: sockets=CHAIN sends a peer's chain into the listener's sockets") {
    LoaderFixture fx;
    auto& l = fx.loader();
    std::vector<load::StageSpec> own{{"xsk", ""}};
    auto base = l.attach(flow(7700), own); // the listener: any peer
    REQUIRE(base);
    load::FlowKey peer = flow(7700);
    peer.peer = *Addr::parse(std::string(kPeer) + ":5000");
    std::vector<load::StageSpec> above{{"count", ""}, {"xsk", "sockets=" + std::to_string(*base)}};
    auto pc = l.attach(peer, above);
    REQUIRE_MESSAGE(pc, (pc ? std::string() : pc.error().what()));
    CHECK(*pc != *base);

    auto ex = l.explain(LoaderFixture::kIf, Hook::xdp, udp_to(7700));
    REQUIRE(ex);
    CHECK(ex->verdict == XDP_PASS); // no socket yet: counted, then on to the kernel
    RawXsk sock;
    REQUIRE(l.set_xsk(flow(7700), 0, sock.fd()));
    ex = l.explain(LoaderFixture::kIf, Hook::xdp, udp_to(7700));
    REQUIRE(ex);
    CHECK(ex->verdict == XDP_REDIRECT);
    std::vector<std::string> did;
    for (auto& s : ex->steps) did.push_back(s.stage + ":" + s.did);
    CHECK(did == std::vector<std::string>{"dispatcher:hit", "count:pass", "xsk:redirect"});
    // The peer's chain borrows sockets; it has none of its own to set.
    auto refused = l.set_xsk(peer, 0, sock.fd());
    REQUIRE_FALSE(refused);
    CHECK(refused.error().what().find("does not end in an xsk stage of its own") !=
          std::string::npos);
}

TEST_CASE("xsk stage: refusals name the reason and change nothing") {
    LoaderFixture fx;
    auto& l = fx.loader();
    SUBCASE("not last in its chain") {
        std::vector<load::StageSpec> bad{{"xsk", ""}, {"count", ""}};
        auto r = l.attach(flow(7800), bad);
        REQUIRE_FALSE(r);
        CHECK(r.error().what().find("stage xsk redirects the packet: it must be the last") !=
              std::string::npos);
        auto st = l.status(LoaderFixture::kIf);
        CHECK((!st || st->empty()));
    }
    SUBCASE("sockets= is not a chain id") {
        for (const char* v : {"sockets=64", "sockets=x", "sockets=", "sockets=-1"}) {
            std::vector<load::StageSpec> bad{{"xsk", v}};
            auto r = l.attach(flow(7801), bad);
            REQUIRE_FALSE(r);
            CHECK(r.error().what().find("not a chain id") != std::string::npos);
        }
        auto st = l.status(LoaderFixture::kIf);
        CHECK((!st || st->empty()));
    }
    SUBCASE("set_xsk on a chain without xsk, on a queue out of range, on no flow") {
        std::vector<load::StageSpec> count{{"count", ""}};
        REQUIRE(l.attach(flow(7802), count));
        RawXsk sock;
        auto r = l.set_xsk(flow(7802), 0, sock.fd());
        REQUIRE_FALSE(r);
        CHECK(r.error().what().find("does not end in an xsk stage") != std::string::npos);
        std::vector<load::StageSpec> xsk{{"xsk", ""}};
        REQUIRE(l.attach(flow(7803), xsk));
        r = l.set_xsk(flow(7803), BERTHA_XSK_QUEUES, sock.fd());
        REQUIRE_FALSE(r);
        CHECK(r.error().what().find("RX queue 64") != std::string::npos);
        r = l.set_xsk(flow(7804), 0, sock.fd());
        REQUIRE_FALSE(r);
        CHECK(r.error().what().find("no such flow") != std::string::npos);
        // A socket fd that is not an AF_XDP socket: the kernel refuses, and the error says so.
        r = l.set_xsk(flow(7803), 0, 0);
        REQUIRE_FALSE(r);
        CHECK(r.error().what().find("put the AF_XDP socket of queue 0") != std::string::npos);
    }
}
