// UTF-8 validation, so that bad input is reported with a file and byte offset instead of
// silently turning into <unk> or byte tokens.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace hymba::data {

// Offset of the first byte that does not start a well-formed UTF-8 sequence (RFC 3629:
// no overlong forms, no surrogates, nothing above U+10FFFF), or std::string_view::npos.
size_t find_invalid_utf8(std::string_view s);

// Length of the longest prefix of s that does not end inside a multi-byte sequence; used to
// cut text at a character boundary. Never returns 0 for a non-empty s unless s begins with
// a continuation byte.
size_t utf8_safe_prefix(std::string_view s, size_t max_len);

// "line L, byte B" description of where an offset lies in a text (line counted from 1).
std::string describe_offset(std::string_view text, size_t offset, size_t base_offset = 0,
                            size_t base_line = 1);

}  // namespace hymba::data
