#include "report.hpp"

#include <cstdio>

namespace bertha::echo {

namespace {

double us(uint64_t ns) {
    return double(ns) / 1000.0;
}

// JSON string contents: our strings are addresses, stack names and error messages, but an error
// message may quote user input, so escape what JSON requires.
std::string escaped(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
        } else {
            out += c;
        }
    }
    return out;
}

} // namespace

void print_human(const ClientResult& r) {
    std::printf("echo client -> %s\n", r.server.c_str());
    std::printf("  stack       %s\n", r.stack.c_str());
    std::printf("  messages    %llu sent, %llu back, %llu lost, %llu late, %llu errors",
                (unsigned long long)r.sent, (unsigned long long)r.received,
                (unsigned long long)r.lost, (unsigned long long)r.late,
                (unsigned long long)r.errors);
    if (r.unanswered)
        std::printf(", %llu unanswered when the run stopped", (unsigned long long)r.unanswered);
    std::printf("\n");
    std::printf("  throughput  %.0f msg/s, %.1f Mbit/s of payload (%zu-byte messages, window "
                "%zu, %.2f s%s)\n",
                r.msgs_per_s(), r.mbit_per_s(), r.size, r.window, r.seconds,
                r.timed_out ? ", stopped by --max-seconds" : "");
    const Histogram& h = r.rtt;
    std::printf("  rtt (us)    p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n",
                us(h.percentile(50)), us(h.percentile(90)), us(h.percentile(99)),
                us(h.percentile(99.9)), us(h.max()));
    if (!r.error.empty()) std::printf("  error       %s\n", r.error.c_str());
}

void print_json(const ClientResult& r) {
    const Histogram& h = r.rtt;
    std::printf("{\"server\":\"%s\",\"stack\":\"%s\",\"noops\":%zu,\"size\":%zu,\"window\":%zu,"
                "\"sent\":%llu,\"received\":%llu,\"lost\":%llu,\"late\":%llu,\"unanswered\":%llu,"
                "\"errors\":%llu,"
                "\"seconds\":%.6f,\"timed_out\":%s,\"msgs_per_s\":%.1f,\"mbit_per_s\":%.3f,"
                "\"rtt_us\":{\"min\":%.3f,\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,"
                "\"p99_9\":%.3f,\"max\":%.3f}",
                escaped(r.server).c_str(), escaped(r.stack).c_str(), r.noops, r.size, r.window,
                (unsigned long long)r.sent, (unsigned long long)r.received,
                (unsigned long long)r.lost, (unsigned long long)r.late,
                (unsigned long long)r.unanswered, (unsigned long long)r.errors, r.seconds,
                r.timed_out ? "true" : "false", r.msgs_per_s(), r.mbit_per_s(), us(h.min()),
                us(h.percentile(50)), us(h.percentile(90)), us(h.percentile(99)),
                us(h.percentile(99.9)), us(h.max()));
    if (!r.error.empty()) std::printf(",\"error\":\"%s\"", escaped(r.error).c_str());
    std::printf("}\n");
}

} // namespace bertha::echo
