// UTF-8 validation, the line reader, input expansion and document streaming.
#include <gtest/gtest.h>
#include <unistd.h>

#include "data/inputs.h"
#include "data/line_reader.h"
#include "data/utf8.h"
#include "tests/data/data_test_util.h"

namespace hymba::data {
namespace {

namespace fs = std::filesystem;

using testing::expect_user_error;
using testing::TempDir;
using testing::write_file;

TEST(Utf8, AcceptsWellFormedText) {
  EXPECT_EQ(find_invalid_utf8("plain ascii text, long enough for the fast path"), std::string_view::npos);
  EXPECT_EQ(find_invalid_utf8("caf\xC3\xA9 \xE6\xBC\xA2\xE5\xAD\x97 \xF0\x9F\x99\x82"), std::string_view::npos);
  EXPECT_EQ(find_invalid_utf8("\xF4\x8F\xBF\xBF"), std::string_view::npos);  // U+10FFFF
}

TEST(Utf8, FindsTheFirstBadByte) {
  EXPECT_EQ(find_invalid_utf8("abc\xFF"), 3u);
  EXPECT_EQ(find_invalid_utf8("0123456789\x80"), 10u);          // stray continuation after fast path
  EXPECT_EQ(find_invalid_utf8("ab\xC0\x80"), 2u);               // overlong NUL
  EXPECT_EQ(find_invalid_utf8("\xE0\x80\x80"), 0u);             // overlong 3-byte
  EXPECT_EQ(find_invalid_utf8("x\xED\xA0\x80"), 1u);            // surrogate
  EXPECT_EQ(find_invalid_utf8("\xF4\x90\x80\x80"), 0u);         // above U+10FFFF
  EXPECT_EQ(find_invalid_utf8("ok \xE6\xBC"), 3u);              // truncated at the end
  EXPECT_EQ(find_invalid_utf8("\xC3\xA9\xC3"), 2u);
}

TEST(Utf8, SafePrefixNeverSplitsACharacter) {
  std::string s = "a\xE6\xBC\xA2" "b";  // a, 3-byte char, b
  EXPECT_EQ(utf8_safe_prefix(s, 1), 1u);
  EXPECT_EQ(utf8_safe_prefix(s, 2), 1u);
  EXPECT_EQ(utf8_safe_prefix(s, 3), 1u);
  EXPECT_EQ(utf8_safe_prefix(s, 4), 4u);
  EXPECT_EQ(utf8_safe_prefix(s, 100), s.size());
}

TEST(LineReader, ReturnsLinesWithPositionsAndDropsBom) {
  TempDir t;
  write_file(t / "a.txt", "\xEF\xBB\xBFone\ntwo\n\nlast");
  LineReader r((t / "a.txt").string());
  std::string line;
  std::vector<std::string> lines;
  std::vector<uint64_t> offs;
  while (r.next(line)) {
    lines.push_back(line);
    offs.push_back(r.line_offset());
  }
  EXPECT_EQ(lines, (std::vector<std::string>{"one\n", "two\n", "\n", "last"}));
  EXPECT_EQ(offs, (std::vector<uint64_t>{3, 7, 11, 12}));
  EXPECT_EQ(r.line_number(), 4u);
}

TEST(LineReader, CutsLongLinesAtCharacterBoundaries) {
  TempDir t;
  std::string big;
  for (int i = 0; i < 1000; ++i) big += "\xC3\xA9";  // 2000 bytes of 2-byte characters
  write_file(t / "b.txt", big + "\nnext\n");
  LineReader r((t / "b.txt").string(), 333);
  std::string line, joined;
  bool complete = true;
  int pieces = 0;
  while (r.next(line, &complete)) {
    ++pieces;
    EXPECT_EQ(find_invalid_utf8(line), std::string::npos);
    EXPECT_LE(line.size(), 333u);
    joined += line;
    if (complete) break;
  }
  EXPECT_EQ(joined, big + "\n");
  EXPECT_GE(pieces, 7);
  EXPECT_EQ(r.line_number(), 1u);  // pieces of one line share its number
  ASSERT_TRUE(r.next(line));
  EXPECT_EQ(line, "next\n");
  EXPECT_EQ(r.line_number(), 2u);
}

TEST(LineReader, ReportsInvalidUtf8WithLineAndOffset) {
  TempDir t;
  write_file(t / "bad.txt", "fine line\nsecond ok\nbro\xC3(ken\n");
  expect_user_error(
      [&] {
        LineReader r((t / "bad.txt").string());
        std::string l;
        while (r.next(l)) {
        }
      },
      {"bad.txt", "invalid UTF-8", "line 3", "byte offset 23", "0xc3"});
}

TEST(LineReader, MissingFileIsAUserError) {
  TempDir t;
  expect_user_error([&] { LineReader r((t / "nope.txt").string()); }, {"nope.txt", "cannot open"});
}

TEST(ExpandInputs, RecursesSortedSkipsHiddenAndDetectsJsonl) {
  TempDir t;
  write_file(t / "d/b/z.txt", "z");
  write_file(t / "d/a.txt", "a");
  write_file(t / "d/c.jsonl", "{}");
  write_file(t / "d/.hidden.txt", "h");
  write_file(t / "d/.git/x.txt", "x");
  write_file(t / "single.txt", "s");
  auto files = expand_inputs({(t / "single.txt").string(), (t / "d").string()});
  std::vector<std::string> names;
  for (const auto& f : files) names.push_back(fs::relative(f.path, t.path()).string());
  EXPECT_EQ(names, (std::vector<std::string>{"single.txt", "d/a.txt", "d/b/z.txt", "d/c.jsonl"}));
  EXPECT_EQ(files[3].format, InputFormat::Jsonl);
  EXPECT_EQ(files[1].format, InputFormat::Text);
  EXPECT_EQ(files[0].size, 1u);
}

TEST(ExpandInputs, BadPathsAreUserErrors) {
  TempDir t;
  expect_user_error([&] { expand_inputs({(t / "missing").string()}); }, {"missing", "no such file"});
  fs::create_directories(t / "empty");
  expect_user_error([&] { expand_inputs({(t / "empty").string()}); }, {"empty", "no files"});
  expect_user_error([&] { expand_inputs({}); }, {"no input"});
  if (::geteuid() != 0) {  // root reads anything
    write_file(t / "locked.txt", "x");
    fs::permissions(t / "locked.txt", fs::perms::none);
    expect_user_error([&] { expand_inputs({(t / "locked.txt").string()}); }, {"locked.txt", "cannot open"});
  }
}

std::vector<DocChunk> stream_all(const std::vector<std::string>& paths, StreamOptions o, size_t budget = 1 << 20) {
  DocumentStream s(expand_inputs(paths), o);
  std::vector<DocChunk> out;
  while (s.next_batch(out, budget)) {
  }
  return out;
}

// Joins chunks back into documents, checking the first/last flags and indices.
std::vector<std::string> documents(const std::vector<DocChunk>& chunks) {
  std::vector<std::string> docs;
  bool open = false;
  for (const auto& c : chunks) {
    EXPECT_EQ(c.first, !open);
    if (c.first) {
      EXPECT_EQ(c.doc_index, docs.size());
      docs.emplace_back();
    }
    docs.back() += c.text;
    open = !c.last;
  }
  EXPECT_FALSE(open);
  return docs;
}

TEST(DocumentStream, FileModeIsOneTrimmedDocumentPerFileAndSkipsEmptyOnes) {
  TempDir t;
  write_file(t / "1.txt", "\n\n  First doc.\nSecond line.\n\n\n");
  write_file(t / "2.txt", " \n\t\n");
  write_file(t / "3.txt", "Third.");
  auto docs = documents(stream_all({(t / "1.txt").string(), (t / "2.txt").string(), (t / "3.txt").string()}, {}));
  EXPECT_EQ(docs, (std::vector<std::string>{"First doc.\nSecond line.", "Third."}));
}

TEST(DocumentStream, ParagraphAndLineModes) {
  TempDir t;
  write_file(t / "p.txt", "a b\nc\n\n\nd\n  \ne f\n");
  StreamOptions o;
  o.text_docs = TextDocMode::Paragraph;
  EXPECT_EQ(documents(stream_all({(t / "p.txt").string()}, o)), (std::vector<std::string>{"a b\nc", "d", "e f"}));
  o.text_docs = TextDocMode::Line;
  EXPECT_EQ(documents(stream_all({(t / "p.txt").string()}, o)),
            (std::vector<std::string>{"a b", "c", "d", "e f"}));
}

TEST(DocumentStream, LargeDocumentsArriveInChunksThatRejoinExactly) {
  TempDir t;
  std::string text = testing::make_text(7, 400);
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  write_file(t / "big.txt", text + "\n");
  write_file(t / "big.jsonl", nlohmann::json{{"text", text}}.dump() + "\n");
  StreamOptions o;
  o.chunk_bytes = 1000;
  for (const char* name : {"big.txt", "big.jsonl"}) {
    auto chunks = stream_all({(t / name).string()}, o, 3000);
    EXPECT_GT(chunks.size(), text.size() / 1000 - 1) << name;
    for (const auto& c : chunks) EXPECT_LE(c.text.size(), 2000u) << name;
    auto docs = documents(chunks);
    ASSERT_EQ(docs.size(), 1u) << name;
    // Chunks are cut at whitespace that is kept in the following chunk, so they rejoin exactly.
    EXPECT_EQ(docs[0], text) << name;
  }
}

TEST(DocumentStream, BatchBudgetDoesNotChangeTheChunks) {
  TempDir t;
  for (int i = 0; i < 12; ++i) write_file(t / ("d/" + std::to_string(100 + i) + ".txt"), testing::make_text(i, 30));
  StreamOptions o;
  o.chunk_bytes = 700;
  auto a = stream_all({(t / "d").string()}, o, 1);
  auto b = stream_all({(t / "d").string()}, o, 1 << 20);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].text, b[i].text);
    EXPECT_EQ(a[i].doc_index, b[i].doc_index);
  }
  EXPECT_EQ(documents(a).size(), 12u);
}

TEST(DocumentStream, JsonlRecordsAndErrors) {
  TempDir t;
  write_file(t / "ok.jsonl", "{\"text\": \"one\"}\n\n{\"text\": \"  two \", \"id\": 5}\n{\"text\": \"\"}\n");
  EXPECT_EQ(documents(stream_all({(t / "ok.jsonl").string()}, {})), (std::vector<std::string>{"one", "two"}));

  write_file(t / "syntax.jsonl", "{\"text\": \"one\"}\n{\"text\": \"two\"\n");
  expect_user_error([&] { stream_all({(t / "syntax.jsonl").string()}, {}); },
                    {"syntax.jsonl:2", "invalid JSON"});
  write_file(t / "nokey.jsonl", "{\"text\": \"one\"}\n{\"body\": \"two\"}\n");
  expect_user_error([&] { stream_all({(t / "nokey.jsonl").string()}, {}); }, {"nokey.jsonl:2", "\"text\""});
  write_file(t / "type.jsonl", "{\"text\": 3}\n");
  expect_user_error([&] { stream_all({(t / "type.jsonl").string()}, {}); }, {"type.jsonl:1", "string", "number"});
  write_file(t / "array.jsonl", "[1, 2]\n");
  expect_user_error([&] { stream_all({(t / "array.jsonl").string()}, {}); }, {"array.jsonl:1", "object"});
  write_file(t / "utf.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"b\xFFq\"}\n");
  expect_user_error([&] { stream_all({(t / "utf.jsonl").string()}, {}); },
                    {"utf.jsonl", "invalid UTF-8", "line 2", "byte offset 26"});
  write_file(t / "body.jsonl", "{\"body\": \"x y\"}\n");
  StreamOptions o;
  o.jsonl_key = "body";
  EXPECT_EQ(documents(stream_all({(t / "body.jsonl").string()}, o)), (std::vector<std::string>{"x y"}));
}

}  // namespace
}  // namespace hymba::data
