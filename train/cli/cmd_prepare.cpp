// `hymba prepare`: text/JSONL -> HDF5 token shards; `prepare chat` for SFT conversations;
// `prepare mqar` for the synthetic recall task.
#include <cstdio>

#include "core/error.h"
#include "data/chat.h"
#include "data/mqar.h"
#include "data/prepare.h"
#include "train/cli/args.h"
#include "train/cli/command.h"

namespace hymba::cli {
namespace {

constexpr const char* kUsage =
    "usage: hymba prepare --tokenizer M --input PATH... --out DIR [options]      (text)\n"
    "       hymba prepare chat --tokenizer M --input JSONL... --out DIR --seq-len N [options]\n"
    "       hymba prepare mqar --out DIR [--vocab 8192 --seq 256 --pairs 16 --count 20000 ...]\n"
    "\n"
    "text: plain-text files, directories of them (recursive, sorted by path) and .jsonl files\n"
    "({\"text\": ...} per line) become DIR/train_000.h5 ..., DIR/val_000.h5 ... and DIR/meta.json.\n"
    "A document is a JSONL record, or a whole text file (see --text-docs); each is followed by\n"
    "EOS. A document goes to val when hash(seed, document index) < val fraction. The output does\n"
    "not depend on --threads; it appears under DIR only when complete.\n"
    "  --tokenizer M       sentencepiece .model\n"
    "  --input PATH        input file or directory (repeatable; extra paths may follow)\n"
    "  --out DIR           output directory (must not exist unless --force)\n"
    "  --val-fraction F    share of documents for validation (default 0.01)\n"
    "  --seed S            split seed (default 0)\n"
    "  --shard-tokens N    start a new shard after N tokens (default 268435456)\n"
    "  --threads N         tokenizer threads (default: all cores)\n"
    "  --text-docs MODE    file (default) | paragraph (blank-line separated) | line\n"
    "  --jsonl-key K       field holding the text in JSONL records (default text)\n"
    "  --bos               also put BOS at the start of each document\n"
    "  --bos-id/--eos-id/--pad-id N   override the tokenizer's special ids (-1: none)\n"
    "  --force             replace an existing DIR\n"
    "  --no-progress       no progress lines on stderr\n"
    "\n"
    "chat (or --chat): JSONL {\"messages\": [{\"role\": system|user|assistant, \"content\": ...}]}\n"
    "rendered with the Hymba chat template, loss_mask on assistant tokens and their EOS, packed\n"
    "into samples of seq_len + 1 tokens without splitting a conversation (longer ones are cut\n"
    "to one sample, or dropped if no assistant token is left). Flags as for text, plus\n"
    "  --seq-len N         model sequence length (default 2048)\n"
    "\n"
    "mqar: multi-query associative recall (Zoology). Samples of seq + 1 tokens: N key-value\n"
    "pairs (keys from [1, vocab/2), values from [vocab/2, vocab)), then each key queried once at\n"
    "power-law distributed gaps, zeros elsewhere; loss_mask = 1 at the answers only.\n"
    "  --vocab V (8192)  --seq L (256)  --pairs N (16)  --count C (20000)  --val-count C (1000)\n"
    "  --seed S (0)  --power-a A (0.01)  --out DIR  --force\n";

data::SpecialIds special_ids(const Args& a) {
  data::SpecialIds s;
  if (a.has("bos-id")) s.bos = int(a.get_int("bos-id", -1));
  if (a.has("eos-id")) s.eos = int(a.get_int("eos-id", -1));
  if (a.has("pad-id")) s.pad = int(a.get_int("pad-id", -1));
  return s;
}

std::vector<std::string> inputs(const Args& a) {
  auto v = a.get_all("input");
  v.insert(v.end(), a.positionals().begin(), a.positionals().end());
  if (v.empty()) throw ArgError("missing required flag --input");
  return v;
}

uint64_t non_negative(const Args& a, const char* flag, long long def) {
  long long v = a.get_int(flag, def);
  if (v < 0) throw ArgError(std::string("--") + flag + " must not be negative");
  return uint64_t(v);
}

const std::vector<FlagSpec> kCommon = {{"tokenizer"}, {"input", true, true}, {"out"}, {"val-fraction"},
                                       {"seed"},      {"threads"},           {"bos-id"}, {"eos-id"},
                                       {"pad-id"},    {"force", false},      {"no-progress", false}};

int run_text(const std::vector<std::string>& argv) {
  auto specs = kCommon;
  specs.insert(specs.end(), {{"shard-tokens"}, {"text-docs"}, {"jsonl-key"}, {"bos", false}, {"chat", false}});
  Args a(argv, specs);
  if (a.help()) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  data::PrepareOptions o;
  o.tokenizer = a.require("tokenizer");
  o.special = special_ids(a);
  o.inputs = inputs(a);
  o.out = a.require("out");
  o.val_fraction = a.get_double("val-fraction", 0.01);
  o.seed = non_negative(a, "seed", 0);
  o.shard_tokens = non_negative(a, "shard-tokens", 1ll << 28);
  o.threads = int(a.get_int("threads", 0));
  o.text_docs = data::parse_text_doc_mode(a.get_or("text-docs", "file"));
  o.jsonl_key = a.get_or("jsonl-key", "text");
  o.add_bos = a.has("bos");
  o.force = a.has("force");
  o.progress = !a.has("no-progress");
  auto st = data::prepare_text(o);
  const uint64_t tokens = st.train.tokens + st.val.tokens;
  std::printf("prepared %s: %llu files, %.1f MB of text -> %llu documents, %llu tokens in %.1f s (%.0f tokens/s)\n",
              o.out.c_str(), (unsigned long long)st.files, double(st.bytes) / 1e6,
              (unsigned long long)(st.train.docs + st.val.docs), (unsigned long long)tokens, st.seconds,
              double(tokens) / std::max(st.seconds, 1e-9));
  std::printf("  train: %llu documents, %llu tokens, %zu shards\n", (unsigned long long)st.train.docs,
              (unsigned long long)st.train.tokens, st.train.shards.size());
  std::printf("  val:   %llu documents, %llu tokens, %zu shards\n", (unsigned long long)st.val.docs,
              (unsigned long long)st.val.tokens, st.val.shards.size());
  return 0;
}

int run_chat(const std::vector<std::string>& argv) {
  auto specs = kCommon;
  specs.insert(specs.end(), {{"seq-len"}, {"chat", false}});
  Args a(argv, specs);
  if (a.help()) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  data::ChatPrepareOptions o;
  o.tokenizer = a.require("tokenizer");
  o.special = special_ids(a);
  o.inputs = inputs(a);
  o.out = a.require("out");
  o.seq_len = a.get_int("seq-len", 2048);
  o.val_fraction = a.get_double("val-fraction", 0.01);
  o.seed = non_negative(a, "seed", 0);
  o.threads = int(a.get_int("threads", 0));
  o.force = a.has("force");
  o.progress = !a.has("no-progress");
  auto st = data::prepare_chat(o);
  std::printf("prepared %s: %llu conversations (train %llu, val %llu) -> %llu samples of %lld tokens\n",
              o.out.c_str(), (unsigned long long)(st.conversations[0] + st.conversations[1]),
              (unsigned long long)st.conversations[0], (unsigned long long)st.conversations[1],
              (unsigned long long)(st.samples[0] + st.samples[1]), (long long)(o.seq_len + 1));
  const double all = double((st.samples[0] + st.samples[1]) * uint64_t(o.seq_len + 1));
  std::printf("  trained-on tokens %.1f%%, padding %.1f%%; truncated %llu, dropped %llu, without answer %llu\n",
              100.0 * double(st.masked_tokens) / all, 100.0 * double(st.pad_tokens) / all,
              (unsigned long long)st.truncated, (unsigned long long)st.dropped, (unsigned long long)st.no_assistant);
  return 0;
}

int run_mqar(const std::vector<std::string>& argv) {
  Args a(argv, {{"vocab"}, {"seq"}, {"pairs"}, {"count"}, {"val-count"}, {"seed"}, {"power-a"}, {"out"},
                {"force", false}});
  if (a.help()) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (!a.positionals().empty()) throw ArgError("unexpected argument '" + a.positionals()[0] + "'");
  data::MqarOptions o;
  o.vocab = a.get_int("vocab", 8192);
  o.seq = a.get_int("seq", 256);
  o.pairs = a.get_int("pairs", 16);
  o.count = non_negative(a, "count", 20000);
  o.val_count = non_negative(a, "val-count", 1000);
  o.seed = non_negative(a, "seed", 0);
  o.power_a = a.get_double("power-a", 0.01);
  o.out = a.require("out");
  o.force = a.has("force");
  auto st = data::prepare_mqar(o);
  std::printf("prepared %s: MQAR, %llu train + %llu val samples of %lld tokens, %lld pairs, vocab %lld "
              "(train with seq_len %lld)\n",
              o.out.c_str(), (unsigned long long)st.train_samples, (unsigned long long)st.val_samples,
              (long long)(o.seq + 1), (long long)o.pairs, (long long)o.vocab, (long long)o.seq);
  return 0;
}

int run(const std::vector<std::string>& args) {
  if (!args.empty() && args[0] == "mqar") return run_mqar({args.begin() + 1, args.end()});
  if (!args.empty() && args[0] == "chat") return run_chat({args.begin() + 1, args.end()});
  for (const auto& a : args)
    if (a == "--chat") return run_chat(args);
  return run_text(args);
}

}  // namespace
}  // namespace hymba::cli

HYMBA_REGISTER_COMMAND("prepare", "turn text, JSONL or chat data into HDF5 token shards; make MQAR data",
                       hymba::cli::run);
