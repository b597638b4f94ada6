// The echo example's two roles and their options. main.cpp fills these from the command line;
// server.cpp and client.cpp each run one role and return the process exit code.
#pragma once

#include "bertha/udp.hpp"

#include <cstddef>
#include <cstdint>
#include <string>

namespace bertha::echo {

// Stacks are compile-time types, so the number of noop chunnels is chosen from a fixed set of
// instantiations (stacks.hpp); this is the largest one built.
inline constexpr size_t kMaxNoops = 5;
// A message must fit one buffer of the udp chunnel's pool, behind its head-room.
inline constexpr size_t kMaxSize = UdpOptions{}.slot_size - UdpOptions{}.headroom;

// The base chunnel under the stack (--base).
enum class Base { udp, xsk, automatic };

struct ServerOptions {
    std::string bind;      // "198.18.0.1:7000"
    size_t noops = 0;      // noop chunnels above the base
    Base base = Base::udp;
    double duration_s = 0; // stop after this long; 0 = until SIGINT/SIGTERM
    size_t batch = 256;    // messages per recv/send
};

struct ClientOptions {
    std::string server;      // "198.18.0.1:7000"
    size_t noops = 0;        // noop chunnels above the base
    Base base = Base::udp;
    uint64_t count = 100000; // messages to send
    size_t size = 64;        // bytes per message, at least the 16-byte header
    size_t window = 32;      // messages in flight
    double max_seconds = 20; // the run stops here whatever is outstanding
    double timeout_ms = 200; // a message not back after this long is counted lost
    bool progress = false;   // a line on stderr about every 0.5 s
    bool json = false;       // the final result as one JSON object on stdout
};

int run_server(const ServerOptions& o);
int run_client(const ClientOptions& o);

} // namespace bertha::echo
