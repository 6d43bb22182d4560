// `hymba eval`: validation loss / perplexity (and MQAR accuracy) of a checkpoint on a data split.
#include <cmath>
#include <cstdio>

#include <yaml-cpp/yaml.h>

#include "core/error.h"
#include "data/dataset.h"
#include "layers/model.h"
#include "layers/model_config.h"
#include "train/checkpoint.h"
#include "train/cli/args.h"
#include "train/cli/command.h"
#include "train/eval.h"

namespace hymba::cli {
namespace {

constexpr const char* kUsage =
    "usage: hymba eval --checkpoint CKPT --data DIR|FILE [--split val] [--batches N]\n"
    "                  [--seq-len L] [--batch B] [--json]\n"
    "\n"
    "Walks the split once in packed windows (every token after the first is a target once) and\n"
    "prints the mean cross entropy per token, the perplexity, tokens/s and, on MQAR data, the\n"
    "recall accuracy.\n"
    "  --checkpoint CKPT  a checkpoint written by hymba train\n"
    "  --data PATH        a prepared data directory or one .h5 shard\n"
    "  --split NAME       split of a directory (default val)\n"
    "  --batches N        only the first N batches (default 0: all)\n"
    "  --seq-len L        window length (default: the checkpoint's data.seq_len, or the data's\n"
    "                     sample length - 1 for fixed-length data)\n"
    "  --batch B          rows per forward (default 8)\n"
    "  --unigram PATH     also print the unigram baseline: the perplexity of the token\n"
    "                     frequencies of PATH's train split (a directory or .h5 shard)\n"
    "  --json             print one JSON object instead of text\n";

int64_t seq_len_from_config(const std::string& yaml) {
  if (yaml.empty()) return 0;
  try {
    YAML::Node n = YAML::Load(yaml);
    if (n["data"] && n["data"]["seq_len"]) return n["data"]["seq_len"].as<int64_t>();
  } catch (const YAML::Exception&) {
  }
  return 0;
}

int run_eval(const std::vector<std::string>& argv) {
  Args a(argv, {{"checkpoint"}, {"data"}, {"split"}, {"batches"}, {"seq-len"}, {"batch"}, {"unigram"}, {"json", false}});
  if (a.help()) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  const std::string ckpt = a.require("checkpoint"), path = a.require("data");
  auto data = data::TokenDataset::open(path, a.get_or("split", "val"));
  train::Checkpoint meta = train::load_checkpoint(ckpt, /*with_optimizer=*/false);
  // One read of the file: the model is rebuilt from the weights already loaded.
  auto model = std::make_unique<Model>(parse_model_config_string(meta.model_config_yaml, ckpt + ":model_config"));
  model->load_state_dict(meta.model, /*strict=*/true);
  meta.model.clear();
  train::EvalOptions eo;
  eo.batch = a.get_int("batch", 8);
  eo.max_batches = a.get_int("batches", 0);
  if (eo.batch <= 0) throw ArgError("--batch must be positive");
  if (eo.max_batches < 0) throw ArgError("--batches must not be negative");
  eo.seq_len = a.get_int("seq-len", 0);
  if (eo.seq_len == 0) eo.seq_len = data->sample_len() > 0 ? data->sample_len() - 1 : seq_len_from_config(meta.config_yaml);
  if (eo.seq_len <= 0) throw ArgError("cannot tell the window length: give --seq-len");
  train::EvalResult r = train::evaluate(*model, data, eo);
  double unigram = std::nan("");
  if (a.has("unigram")) {
    auto tr = data::TokenDataset::open(*a.get("unigram"), "train");
    unigram = train::unigram_baseline_loss(*tr, *data);
  }
  if (a.has("json")) {
    nlohmann::json j = r.to_json();
    if (a.has("unigram")) {
      j["unigram_loss"] = unigram;
      j["unigram_ppl"] = std::exp(unigram);
    }
    j["checkpoint"] = ckpt;
    j["step"] = meta.step;
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  std::printf("checkpoint  %s (step %lld)\n", ckpt.c_str(), (long long)meta.step);
  std::printf("data        %s (%llu batches, %llu targets)\n", data->description().c_str(),
              (unsigned long long)r.batches, (unsigned long long)r.tokens);
  std::printf("val loss    %.4f\nperplexity  %.3f\ntokens/s    %.0f\n", r.loss, r.perplexity, r.tokens_per_s);
  if (a.has("unigram"))
    std::printf("unigram     perplexity %.3f (loss %.4f): the baseline of train token frequencies\n",
                std::exp(unigram), unigram);
  if (r.mqar)
    std::printf("mqar acc    %.4f (sequences solved %.4f)\n", r.accuracy.accuracy(), r.accuracy.sequence_accuracy());
  return 0;
}

}  // namespace

HYMBA_REGISTER_COMMAND("eval", "validation loss, perplexity and MQAR accuracy of a checkpoint", run_eval);

}  // namespace hymba::cli
