// The CUDA side of the tensor core: host<->device copies, strided copies and casts, fill,
// Philox fills, the caching allocator, and the runtime helpers.
//
// The CPU implementation is the reference everywhere: a CUDA result must match the CPU's
// bit for bit (random normals: to the last ulps of the device's log/cos). Destinations are
// poisoned before every write so that an element a kernel skipped cannot pass as correct.
//
// On a machine without a GPU the GPU tests skip; the device-choice rule, the error macros
// and the "no device" behaviour are checked everywhere.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/allocator.h"
#include "core/device.h"
#include "core/dtype.h"
#include "core/philox.h"
#include "core/rng.h"
#include "core/storage.h"
#include "core/tensor.h"

#ifdef HYMBA_WITH_CUDA
#include <cuda_runtime_api.h>

#include "core/cuda_check.h"
#include "core/cuda_ops.h"
#endif

namespace hymba {
namespace {

const DType kAllDtypes[] = {DType::F32, DType::F64, DType::BF16, DType::F16,
                            DType::I32, DType::I64, DType::U8};
const DType kFloatDtypes[] = {DType::F32, DType::F64, DType::BF16, DType::F16};

// GTEST_SKIP returns from the test body, so this must stay a macro.
#define HYMBA_REQUIRE_CUDA()                                          \
  do {                                                                \
    if (!::hymba::cuda_available()) GTEST_SKIP() << "no CUDA device"; \
  } while (0)

const Device kGpu = Device::cuda(0);

// ---------------------------------------------------------------- helpers

// A contiguous CPU tensor whose bytes are random: every bit pattern, NaNs and infinities
// included, which only a bit-exact copy reproduces.
Tensor random_bits(const Shape& shape, DType dt, uint64_t seed) {
  const size_t nbytes = size_t(shape_numel(shape)) * dtype_size(dt);
  auto storage = std::make_shared<Storage>(nbytes, Device::cpu());
  std::mt19937_64 rng(seed);
  auto* p = static_cast<unsigned char*>(storage->data());
  for (size_t i = 0; i < nbytes; ++i) p[i] = static_cast<unsigned char>(rng() >> 56);
  return Tensor::make(storage, shape, contiguous_strides(shape), 0, dt);
}

// Values that every dtype pair converts with defined behaviour: floats in [0, 250) with many
// mantissa bits (so bf16/f16 rounding is exercised; non-negative, so float -> u8 is defined),
// integers over their whole range (integer -> integer wraps, integer -> float rounds).
Tensor cast_source(const Shape& shape, DType dt, uint64_t seed) {
  const int64_t n = shape_numel(shape);
  std::mt19937_64 rng(seed);
  if (is_floating(dt)) {
    std::vector<double> v(static_cast<size_t>(n));
    for (auto& x : v) x = double(rng() % 250) + double(rng() >> 11) * 0x1.0p-53;
    return from_vector<double>(v, shape, DType::F64).to(dt);
  }
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = int64_t(rng());
  // i64 -> narrower integers wraps (defined), so this covers each type's full range.
  return from_vector<int64_t>(v, shape, DType::I64).to(dt);
}

// Fills t with values no correct copy produces here: NaN for floats, an odd sentinel for
// integers, so an element a kernel did not write shows up as a mismatch.
void poison(const Tensor& t) {
  if (is_floating(t.dtype())) {
    t.fill_(std::numeric_limits<double>::quiet_NaN());
  } else {
    t.fill_(t.dtype() == DType::U8 ? 171.0 : -1234567.0);
  }
}

double element_as_double(const unsigned char* p, DType dt) {
  return dispatch_all(dt, "element_as_double", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T v;
    std::memcpy(&v, p, sizeof(T));
    if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, f16>) {
      return double(float(v));
    } else {
      return double(v);
    }
  });
}

// Both tensors, brought to the CPU, have the same dtype, shape and bytes. Reports the first
// mismatching elements with their row-major index and values.
void expect_same_bits(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.dtype(), want.dtype()) << what;
  ASSERT_EQ(got.shape(), want.shape()) << what;
  Tensor g = got.to(Device::cpu()).contiguous();
  Tensor w = want.to(Device::cpu()).contiguous();
  const size_t es = dtype_size(g.dtype());
  const auto* gp = static_cast<const unsigned char*>(g.data_ptr());
  const auto* wp = static_cast<const unsigned char*>(w.data_ptr());
  int64_t bad = 0;
  for (int64_t i = 0; i < g.numel(); ++i) {
    if (std::memcmp(gp + i * es, wp + i * es, es) == 0) continue;
    if (bad < 5) {
      ADD_FAILURE() << what << ": element " << i << " of " << g.meta_str() << " is "
                    << element_as_double(gp + i * es, g.dtype()) << ", expected "
                    << element_as_double(wp + i * es, g.dtype());
    }
    ++bad;
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << g.numel() << " elements differ";
}

// Relative closeness (with an absolute floor of rel * floor), for random normals whose
// Box-Muller runs through the device's log/cos.
void expect_close(const Tensor& got, const Tensor& want, double rel, double floor,
                  const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  std::vector<double> g = got.to_vector<double>();
  std::vector<double> w = want.to_vector<double>();
  int64_t bad = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    const double tol = rel * std::max(std::abs(w[i]), floor);
    if (std::abs(g[i] - w[i]) <= tol) continue;
    if (bad < 5) ADD_FAILURE() << what << ": element " << i << " is " << g[i] << ", expected " << w[i];
    ++bad;
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << g.size() << " elements differ";
}

std::string name(DType a) { return dtype_name(a); }
std::string name(DType a, DType b) { return str(dtype_name(a), "->", dtype_name(b)); }

// ---------------------------------------------------------------- without a GPU too

TEST(CudaRuntime, AvailabilityIsConsistent) {
  EXPECT_EQ(cuda_available(), cuda_device_count() > 0);
  if (!built_with_cuda()) {
    EXPECT_FALSE(cuda_available());
  }
#ifdef HYMBA_WITH_CUDA
  // Never throws, and agrees with the cached count, GPU or not.
  EXPECT_EQ(cuda::device_count(), cuda_device_count());
#endif
}

TEST(CudaRuntime, CudaTensorWithoutDeviceIsAClearError) {
  if (cuda_available()) GTEST_SKIP() << "a CUDA device is present";
  try {
    Tensor t = empty({4}, TensorOptions(DType::F32, kGpu));
    FAIL() << "allocating on cuda:0 without a device succeeded";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("cuda"), std::string::npos) << msg;
  }
}

#ifdef HYMBA_WITH_CUDA

TEST(CudaRuntime, CheckMacrosNameCallErrorAndLocation) {
  try {
    cudaError_t failing_call = cudaErrorInvalidValue;
    HYMBA_CUDA_CHECK(failing_call, "while testing ", 42);
    FAIL() << "HYMBA_CUDA_CHECK did not throw";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("cudaErrorInvalidValue"), std::string::npos) << msg;
    EXPECT_NE(msg.find("in failing_call"), std::string::npos) << msg;
    EXPECT_NE(msg.find("while testing 42"), std::string::npos) << msg;
    EXPECT_NE(msg.find("test_cuda_core.cpp:"), std::string::npos) << msg;
  }
  try {
    cublasStatus_t failing_blas = CUBLAS_STATUS_NOT_INITIALIZED;
    HYMBA_CUBLAS_CHECK(failing_blas);
    FAIL() << "HYMBA_CUBLAS_CHECK did not throw";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("CUBLAS_STATUS_NOT_INITIALIZED"), std::string::npos) << msg;
    EXPECT_NE(msg.find("in failing_blas"), std::string::npos) << msg;
  }
  EXPECT_NO_THROW(HYMBA_CUDA_CHECK(cudaSuccess));
  EXPECT_NO_THROW(HYMBA_CUBLAS_CHECK(CUBLAS_STATUS_SUCCESS));
}

TEST(CudaRuntime, DeviceChoiceFollowsLocalRank) {
  auto env = [](std::map<std::string, std::string> vars) {
    return [vars = std::move(vars)](const char* k) -> const char* {
      auto it = vars.find(k);
      return it == vars.end() ? nullptr : it->second.c_str();
    };
  };
  EXPECT_EQ(cuda::choose_device(4, env({})), 0);
  EXPECT_EQ(cuda::choose_device(4, env({{"OMPI_COMM_WORLD_LOCAL_RANK", "3"}})), 3);
  EXPECT_EQ(cuda::choose_device(4, env({{"SLURM_LOCALID", "2"}})), 2);
  EXPECT_EQ(cuda::choose_device(4, env({{"LOCAL_RANK", "1"}})), 1);
  EXPECT_EQ(cuda::choose_device(4, env({{"MPI_LOCALRANKID", "1"}})), 1);
  // One GPU bound per task: every rank uses its only visible device.
  EXPECT_EQ(cuda::choose_device(1, env({{"SLURM_LOCALID", "3"}})), 0);
  EXPECT_EQ(cuda::choose_device(2, env({{"OMPI_COMM_WORLD_LOCAL_RANK", "5"}})), 1);
  // mpirun inside a Slurm allocation: the MPI rank wins over the inherited SLURM_LOCALID.
  EXPECT_EQ(cuda::choose_device(4, env({{"SLURM_LOCALID", "0"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "3"}})), 3);
  EXPECT_EQ(cuda::choose_device(4, env({{"SLURM_LOCALID", "0"}, {"MV2_COMM_WORLD_LOCAL_RANK", "2"}})), 2);
  // An empty variable counts as unset.
  EXPECT_EQ(cuda::choose_device(4, env({{"OMPI_COMM_WORLD_LOCAL_RANK", ""}, {"LOCAL_RANK", "2"}})), 2);
  for (const char* bad : {"x", "-1", "1.5", " 1", "2x", "+1"}) {
    EXPECT_THROW(cuda::choose_device(4, env({{"LOCAL_RANK", bad}})), UserError) << bad;
  }
  EXPECT_THROW(cuda::choose_device(0, env({})), Error);
}

TEST(CudaRuntime, DeviceSelectionAndSync) {
  HYMBA_REQUIRE_CUDA();
  const int n = cuda::device_count();
  ASSERT_GE(n, 1);
  const int before = cuda::current_device();
  cuda::set_device(n - 1);
  EXPECT_EQ(cuda::current_device(), n - 1);
  cuda::set_device(before);
  EXPECT_EQ(cuda::current_device(), before);
  EXPECT_THROW(cuda::set_device(n), Error);
  EXPECT_THROW(cuda::set_device(-1), Error);
  EXPECT_NO_THROW(cuda::synchronize());
  const int chosen = cuda::choose_device_from_env();
  EXPECT_GE(chosen, 0);
  EXPECT_LT(chosen, n);
}

TEST(CudaRuntime, RawMemcpyRoundTrip) {
  HYMBA_REQUIRE_CUDA();
  Allocator* a = get_allocator(kGpu);
  const size_t n = 3 * 1031 + 5;  // not a multiple of any vector width
  std::vector<unsigned char> src(n), back(n, 0);
  for (size_t i = 0; i < n; ++i) src[i] = static_cast<unsigned char>(i * 131 + 7);
  void* d1 = a->allocate(n);
  void* d2 = a->allocate(n);
  cuda::memcpy_h2d(d1, src.data(), n);
  cuda::memcpy_d2d(d2, d1, n);
  cuda::memcpy_d2h(back.data(), d2, n);
  EXPECT_EQ(src, back);
  EXPECT_NO_THROW(cuda::memcpy_h2d(d1, src.data(), 0));  // zero bytes: no CUDA call at all
  a->deallocate(d1, n);
  a->deallocate(d2, n);
}

#endif  // HYMBA_WITH_CUDA

// ---------------------------------------------------------------- host <-> device copies

TEST(CudaCopy, RoundTripIsBitExactForEveryDtype) {
  HYMBA_REQUIRE_CUDA();
  const Shape shapes[] = {{3, 1, 1031}, {1}, {}, {0}, {7, 0, 3}, {2, 3, 5, 7, 11}, {2, (1 << 20) + 3}};
  uint64_t seed = 1;
  for (DType dt : kAllDtypes) {
    for (const Shape& s : shapes) {
      Tensor cpu = random_bits(s, dt, seed++);
      Tensor gpu = cpu.to(kGpu);
      EXPECT_TRUE(gpu.is_cuda());
      EXPECT_EQ(gpu.device(), kGpu);
      EXPECT_EQ(gpu.shape(), s);
      expect_same_bits(gpu.to(Device::cpu()), cpu, str("round trip ", name(dt), shape_str(s)));
    }
  }
}

TEST(CudaCopy, StridedHostViewsCrossDevices) {
  HYMBA_REQUIRE_CUDA();
  for (DType dt : kAllDtypes) {
    Tensor base = random_bits({6, 9, 5}, dt, 11);
    // CPU strided view -> CUDA.
    Tensor view = base.permute({2, 0, 1}).slice(2, 1, 9, 2);
    expect_same_bits(view.to(kGpu), view.contiguous(), "cpu view -> cuda " + name(dt));
    // CUDA contiguous -> a strided CPU destination; the rest of it must stay untouched.
    Tensor dst_base = random_bits({5, 6, 8}, dt, 12);
    Tensor want_base = dst_base.clone();
    Tensor src = random_bits({5, 6, 4}, dt, 13);
    dst_base.slice(2, 1, 8, 2).copy_(src.to(kGpu));
    want_base.slice(2, 1, 8, 2).copy_(src);
    expect_same_bits(dst_base, want_base, "cuda -> cpu view " + name(dt));
    // CPU contiguous -> a strided CUDA destination.
    Tensor gdst = random_bits({5, 6, 8}, dt, 12).to(kGpu);
    gdst.slice(2, 1, 8, 2).copy_(src);
    expect_same_bits(gdst, want_base, "cpu -> cuda view " + name(dt));
  }
}

// ---------------------------------------------------------------- device strided copies

// Runs the same copy on CPU and on CUDA: src_of and dst_of build views of a base tensor.
template <typename SrcView, typename DstView>
void check_device_copy(const Tensor& src_base, const Tensor& dst_base, SrcView src_of, DstView dst_of,
                       const std::string& what) {
  Tensor cpu_dst = dst_base.clone();
  poison(cpu_dst);
  dst_of(cpu_dst).copy_(src_of(src_base));

  Tensor gpu_src = src_base.to(kGpu);
  Tensor gpu_dst = dst_base.to(kGpu);
  poison(gpu_dst);
  dst_of(gpu_dst).copy_(src_of(gpu_src));
  expect_same_bits(gpu_dst, cpu_dst, what);
}

TEST(CudaCopy, SameDtypeLayoutsMatchCpu) {
  HYMBA_REQUIRE_CUDA();
  for (DType dt : kAllDtypes) {
    // Random bits: a same-dtype copy must move bits, NaN payloads included. The reference is
    // a byte-level gather, independent of any conversion code.
    Tensor src = random_bits({4, 5, 7}, dt, 21);
    Tensor gpu = empty({7, 4, 5}, TensorOptions(dt, kGpu));
    poison(gpu);
    gpu.copy_(src.to(kGpu).permute({2, 0, 1}));
    Tensor want = empty({7, 4, 5}, dt);
    const size_t es = dtype_size(dt);
    auto* wp = static_cast<unsigned char*>(want.data_ptr());
    const auto* sp = static_cast<const unsigned char*>(src.data_ptr());
    for (int64_t k = 0; k < 7; ++k)
      for (int64_t i = 0; i < 4; ++i)
        for (int64_t j = 0; j < 5; ++j)
          std::memcpy(wp + ((k * 4 + i) * 5 + j) * es, sp + ((i * 5 + j) * 7 + k) * es, es);
    expect_same_bits(gpu, want, "transpose bits " + name(dt));

    Tensor vals = cast_source({10, 33}, dt, 22);
    Tensor dst = cast_source({6, 40}, dt, 23);
    auto id = [](const Tensor& t) { return t; };
    check_device_copy(vals, cast_source({33, 10}, dt, 25), [](const Tensor& t) { return t.t(); }, id,
                      "transpose " + name(dt));
    check_device_copy(vals, dst, [](const Tensor& t) { return t.slice(1, 1, 33, 3).narrow(0, 2, 6); },
                      [](const Tensor& t) { return t.slice(1, 3, 36, 3); }, "step slices " + name(dt));
    check_device_copy(
        vals, dst, [](const Tensor& t) { return t.select(1, 4).narrow(0, 0, 6).unsqueeze(1).expand({6, 11}); },
        [](const Tensor& t) { return t.slice(1, 0, 33, 3); }, "broadcast " + name(dt));
    check_device_copy(vals, dst, [](const Tensor& t) { return t.select(0, 3).select(0, 7); },
                      [](const Tensor& t) { return t.select(0, 5).select(0, 39); }, "scalar " + name(dt));
    check_device_copy(vals, vals, id, id, "contiguous " + name(dt));
    // 12 dims: the most the CPU iterator takes, none of them mergeable.
    Tensor big = cast_source({2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3}, dt, 24);
    check_device_copy(big, cast_source({3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2}, dt, 26),
                      [](const Tensor& t) { return t.permute({11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0}); }, id,
                      "12-dim " + name(dt));
  }
}

TEST(CudaCopy, EveryCastMatchesCpu) {
  HYMBA_REQUIRE_CUDA();
  for (DType st : kAllDtypes) {
    for (DType dt : kAllDtypes) {
      Tensor src = cast_source({3, 1, 1031}, st, 31 + int(st));
      Tensor dst_like = empty({1031, 3}, dt);
      // Contiguous to contiguous (the fast path), then transposed to contiguous.
      check_device_copy(src, empty({3, 1, 1031}, dt), [](const Tensor& t) { return t; },
                        [](const Tensor& t) { return t; }, "contiguous cast " + name(st, dt));
      check_device_copy(src, dst_like, [](const Tensor& t) { return t.squeeze(1).t(); },
                        [](const Tensor& t) { return t; }, "transposed cast " + name(st, dt));
      // And via the public conversion on the device.
      expect_same_bits(src.to(kGpu).to(dt), src.to(dt), "to(dtype) " + name(st, dt));
    }
  }
}

TEST(CudaCopy, OverlappingSelfCopyReadsBeforeWriting) {
  HYMBA_REQUIRE_CUDA();
  for (DType dt : {DType::F32, DType::BF16, DType::I64}) {
    Tensor x = cast_source({33, 33}, dt, 41);
    Tensor want = x.t().clone();
    Tensor g = x.to(kGpu);
    g.copy_(g.t());
    expect_same_bits(g, want, "x.copy_(x.t()) " + name(dt));
    // Shifted views of one buffer: dst[i] = src[i + 1], and the other direction.
    Tensor v = cast_source({1000}, dt, 42);
    Tensor gv = v.to(kGpu);
    gv.narrow(0, 0, 999).copy_(gv.narrow(0, 1, 999));
    Tensor wv = v.clone();
    wv.narrow(0, 0, 999).copy_(v.narrow(0, 1, 999).clone());
    expect_same_bits(gv, wv, "shift left " + name(dt));
    gv = v.to(kGpu);
    gv.narrow(0, 1, 999).copy_(gv.narrow(0, 0, 999));
    wv = v.clone();
    wv.narrow(0, 1, 999).copy_(v.narrow(0, 0, 999).clone());
    expect_same_bits(gv, wv, "shift right " + name(dt));
    // A view copied onto itself is left as it is.
    gv.copy_(gv);
    expect_same_bits(gv, wv, "self copy " + name(dt));
  }
}

#ifdef HYMBA_WITH_CUDA
TEST(CudaCopy, RejectsBadArguments) {
  HYMBA_REQUIRE_CUDA();
  Tensor a = zeros({4, 5}, TensorOptions(DType::F32, kGpu));
  Tensor b = zeros({5, 4}, TensorOptions(DType::F32, kGpu));
  Tensor c = zeros({4, 5}, DType::F32);
  EXPECT_THROW(cuda::copy_strided(a, b), Error);  // shapes differ
  EXPECT_THROW(cuda::copy_strided(a, c), Error);  // src on the CPU
  // A destination with stride 0 would have several elements written to one location.
  Tensor row = zeros({1, 5}, TensorOptions(DType::F32, kGpu)).expand({4, 5});
  EXPECT_THROW(cuda::copy_strided(row, a), Error);
}

// Past 2^31 elements the kernels switch to 64-bit indexing; check the far end of such a
// tensor, where 32-bit offsets would have wrapped.
TEST(CudaCopy, SixtyFourBitIndexing) {
  HYMBA_REQUIRE_CUDA();
  const int64_t half = (int64_t(1) << 30) + 7;  // 2 * half > INT32_MAX elements
  const size_t need = size_t(2 * half) * 4 * 2 + (size_t(1) << 30);
  size_t free_b = 0, total_b = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_b, &total_b), cudaSuccess);
  if (free_b < need) GTEST_SKIP() << "needs " << need / (1 << 20) << " MiB free on the GPU";
  {
    Generator gen(99);
    const uint64_t offset0 = gen.offset();
    Tensor src = rand({2, half}, TensorOptions(DType::F32, kGpu), &gen);  // contiguous, 64-bit
    Tensor dst = empty({half, 2}, TensorOptions(DType::F32, kGpu));
    poison(dst);
    dst.copy_(src.t());  // strided, 64-bit
    const int64_t tail = 5;
    std::vector<float> got = dst.narrow(0, half - tail, tail).to_vector<float>();
    for (int64_t j = 0; j < tail; ++j) {
      for (int64_t r = 0; r < 2; ++r) {
        const uint64_t i = uint64_t(r * half + half - tail + j);  // row-major index in src
        const float want = float(philox::uniform_at(99, offset0, i, false));
        EXPECT_EQ(got[size_t(j * 2 + r)], want) << "element " << i;
      }
    }
  }
  get_allocator(kGpu)->empty_cache();
}
#endif  // HYMBA_WITH_CUDA

// ---------------------------------------------------------------- fill

TEST(CudaFill, MatchesCpuForEveryDtypeAndLayout) {
  HYMBA_REQUIRE_CUDA();
  for (DType dt : kAllDtypes) {
    const double values[] = {0.0, 1.0, 7.0, is_floating(dt) ? -0.1 : 200.0,
                             is_floating(dt) ? std::numeric_limits<double>::infinity() : 3.0};
    for (double v : values) {
      auto contiguous = [](const Tensor& t) { return t; };
      auto strided = [](const Tensor& t) { return t.slice(1, 1, 1031, 3).t(); };
      auto expanded = [](const Tensor& t) { return t.narrow(1, 5, 1).expand({3, 40}); };
      for (int layout = 0; layout < 3; ++layout) {
        Tensor cpu = cast_source({3, 1031}, dt, 51);
        Tensor gpu = cpu.to(kGpu);
        auto view = [&](const Tensor& t) {
          return layout == 0 ? contiguous(t) : layout == 1 ? strided(t) : expanded(t);
        };
        view(cpu).fill_(v);
        view(gpu).fill_(v);
        expect_same_bits(gpu, cpu, str("fill ", v, " ", name(dt), " layout ", layout));
      }
    }
  }
  Tensor nan = empty({17}, TensorOptions(DType::BF16, kGpu));
  nan.fill_(std::numeric_limits<double>::quiet_NaN());
  for (double x : nan.to_vector<double>()) EXPECT_TRUE(std::isnan(x));
}

TEST(CudaFill, UnrepresentableIntegerIsAnError) {
  HYMBA_REQUIRE_CUDA();
  EXPECT_THROW(zeros({3}, TensorOptions(DType::U8, kGpu)).fill_(256.0), Error);
  EXPECT_THROW(zeros({3}, TensorOptions(DType::U8, kGpu)).fill_(-1.0), Error);
  EXPECT_THROW(zeros({3}, TensorOptions(DType::I32, kGpu)).fill_(std::nan("")), Error);
  EXPECT_THROW(zeros({3}, TensorOptions(DType::I64, kGpu)).fill_(9.3e18), Error);
  Tensor t = zeros({3}, TensorOptions(DType::I32, kGpu));
  t.fill_(-2147483648.0);
  EXPECT_EQ(t.to_vector<int32_t>(), std::vector<int32_t>(3, std::numeric_limits<int32_t>::min()));
  t.fill_(-2.7);  // truncates toward zero, like static_cast
  EXPECT_EQ(t.to_vector<int32_t>(), std::vector<int32_t>(3, -2));
}

// ---------------------------------------------------------------- random fills

TEST(CudaRandom, UniformIsBitIdenticalToCpu) {
  HYMBA_REQUIRE_CUDA();
  const Shape shapes[] = {{3, 1, 1031}, {1}, {5}, {4}, {2, 7}, {0}, {1 << 16}};
  for (DType dt : kFloatDtypes) {
    for (const Shape& s : shapes) {
      Generator gc(1234), gg(1234);
      for (int draw = 0; draw < 2; ++draw) {
        Tensor c = rand(s, TensorOptions(dt, Device::cpu()), &gc, -2.0, 3.0);
        Tensor g = rand(s, TensorOptions(dt, kGpu), &gg, -2.0, 3.0);
        expect_same_bits(g, c, str("rand ", name(dt), shape_str(s), " draw ", draw));
        EXPECT_EQ(gg.offset(), gc.offset());
      }
      EXPECT_EQ(gg.offset(), 2 * philox::blocks_needed(uint64_t(shape_numel(s)), dt == DType::F64));
    }
  }
}

TEST(CudaRandom, NormalMatchesCpu) {
  HYMBA_REQUIRE_CUDA();
  const Shape shapes[] = {{3, 1, 1031}, {1}, {3}, {2, 7}, {1 << 16}};
  for (DType dt : kFloatDtypes) {
    // f32 and f64: Box-Muller in double on both sides, so only the device's last-ulp log/cos
    // differences remain; bf16/f16 may then round to the neighbouring value.
    const double rel = dt == DType::F64 ? 1e-12 : dt == DType::F32 ? 1e-6 : dt == DType::F16 ? 1e-3 : 1e-2;
    for (const Shape& s : shapes) {
      Generator gc(77), gg(77);
      gc.advance(5);
      gg.advance(5);
      for (int draw = 0; draw < 2; ++draw) {
        Tensor c = randn(s, TensorOptions(dt, Device::cpu()), &gc, 0.5, 2.0);
        Tensor g = randn(s, TensorOptions(dt, kGpu), &gg, 0.5, 2.0);
        expect_close(g, c, rel, 1e-3, str("randn ", name(dt), shape_str(s), " draw ", draw));
        EXPECT_EQ(gg.offset(), gc.offset());
      }
    }
  }
}

#ifdef HYMBA_WITH_CUDA
// philox_fill on a strided destination numbers elements in dst's row-major order.
TEST(CudaRandom, StridedDestinationUsesRowMajorOrder) {
  HYMBA_REQUIRE_CUDA();
  for (DType dt : kFloatDtypes) {
    for (bool normal : {false, true}) {
      Tensor base = empty({9, 14}, TensorOptions(dt, kGpu));
      poison(base);
      Tensor view = base.slice(1, 1, 14, 2).t();  // [7, 9], strides (2, 14)
      cuda::philox_fill(view, 5, 3, normal, 1.0, 4.0);
      Tensor want = empty({7, 9}, TensorOptions(DType::F64, Device::cpu()));
      auto* w = want.data<double>();
      const bool wide = dt == DType::F64;
      for (uint64_t i = 0; i < 63; ++i)
        w[i] = normal ? 1.0 + 4.0 * philox::normal_at(5, 3, i, wide)
                      : 1.0 + (4.0 - 1.0) * philox::uniform_at(5, 3, i, wide);
      Tensor want_dt = want.to(dt);
      if (normal) {
        const double rel = dt == DType::F64 ? 1e-12 : dt == DType::F32 ? 1e-6 : 1e-2;
        expect_close(view, want_dt, rel, 1e-3, str("strided randn ", name(dt)));
      } else {
        expect_same_bits(view, want_dt, str("strided rand ", name(dt)));
      }
      // The columns the view skips stay poisoned.
      std::vector<double> even = base.slice(1, 0, 14, 2).to_vector<double>();
      for (double x : even) EXPECT_TRUE(std::isnan(x)) << name(dt);
    }
  }
}
#endif  // HYMBA_WITH_CUDA

// ---------------------------------------------------------------- the caching allocator

TEST(CudaAllocator, TensorsReturnMemoryAndReuseTheCache) {
  HYMBA_REQUIRE_CUDA();
  Allocator* a = get_allocator(kGpu);
  EXPECT_EQ(a, get_allocator(kGpu));  // one allocator per device
  const AllocatorStats s0 = a->stats();
  {
    Tensor t = empty({1000, 1000}, TensorOptions(DType::F32, kGpu));
    const AllocatorStats s1 = a->stats();
    EXPECT_GE(s1.allocated, s0.allocated + 4000000);
    EXPECT_EQ(s1.num_allocs, s0.num_allocs + 1);
    EXPECT_GE(s1.reserved, s1.allocated);
  }
  const AllocatorStats s2 = a->stats();
  EXPECT_EQ(s2.allocated, s0.allocated);
  {
    // The same size again comes from the cache.
    Tensor t = empty({1000, 1000}, TensorOptions(DType::F32, kGpu));
    EXPECT_EQ(a->stats().num_system_allocs, s2.num_system_allocs);
    EXPECT_EQ(a->stats().reserved, s2.reserved);
  }
  EXPECT_EQ(a->stats().allocated, s0.allocated);
  a->empty_cache();
  const AllocatorStats s3 = a->stats();
  EXPECT_EQ(s3.reserved, s3.allocated);  // nothing cached any more
  EXPECT_EQ(s3.allocated, s0.allocated);
}

TEST(CudaAllocator, SizeClassesAndBestFit) {
  HYMBA_REQUIRE_CUDA();
  Allocator* a = get_allocator(kGpu);
  a->empty_cache();
  auto sys = [&] { return a->stats().num_system_allocs; };
  const size_t MiB = size_t(1) << 20;

  // Small blocks round to 512 B and are reused for any request of the same rounded size.
  void* p = a->allocate(1000);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 256, 0u);
  a->deallocate(p, 1000);
  size_t n = sys();
  void* q = a->allocate(600);  // also 1024 B
  EXPECT_EQ(q, p);
  EXPECT_EQ(sys(), n);
  a->deallocate(q, 600);
  void* r = a->allocate(400);  // 512 B: a different class
  EXPECT_EQ(sys(), n + 1);
  a->deallocate(r, 400);

  // Large blocks round to 2 MiB; a slightly larger cached block is a fit (7 MiB rounds to
  // 8 MiB, and 2 MiB of slack is allowed)...
  const size_t base_alloc = a->stats().allocated;
  void* big = a->allocate(10 * MiB);
  a->deallocate(big, 10 * MiB);
  n = sys();
  void* fit = a->allocate(7 * MiB);
  EXPECT_EQ(fit, big);
  EXPECT_EQ(sys(), n);
  EXPECT_EQ(a->stats().allocated, base_alloc + 10 * MiB);  // the block's real size counts
  a->deallocate(fit, 7 * MiB);
  EXPECT_EQ(a->stats().allocated, base_alloc);
  // ...a much larger one is not: a 4 MiB tensor must not pin a 10 MiB block.
  void* small_large = a->allocate(4 * MiB);
  EXPECT_NE(small_large, big);
  EXPECT_EQ(sys(), n + 1);
  a->deallocate(small_large, 4 * MiB);

  // Zero bytes own nothing.
  const AllocatorStats before_zero = a->stats();
  void* z = a->allocate(0);
  EXPECT_EQ(z, nullptr);
  a->deallocate(z, 0);
  EXPECT_EQ(a->stats().allocated, before_zero.allocated);

  a->empty_cache();
  EXPECT_EQ(a->stats().reserved, a->stats().allocated);
}

TEST(CudaAllocator, PeakTracking) {
  HYMBA_REQUIRE_CUDA();
  Allocator* a = get_allocator(kGpu);
  a->reset_peak();
  const AllocatorStats s0 = a->stats();
  EXPECT_EQ(s0.peak_allocated, s0.allocated);
  {
    Tensor x = empty({3 << 20}, TensorOptions(DType::F32, kGpu));  // 12 MiB
    Tensor y = empty({1 << 20}, TensorOptions(DType::F32, kGpu));  // 4 MiB
  }
  const AllocatorStats s1 = a->stats();
  EXPECT_EQ(s1.allocated, s0.allocated);
  EXPECT_GE(s1.peak_allocated, s0.allocated + (size_t(16) << 20));
  a->reset_peak();
  EXPECT_EQ(a->stats().peak_allocated, s1.allocated);
}

TEST(CudaAllocator, OutOfMemoryIsAClearErrorAndRecoverable) {
  HYMBA_REQUIRE_CUDA();
  Allocator* a = get_allocator(kGpu);
  const AllocatorStats s0 = a->stats();
  const size_t huge = size_t(1) << 50;  // 1 PiB
  try {
    a->allocate(huge);
    FAIL() << "allocating 1 PiB succeeded";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("out of memory"), std::string::npos) << msg;
    EXPECT_NE(msg.find(std::to_string(huge)), std::string::npos) << msg;
    EXPECT_NE(msg.find("reserved"), std::string::npos) << msg;
  }
  EXPECT_EQ(a->stats().allocated, s0.allocated);
  // The failure left no error behind for the next kernel to trip over.
  Tensor t = full({1000}, 3.0, TensorOptions(DType::F32, kGpu));
  EXPECT_EQ(t.to_vector<float>(), std::vector<float>(1000, 3.0f));
}

TEST(CudaAllocator, ConcurrentUseKeepsCountsExact) {
  HYMBA_REQUIRE_CUDA();
  Allocator* a = get_allocator(kGpu);
  const AllocatorStats s0 = a->stats();
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  std::atomic<size_t> calls{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      std::vector<std::pair<void*, size_t>> held;
      for (int i = 0; i < 2000; ++i) {
        if (held.size() < 16 && (held.empty() || rng() % 2)) {
          size_t n = (rng() % 4 == 0) ? (size_t(1) << 20) + rng() % (size_t(8) << 20) : 1 + rng() % 100000;
          void* p = a->allocate(n);
          calls++;
          if (!p) failures++;
          held.emplace_back(p, n);
        } else {
          size_t k = rng() % held.size();
          a->deallocate(held[k].first, held[k].second);
          held.erase(held.begin() + long(k));
        }
      }
      for (auto& [p, n] : held) a->deallocate(p, n);
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  const AllocatorStats s1 = a->stats();
  EXPECT_EQ(s1.allocated, s0.allocated);
  EXPECT_EQ(s1.num_allocs, s0.num_allocs + calls.load());
  EXPECT_GE(s1.reserved, s1.allocated);
  a->empty_cache();
  EXPECT_EQ(a->stats().reserved, a->stats().allocated);
}

TEST(CudaAllocator, UnknownDeviceIsAnError) {
  HYMBA_REQUIRE_CUDA();
  EXPECT_THROW(get_allocator(Device::cuda(cuda_device_count())), Error);
  EXPECT_THROW(empty({4}, TensorOptions(DType::F32, Device::cuda(cuda_device_count() + 3))), Error);
}

}  // namespace
}  // namespace hymba
