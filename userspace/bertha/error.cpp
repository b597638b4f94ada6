#include "bertha/error.hpp"

#include <cstring>

namespace bertha {

std::string_view to_string(Errc code) noexcept {
    switch (code) {
    case Errc::invalid_argument:
        return "invalid argument";
    case Errc::unavailable:
        return "unavailable";
    case Errc::incompatible:
        return "incompatible";
    case Errc::system:
        return "system error";
    case Errc::no_buffers:
        return "no buffers";
    case Errc::closed:
        return "closed";
    }
    return "unknown error";
}

std::string Error::what() const {
    std::string out = component.empty() ? std::string("bertha") : component;
    out += ": ";
    out += message.empty() ? std::string(to_string(code)) : message;
    if (code == Errc::system && sys_errno != 0) {
        out += ": ";
        out += std::strerror(sys_errno);
    }
    return out;
}

} // namespace bertha
