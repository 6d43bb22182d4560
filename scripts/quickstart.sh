#!/usr/bin/env bash
# hymba.cpp quickstart: from a fresh Debian/Ubuntu machine to a trained tiny Hymba.
#
#   scripts/quickstart.sh
#
# 1. installs the build dependencies (scripts/setup.sh; needs root or sudo when any is missing)
# 2. configures and builds a Release `hymba` in $BUILD_DIR (default build-release)
# 3. fetches the Brown corpus, trains its tokenizer and prepares HDF5 data (scripts/fetch_corpus.sh)
# 4. trains configs/train/tiny-hymba.yaml on the CPU for about $BUDGET_MIN minutes (default 8):
#    a 3-step calibration measures tokens/s and sets run.steps to fit the budget
# 5. prints the val perplexity next to the unigram baseline (train token frequencies)
# 6. draws $RUN_DIR/loss.png and lr.png, and samples a few lines (when `hymba generate` exists)
#
# Idempotent: every step skips work already done (the build is incremental, the data steps
# check their outputs, training resumes from $RUN_DIR and keeps the step count chosen on the
# first run). Delete $RUN_DIR to train again.
#
# Environment: BUILD_DIR, RUN_DIR (default runs/quickstart), DATA_DIR (default data/brown),
# BUDGET_MIN (training minutes, default 8), HYMBA_NUM_THREADS (default: all cores).
set -euo pipefail

cd "$(dirname "$0")/.."
BUILD_DIR="${BUILD_DIR:-build-release}"
RUN_DIR="${RUN_DIR:-runs/quickstart}"
DATA_DIR="${DATA_DIR:-data/brown}"
BUDGET_MIN="${BUDGET_MIN:-8}"
RECIPE=configs/train/tiny-hymba.yaml
HYMBA="$BUILD_DIR/bin/hymba"
BATCH_TOKENS=4096   # run.global_batch_tokens of the recipe

log() { echo "quickstart: $*" >&2; }
die() { echo "quickstart: error: $*" >&2; exit 1; }
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 ))s; }

# ---- 1. dependencies ----
log "1/6 dependencies"
scripts/setup.sh

# ---- 2. build ----
log "2/6 build ($BUILD_DIR, Release)"
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release
fi
cmake --build "$BUILD_DIR" -j"$(nproc)" --target hymba
[ -x "$HYMBA" ] || die "build produced no $HYMBA"

# ---- 3. data ----
log "3/6 corpus, tokenizer and HDF5 data ($DATA_DIR) [$(elapsed)]"
HYMBA_BIN="$HYMBA" scripts/fetch_corpus.sh "$DATA_DIR"
TOKENS="$DATA_DIR/tokens"
[ -f "$TOKENS/train_000.h5" ] || die "no $TOKENS/train_000.h5 after fetch_corpus.sh"

DATA_SETS=(--set "data.train=$TOKENS" --set "data.val=$TOKENS")

# ---- 4. train ----
log "4/6 training ($RECIPE, budget $BUDGET_MIN min) [$(elapsed)]"
mkdir -p "$RUN_DIR"
STEPS_FILE="$RUN_DIR/quickstart_steps"
if [ ! -f "$STEPS_FILE" ]; then
  CAL="$RUN_DIR/calibration"
  rm -rf "$CAL"
  "$HYMBA" train "$RECIPE" "${DATA_SETS[@]}" --set run.steps=3 --set schedule.warmup_steps=1 \
    --set schedule.kind=constant --set run.eval_every=0 --set run.eval_batches=1 --set run.log_every=1 \
    --out "$CAL" >/dev/null 2>&1 || die "calibration run failed (see: $HYMBA train $RECIPE --out $CAL)"
  # tokens/s of the last calibration step (the first pays for warm-up)
  TPS=$(grep '"type":"train"' "$CAL/metrics.jsonl" | tail -n1 | sed -n 's/.*"tokens_per_s":\([0-9.eE+-]*\).*/\1/p')
  [ -n "$TPS" ] || die "could not read tokens/s from $CAL/metrics.jsonl"
  # 80% of the budget for training steps; the rest for evals and checkpoints.
  STEPS=$(awk -v tps="$TPS" -v min="$BUDGET_MIN" -v bt="$BATCH_TOKENS" \
    'BEGIN { s = int(0.8 * min * 60 * tps / bt); if (s < 10) s = 10; if (s > 2000) s = 2000; print s }')
  log "measured $(printf '%.0f' "$TPS") tokens/s: $STEPS steps of $BATCH_TOKENS tokens"
  echo "$STEPS" > "$STEPS_FILE"
  rm -rf "$CAL"
fi
STEPS=$(cat "$STEPS_FILE")
EVERY=$(( STEPS / 3 > 0 ? STEPS / 3 : 1 ))
# The recipe's 20 warmup steps, shortened when a slow machine affords only a short run.
WARMUP=$(( STEPS / 10 < 20 ? (STEPS / 10 > 0 ? STEPS / 10 : 1) : 20 ))
"$HYMBA" train "$RECIPE" "${DATA_SETS[@]}" --set run.steps="$STEPS" --set run.eval_every="$EVERY" \
  --set schedule.warmup_steps="$WARMUP" \
  --set run.ckpt_every="$EVERY" --set run.eval_batches=8 --out "$RUN_DIR" --resume auto
CKPT=$(ls "$RUN_DIR"/ckpt_*.h5 | sort | tail -n1)

# ---- 5. perplexity vs the unigram baseline ----
log "5/6 evaluation of $CKPT [$(elapsed)]"
"$HYMBA" eval --checkpoint "$CKPT" --data "$TOKENS" --batches 16 --unigram "$TOKENS" | tee "$RUN_DIR/eval.txt"

# ---- 6. plot and samples ----
log "6/6 plots and samples [$(elapsed)]"
if command -v gnuplot >/dev/null; then
  "$HYMBA" plot "$RUN_DIR"
else
  log "gnuplot not installed: skipping the plots (apt-get install gnuplot-nox)"
fi
if "$HYMBA" generate --help >/dev/null 2>&1; then
  # One batch of three prompts of different lengths (left-padded inside generate).
  "$HYMBA" generate --checkpoint "$CKPT" --tokenizer "$DATA_DIR/tokenizer.model" \
    --prompt "The man" --prompt "In the morning" --prompt "She said that" \
    --max-tokens 40 --temperature 0.8 --top-k 40 --seed 1 || log "generate failed"
else
  log "this build has no 'hymba generate': skipping samples"
fi
log "done in $(elapsed): run dir $RUN_DIR (metrics.jsonl, loss.png, lr.png, $(basename "$CKPT"))"
