// `hymba generate`: sample continuations of one or more prompts from a checkpoint.
#include <cstdio>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/tokenizer.h"
#include "train/checkpoint.h"
#include "train/cli/args.h"
#include "train/cli/command.h"
#include "train/generate.h"

namespace hymba::cli {
namespace {

constexpr const char* kUsage =
    "usage: hymba generate --checkpoint CKPT --tokenizer MODEL --prompt TEXT [--prompt TEXT...] [options]\n"
    "\n"
    "Continues each prompt (all decoded as one left-padded batch) and prints one block per\n"
    "prompt: the prompt, then the generated text. Each prompt is encoded with the tokenizer's\n"
    "bos id in front; generation stops at the tokenizer's eos id or after --max-tokens.\n"
    "  --checkpoint CKPT   a checkpoint written by `hymba train` (or `hymba convert`)\n"
    "  --tokenizer MODEL   the sentencepiece .model the checkpoint was trained with\n"
    "  --prompt TEXT       a prompt (repeatable; extra positionals are prompts too)\n"
    "  --max-tokens N      new tokens per prompt (default 64)\n"
    "  --temperature T     sampling temperature (default 1.0; 0: greedy)\n"
    "  --top-k K           keep the K most likely tokens (default 0: all)\n"
    "  --top-p P           keep the most likely tokens whose probability reaches P (default 1: all)\n"
    "  --seed S            Philox seed: the same seed gives the same text (default 0)\n";

int run(const std::vector<std::string>& argv) {
  Args a(argv, {{"checkpoint"}, {"tokenizer"}, {"prompt", true, true}, {"max-tokens"}, {"temperature"},
                {"top-k"}, {"top-p"}, {"seed"}});
  if (a.help()) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  const std::string ckpt = a.require("checkpoint"), tok_path = a.require("tokenizer");
  std::vector<std::string> texts = a.get_all("prompt");
  texts.insert(texts.end(), a.positionals().begin(), a.positionals().end());
  if (texts.empty()) throw ArgError("missing required flag --prompt");
  train::SamplingOptions o;
  o.max_new_tokens = a.get_int("max-tokens", 64);
  o.temperature = a.get_double("temperature", 1.0);
  o.top_k = a.get_int("top-k", 0);
  o.top_p = a.get_double("top-p", 1.0);
  const long long seed = a.get_int("seed", 0);
  if (seed < 0) throw ArgError("--seed must not be negative");
  o.seed = uint64_t(seed);
  train::check_sampling_options(o);

  auto tok = data::Tokenizer::load(tok_path);
  auto model = train::load_model_from_checkpoint(ckpt);
  if (tok.vocab_size() > model->config().vocab_size)
    throw UserError(str("generate: tokenizer ", tok_path, " has ", tok.vocab_size(), " pieces but the model in ", ckpt,
                        " has a vocabulary of ", model->config().vocab_size));
  o.eos_id = tok.eos_id();
  std::vector<std::vector<int64_t>> prompts;
  for (const std::string& t : texts) {
    std::vector<int64_t> ids;
    if (tok.bos_id() >= 0) ids.push_back(tok.bos_id());
    for (int32_t id : tok.encode(t)) ids.push_back(id);
    if (ids.empty()) throw UserError("generate: empty prompt and the tokenizer has no bos id");
    prompts.push_back(std::move(ids));
  }
  auto out = train::generate(*model, prompts, o);
  for (size_t i = 0; i < texts.size(); ++i) {
    std::vector<int32_t> ids(out[i].begin(), out[i].end());
    std::printf("%s=== prompt %zu (%zu new tokens)\n%s%s\n", i ? "\n" : "", i + 1, ids.size(), texts[i].c_str(),
                tok.decode(ids).c_str());
  }
  return 0;
}

}  // namespace

HYMBA_REGISTER_COMMAND("generate", "sample text from a checkpoint (temperature, top-k, top-p, seed)", run);

}  // namespace hymba::cli
