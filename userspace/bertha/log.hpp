// Logging: quiet by default. BERTHA_LOG=debug|info|warn in the environment says how much goes to
// stderr. Never called on the per-packet path.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace bertha {

enum class LogLevel { debug = 0, info = 1, warn = 2, off = 3 };

inline LogLevel log_level() noexcept {
    static const LogLevel level = [] {
        const char* v = std::getenv("BERTHA_LOG");
        if (!v) return LogLevel::warn;
        if (!std::strcmp(v, "debug")) return LogLevel::debug;
        if (!std::strcmp(v, "info")) return LogLevel::info;
        if (!std::strcmp(v, "off")) return LogLevel::off;
        return LogLevel::warn;
    }();
    return level;
}

inline void log(LogLevel level, std::string_view component, std::string_view message) {
    static constexpr const char* names[] = {"debug", "info", "warn"};
    if (level < log_level() || level == LogLevel::off) return;
    std::fprintf(stderr, "bertha %s: %.*s: %.*s\n", names[int(level)], int(component.size()),
                 component.data(), int(message.size()), message.data());
}

} // namespace bertha
