#include "core/device.h"

#include "core/error.h"
#ifdef HYMBA_WITH_CUDA
#include "core/cuda_ops.h"
#endif

namespace hymba {

Device Device::parse(const std::string& s) {
  if (s == "cpu") return Device::cpu();
  if (s == "cuda") return Device::cuda(0);
  if (s.rfind("cuda:", 0) == 0) {
    std::string idx = s.substr(5);
    bool digits = !idx.empty() && idx.find_first_not_of("0123456789") == std::string::npos;
    if (digits) return Device::cuda(std::stoi(idx));
  }
  HYMBA_USER_ERROR("unknown device '", s, "': expected cpu, cuda or cuda:N");
}

int cuda_device_count() {
#ifdef HYMBA_WITH_CUDA
  static const int n = cuda::device_count();
  return n;
#else
  return 0;
#endif
}

bool cuda_available() { return cuda_device_count() > 0; }

}  // namespace hymba
