// Where a tensor's storage lives.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>

namespace hymba {

enum class DeviceType : uint8_t { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  constexpr Device() = default;
  constexpr Device(DeviceType t, int i = 0) : type(t), index(t == DeviceType::CPU ? 0 : i) {}
  static constexpr Device cpu() { return Device(DeviceType::CPU); }
  static constexpr Device cuda(int i = 0) { return Device(DeviceType::CUDA, i); }

  constexpr bool is_cpu() const { return type == DeviceType::CPU; }
  constexpr bool is_cuda() const { return type == DeviceType::CUDA; }
  constexpr bool operator==(const Device&) const = default;
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
  // Parses "cpu", "cuda", "cuda:N"; throws UserError otherwise.
  static Device parse(const std::string& s);
};

inline std::ostream& operator<<(std::ostream& os, const Device& d) { return os << d.str(); }

// True when the library was built with CUDA and at least one GPU is visible.
bool cuda_available();
int cuda_device_count();
// True when this build of the library contains CUDA code at all.
constexpr bool built_with_cuda() {
#ifdef HYMBA_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace hymba
