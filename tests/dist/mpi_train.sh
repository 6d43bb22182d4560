#!/bin/sh
# End-to-end data parallelism through the CLI, run by ctest (dist.mpi2_hymba_train):
#   1. `MPIRUN hymba train` on 2 ranks trains, only rank 0 prints progress, a checkpoint appears;
#   2. one process resumes that checkpoint and continues (a different rank count);
#   3. a rank that fails (test-only HYMBA_TEST_FAIL_RANK=1) ends the whole job non-zero
#      within 30 s, with that rank's error shown.
# usage: mpi_train.sh HYMBA WORKDIR MPIRUN [MPIRUN ARGS...]   (e.g. mpirun -np 2 --oversubscribe)
set -u
hymba=$1
work=$2
shift 2
fail() { echo "FAIL: $*" >&2; exit 1; }

rm -rf "$work" && mkdir -p "$work" || fail "cannot create $work"
# MQAR needs no tokenizer: fixed samples of 17 tokens over a 64-token vocabulary.
"$hymba" prepare mqar --out "$work/data" --vocab 64 --seq 16 --pairs 2 --count 256 --val-count 16 \
  > "$work/prepare.log" 2>&1 || { cat "$work/prepare.log"; fail "hymba prepare mqar"; }
cat > "$work/cfg.yaml" <<YAML
model:
  vocab_size: 64
  hidden_size: 16
  num_layers: 2
  block: hybrid
  num_heads: 2
  num_kv_heads: 1
  head_dim: 8
  v_head_dim: 16
  ssm: {d_state: 4, d_conv: 4, expand: 2, dt_rank: 2}
  mlp: {intermediate_size: 32}
  num_meta_tokens: 2
  sliding_window: 4
  full_attention_layers: [0]
data: {train: $work/data, val: $work/data, seq_len: 16, mode: random}
optim: {lr: 0.01, weight_decay: 0.1, grad_clip: 1.0, zero: 1}
schedule: {kind: cosine, warmup_steps: 1, min_lr: 0.001, total_steps: 6}
run: {steps: 4, global_batch: 8, micro_batch: 2, seed: 3, log_every: 1, eval_every: 0, eval_batches: 2,
      ckpt_every: 0, keep_last: 0, out_dir: $work/run, ddp_bucket_mb: 0.004}
YAML

# 1. Two ranks.
"$@" "$hymba" train "$work/cfg.yaml" > "$work/ok.log" 2>&1
rc=$?
[ "$rc" -eq 0 ] || { cat "$work/ok.log"; fail "2-rank training exited $rc"; }
n=$(grep -c "step      1/4" "$work/ok.log")
[ "$n" = 1 ] || { cat "$work/ok.log"; fail "expected one progress line for step 1 (rank 0 only), got $n"; }
grep -q "data parallel: 2 ranks (mpi)" "$work/ok.log" || { cat "$work/ok.log"; fail "no data-parallel summary"; }
[ -f "$work/run/ckpt_00000004.h5" ] || fail "no checkpoint after 2-rank training"

# 2. The same run continues in one process (no launcher, no MPI).
"$hymba" train "$work/cfg.yaml" --resume auto --set run.steps=6 > "$work/resume.log" 2>&1
rc=$?
[ "$rc" -eq 0 ] || { cat "$work/resume.log"; fail "1-rank resume of the 2-rank checkpoint exited $rc"; }
grep -q "resumed from .*ckpt_00000004.h5 at step 4" "$work/resume.log" || { cat "$work/resume.log"; fail "no resume"; }
[ -f "$work/run/ckpt_00000006.h5" ] || fail "no checkpoint after the 1-rank continuation"

# 3. Rank 1 fails at its second step; rank 0 is then blocked in a collective and must be ended.
start=$(date +%s)
HYMBA_TEST_FAIL_RANK=1 HYMBA_COLLECTIVE_TIMEOUT=600 "$@" "$hymba" train "$work/cfg.yaml" --out "$work/fail" \
  > "$work/fail.log" 2>&1
rc=$?
elapsed=$(( $(date +%s) - start ))
[ "$rc" -ne 0 ] || { cat "$work/fail.log"; fail "a failing rank left the job exit status 0"; }
[ "$elapsed" -le 30 ] || { cat "$work/fail.log"; fail "the job took ${elapsed}s to end after a rank failed"; }
grep -q "\[rank 1\] internal error: .*injected failure" "$work/fail.log" ||
  { cat "$work/fail.log"; fail "the failing rank's error is not shown"; }
echo "ok: 2-rank training, 1-rank resume, failing rank ended the job in ${elapsed}s (exit $rc)"
rm -rf "$work"
