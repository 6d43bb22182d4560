#include "data/utf8.h"

#include <algorithm>
#include <cstdint>

#include "core/error.h"

namespace hymba::data {

size_t find_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    // Fast path over ASCII, eight bytes at a time.
    while (i + 8 <= n) {
      uint64_t w;
      std::copy(p + i, p + i + 8, reinterpret_cast<unsigned char*>(&w));
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;        // overlong
      else if (c == 0xED) hi = 0x9F;   // surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;        // overlong
      else if (c == 0xF4) hi = 0x8F;   // above U+10FFFF
    } else {
      return i;  // continuation byte, C0/C1 or F5..FF
    }
    if (i + len > n) return i;
    if (p[i + 1] < lo || p[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k)
      if ((p[i + k] & 0xC0) != 0x80) return i;
    i += len;
  }
  return std::string_view::npos;
}

size_t utf8_safe_prefix(std::string_view s, size_t max_len) {
  size_t end = std::min(max_len, s.size());
  if (end == s.size()) return end;
  // Step back over continuation bytes to the start of the character that straddles `end`.
  size_t k = end;
  while (k > 0 && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80 && end - k < 4) --k;
  return k;
}

std::string describe_offset(std::string_view text, size_t offset, size_t base_offset, size_t base_line) {
  offset = std::min(offset, text.size());
  size_t line = base_line + static_cast<size_t>(std::count(text.begin(), text.begin() + offset, '\n'));
  return str("line ", line, ", byte offset ", base_offset + offset);
}

}  // namespace hymba::data
