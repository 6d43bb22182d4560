// `hymba train`: run a training recipe (train/train_config.h) with the trainer loop.
#include <spdlog/spdlog.h>

#include <cstdio>

#include "core/error.h"
#include "train/cli/args.h"
#include "train/cli/command.h"
#include "train/distributed.h"
#include "train/train_config.h"
#include "train/trainer.h"

namespace hymba::cli {
namespace {

constexpr const char* kUsage =
    "usage: hymba train CONFIG.yaml [--set key=value ...] [--resume auto|PATH] [--out RUN_DIR]\n"
    "\n"
    "Trains the model of a recipe (sections model, data, optim, schedule, run; see\n"
    "configs/train/*.yaml and docs/training.md). Prints the resolved config, a progress line\n"
    "every run.log_every steps, evals every run.eval_every steps, writes RUN_DIR/metrics.jsonl,\n"
    "RUN_DIR/config.yaml and checkpoints RUN_DIR/ckpt_XXXXXXXX.h5 (the last run.keep_last).\n"
    "Ctrl-C (SIGINT) or SIGTERM finishes the current step, writes a checkpoint and exits 0;\n"
    "a second Ctrl-C exits immediately.\n"
    "  --set key=value   override a config value, e.g. --set optim.lr=1e-3 --set run.steps=50\n"
    "                    (repeatable; type-checked like the file)\n"
    "  --resume auto     continue from the newest checkpoint of the run dir (fresh start when\n"
    "                    there is none); --resume PATH continues from that checkpoint\n"
    "  --out RUN_DIR     run directory (default: run.out_dir)\n"
    "\n"
    "Data parallelism: launch the same command with `mpirun -np N hymba train ...` (or\n"
    "`srun --mpi=pmix` under Slurm); run.global_batch is split over the ranks, gradients are\n"
    "summed in run.ddp_bucket_mb buckets, optim.zero: 1 shards the optimizer moments. Only\n"
    "rank 0 prints progress and writes files. See docs/distributed.md.\n";

int run_train(const std::vector<std::string>& argv) {
  Args a(argv, {{"set", true, true}, {"resume"}, {"out"}});
  if (a.help()) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (a.positionals().size() != 1) throw ArgError("expected exactly one CONFIG.yaml");
  // Under an MPI launcher this joins the job; alone it does nothing. An error from here on
  // ends every rank (main.cpp -> train::fail_job); only success finalizes MPI.
  train::init_distributed();
  {
    train::TrainConfig cfg = train::load_train_config(a.positionals()[0], a.get_all("set"));
    train::TrainerOptions opts;
    opts.run_dir = a.get_or("out", "");
    opts.comm = train::job_communicator();
    train::Trainer trainer(std::move(cfg), opts);
    trainer.resume(a.get_or("resume", ""));
    train::Trainer::install_signal_handlers();
    train::TrainResult r = trainer.run();
    if (trainer.rank() == 0) {
      if (r.last_eval)
        spdlog::info("final val loss {:.4f}, val perplexity {:.2f}", r.last_eval->loss, r.last_eval->perplexity);
      spdlog::info("{} at step {}; checkpoint {}", r.interrupted ? "interrupted" : "done", r.step, r.last_checkpoint);
    }
  }  // the trainer (and its communicator) go before MPI does
  train::finalize_distributed();
  return 0;
}

}  // namespace

HYMBA_REGISTER_COMMAND("train", "train a model from a YAML recipe (with exact resume)", run_train);

}  // namespace hymba::cli
