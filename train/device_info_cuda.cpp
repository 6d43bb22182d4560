#include <cuda_runtime_api.h>

#include "core/cuda_check.h"
#include "train/device_info.h"

namespace hymba::train {

std::string cuda_device_name(int index) {
  cudaDeviceProp prop{};
  HYMBA_CUDA_CHECK(cudaGetDeviceProperties(&prop, index), "reading the name of cuda:", index);
  return prop.name;
}

}  // namespace hymba::train
