// `hymba info`: parameters, training FLOPs per token and inference cache of a model config.
#include <cstdio>

#include "layers/model_config.h"
#include "train/cli/args.h"
#include "train/cli/command.h"
#include "train/model_info.h"

namespace hymba::cli {
namespace {

constexpr const char* kUsage =
    "usage: hymba info CONFIG [--seq N]\n"
    "\n"
    "Parameters by part, training FLOPs per token and the inference cache of a model config\n"
    "(computed from the config alone; nothing is allocated).\n"
    "  --seq N   sequence length S for the FLOPs and cache numbers (default 8192)\n"
    "\n"
    "Training FLOPs per token = 6 * N_matmul + 6 * sum over attention layers of Hq * (dk + dv) * Kbar\n"
    "  N_matmul: parameters of weights used in matrix products (projections, MLP, the output\n"
    "  head counted once even when tied); not embeddings lookups, meta tokens, norms, conv1d,\n"
    "  A_log, D or biases. Kbar: keys visible to a query, averaged over the S token positions\n"
    "  i = M..M+S-1 (M meta tokens): i+1 for full attention; min(i+1, W+1) plus the meta keys\n"
    "  outside the window for sliding window W. The M meta rows' own work is not counted.\n"
    "\n"
    "Inference cache at S in fp16: a KV cache only in KV-producing layers (consumers of a KV\n"
    "group hold none): M+S keys for full attention, min(M+S, M+W+1) for sliding window, each key\n"
    "Hkv * (dk + dv) * 2 bytes; each SSM layer adds I*N (state) and I*(d_conv-1) (conv) * 2 bytes.\n";

int run(const std::vector<std::string>& argv) {
  Args a(argv, {{"seq"}});
  if (a.help()) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (a.positionals().size() != 1) throw ArgError("expected exactly one CONFIG argument");
  const long long seq = a.get_int("seq", 8192);
  if (seq <= 0) throw ArgError("--seq must be positive");
  ModelConfig cfg = load_model_config(a.positionals()[0]);
  std::fputs(format_model_info(cfg, model_info(cfg, seq)).c_str(), stdout);
  return 0;
}

}  // namespace

HYMBA_REGISTER_COMMAND("info", "parameters, FLOPs per token and cache sizes of a model config", run);

}  // namespace hymba::cli
