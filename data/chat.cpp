#include "data/chat.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "data/inputs.h"
#include "data/line_reader.h"
#include "data/parallel.h"
#include "data/prepare.h"
#include "data/progress.h"
#include "data/random.h"
#include "data/split_writer.h"
#include "data/staged_dir.h"

namespace fs = std::filesystem;

namespace hymba::data {

namespace {

constexpr const char* kSystemHeader = "<extra_id_0>System";
constexpr const char* kUserHeader = "<extra_id_1>User\n";
constexpr const char* kAssistantHeader = "<extra_id_1>Assistant\n";

std::string strip(const std::string& s) {
  auto sp = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  size_t b = 0, e = s.size();
  while (b < e && sp(s[b])) ++b;
  while (e > b && sp(s[e - 1])) --e;
  return s.substr(b, e - b);
}

// Text runs separated by EOS tokens, each with the byte ranges of assistant content.
struct Segment {
  std::string text;
  std::vector<std::pair<size_t, size_t>> masked;
  bool eos = false;  // followed by a (masked) EOS
};

std::vector<Segment> segments(const Conversation& c, bool generation_prompt) {
  std::vector<Segment> out(1);
  std::string system;
  size_t first = 0;
  if (!c.empty() && c[0].role == "system") {
    system = strip(c[0].content);
    first = 1;
  }
  out.back().text = kSystemHeader;
  if (!system.empty()) out.back().text += "\n" + system;
  out.back().text += "\n\n";
  for (size_t i = first; i < c.size(); ++i) {
    const std::string content = strip(c[i].content);
    Segment& s = out.back();
    if (c[i].role == "user") {
      s.text += kUserHeader + content + "\n";
    } else {
      s.text += kAssistantHeader;
      s.masked.emplace_back(s.text.size(), s.text.size() + content.size());
      s.text += content;
      s.eos = true;
      out.emplace_back();
    }
  }
  if (generation_prompt) out.back().text += kAssistantHeader;
  if (out.back().text.empty()) out.pop_back();
  return out;
}

}  // namespace

Conversation parse_conversation(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) HYMBA_USER_ERROR(where, ": expected a JSON object with \"messages\", got ", j.type_name());
  auto it = j.find("messages");
  if (it == j.end()) HYMBA_USER_ERROR(where, ": record has no \"messages\" key");
  if (!it->is_array()) HYMBA_USER_ERROR(where, ": \"messages\" should be an array, got ", it->type_name());
  if (it->empty()) HYMBA_USER_ERROR(where, ": \"messages\" is empty");
  Conversation c;
  for (size_t i = 0; i < it->size(); ++i) {
    const auto& m = (*it)[i];
    const std::string at = str(where, ": messages[", i, "]");
    if (!m.is_object()) HYMBA_USER_ERROR(at, ": expected an object, got ", m.type_name());
    auto role = m.find("role"), content = m.find("content");
    if (role == m.end() || !role->is_string()) HYMBA_USER_ERROR(at, ": needs a string \"role\"");
    if (content == m.end() || !content->is_string()) HYMBA_USER_ERROR(at, ": needs a string \"content\"");
    const std::string& r = role->get_ref<const std::string&>();
    if (r != "system" && r != "user" && r != "assistant")
      HYMBA_USER_ERROR(at, ": unknown role '", r, "' (expected system, user or assistant)");
    if (r == "system" && i != 0) HYMBA_USER_ERROR(at, ": a system message may only come first");
    c.push_back({r, content->get<std::string>()});
  }
  return c;
}

std::string render_text(const Conversation& c) {
  std::string s;
  for (const auto& seg : segments(c, false)) s += seg.text;
  return s;
}

ChatTokens render_conversation(const Tokenizer& tok, const Conversation& c) {
  HYMBA_CHECK(tok.eos_id() >= 0, "chat rendering needs an EOS token");
  ChatTokens out;
  for (const Segment& seg : segments(c, false)) {
    for (const TokenSpan& t : tok.encode_spans(seg.text)) {
      // A token is trained on when its bytes overlap assistant content (a zero-width token,
      // such as a lone dummy-prefix piece, counts at its position).
      const size_t b = t.begin, e = std::max<size_t>(t.end, t.begin + 1);
      bool m = false;
      for (const auto& [mb, me] : seg.masked) m |= b < me && e > mb;
      out.tokens.push_back(t.id);
      out.mask.push_back(m ? 1 : 0);
    }
    if (seg.eos) {
      out.tokens.push_back(tok.eos_id());
      out.mask.push_back(1);
    }
  }
  return out;
}

std::vector<int32_t> render_prompt(const Tokenizer& tok, const Conversation& c) {
  std::vector<int32_t> out;
  for (const Segment& seg : segments(c, true)) {
    tok.encode_append(seg.text, out);
    if (seg.eos) out.push_back(tok.eos_id());
  }
  return out;
}

PackedSample ChatPacker::finish_current() {
  PackedSample s = std::move(cur_);
  cur_ = PackedSample();
  const size_t pad = size_t(len_) - s.data.tokens.size();
  s.data.tokens.insert(s.data.tokens.end(), pad, pad_);
  s.data.mask.insert(s.data.mask.end(), pad, 0);
  s.doc_lengths.back() += int64_t(pad);
  s.padding = int64_t(pad);
  return s;
}

std::vector<PackedSample> ChatPacker::add(ChatTokens c) {
  std::vector<PackedSample> done;
  if (int64_t(c.tokens.size()) > len_) {
    c.tokens.resize(size_t(len_));
    c.mask.resize(size_t(len_));
    if (std::find(c.mask.begin(), c.mask.end(), 1) == c.mask.end()) {
      ++dropped_;
      return done;
    }
    ++truncated_;
  }
  if (c.tokens.empty()) return done;
  if (int64_t(cur_.data.tokens.size() + c.tokens.size()) > len_) done.push_back(finish_current());
  cur_.data.tokens.insert(cur_.data.tokens.end(), c.tokens.begin(), c.tokens.end());
  cur_.data.mask.insert(cur_.data.mask.end(), c.mask.begin(), c.mask.end());
  cur_.doc_lengths.push_back(int64_t(c.tokens.size()));
  if (int64_t(cur_.data.tokens.size()) == len_) done.push_back(finish_current());
  return done;
}

std::vector<PackedSample> ChatPacker::flush() {
  std::vector<PackedSample> done;
  if (!cur_.data.tokens.empty()) done.push_back(finish_current());
  return done;
}

ChatPrepareStats prepare_chat(const ChatPrepareOptions& opts) {
  if (opts.seq_len < 8) HYMBA_USER_ERROR("chat: --seq-len must be at least 8, got ", opts.seq_len);
  check_val_fraction(opts.val_fraction);
  Tokenizer tok = Tokenizer::load(opts.tokenizer, opts.special);
  if (tok.eos_id() < 0) HYMBA_USER_ERROR(opts.tokenizer, ": the tokenizer has no EOS token; give one with --eos-id");
  std::vector<InputFile> files = expand_inputs(opts.inputs);
  for (const auto& f : files)
    if (f.format != InputFormat::Jsonl)
      HYMBA_USER_ERROR(f.path.string(), ": chat data must be JSONL files (*.jsonl) of {\"messages\": [...]} records");
  const int threads = resolve_threads(opts.threads);
  const int64_t sample_len = opts.seq_len + 1;
  const int32_t pad = tok.pad_id() >= 0 ? tok.pad_id() : tok.eos_id();

  nlohmann::json settings = {{"seq_len", opts.seq_len}, {"val_fraction", opts.val_fraction},
                             {"seed", opts.seed}, {"template", "hymba"}, {"pad_id", pad}};
  ShardInfo info;
  info.kind = "chat";
  info.tokenizer = opts.tokenizer;
  info.tokenizer_name = fs::path(opts.tokenizer).filename().string();
  info.tokenizer_fingerprint = tok.fingerprint();
  info.bos_id = tok.bos_id();
  info.eos_id = tok.eos_id();
  info.pad_id = pad;
  info.sample_len = sample_len;
  for (size_t i = 0; i < opts.inputs.size(); ++i) info.source += (i ? "\n" : "") + opts.inputs[i];
  info.settings = settings.dump();

  StagedDir out(opts.out, opts.force);
  const uint64_t vocab = uint64_t(tok.vocab_size());
  // Shards hold whole samples: a shard only ends at a sample boundary.
  const uint64_t shard_tokens = std::max<uint64_t>(uint64_t(1) << 28, uint64_t(sample_len));
  SplitWriter writers[2] = {SplitWriter(out.path(), "train", vocab, true, shard_tokens, info),
                            SplitWriter(out.path(), "val", vocab, true, shard_tokens, info)};
  ChatPacker packers[2] = {ChatPacker(sample_len, pad), ChatPacker(sample_len, pad)};
  ChatPrepareStats st;
  auto write = [&](int split, std::vector<PackedSample> samples) {
    for (auto& s : samples) {
      size_t at = 0;
      for (size_t d = 0; d < s.doc_lengths.size(); ++d) {
        const size_t n = size_t(s.doc_lengths[d]);
        writers[split].append(std::span(s.data.tokens).subspan(at, n), std::span(s.data.mask).subspan(at, n));
        // Rotation is only allowed after a sample's last conversation.
        writers[split].end_document(/*may_rotate=*/d + 1 == s.doc_lengths.size());
        at += n;
      }
      st.samples[split] += 1;
      for (size_t i = 0; i < s.data.tokens.size(); ++i) st.masked_tokens += s.data.mask[i];
      st.pad_tokens += uint64_t(s.padding);
    }
  };

  uint64_t total_bytes = 0, done_bytes = 0, conv_index = 0;
  for (const auto& f : files) total_bytes += f.size;
  Progress progress("prepare chat", total_bytes, opts.progress);
  std::vector<std::pair<std::string, std::string>> batch;  // (line, where)
  std::vector<ChatTokens> rendered;
  std::vector<uint8_t> has_assistant;
  auto run_batch = [&] {
    rendered.assign(batch.size(), {});
    has_assistant.assign(batch.size(), 0);
    parallel_for(batch.size(), threads, [&](size_t i) {
      Conversation c = parse_conversation(parse_jsonl_line(batch[i].first, batch[i].second), batch[i].second);
      has_assistant[i] = std::any_of(c.begin(), c.end(), [](const ChatMessage& m) { return m.role == "assistant"; });
      if (has_assistant[i]) rendered[i] = render_conversation(tok, c);
    });
    for (size_t i = 0; i < batch.size(); ++i) {
      if (!has_assistant[i]) {
        ++st.no_assistant;
        continue;
      }
      const int split = is_val_document(opts.seed, conv_index++, opts.val_fraction) ? 1 : 0;
      st.conversations[split] += 1;
      st.tokens += rendered[i].tokens.size();
      write(split, packers[split].add(std::move(rendered[i])));
    }
    batch.clear();
  };
  for (const auto& f : files) {
    LineReader reader(f.path.string());
    std::string line;
    while (reader.next(line)) {
      if (std::all_of(line.begin(), line.end(), [](char ch) { return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r'; }))
        continue;
      batch.emplace_back(std::move(line), reader.where());
      line.clear();
      if (batch.size() >= 4096) {
        run_batch();
        progress.update(done_bytes + reader.bytes_consumed(), st.tokens, st.conversations[0] + st.conversations[1]);
      }
    }
    run_batch();
    done_bytes += reader.bytes_consumed();
  }
  for (int split = 0; split < 2; ++split) {
    write(split, packers[split].flush());
    st.truncated += packers[split].truncated();
    st.dropped += packers[split].dropped();
    writers[split].close();
  }
  progress.finish(done_bytes, st.tokens, st.conversations[0] + st.conversations[1]);

  if (st.samples[0] == 0) HYMBA_USER_ERROR("chat: no training conversation with an assistant message in the inputs");
  if (st.truncated || st.dropped)
    spdlog::warn("prepare chat: {} conversations longer than {} tokens were truncated, {} dropped (no assistant "
                 "token left after truncation)", st.truncated, sample_len, st.dropped);
  if (st.no_assistant) spdlog::warn("prepare chat: skipped {} conversations without an assistant message", st.no_assistant);

  std::ofstream meta(out.path() / "meta.json");
  meta << nlohmann::json{{"format", "hymba-tokens"}, {"kind", "chat"}, {"tokenizer", opts.tokenizer},
                         {"tokenizer_fingerprint", tok.fingerprint()}, {"vocab_size", vocab},
                         {"sample_len", sample_len}, {"settings", settings},
                         {"train", {{"conversations", st.conversations[0]}, {"samples", st.samples[0]}}},
                         {"val", {{"conversations", st.conversations[1]}, {"samples", st.samples[1]}}},
                         {"truncated", st.truncated}, {"dropped", st.dropped}, {"no_assistant", st.no_assistant}}
              .dump(2)
       << "\n";
  meta.close();
  if (!meta) HYMBA_USER_ERROR((out.path() / "meta.json").string(), ": cannot write");
  out.commit();
  return st;
}

}  // namespace hymba::data
