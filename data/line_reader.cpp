#include "data/line_reader.h"

#include <cerrno>
#include <cstring>

#include "core/error.h"
#include "data/utf8.h"

namespace hymba::data {

namespace {
constexpr size_t kReadBlock = size_t(1) << 20;
}

LineReader::LineReader(std::string path, size_t max_line_bytes) : path_(std::move(path)), max_line_(max_line_bytes) {
  f_ = std::fopen(path_.c_str(), "rb");
  if (!f_) HYMBA_USER_ERROR(path_, ": cannot open (", std::strerror(errno), ")");
}

LineReader::~LineReader() {
  if (f_) std::fclose(f_);
}

std::string LineReader::where() const { return str(path_, ":", line_no_); }

bool LineReader::fill() {
  if (eof_) return false;
  if (pos_ > 0) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  size_t old = buf_.size();
  buf_.resize(old + kReadBlock);
  size_t n = std::fread(buf_.data() + old, 1, kReadBlock, f_);
  buf_.resize(old + n);
  if (n < kReadBlock) {
    if (std::ferror(f_)) HYMBA_USER_ERROR(path_, ": read error (", std::strerror(errno), ")");
    eof_ = true;
  }
  return n > 0;
}

bool LineReader::next(std::string& line, bool* complete) {
  size_t search_from = pos_;
  size_t nl;
  bool cut = false;
  for (;;) {
    nl = buf_.find('\n', search_from);
    if (nl != std::string::npos) break;
    if (max_line_ > 0 && buf_.size() - pos_ >= max_line_) {
      cut = true;
      break;
    }
    search_from = buf_.size();
    size_t before = pos_;
    if (!fill()) break;
    search_from -= before;  // fill() moved the unread bytes to the front
  }
  if (nl != std::string::npos && max_line_ > 0 && nl + 1 - pos_ > max_line_) {
    nl = std::string::npos;
    cut = true;
  }
  size_t end;
  if (nl != std::string::npos) {
    end = nl + 1;
  } else if (cut) {
    end = pos_ + utf8_safe_prefix(std::string_view(buf_).substr(pos_), max_line_);
    if (end == pos_) end = pos_ + 1;  // starts with a stray continuation byte: let UTF-8 check report it
  } else {
    end = buf_.size();
    if (end == pos_) return false;
  }
  if (at_start_) {
    at_start_ = false;
    if (buf_.compare(pos_, 3, "\xEF\xBB\xBF") == 0 && end - pos_ >= 3) {
      pos_ += 3;
      consumed_ += 3;
    }
  }
  line.assign(buf_, pos_, end - pos_);
  if (!continuing_) {
    ++line_no_;
    line_off_ = consumed_;
  }
  if (size_t bad = find_invalid_utf8(line); bad != std::string::npos)
    HYMBA_USER_ERROR(path_, ": invalid UTF-8 at line ", line_no_, ", byte offset ", consumed_ + bad,
                     " (byte 0x", "0123456789abcdef"[(static_cast<unsigned char>(line[bad]) >> 4)],
                     "0123456789abcdef"[static_cast<unsigned char>(line[bad]) & 15], ")");
  consumed_ += end - pos_;
  pos_ = end;
  continuing_ = cut;
  if (complete) *complete = !cut;
  return true;
}

}  // namespace hymba::data
