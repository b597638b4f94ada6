// What a client run measured, and the two ways of printing it: a few lines for people, one JSON
// object for scripts (demo.sh reads it to build its comparison table).
#pragma once

#include "bertha/histogram.hpp"

#include <cstdint>
#include <string>

namespace bertha::echo {

struct ClientResult {
    std::string server;
    std::string stack; // bertha::describe(conn): "noop/passthrough > udp/io_uring"
    size_t noops = 0, size = 0, window = 0;
    uint64_t sent = 0;       // messages handed to send()
    uint64_t received = 0;   // valid replies, each recorded in rtt
    uint64_t lost = 0;       // sent and not back within the timeout
    uint64_t unanswered = 0; // still in flight when the run was cut short (--max-seconds, error)
    uint64_t late = 0;       // back after being counted lost (not in `lost` any more)
    uint64_t errors = 0;     // wrong size, bad padding, unknown or duplicate sequence numbers
    double seconds = 0;
    bool timed_out = false; // stopped by --max-seconds
    std::string error;      // a fatal error that ended the run early, if any
    Histogram rtt;          // nanoseconds

    double msgs_per_s() const { return seconds > 0 ? double(received) / seconds : 0; }
    // Payload bits echoed back per second (one direction; headers not counted).
    double mbit_per_s() const { return msgs_per_s() * double(size) * 8 / 1e6; }
};

void print_human(const ClientResult& r);
void print_json(const ClientResult& r);

} // namespace bertha::echo
