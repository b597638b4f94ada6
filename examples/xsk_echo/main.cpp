// xsk_echo: AF_XDP without chunnels. A UDP echo server that uses bertha::XskSocket directly,
// with Bertha's loader (libbertha-load) steering its one flow into the sockets. This is all an
// application needs when it wants kernel bypass and nothing else:
//
//   1. the loader attaches the chain [xsk] for the flow (interface, UDP port): the interface's
//      XDP dispatcher redirects exactly that flow's packets; everything else goes on to the
//      kernel as before;
//   2. one XskSocket per RX queue of the interface (a socket sees only its own queue), each
//      entered into the flow's XSKMAP slot with Loader::set_xsk;
//   3. recv a batch, send the same batch back: the payload never moves, the headers are
//      rewritten in place in the UMEM frame.
//
//   xsk_echo --iface veth0 --bind 198.18.0.1:7000 [--duration-s 10]
//
// Needs root (CAP_NET_ADMIN, CAP_BPF, CAP_NET_RAW). Stops on SIGINT/SIGTERM or after the
// duration; the chain, the sockets and (with the last chain) the dispatcher go with it.
#include "loader/loader.hpp"
#include "xsk/xsk.hpp"

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <vector>

using namespace bertha;
using namespace std::chrono_literals;

namespace {
std::atomic<bool> g_stop{false};
void on_stop(int) { g_stop.store(true); }
} // namespace

int main(int argc, char** argv) {
    CLI::App app{"xsk_echo: a UDP echo server on AF_XDP sockets, without chunnels"};
    std::string ifname, bind_at;
    double duration_s = 0;
    app.add_option("--iface", ifname, "the interface the flow arrives on")->required();
    app.add_option("--bind", bind_at, "local address:port of the flow")->required();
    app.add_option("--duration-s", duration_s, "stop after this long (0: on SIGINT/SIGTERM)");
    CLI11_PARSE(app, argc, argv);
    std::signal(SIGINT, on_stop);
    std::signal(SIGTERM, on_stop);

    auto local = Addr::parse(bind_at);
    if (!local) return std::fprintf(stderr, "xsk_echo: %s\n", local.error().what().c_str()), 2;
    auto loader = load::Loader::open();
    if (!loader) return std::fprintf(stderr, "xsk_echo: %s\n", loader.error().what().c_str()), 1;

    // 1. The flow's chain: UDP to this port, from any peer, ends in its AF_XDP sockets.
    load::FlowKey flow{ifname, load::Hook::xdp, uint16_t(local->port()), std::nullopt};
    const load::StageSpec xsk[] = {{"xsk", ""}};
    if (auto c = loader->attach(flow, xsk); !c)
        return std::fprintf(stderr, "xsk_echo: %s\n", c.error().what().c_str()), 1;

    // 2. One socket per RX queue, each entered for its queue.
    std::vector<XskSocket> socks;
    auto queues = XskSocket::queues(ifname);
    for (uint32_t q = 0; queues && q < *queues; ++q) {
        XskOptions o;
        o.ifname = ifname;
        o.queue = q;
        o.local = *local;
        auto s = XskSocket::open(o);
        if (!s) {
            std::fprintf(stderr, "xsk_echo: %s\n", s.error().what().c_str());
            break;
        }
        if (auto r = loader->set_xsk(flow, q, s->fd()); !r) {
            std::fprintf(stderr, "xsk_echo: %s\n", r.error().what().c_str());
            break;
        }
        socks.push_back(std::move(*s));
    }
    int rc = 0;
    if (!queues || socks.size() != *queues) {
        rc = 1;
    } else {
        std::vector<std::string> what;
        socks[0].describe(what);
        std::printf("xsk_echo: echoing udp/%u on %s, %zu queue(s), %s\n", local->port(),
                    ifname.c_str(), socks.size(), what.empty() ? "" : what[0].c_str());
        std::fflush(stdout);
        // 3. Echo: each socket's batch goes back out through the same socket.
        std::vector<Msg> batch(64);
        uint64_t echoed = 0;
        const auto end = duration_s > 0 ? after(std::chrono::duration_cast<Clock::duration>(
                                              std::chrono::duration<double>(duration_s)))
                                        : Deadline::max();
        while (!g_stop.load() && Clock::now() < end && rc == 0) {
            for (auto& s : socks) {
                // One queue: wait up to 100 ms; several: look at each without waiting long.
                auto n = s.recv(batch, socks.size() == 1 ? after(100ms) : after(1ms));
                if (!n) {
                    std::fprintf(stderr, "xsk_echo: %s\n", n.error().what().c_str());
                    rc = 1;
                    break;
                }
                if (*n == 0) continue;
                auto sent = s.send(std::span(batch).first(*n)); // peer() of each: its sender
                if (sent) echoed += *sent;
                for (auto& m : batch) m.release(); // any the TX ring did not take
            }
        }
        std::printf("xsk_echo: echoed %llu datagrams\n", (unsigned long long)echoed);
    }
    socks.clear(); // the sockets first (the kernel empties their XSKMAP slots), then the chain
    if (auto d = loader->detach(flow); !d) {
        std::fprintf(stderr, "xsk_echo: %s\n", d.error().what().c_str());
        rc = 1;
    }
    return rc;
}
