// `hymba tokenizer`: train a sentencepiece tokenizer, or inspect / use one.
#include <cstdio>
#include <iostream>
#include <iterator>
#include <sstream>

#include "core/error.h"
#include "data/tokenizer.h"
#include "train/cli/args.h"
#include "train/cli/command.h"

namespace hymba::cli {
namespace {

constexpr const char* kUsage =
    "usage: hymba tokenizer train --input PATH... --vocab N --out PREFIX [options]\n"
    "       hymba tokenizer info --model M [--text TEXT]\n"
    "       hymba tokenizer encode --model M [--text TEXT]   (reads stdin without --text)\n"
    "       hymba tokenizer decode --model M ID...\n"
    "\n"
    "train: a sentencepiece model (BPE by default) with byte fallback, identity normalization,\n"
    "split digits, the chat markers <extra_id_0> <extra_id_1> as single pieces, and ids\n"
    "unk 0, bos 1, eos 2, pad 3. Deterministic for given inputs, vocab and seed.\n"
    "Inputs are text files, directories (recursive, sorted) and .jsonl files ({\"text\": ...});\n"
    "every line is one training sentence. Writes PREFIX.model and PREFIX.vocab.\n"
    "  --input PATH        input file or directory (repeatable; extra paths may follow)\n"
    "  --vocab N           vocabulary size (default 4096)\n"
    "  --out PREFIX        output prefix\n"
    "  --model-type T      bpe (default) or unigram\n"
    "  --character-coverage F   share of characters given their own piece (default 0.9995;\n"
    "                      rarer ones fall back to bytes)\n"
    "  --max-sentences N   train on a seeded random sample of N lines (default: all)\n"
    "  --seed S            random seed for the sample (default 0)\n"
    "  --user-symbols A,B  pieces that are always kept whole (default <extra_id_0>,<extra_id_1>;\n"
    "                      give an empty value for none)\n"
    "  --jsonl-key K       field holding the text in JSONL records (default text)\n"
    "  --force             overwrite existing output files\n"
    "  --verbose           show sentencepiece's training log\n"
    "\n"
    "info, encode, decode: any sentencepiece model (ours, or a Llama-2 style tokenizer.model).\n"
    "  --model M           the .model file\n"
    "  --text TEXT         text to encode\n"
    "  --bos-id/--eos-id/--pad-id N   override the model's special ids (-1: none)\n";

std::vector<FlagSpec> model_flags() {
  return {{"model"}, {"text"}, {"bos-id"}, {"eos-id"}, {"pad-id"}};
}

data::SpecialIds special_ids(const Args& a) {
  data::SpecialIds s;
  if (a.has("bos-id")) s.bos = int(a.get_int("bos-id", -1));
  if (a.has("eos-id")) s.eos = int(a.get_int("eos-id", -1));
  if (a.has("pad-id")) s.pad = int(a.get_int("pad-id", -1));
  return s;
}

std::string piece_or_none(const data::Tokenizer& t, int id) {
  return id < 0 ? "none" : std::to_string(id) + " " + t.id_to_piece(id);
}

int run_train(const std::vector<std::string>& argv) {
  Args a(argv, {{"input", true, true}, {"vocab"}, {"out"}, {"model-type"}, {"character-coverage"},
                {"max-sentences"}, {"seed"}, {"user-symbols"}, {"jsonl-key"}, {"force", false}, {"verbose", false}});
  if (a.help()) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  data::TokenizerTrainOptions o;
  o.inputs = a.get_all("input");
  o.inputs.insert(o.inputs.end(), a.positionals().begin(), a.positionals().end());
  if (o.inputs.empty()) throw ArgError("missing required flag --input");
  o.vocab_size = int(a.get_int("vocab", 4096));
  o.out_prefix = a.require("out");
  o.model_type = a.get_or("model-type", "bpe");
  o.character_coverage = a.get_double("character-coverage", 0.9995);
  long long max_sent = a.get_int("max-sentences", 0);
  if (max_sent < 0) throw ArgError("--max-sentences must not be negative");
  o.max_sentences = uint64_t(max_sent);
  o.seed = uint32_t(a.get_int("seed", 0));
  if (auto syms = a.get("user-symbols")) {
    o.user_symbols.clear();
    std::stringstream ss(*syms);
    std::string s;
    while (std::getline(ss, s, ','))
      if (!s.empty()) o.user_symbols.push_back(s);
  }
  o.jsonl_key = a.get_or("jsonl-key", "text");
  o.force = a.has("force");
  o.verbose = a.has("verbose");
  auto st = data::train_tokenizer(o);
  auto t = data::Tokenizer::load(o.out_prefix + ".model");
  std::printf("trained %s.model: %d pieces from %llu lines (%.1f MB) in %.1f s\n", o.out_prefix.c_str(),
              t.vocab_size(), (unsigned long long)st.sentences, double(st.bytes) / 1e6, st.seconds);
  return 0;
}

int run_info(const std::vector<std::string>& argv) {
  Args a(argv, model_flags());
  if (a.help()) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  auto t = data::Tokenizer::load(a.require("model"), special_ids(a));
  std::printf("model:         %s\n", t.path().c_str());
  std::printf("vocab size:    %d\n", t.vocab_size());
  std::printf("unk id:        %s\n", piece_or_none(t, t.unk_id()).c_str());
  std::printf("bos id:        %s\n", piece_or_none(t, t.bos_id()).c_str());
  std::printf("eos id:        %s\n", piece_or_none(t, t.eos_id()).c_str());
  std::printf("pad id:        %s\n", piece_or_none(t, t.pad_id()).c_str());
  std::printf("byte fallback: %s\n", t.byte_fallback() ? "yes" : "no");
  std::printf("fingerprint:   %016llx\n", (unsigned long long)t.fingerprint());
  const std::string text = a.get_or("text", "Hello world! The quick brown fox jumps over 13 lazy dogs.");
  auto ids = t.encode(text);
  std::printf("sample:        \"%s\" -> %zu tokens\n", text.c_str(), ids.size());
  std::string line = "              ";
  for (int id : ids) line += std::to_string(id) + ":" + t.id_to_piece(id) + " ";
  std::printf("%s\n", line.c_str());
  return 0;
}

int run_encode(const std::vector<std::string>& argv) {
  Args a(argv, model_flags());
  if (a.help()) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  auto t = data::Tokenizer::load(a.require("model"), special_ids(a));
  std::string text;
  if (auto s = a.get("text")) text = *s;
  else text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  auto ids = t.encode(text);
  for (size_t i = 0; i < ids.size(); ++i) std::printf("%s%d", i ? " " : "", ids[i]);
  std::printf("\n");
  return 0;
}

int run_decode(const std::vector<std::string>& argv) {
  Args a(argv, model_flags());
  if (a.help()) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  auto t = data::Tokenizer::load(a.require("model"), special_ids(a));
  std::vector<int32_t> ids;
  for (const auto& p : a.positionals()) {
    char* end = nullptr;
    long v = std::strtol(p.c_str(), &end, 10);
    if (p.empty() || *end != '\0') throw ArgError("expected token ids, got '" + p + "'");
    if (v < 0 || v >= t.vocab_size())
      HYMBA_USER_ERROR("token id ", v, " is outside the vocabulary of ", t.path(), " (", t.vocab_size(), ")");
    ids.push_back(int32_t(v));
  }
  std::printf("%s\n", t.decode(ids).c_str());
  return 0;
}

int run(const std::vector<std::string>& args) {
  if (args.empty()) throw ArgError("expected a subcommand: train, info, encode or decode");
  const std::string& sub = args[0];
  if (sub == "--help" || sub == "-h" || sub == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (sub == "train") return run_train(rest);
  if (sub == "info") return run_info(rest);
  if (sub == "encode") return run_encode(rest);
  if (sub == "decode") return run_decode(rest);
  throw ArgError("unknown subcommand '" + sub + "' (expected train, info, encode or decode)");
}

}  // namespace
}  // namespace hymba::cli

HYMBA_REGISTER_COMMAND("tokenizer", "train a sentencepiece tokenizer, or inspect and use one", hymba::cli::run);
