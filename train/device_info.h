// What the trainer reports about the device it runs on: the GPU's name and its peak dense
// bf16 FLOP/s, for model FLOP utilization (MFU) in the progress line:
//
//   MFU = train_flops_per_token (train/model_info.h) x tokens per second / peak FLOP/s
//
// Peaks are the vendors' dense (no 2:4 sparsity) bf16 tensor-core figures. A card missing
// from the table gives 0 (unknown): the trainer then prints achieved TFLOP/s without MFU,
// unless run.peak_tflops gives the peak.
#pragma once

#include <string>

namespace hymba::train {

// Peak dense bf16 FLOP/s of a GPU from its name as cudaGetDeviceProperties reports it
// ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA A100-SXM4-80GB"); 0 when unknown.
// Case-insensitive.
double peak_bf16_flops_for_name(const std::string& device_name);

// The name of CUDA device `index`; "" in a build without CUDA.
std::string cuda_device_name(int index);

// The peak used for MFU: override_tflops * 1e12 when > 0, else the table's value for
// `device_name` (0: unknown).
double peak_flops(const std::string& device_name, double override_tflops);

// "| 123.4 TFLOP/s | MFU 41.2%" (MFU only with a known peak); "" when achieved_flops <= 0.
std::string format_flops(double achieved_flops, double peak);

}  // namespace hymba::train
