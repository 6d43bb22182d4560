#include "core/parallel.h"

#include <omp.h>

#include <cstdlib>
#include <string>
#include <thread>

#include "core/error.h"

namespace hymba {
namespace {

int initial_threads() {
  if (const char* e = std::getenv("HYMBA_NUM_THREADS")) {
    char* end = nullptr;
    long v = std::strtol(e, &end, 10);
    if (*e == '\0' || *end != '\0' || v < 1 || v > 4096)
      HYMBA_USER_ERROR("HYMBA_NUM_THREADS='", e, "': expected a positive integer");
    return int(v);
  }
  unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : int(hc);
}

int& threads_ref() {
  static int n = initial_threads();
  return n;
}

}  // namespace

int num_threads() { return threads_ref(); }

void set_num_threads(int n) {
  HYMBA_CHECK(n >= 1, "set_num_threads: n must be >= 1, got ", n);
  threads_ref() = n;
  omp_set_num_threads(n);
}

}  // namespace hymba
