// Reads a file line by line in bounded memory, checking UTF-8 as it goes, and knows where it
// is (line number, byte offset) so that errors can point at the exact place.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace hymba::data {

class LineReader {
 public:
  // max_line_bytes: longer lines are returned in pieces of about this size (cut at a UTF-8
  // character boundary); 0 means never cut. Throws UserError when the file cannot be opened.
  explicit LineReader(std::string path, size_t max_line_bytes = 0);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // The next line including its '\n' (absent on a final unterminated line, or when the line
  // was cut: then *complete is false and the rest follows). Returns false at end of file.
  // Throws UserError "<file>: invalid UTF-8 at line L, byte offset B" on bad bytes.
  bool next(std::string& line, bool* complete = nullptr);

  const std::string& path() const { return path_; }
  uint64_t line_number() const { return line_no_; }  // of the line last returned (1-based)
  uint64_t line_offset() const { return line_off_; } // byte offset of its start in the file
  uint64_t bytes_consumed() const { return consumed_; }

  // "<file>:<line>" for messages about the line last returned.
  std::string where() const;

 private:
  bool fill();

  std::string path_;
  size_t max_line_;
  std::FILE* f_ = nullptr;
  std::string buf_;
  size_t pos_ = 0;
  bool eof_ = false;
  bool at_start_ = true;      // nothing consumed yet (BOM check)
  bool continuing_ = false;   // the previous piece was a cut line
  uint64_t consumed_ = 0, line_no_ = 0, line_off_ = 0;
};

}  // namespace hymba::data
