#include "data/prepare.h"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/parallel.h"
#include "data/progress.h"
#include "data/random.h"
#include "data/split_writer.h"
#include "data/staged_dir.h"

namespace fs = std::filesystem;

namespace hymba::data {

void check_val_fraction(double f) {
  if (!(f >= 0 && f < 1)) HYMBA_USER_ERROR("--val-fraction must be in [0, 1), got ", f);
}

void check_shard_tokens(uint64_t n) {
  if (n < 1024) HYMBA_USER_ERROR("--shard-tokens must be at least 1024, got ", n);
}

namespace {

std::string final_path(const fs::path& staging_file, const StagedDir& dir) {
  return (dir.final_path() / staging_file.filename()).string();
}

void write_meta(const fs::path& path, const nlohmann::json& j) {
  std::ofstream f(path);
  f << j.dump(2) << "\n";
  if (!f) HYMBA_USER_ERROR(path.string(), ": cannot write");
}

}  // namespace

PrepareStats prepare_text(const PrepareOptions& opts) {
  check_val_fraction(opts.val_fraction);
  check_shard_tokens(opts.shard_tokens);
  Tokenizer tok = Tokenizer::load(opts.tokenizer, opts.special);
  if (tok.eos_id() < 0)
    HYMBA_USER_ERROR(opts.tokenizer, ": the tokenizer has no EOS token; give one with --eos-id");
  if (opts.add_bos && tok.bos_id() < 0)
    HYMBA_USER_ERROR(opts.tokenizer, ": the tokenizer has no BOS token; give one with --bos-id or drop --bos");
  std::vector<InputFile> files = expand_inputs(opts.inputs);
  const int threads = resolve_threads(opts.threads);

  nlohmann::json settings = {{"val_fraction", opts.val_fraction}, {"seed", opts.seed},
                             {"text_docs", to_string(opts.text_docs)}, {"add_bos", opts.add_bos},
                             {"jsonl_key", opts.jsonl_key}, {"shard_tokens", opts.shard_tokens},
                             {"chunk_bytes", opts.chunk_bytes}};
  ShardInfo info;
  info.kind = "text";
  info.tokenizer = opts.tokenizer;
  info.tokenizer_name = fs::path(opts.tokenizer).filename().string();
  info.tokenizer_fingerprint = tok.fingerprint();
  info.bos_id = tok.bos_id();
  info.eos_id = tok.eos_id();
  info.pad_id = tok.pad_id();
  for (size_t i = 0; i < opts.inputs.size(); ++i) info.source += (i ? "\n" : "") + opts.inputs[i];
  info.settings = settings.dump();

  StagedDir out(opts.out, opts.force);
  const uint64_t vocab = uint64_t(tok.vocab_size());
  SplitWriter train(out.path(), "train", vocab, false, opts.shard_tokens, info);
  SplitWriter val(out.path(), "val", vocab, false, opts.shard_tokens, info);

  DocumentStream stream(files, StreamOptions{opts.text_docs, opts.jsonl_key, opts.chunk_bytes});
  Progress progress("prepare", stream.total_bytes(), opts.progress);
  std::vector<DocChunk> chunks;
  std::vector<std::vector<int32_t>> ids;
  const int32_t bos = tok.bos_id(), eos = tok.eos_id();
  for (;;) {
    chunks.clear();
    if (!stream.next_batch(chunks, opts.batch_bytes)) break;
    ids.assign(chunks.size(), {});
    parallel_for(chunks.size(), threads, [&](size_t i) {
      const DocChunk& c = chunks[i];
      auto& v = ids[i];
      if (c.first && opts.add_bos) v.push_back(bos);
      tok.encode_append(c.text, v);
      if (c.last) v.push_back(eos);
    });
    for (size_t i = 0; i < chunks.size(); ++i) {
      SplitWriter& w = is_val_document(opts.seed, chunks[i].doc_index, opts.val_fraction) ? val : train;
      w.append(ids[i]);
      if (chunks[i].last) w.end_document();
    }
    progress.update(stream.bytes_read(), train.tokens() + val.tokens(), stream.docs());
  }

  PrepareStats st;
  st.files = files.size();
  st.bytes = stream.bytes_read();
  st.train.docs = train.docs();
  st.train.tokens = train.tokens();
  st.val.docs = val.docs();
  st.val.tokens = val.tokens();
  for (const auto& p : train.close()) st.train.shards.push_back(final_path(p, out));
  for (const auto& p : val.close()) st.val.shards.push_back(final_path(p, out));
  progress.finish(st.bytes, st.train.tokens + st.val.tokens, st.train.docs + st.val.docs);
  st.seconds = progress.elapsed();

  if (st.train.docs + st.val.docs == 0) HYMBA_USER_ERROR("the inputs contain no text (every document is empty)");
  if (st.train.docs == 0)
    HYMBA_USER_ERROR("all ", st.val.docs, " documents went to the validation split; lower --val-fraction");
  if (opts.val_fraction > 0 && st.val.docs == 0)
    spdlog::warn("prepare: no document went to the validation split ({} documents, --val-fraction {})",
                 st.train.docs, opts.val_fraction);

  nlohmann::json meta = {
      {"format", "hymba-tokens"},
      {"kind", "text"},
      {"tokenizer", opts.tokenizer},
      {"tokenizer_fingerprint", tok.fingerprint()},
      {"vocab_size", vocab},
      {"bos_id", tok.bos_id()},
      {"eos_id", tok.eos_id()},
      {"pad_id", tok.pad_id()},
      {"inputs", opts.inputs},
      {"input_files", st.files},
      {"input_bytes", st.bytes},
      {"settings", settings},
      {"train", {{"docs", st.train.docs}, {"tokens", st.train.tokens}, {"shards", st.train.shards.size()}}},
      {"val", {{"docs", st.val.docs}, {"tokens", st.val.tokens}, {"shards", st.val.shards.size()}}},
  };
  write_meta(out.path() / "meta.json", meta);
  out.commit();
  return st;
}

}  // namespace hymba::data
