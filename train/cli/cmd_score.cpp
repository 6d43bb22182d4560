// `hymba score`: the log-probability a checkpoint assigns to each token of one sequence given
// the tokens before it. Output is JSON lines so that scripts (and comparisons against the
// Hugging Face reference) can diff it position by position.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/tokenizer.h"
#include "train/checkpoint.h"
#include "train/cli/args.h"
#include "train/cli/command.h"

namespace hymba::cli {
namespace {

constexpr const char* kUsage =
    "usage: hymba score --checkpoint CKPT (--tokens ID,ID,... | --text TEXT --tokenizer MODEL) [--f64]\n"
    "\n"
    "Runs the model once over the whole sequence and prints one JSON line per position t >= 1:\n"
    "  {\"pos\": t, \"token\": id, \"logprob\": log p(token_t | tokens_<t)}\n"
    "(the log-softmax of the logits at position t - 1, taken at token_t). Position 0 has no\n"
    "context and is not scored, so a sequence needs at least two tokens.\n"
    "  --checkpoint CKPT   a checkpoint written by `hymba train` (or `hymba convert`)\n"
    "  --tokens IDS        comma-separated token ids, used as given (no bos is added)\n"
    "  --text TEXT         text to encode with --tokenizer; the tokenizer's bos id is prepended\n"
    "  --tokenizer MODEL   the sentencepiece .model the checkpoint was trained with (with --text)\n"
    "  --f64               run the model in float64 instead of float32 (slower; for reference checks)\n";

// Strict parse: every comma-separated field must be a whole non-negative integer, so a typo
// like "1,,5" or "1,5x" is reported rather than silently dropped.
std::vector<int64_t> parse_token_list(const std::string& s) {
  std::vector<int64_t> ids;
  size_t start = 0;
  while (true) {
    size_t comma = s.find(',', start);
    std::string field = s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    while (!field.empty() && field.front() == ' ') field.erase(field.begin());
    while (!field.empty() && field.back() == ' ') field.pop_back();
    bool digits = !field.empty() && field.size() <= 18;
    for (char c : field) digits = digits && c >= '0' && c <= '9';
    if (!digits)
      throw ArgError(str("--tokens: expected comma-separated non-negative integer ids, got field ", ids.size() + 1,
                         " = '", field, "' in '", s, "'"));
    ids.push_back(std::stoll(field));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return ids;
}

int run(const std::vector<std::string>& argv) {
  Args a(argv, {{"checkpoint"}, {"tokens"}, {"text"}, {"tokenizer"}, {"f64", false}});
  if (a.help()) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (!a.positionals().empty()) throw ArgError(str("unexpected argument '", a.positionals().front(), "'"));
  const std::string ckpt = a.require("checkpoint");
  if (a.has("tokens") == a.has("text")) throw ArgError("give exactly one of --tokens and --text");
  if (a.has("tokenizer") && !a.has("text")) throw ArgError("--tokenizer is only used with --text");

  std::vector<int64_t> ids;
  if (a.has("tokens")) {
    ids = parse_token_list(a.require("tokens"));
  } else {
    const std::string tok_path = a.require("tokenizer");
    auto tok = data::Tokenizer::load(tok_path);
    if (tok.bos_id() >= 0) ids.push_back(tok.bos_id());
    for (int32_t id : tok.encode(a.require("text"))) ids.push_back(id);
  }
  if (ids.size() < 2)
    throw UserError(str("score: need at least 2 tokens (position 0 is only context), got ", ids.size()));

  auto model = train::load_model_from_checkpoint(ckpt);
  const int64_t vocab = model->config().vocab_size;
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] >= vocab)
      throw UserError(str("score: token ", ids[i], " at position ", i, " is out of range for the model in ", ckpt,
                          " (vocabulary ", vocab, ")"));
  if (a.has("f64")) model->to(DType::F64);
  model->eval();

  const int64_t L = int64_t(ids.size());
  Tensor logits;
  {
    NoGradGuard ng;
    logits = model->forward(from_vector<int64_t>(ids, {1, L}));
  }
  // Log-softmax in double whatever the model dtype: the printed numbers should reflect the
  // model's logits, not cancellation in the normalizer.
  std::vector<double> lg = logits.to(DType::F64).contiguous().to_vector<double>();
  for (int64_t t = 1; t < L; ++t) {
    const double* row = lg.data() + (t - 1) * vocab;
    double mx = row[0];
    for (int64_t v = 1; v < vocab; ++v) mx = std::max(mx, row[v]);
    double se = 0;
    for (int64_t v = 0; v < vocab; ++v) se += std::exp(row[v] - mx);
    const double lp = row[ids[size_t(t)]] - mx - std::log(se);
    std::printf("{\"pos\": %lld, \"token\": %lld, \"logprob\": %.17g}\n", (long long)t, (long long)ids[size_t(t)], lp);
  }
  return 0;
}

}  // namespace

HYMBA_REGISTER_COMMAND("score", "per-token log-probabilities of a sequence under a checkpoint (JSON lines)", run);

}  // namespace hymba::cli
