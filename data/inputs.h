// Input files for prepare and tokenizer training: expanding paths into files, and streaming
// their documents in bounded memory with UTF-8 and JSONL checks that name file and line.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/line_reader.h"

namespace hymba::data {

enum class InputFormat { Text, Jsonl };

struct InputFile {
  std::filesystem::path path;
  InputFormat format;
  uint64_t size;  // bytes
};

// Files of the given paths, in the given order; a directory contributes every regular file
// below it (recursively, hidden entries skipped), sorted by path so that the order, and
// therefore the output, does not depend on the file system. Files ending in .jsonl are JSONL.
// Throws UserError for a missing path, an unreadable file or an empty result.
std::vector<InputFile> expand_inputs(const std::vector<std::string>& paths);

// How plain-text files are cut into documents (JSONL: always one record per document).
//   file:      one file = one document (the default; Brown: one file per text sample)
//   paragraph: blank-line separated paragraphs
//   line:      every non-blank line
enum class TextDocMode { File, Paragraph, Line };
TextDocMode parse_text_doc_mode(const std::string& s);
const char* to_string(TextDocMode m);

// A piece of one document. Documents larger than the chunk size arrive as several chunks
// (split at line ends when possible), so no document ever has to fit in memory whole.
struct DocChunk {
  std::string text;
  uint64_t doc_index = 0;  // running index of non-empty documents over all inputs
  bool first = false;      // first chunk of its document
  bool last = false;       // last chunk of its document
};

struct StreamOptions {
  TextDocMode text_docs = TextDocMode::File;
  std::string jsonl_key = "text";
  size_t chunk_bytes = size_t(1) << 16;
};

// Reads documents from files in order. Empty and whitespace-only documents are skipped (they
// take no doc_index). Text is checked to be UTF-8 (a leading BOM is dropped); trailing
// whitespace of a document is trimmed so the end-of-document token follows the text.
class DocumentStream {
 public:
  DocumentStream(std::vector<InputFile> files, StreamOptions opts);
  ~DocumentStream();

  // Appends chunks to `out` until about budget_bytes of text were added or the input ends.
  // Returns false when nothing was added (end of input).
  bool next_batch(std::vector<DocChunk>& out, size_t budget_bytes);

  uint64_t bytes_read() const { return bytes_done_ + (reader_ ? reader_->bytes_consumed() : 0); }
  uint64_t total_bytes() const { return total_bytes_; }
  uint64_t docs() const { return next_doc_; }

 private:
  bool open_next_file();
  void emit(std::vector<DocChunk>& out, size_t& added, bool last_of_doc);
  void finish_doc(std::vector<DocChunk>& out, size_t& added);
  void text_line(std::vector<DocChunk>& out, size_t& added, const std::string& line);
  void jsonl_line(std::vector<DocChunk>& out, size_t& added, const std::string& line);

  std::vector<InputFile> files_;
  StreamOptions opts_;
  size_t file_idx_ = 0;
  std::unique_ptr<LineReader> reader_;
  uint64_t bytes_done_ = 0, total_bytes_ = 0;
  uint64_t next_doc_ = 0;
  std::string doc_;        // text of the current document not yet emitted
  bool doc_open_ = false;  // a chunk of the current document was already emitted
};

// Parses one JSONL line; throws UserError "<file>:<line>: ..." on a syntax error.
nlohmann::json parse_jsonl_line(const std::string& line, const std::string& where);

// Splits text into lines without their '\n' (a final line without '\n' included).
std::vector<std::string_view> split_lines(std::string_view text);

}  // namespace hymba::data
