// A tiny JSON writer for --json output (bertha-load, discovery's report): one object per command,
// written in one pass. Strings are escaped by RFC 8259 (quote, backslash, control characters),
// and bytes that are not valid UTF-8 become U+FFFD, so that the output always parses, whatever
// an interface or a kernel message contains.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace bertha {

// The length of the valid UTF-8 sequence at s[i], or 0 when it is not one.
inline size_t utf8_sequence(std::string_view s, size_t i) {
    auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
    unsigned c = b(i);
    size_t n = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c <= 0xdf ? 2 : 0;
    if (c >= 0xf5 || n == 0 || i + n > s.size()) return 0;
    for (size_t k = 1; k < n; ++k)
        if ((b(i + k) & 0xc0) != 0x80) return 0;
    // Overlong forms, UTF-16 surrogates and code points past U+10FFFF are not UTF-8.
    if (n == 3 && ((c == 0xe0 && b(i + 1) < 0xa0) || (c == 0xed && b(i + 1) >= 0xa0))) return 0;
    if (n == 4 && ((c == 0xf0 && b(i + 1) < 0x90) || (c == 0xf4 && b(i + 1) >= 0x90))) return 0;
    return n;
}

inline std::string json_quote(std::string_view s) {
    std::string out = "\"";
    for (size_t i = 0; i < s.size();) {
        auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x80) {
            size_t n = utf8_sequence(s, i);
            if (n)
                out.append(s.substr(i, n));
            else
                out += "\\ufffd";
            i += n ? n : 1;
            continue;
        }
        switch (c) {
        case '"':
            out += "\\\"";
            break;
        case '\\':
            out += "\\\\";
            break;
        case '\n':
            out += "\\n";
            break;
        case '\r':
            out += "\\r";
            break;
        case '\t':
            out += "\\t";
            break;
        case '\b':
            out += "\\b";
            break;
        case '\f':
            out += "\\f";
            break;
        default:
            if (c < 0x20) {
                char buf[8];
                std::snprintf(buf, sizeof buf, "\\u%04x", c);
                out += buf;
            } else {
                out += char(c);
            }
        }
        ++i;
    }
    return out + "\"";
}

// Writes values in order; commas and nesting are its business, not the caller's.
class JsonWriter {
  public:
    JsonWriter& begin_object() { return open('{'); }
    JsonWriter& end_object() { return close('}'); }
    JsonWriter& begin_array() { return open('['); }
    JsonWriter& end_array() { return close(']'); }

    JsonWriter& key(std::string_view k) {
        separate();
        out_ += json_quote(k) + ":";
        after_key_ = true;
        return *this;
    }
    JsonWriter& value(std::string_view v) { return raw(json_quote(v)); }
    JsonWriter& value(const char* v) { return raw(json_quote(v)); }
    JsonWriter& value(const std::string& v) { return raw(json_quote(v)); }
    JsonWriter& value(bool v) { return raw(v ? "true" : "false"); }
    template <class T>
    requires(std::is_integral_v<T> && !std::is_same_v<T, bool>) JsonWriter& value(T v) {
        return raw(std::to_string(v));
    }
    JsonWriter& null() { return raw("null"); }

    // key(k).value(v) in one call.
    template <class T> JsonWriter& field(std::string_view k, const T& v) { return key(k).value(v); }

    const std::string& str() const { return out_; }

  private:
    void separate() {
        if (after_key_) {
            after_key_ = false;
            return;
        }
        if (!first_.empty()) {
            if (!first_.back()) out_ += ",";
            first_.back() = false;
        }
    }
    JsonWriter& raw(std::string_view text) {
        separate();
        out_ += text;
        return *this;
    }
    JsonWriter& open(char c) {
        separate();
        out_ += c;
        first_.push_back(true);
        return *this;
    }
    JsonWriter& close(char c) {
        out_ += c;
        first_.pop_back();
        return *this;
    }

    std::string out_;
    std::vector<bool> first_; // per open container: nothing written in it yet
    bool after_key_ = false;
};

} // namespace bertha
