#include "train/distributed.h"

#ifdef HYMBA_WITH_MPI
#include <mpi.h>
#endif
#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "core/error.h"

namespace hymba::train {
namespace {

#ifdef HYMBA_WITH_MPI
bool g_we_initialized = false;
#endif

bool env_set(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0';
}

int64_t env_int(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  errno = 0;
  long long x = std::strtoll(v, &end, 10);
  if (errno != 0 || end == v || *end != '\0') HYMBA_USER_ERROR(name, ": expected an integer, got '", v, "'");
  return int64_t(x);
}

}  // namespace

bool launched_by_mpi() {
  return env_set("OMPI_COMM_WORLD_SIZE") || env_set("PMI_SIZE") || env_set("PMI_RANK") || env_set("PMIX_RANK");
}

#ifdef HYMBA_WITH_MPI

bool distributed_initialized() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  return init && !fin;
}

void init_distributed() {
  if (!launched_by_mpi() || distributed_initialized()) return;
  int provided = 0;
  if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
    HYMBA_FAIL("MPI_Init_thread failed");
  g_we_initialized = true;
  if (job_world() > 1) {
    // Every rank logs warnings and errors; the prefix says whose they are.
    spdlog::set_pattern(fmt::format("[%Y-%m-%d %H:%M:%S.%e] [rank {}] [%^%l%$] %v", job_rank()));
  }
}

void finalize_distributed() {
  if (g_we_initialized && distributed_initialized()) MPI_Finalize();
  g_we_initialized = false;
}

int job_rank() {
  if (!distributed_initialized()) return 0;
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

int job_world() {
  if (!distributed_initialized()) return 1;
  int w = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &w);
  return w;
}

std::shared_ptr<Communicator> job_communicator() {
  if (job_world() > 1) return make_mpi_world_communicator();
  return make_single_process_communicator();
}

#else  // a build without MPI (HYMBA_WITH_MPI=OFF): always one process

void init_distributed() {
  // Every copy started by a launcher would train alone on the whole batch and write the same
  // files: refuse instead. Ranks of 1 (`mpirun -np 1`) are a single process and fine.
  struct Launch {
    const char* var;
    const char* launcher;
  };
  // SLURM_STEP_NUM_TASKS, not SLURM_NTASKS: a batch script of an `sbatch -n 8` allocation has
  // SLURM_NTASKS=8 while running one process; srun sets the step's own count.
  static constexpr Launch kLaunches[] = {{"OMPI_COMM_WORLD_SIZE", "Open MPI's mpirun"},
                                         {"PMI_SIZE", "an MPICH/Hydra or Slurm PMI launcher"},
                                         {"SLURM_STEP_NUM_TASKS", "srun"}};
  for (const Launch& l : kLaunches) {
    const int64_t n = env_int(l.var, 1);
    if (n > 1)
      HYMBA_USER_ERROR("this build has no MPI (configured with HYMBA_WITH_MPI=OFF or without MPI found), but ",
                       l.launcher, " started ", n, " processes (", l.var, "=", n,
                       "): each would train alone. Rebuild with MPI (apt install libopenmpi-dev; "
                       "cmake -DHYMBA_WITH_MPI=ON) for data parallelism, or start one process.");
  }
}

void finalize_distributed() {}
bool distributed_initialized() { return false; }
int job_rank() { return 0; }
int job_world() { return 1; }
std::shared_ptr<Communicator> job_communicator() { return make_single_process_communicator(); }

#endif

double collective_timeout_seconds() {
  const int64_t t = env_int("HYMBA_COLLECTIVE_TIMEOUT", 600);
  if (t <= 0) HYMBA_USER_ERROR("HYMBA_COLLECTIVE_TIMEOUT: expected a positive number of seconds, got ", t);
  return double(t);
}

void fail_job(const std::string& message, const char* kind) {
#ifdef HYMBA_WITH_MPI
  if (job_world() > 1) {
    std::fprintf(stderr, "[rank %d] %s: %s\n", job_rank(), kind, message.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::_Exit(1);  // MPI_Abort does not return; this is for an MPI that would
  }
#endif
  std::fprintf(stderr, "%s: %s\n", kind, message.c_str());
}

void maybe_inject_test_failure(int rank, int64_t step) {
  const int64_t fail_rank = env_int("HYMBA_TEST_FAIL_RANK", -1);
  if (fail_rank < 0 || fail_rank != rank) return;
  if (step != env_int("HYMBA_TEST_FAIL_STEP", 1)) return;
  HYMBA_FAIL("injected failure (HYMBA_TEST_FAIL_RANK=", fail_rank, ") at step ", step);
}

}  // namespace hymba::train
