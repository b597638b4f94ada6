#include "service.hpp"

#include "bertha/stack.hpp"
#include "bertha/udp.hpp"
#include "shard/shard.hpp"

#include <cstdio>
#include <poll.h>
#include <vector>

namespace bertha::kv {

namespace {

// shard/xdp's chain, attached before the first client when this host can run it and held
// while the server runs: every xdp client's connection adds a reference to it
// (shard::service_flow), and none waits for the stage's program to load and verify during its
// negotiation. Empty (and shard/xdp not offered) where it cannot.
OffloadHandle attach_service_stage(const ServiceOptions& o) {
    const ProbeReport& r = probe_local(o.listen);
    if (!r.facts.meets(shard::Xdp::info.needs) || !r.interface) {
        if (!o.quiet)
            std::printf("kv server: shard/xdp cannot run here: %s\n",
                        r.facts.why_not(shard::Xdp::info.needs).c_str());
        return {};
    }
    OffloadFlow flow{"shard/xdp", r.interface->name, load::Hook::xdp, o.listen.port(),
                     std::nullopt, std::nullopt};
    const load::StageSpec stage = shard::stage_for({o.base, uint16_t(o.shards)});
    auto h = attach_offload(flow, std::span(&stage, 1));
    if (!h) {
        std::printf("kv server: shard/xdp not offered: %s\n", h.error().what().c_str());
        return {};
    }
    if (!o.quiet)
        std::printf("kv server: shard/xdp: the shard stage is on %s xdp udp/%u (chain %u)\n",
                    flow.ifname.c_str(), unsigned(flow.port), h->chain());
    return std::move(*h);
}

template <class Stack> int serve(const Stack& stack, const ServiceOptions& o,
                                 const std::atomic<bool>& stop) {
    auto listener = stack.listen(o.listen);
    if (!listener) {
        std::fprintf(stderr, "kv server: service port %s: %s\n", o.listen.to_string().c_str(),
                     listener.error().what().c_str());
        return 1;
    }
    using Conn = typename std::decay_t<decltype(*listener)>::PeerConn;
    struct Client {
        Conn conn;
        std::string name;
        uint64_t seen = 0; // relay activity + steered datagrams at the last idle check
        Clock::time_point last_use;
    };
    std::vector<Client> clients;
    std::array<Msg, 32> scratch;
    std::vector<pollfd> fds;
    auto next_idle_check = Clock::now() + std::chrono::seconds(1);

    // The line a closing connection leaves: what its relay did and, under shard/xdp, what the
    // stage steered (tests and the demo read it).
    auto close_client = [&](size_t i, const std::string& why) {
        if (!o.quiet) {
            std::string did;
            if (auto s = shard::stats(clients[i].conn))
                did = ": relayed " + std::to_string(s->relay.forwarded) + " whole, split " +
                      std::to_string(s->relay.split) + ", replies " +
                      std::to_string(s->relay.replies) + ", stray " +
                      std::to_string(s->relay.stray) + ", expired " +
                      std::to_string(s->relay.expired) + ", steered by xdp " +
                      std::to_string(s->steered);
            std::printf("kv server: closed %s (%s)%s\n", clients[i].name.c_str(), why.c_str(),
                        did.c_str());
            std::fflush(stdout);
        }
        clients.erase(clients.begin() + long(i));
    };

    while (!stop.load(std::memory_order_relaxed)) {
        bool busy = false;
        auto a = listener->accept(no_wait);
        if (!a) {
            std::fprintf(stderr, "kv server: accept: %s\n", a.error().what().c_str());
            return 1;
        }
        if (*a) {
            busy = true;
            Client c{std::move(**a), "", 0, Clock::now()};
            c.name = describe(c.conn);
            if (!o.quiet) std::printf("kv server: client connected: %s\n", c.name.c_str());
            std::fflush(stdout);
            clients.push_back(std::move(c));
        }
        for (size_t i = 0; i < clients.size();) {
            const uint64_t before = shard::activity(clients[i].conn);
            auto r = clients[i].conn.recv(scratch, no_wait);
            if (!r) {
                close_client(i, r.error().what());
                continue;
            }
            if (shard::activity(clients[i].conn) != before) busy = true;
            ++i;
        }
        const auto now = Clock::now();
        if (now >= next_idle_check) { // idle: no relay and (xdp) no steered datagram
            next_idle_check = now + std::chrono::seconds(1);
            for (size_t i = 0; i < clients.size();) {
                uint64_t used = shard::activity(clients[i].conn);
                if (auto s = shard::stats(clients[i].conn)) used += s->steered;
                if (used != clients[i].seen) {
                    clients[i].seen = used;
                    clients[i].last_use = now;
                } else if (now - clients[i].last_use >= o.idle) {
                    close_client(i, "idle for " + std::to_string(o.idle.count()) + " s");
                    continue;
                }
                ++i;
            }
        }
        if (busy) continue;
        // Nothing moved: wait for the ring (new datagrams for the listener and every client)
        // or a shard's reply, at most 10 ms (negotiations in progress, idle checks, stop).
        fds.assign(1, pollfd{listener->base().wait_fd(), POLLIN, 0}); // reused: no allocation
        for (auto& c : clients)
            for (int fd : shard::wait_fds(c.conn))
                if (fd >= 0 && fd != fds[0].fd) fds.push_back({fd, POLLIN, 0});
        ::poll(fds.data(), fds.size(), listener->negotiating() ? 1 : 10);
    }
    while (!clients.empty()) close_client(clients.size() - 1, "server stopping");
    return 0;
}

} // namespace

int run_service(const ServiceOptions& o, const std::atomic<bool>& stop) {
    shard::Config cfg;
    cfg.table = {o.base, uint16_t(o.shards)};
    if (!cfg.table.valid()) {
        std::fprintf(stderr, "kv server: no valid shard table (%u shards from port %u)\n",
                     o.shards, o.base);
        return 1;
    }
    Addr at = o.listen;
    at.set_port(0);
    cfg.shards_at = at;
    OffloadHandle warm = o.xdp ? attach_service_stage(o) : OffloadHandle{};
    std::fflush(stdout);
    if (warm) return serve(make_stack(shard::chunnel(cfg), Udp{}), o, stop);
    return serve(make_stack(bertha::select(shard::Proxy{cfg}, shard::Client{cfg}), Udp{}), o,
                 stop);
}

} // namespace bertha::kv
