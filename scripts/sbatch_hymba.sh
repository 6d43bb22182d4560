#!/bin/bash
# Data-parallel `hymba train` on Slurm: one task (process) per GPU, started by srun with
# PMIx so that MPI (and through it NCCL) sees every rank. Submit with
#   sbatch scripts/sbatch_hymba.sh configs/train/my-recipe.yaml [--set key=value ...]
# Adjust the #SBATCH lines to your cluster (partition, account, GPUs per node).
#SBATCH --job-name=hymba-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
#SBATCH --signal=TERM@300
set -euo pipefail

recipe=${1:?usage: sbatch scripts/sbatch_hymba.sh RECIPE.yaml [hymba train options]}
shift
hymba=${HYMBA:-$(command -v hymba || echo build-release/bin/hymba)}

# CPU threads per rank: the cores Slurm gave this task.
export HYMBA_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
# A rank that waits this long in one collective aborts the job (a hung peer, a dead node).
export HYMBA_COLLECTIVE_TIMEOUT=${HYMBA_COLLECTIVE_TIMEOUT:-600}
# NCCL: report why a collective failed; pick the InfiniBand interfaces of your cluster here.
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
# export NCCL_SOCKET_IFNAME=ib0

# The job's checkpoints live under run.out_dir (shared storage, seen by every node). After a
# preemption or time limit, resubmitting the same command continues from the newest one.
# SIGTERM (sent to every task 300 s before the time limit by --signal) makes the ranks agree
# on a step, finish it, write a checkpoint and exit 0. --kill-on-bad-exit ends the step when
# a rank fails (hymba also aborts the MPI job itself).
srun --mpi=pmix --kill-on-bad-exit=1 "$hymba" train "$recipe" --resume auto "$@"
