#include "data/inputs.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/error.h"
#include "data/utf8.h"

namespace fs = std::filesystem;

namespace hymba::data {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

bool is_blank(std::string_view s) { return std::all_of(s.begin(), s.end(), is_space); }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

bool is_hidden(const fs::path& p) {
  std::string n = p.filename().string();
  return !n.empty() && n[0] == '.';
}

InputFile make_input(const fs::path& p) {
  std::FILE* f = std::fopen(p.c_str(), "rb");
  if (!f) HYMBA_USER_ERROR(p.string(), ": cannot open (", std::strerror(errno), ")");
  std::fclose(f);
  std::error_code ec;
  uint64_t size = fs::file_size(p, ec);
  if (ec) HYMBA_USER_ERROR(p.string(), ": cannot read size (", ec.message(), ")");
  InputFormat fmt = p.extension() == ".jsonl" ? InputFormat::Jsonl : InputFormat::Text;
  return {p, fmt, size};
}

}  // namespace

std::vector<InputFile> expand_inputs(const std::vector<std::string>& paths) {
  if (paths.empty()) HYMBA_USER_ERROR("no input files given");
  std::vector<InputFile> out;
  for (const auto& s : paths) {
    fs::path p(s);
    std::error_code ec;
    auto st = fs::status(p, ec);
    if (ec || !fs::exists(st)) HYMBA_USER_ERROR(s, ": no such file or directory");
    if (fs::is_directory(st)) {
      std::vector<fs::path> found;
      fs::recursive_directory_iterator it(p, ec), end;
      if (ec) HYMBA_USER_ERROR(s, ": cannot list directory (", ec.message(), ")");
      for (; it != end; it.increment(ec)) {
        if (ec) HYMBA_USER_ERROR(s, ": cannot list directory (", ec.message(), ")");
        if (is_hidden(it->path())) {
          if (it->is_directory()) it.disable_recursion_pending();
          continue;
        }
        if (it->is_regular_file()) found.push_back(it->path());
      }
      if (ec) HYMBA_USER_ERROR(s, ": cannot list directory (", ec.message(), ")");
      if (found.empty()) HYMBA_USER_ERROR(s, ": directory contains no files");
      std::sort(found.begin(), found.end());
      for (const auto& f : found) out.push_back(make_input(f));
    } else {
      out.push_back(make_input(p));
    }
  }
  return out;
}

TextDocMode parse_text_doc_mode(const std::string& s) {
  if (s == "file") return TextDocMode::File;
  if (s == "paragraph") return TextDocMode::Paragraph;
  if (s == "line") return TextDocMode::Line;
  HYMBA_USER_ERROR("unknown document mode '", s, "' (expected file, paragraph or line)");
}

const char* to_string(TextDocMode m) {
  switch (m) {
    case TextDocMode::File: return "file";
    case TextDocMode::Paragraph: return "paragraph";
    case TextDocMode::Line: return "line";
  }
  return "?";
}

std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string_view::npos) nl = text.size();
    lines.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  return lines;
}

nlohmann::json parse_jsonl_line(const std::string& line, const std::string& where) {
  try {
    return nlohmann::json::parse(line);
  } catch (const nlohmann::json::parse_error& e) {
    std::string msg = e.what();
    // "[json.exception.parse_error.101] parse error at line 1, column 9: ..." -> "column 9: ..."
    if (auto p = msg.find("] "); p != std::string::npos) msg = msg.substr(p + 2);
    if (auto p = msg.find("at line 1, column"); p != std::string::npos) msg.replace(p, 17, "at column");
    HYMBA_USER_ERROR(where, ": invalid JSON: ", msg);
  }
}

DocumentStream::DocumentStream(std::vector<InputFile> files, StreamOptions opts)
    : files_(std::move(files)), opts_(std::move(opts)) {
  HYMBA_CHECK(opts_.chunk_bytes >= 16, "chunk_bytes too small");
  for (const auto& f : files_) total_bytes_ += f.size;
}

DocumentStream::~DocumentStream() = default;

bool DocumentStream::open_next_file() {
  if (file_idx_ >= files_.size()) return false;
  const InputFile& f = files_[file_idx_++];
  // JSONL lines are never cut: a record must be parsed whole.
  size_t max_line = f.format == InputFormat::Jsonl ? 0 : opts_.chunk_bytes;
  reader_ = std::make_unique<LineReader>(f.path.string(), max_line);
  return true;
}

void DocumentStream::emit(std::vector<DocChunk>& out, size_t& added, bool last_of_doc) {
  DocChunk c;
  if (last_of_doc) {
    c.text = std::string(trim(doc_));
    if (!doc_open_) {
      if (c.text.empty()) {  // an empty document: skipped, takes no index
        doc_.clear();
        return;
      }
    }
    doc_.clear();
  } else {
    // Hold back trailing whitespace: if the document ends here it must be trimmed.
    size_t k = doc_.size();
    while (k > 0 && is_space(doc_[k - 1])) --k;
    if (k == 0) return;
    size_t b = 0;
    if (!doc_open_)
      while (b < k && is_space(doc_[b])) ++b;
    c.text = doc_.substr(b, k - b);
    doc_.erase(0, k);
  }
  c.doc_index = next_doc_;
  c.first = !doc_open_;
  c.last = last_of_doc;
  added += c.text.size();
  out.push_back(std::move(c));
  doc_open_ = !last_of_doc;
  if (last_of_doc) ++next_doc_;
}

void DocumentStream::finish_doc(std::vector<DocChunk>& out, size_t& added) { emit(out, added, true); }

void DocumentStream::text_line(std::vector<DocChunk>& out, size_t& added, const std::string& line) {
  const bool blank = is_blank(line);
  if (opts_.text_docs == TextDocMode::Line) {
    if (blank && !doc_open_ && doc_.empty()) return;
    doc_ += line;
    // A line cut by the reader continues in the next piece; it ends with its '\n'.
    if (!line.empty() && line.back() == '\n') finish_doc(out, added);
    else if (doc_.size() >= opts_.chunk_bytes) emit(out, added, false);
    return;
  }
  if (opts_.text_docs == TextDocMode::Paragraph && blank) {
    finish_doc(out, added);
    return;
  }
  if (blank && !doc_open_ && doc_.empty()) return;  // leading blank lines
  doc_ += line;
  if (doc_.size() >= opts_.chunk_bytes) emit(out, added, false);
}

void DocumentStream::jsonl_line(std::vector<DocChunk>& out, size_t& added, const std::string& line) {
  if (is_blank(line)) return;
  nlohmann::json j = parse_jsonl_line(line, reader_->where());
  if (!j.is_object()) HYMBA_USER_ERROR(reader_->where(), ": expected a JSON object, got ", j.type_name());
  auto it = j.find(opts_.jsonl_key);
  if (it == j.end()) HYMBA_USER_ERROR(reader_->where(), ": record has no \"", opts_.jsonl_key, "\" key");
  if (!it->is_string())
    HYMBA_USER_ERROR(reader_->where(), ": \"", opts_.jsonl_key, "\" should be a string, got ", it->type_name());
  const std::string& full = it->get_ref<const std::string&>();
  std::string_view text = trim(full);
  // A very long record is still cut into chunks (at line ends when possible) so that it
  // tokenizes in parallel; emit() keeps whitespace at a cut in doc_ for the next piece.
  while (text.size() > opts_.chunk_bytes) {
    size_t cut = text.rfind('\n', opts_.chunk_bytes);
    cut = (cut == std::string_view::npos || cut == 0) ? utf8_safe_prefix(text, opts_.chunk_bytes) : cut + 1;
    if (cut == 0) cut = opts_.chunk_bytes;
    doc_.append(text.substr(0, cut));
    text.remove_prefix(cut);
    emit(out, added, false);
  }
  doc_.append(text);
  finish_doc(out, added);
}

bool DocumentStream::next_batch(std::vector<DocChunk>& out, size_t budget_bytes) {
  const size_t start_size = out.size();
  size_t added = 0;
  std::string line;
  while (added < budget_bytes) {
    if (!reader_ && !open_next_file()) break;
    if (!reader_->next(line)) {
      if (files_[file_idx_ - 1].format == InputFormat::Text) finish_doc(out, added);
      bytes_done_ += reader_->bytes_consumed();
      reader_.reset();
      continue;
    }
    if (files_[file_idx_ - 1].format == InputFormat::Jsonl) jsonl_line(out, added, line);
    else text_line(out, added, line);
  }
  return out.size() > start_size;
}

}  // namespace hymba::data
