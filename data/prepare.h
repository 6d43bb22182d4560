// `hymba prepare` for pretraining text: plain-text files, directories of them, and JSONL
// ({"text": ...}) into HDF5 token shards DIR/train_NNN.h5 and DIR/val_NNN.h5, plus
// DIR/meta.json (settings and counts, for humans).
//
// Documents stream through in batches: read about batch_bytes of text, tokenize the batch on
// all threads, append to the shards in input order, repeat. Memory stays at a few times
// batch_bytes whatever the input size, and the output does not depend on the thread count.
// Each document is followed by EOS (and optionally preceded by BOS). A document goes to val
// when unit_hash(seed, document index) < val_fraction, so the split is fixed by the seed and
// the document order. Output appears under DIR only when complete (data/staged_dir.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/inputs.h"
#include "data/tokenizer.h"

namespace hymba::data {

struct PrepareOptions {
  std::string tokenizer;  // sentencepiece .model
  SpecialIds special;
  std::vector<std::string> inputs;
  std::string out;
  double val_fraction = 0.01;
  uint64_t seed = 0;
  uint64_t shard_tokens = uint64_t(1) << 28;  // 256 Mi tokens: 512 MiB as uint16
  int threads = 0;                           // 0 = all hardware threads
  bool add_bos = false;
  TextDocMode text_docs = TextDocMode::File;
  std::string jsonl_key = "text";
  size_t batch_bytes = size_t(32) << 20;
  // Documents longer than this are tokenized in pieces cut at line ends (still one
  // document). sentencepiece's BPE slows down and grows memory on long inputs: on the Brown
  // text, 64 KiB pieces encode 2.5x faster than 1 MiB pieces at a quarter of the memory, and
  // the extra dummy-prefix token at each seam costs about 0.005% more tokens.
  size_t chunk_bytes = size_t(1) << 16;
  bool force = false;     // replace an existing output directory
  bool progress = true;   // progress lines on stderr
};

struct SplitStats {
  uint64_t docs = 0, tokens = 0;
  std::vector<std::string> shards;  // final paths
};

struct PrepareStats {
  SplitStats train, val;
  uint64_t files = 0, bytes = 0;
  double seconds = 0;
};

PrepareStats prepare_text(const PrepareOptions& opts);

// Checks shared by the prepare modes; throw UserError.
void check_val_fraction(double f);
void check_shard_tokens(uint64_t n);

}  // namespace hymba::data
