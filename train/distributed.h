// The hymba process in a data-parallel job: launcher detection, MPI's lifetime, the job's
// communicator, and making one rank's failure end every rank.
//
// A process started by an MPI launcher (mpirun/mpiexec of Open MPI, MPICH/Hydra, or
// `srun --mpi=pmix|pmi2` under Slurm) initializes MPI; a plain `hymba train` does not touch
// MPI at all and trains alone. Detection reads the variables the launchers set:
// OMPI_COMM_WORLD_SIZE (Open MPI), PMI_SIZE / PMI_RANK (Hydra, Slurm PMI2), PMIX_RANK
// (PMIx: Open MPI 5, Slurm --mpi=pmix). A bare `srun` without --mpi sets none of them and
// would start N independent single-process runs, so it is not treated as a launch.
//
// A build without MPI (cmake -DHYMBA_WITH_MPI=OFF, or AUTO where MPI is missing) always runs
// one process (rank 0 of 1); init_distributed() then refuses, with a UserError, a launch of
// several processes (OMPI_COMM_WORLD_SIZE, PMI_SIZE or srun's SLURM_STEP_NUM_TASKS above 1).
//
// Failure: an uncaught error in any rank goes through fail_job(), which prints
// "[rank R] error: ..." and calls MPI_Abort: the launcher then kills every rank within
// seconds instead of leaving them blocked in the next collective. A collective that does not
// complete within collective_timeout_seconds() throws (naming the call), which reaches the
// same path, so a peer that died without MPI noticing cannot hang the job forever either.
#pragma once

#include <memory>
#include <string>

#include "train/communicator.h"

namespace hymba::train {

// True when the environment says an MPI launcher started this process.
bool launched_by_mpi();

// Initializes MPI (thread level FUNNELED: only the main thread calls MPI) when launched_by_mpi()
// and not done yet; no-op otherwise. Installs a rank prefix in spdlog's pattern when the job
// has more than one rank. Safe to call more than once. Without MPI: throws UserError when a
// launcher started several processes, else does nothing.
void init_distributed();
// MPI_Finalize when init_distributed() initialized MPI. Call on the success path only: after
// an error the job is aborted instead (fail_job), because finalizing waits for the others.
void finalize_distributed();
bool distributed_initialized();  // MPI is up (init_distributed or the test main did it)

// This process's rank and the job's size (0 and 1 without MPI).
int job_rank();
int job_world();

// The job's communicator: MPI over every rank when MPI is up and the job has more than one
// rank, else the single-process one.
std::shared_ptr<Communicator> job_communicator();

// HYMBA_COLLECTIVE_TIMEOUT in seconds (default 600; a positive number, else UserError).
double collective_timeout_seconds();

// Reports an error that ends this process: prints "[rank R] <kind>: <message>" to stderr
// (just "<kind>: <message>" in a single process) and, when the job has several ranks, calls
// MPI_Abort(MPI_COMM_WORLD, 1) so that the launcher ends every rank. Returns (for a single
// process) so the caller can exit with its own status.
void fail_job(const std::string& message, const char* kind = "error");

// Test-only fault injection: when HYMBA_TEST_FAIL_RANK equals `rank` and `step` equals
// HYMBA_TEST_FAIL_STEP (default 1), throws hymba::Error("injected failure ..."). Used by the
// test that checks a failing rank ends `mpirun -np 2 hymba train` quickly; never set it in a
// real run.
void maybe_inject_test_failure(int rank, int64_t step);

}  // namespace hymba::train
