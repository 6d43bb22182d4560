// Entry point of the `hymba` binary: dispatches to the registered subcommands.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "core/error.h"
#include "train/cli/args.h"
#include "train/cli/command.h"
#include "train/distributed.h"

namespace hymba::cli {

std::vector<Command>& registry() {
  static std::vector<Command> r;
  return r;
}

namespace {

void print_usage(FILE* out) {
  std::fprintf(out,
               "hymba %s: train, study and fine-tune small hybrid (attention + SSM) language models\n\n"
               "usage: hymba <command> [options]\n"
               "       hymba <command> --help    options of one command\n"
               "       hymba --version\n\ncommands:\n",
               HYMBA_VERSION);
  auto cmds = registry();
  std::sort(cmds.begin(), cmds.end(), [](const Command& a, const Command& b) { return a.name < b.name; });
  for (const auto& c : cmds) std::fprintf(out, "  %-12s %s\n", c.name.c_str(), c.summary.c_str());
}

}  // namespace
}  // namespace hymba::cli

namespace {

// OpenMP worker threads spin after each parallel region by default, and on a machine with
// few cores they take the cores that OpenBLAS's own threads need for the next matrix
// product (measured on 2 cores, tiny Hymba: 1,118 training tokens/s spinning, 1,600 passive).
// libgomp reads OMP_WAIT_POLICY only when it loads, before main, so the one way to change it
// for the whole run is to set it and exec ourselves once. A user's own setting wins.
void prefer_passive_openmp_wait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  execv("/proc/self/exe", argv);  // returns only on failure: then run as we are
}

}  // namespace

int main(int argc, char** argv) {
  using namespace hymba::cli;
  prefer_passive_openmp_wait(argv);
  if (argc < 2) {
    print_usage(stderr);
    return 2;
  }
  std::string cmd = argv[1];
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    print_usage(stdout);
    return 0;
  }
  if (cmd == "--version" || cmd == "version") {
    std::printf("hymba %s (CUDA %s)\n", HYMBA_VERSION,
#ifdef HYMBA_WITH_CUDA
                "enabled"
#else
                "disabled"
#endif
    );
    return 0;
  }
  for (const auto& c : registry()) {
    if (c.name != cmd) continue;
    std::vector<std::string> args(argv + 2, argv + argc);
    try {
      return c.run(args);
    } catch (const ArgError& e) {
      std::fprintf(stderr, "hymba %s: %s (see hymba %s --help)\n", cmd.c_str(), e.what(), cmd.c_str());
      return 2;
    } catch (const hymba::UserError& e) {
      // Several ranks: prints "[rank R] error: ..." and aborts the whole job (MPI_Abort), so
      // the other ranks do not wait forever in their next collective.
      hymba::train::fail_job(e.what());
      hymba::train::finalize_distributed();
      return 1;
    } catch (const std::exception& e) {
      hymba::train::fail_job(e.what(), "internal error");
      hymba::train::finalize_distributed();
      return 1;
    }
  }
  std::fprintf(stderr, "hymba: unknown command '%s'\n\n", cmd.c_str());
  print_usage(stderr);
  return 2;
}
