#include "train/device_info.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

namespace hymba::train {

namespace {
std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return s;
}
bool has(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }
}  // namespace

double peak_bf16_flops_for_name(const std::string& device_name) {
  const std::string n = lower(device_name);
  // Most specific first: "H100 PCIe" and "H100 NVL" must not fall through to the SXM figure.
  if (has(n, "h200")) return 989e12;
  if (has(n, "h100")) {
    if (has(n, "pcie")) return 756e12;
    if (has(n, "nvl")) return 835e12;
    return 989e12;  // SXM5 ("H100 80GB HBM3", "H100 SXM5")
  }
  if (has(n, "a100")) return 312e12;  // SXM4 and PCIe alike
  return 0.0;
}

double peak_flops(const std::string& device_name, double override_tflops) {
  if (override_tflops > 0) return override_tflops * 1e12;
  return peak_bf16_flops_for_name(device_name);
}

std::string format_flops(double achieved_flops, double peak) {
  if (!(achieved_flops > 0)) return "";
  std::string s = fmt::format(" | {:.1f} TFLOP/s", achieved_flops / 1e12);
  if (peak > 0) s += fmt::format(" | MFU {:.1f}%", 100.0 * achieved_flops / peak);
  return s;
}

#ifndef HYMBA_WITH_CUDA
std::string cuda_device_name(int) { return ""; }
#endif

}  // namespace hymba::train
