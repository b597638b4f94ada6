#include "loader/kernel_objects.hpp"

#include <cstdarg>
#include <cstdio>

namespace bertha::load {
namespace {

thread_local std::string* g_capture = nullptr;

int capture_print(enum libbpf_print_level, const char* fmt, va_list args) {
    if (!g_capture) return 0;
    char buf[4096];
    va_list copy;
    va_copy(copy, args);
    int n = std::vsnprintf(buf, sizeof buf, fmt, copy);
    va_end(copy);
    if (n < 0) return n;
    if (size_t(n) < sizeof buf) {
        g_capture->append(buf, size_t(n));
    } else {
        std::string big(size_t(n) + 1, '\0');
        std::vsnprintf(big.data(), big.size(), fmt, args);
        big.pop_back();
        g_capture->append(big);
    }
    return n;
}

thread_local std::string g_text;

} // namespace

LibbpfCapture::LibbpfCapture() {
    g_text.clear();
    g_capture = &g_text;
    previous_ = libbpf_set_print(capture_print);
}

LibbpfCapture::~LibbpfCapture() {
    libbpf_set_print(previous_);
    g_capture = nullptr;
}

const std::string& LibbpfCapture::text() const noexcept { return g_text; }

std::string LibbpfCapture::verifier_log(size_t max) const {
    std::string_view t = g_text;
    auto begin = t.find("-- BEGIN PROG LOAD LOG --");
    auto end = t.find("-- END PROG LOAD LOG --");
    if (begin != std::string_view::npos && end != std::string_view::npos && end > begin) {
        begin = t.find('\n', begin);
        t = t.substr(begin + 1, end - begin - 1);
    }
    if (t.size() > max) t = t.substr(t.size() - max);
    return std::string(t);
}

} // namespace bertha::load
