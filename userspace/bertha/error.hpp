// Errors are values: every fallible call returns Result<T>, and an Error names the component
// (chunnel, interface, program) that failed and says what a user can do about it.
#pragma once

#include <expected>
#include <string>
#include <string_view>

namespace bertha {

enum class Errc {
    invalid_argument, // the caller asked for something malformed
    unavailable,      // no implementation / feature can run on this host
    incompatible,     // the pieces do not fit together (peer, stack)
    system,           // a system call failed; Error::sys_errno says which errno
    no_buffers,       // the buffer pool is exhausted: give messages back first
    closed,           // the connection is closed
};

std::string_view to_string(Errc code) noexcept;

struct Error {
    Errc code = Errc::system;
    std::string component; // e.g. "udp", "noop", "select(shard)"
    std::string message;   // what went wrong, in words a user can act on
    int sys_errno = 0;     // set when code == Errc::system

    // "udp: bind 198.18.0.1:7000 failed: Address already in use"
    std::string what() const;
};

template <class T> using Result = std::expected<T, Error>;

inline std::unexpected<Error> fail(Errc code, std::string component, std::string message) {
    return std::unexpected(Error{code, std::move(component), std::move(message), 0});
}

// A failed system call: captures errno at the call site (pass it explicitly).
inline std::unexpected<Error> fail_sys(std::string component, std::string message, int err) {
    return std::unexpected(Error{Errc::system, std::move(component), std::move(message), err});
}

} // namespace bertha
