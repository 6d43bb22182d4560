// `hymba bench <target>`: speed measurements of the framework itself. Targets: `train`
// (train/bench_train.h).
#include <cstdio>

#include "train/bench_train.h"
#include "train/cli/args.h"
#include "train/cli/command.h"

namespace hymba::cli {
namespace {

constexpr const char* kUsage =
    "usage: hymba bench train CONFIG [--steps N] [--warmup W] [--batch B] [--seq L] [--set key=value ...]\n"
    "                             [--recompute] [--no-profile] [--no-sgemm] [--json]\n"
    "\n"
    "Times whole training steps (forward, backward, gradient clipping, AdamW) of a model on\n"
    "this machine's CPU threads (HYMBA_NUM_THREADS) and prints tokens/s, the achieved GFLOP/s\n"
    "(train_flops_per_token of `hymba info` x tokens/s), the time split by op family, and the\n"
    "GFLOP/s of OpenBLAS sgemm measured in the same run at the model's largest linear (x W^T at\n"
    "the step's token count) and at 1024^3, with the step's share of it.\n"
    "With run.device: cuda (--set run.device=cuda) the step runs on the GPU in run.precision\n"
    "(bf16 by default, fp32 master weights) as `hymba train` runs it, timed to a device sync;\n"
    "it prints TFLOP/s, MFU against the card's peak for the compute dtype (run.peak_tflops\n"
    "overrides it), CUDA allocator memory, and the cuBLASLt GEMM rate in the compute dtype at\n"
    "the largest linear and at 8192^3 instead of sgemm. The op-family split is CPU only.\n"
    "  CONFIG        a training recipe (configs/train/*.yaml: its data is used when present,\n"
    "                else random tokens) or a model config (configs/tiny/*.yaml: random tokens,\n"
    "                batch 8, sequence 256); the output says which data it used\n"
    "  --steps N     timed steps (default 5)\n"
    "  --warmup W    untimed steps first (default 1)\n"
    "  --batch B     rows per step (default: the recipe's run.micro_batch)\n"
    "  --seq L       tokens per row (default: the recipe's data.seq_len)\n"
    "  --set k=v     override a recipe key (repeatable), e.g. --set model.hidden_size=256\n"
    "  --recompute   activation recomputation per block (run.recompute)\n"
    "  --no-profile  skip the op-family split (it reads the clock around every kernel; on CUDA a\n"
    "                second pass over the steps, the device synchronized around every op)\n"
    "  --no-sgemm    skip the sgemm (CUDA: GEMM) baseline\n"
    "  --json        print the result as JSON instead of text\n";

int run_bench(const std::vector<std::string>& argv) {
  Args a(argv, {{"steps"},
                {"warmup"},
                {"batch"},
                {"seq"},
                {"set", true, true},
                {"recompute", false},
                {"no-profile", false},
                {"no-sgemm", false},
                {"json", false}});
  if (a.help()) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  const auto& pos = a.positionals();
  if (pos.empty()) throw ArgError("expected a target: hymba bench train CONFIG");
  if (pos[0] != "train") throw ArgError("unknown bench target '" + pos[0] + "' (targets: train)");
  if (pos.size() != 2) throw ArgError("expected exactly one CONFIG after 'train'");
  train::BenchTrainOptions o;
  o.steps = a.get_int("steps", 5);
  o.warmup = a.get_int("warmup", 1);
  o.batch = a.get_int("batch", 0);
  o.seq_len = a.get_int("seq", 0);
  if (o.steps <= 0) throw ArgError("--steps must be positive");
  if (o.warmup < 0) throw ArgError("--warmup must be >= 0");
  if (a.has("batch") && o.batch <= 0) throw ArgError("--batch must be positive");
  if (a.has("seq") && o.seq_len <= 0) throw ArgError("--seq must be positive");
  o.recompute = a.has("recompute");
  o.profile = !a.has("no-profile");
  o.sgemm = !a.has("no-sgemm");
  train::TrainConfig cfg = train::load_bench_config(pos[1], a.get_all("set"));
  train::BenchTrainResult r = train::bench_train(cfg, o);
  if (a.has("json"))
    std::printf("%s\n", train::bench_train_json(r).c_str());
  else
    std::fputs(train::format_bench_train(r).c_str(), stdout);
  return 0;
}

}  // namespace

HYMBA_REGISTER_COMMAND("bench", "time training steps: tokens/s, FLOP/s, MFU, op-family split, GEMM baseline",
                       run_bench);

}  // namespace hymba::cli
