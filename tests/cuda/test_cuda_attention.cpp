// CUDA attention (forward, backward, decode) against the CPU kernels on the same inputs.
// Tolerances (norm-relative, tests/cuda/cuda_test_util.h): f32 inputs 1e-4; bf16 inputs 2e-2,
// against the CPU run on the same bf16-rounded values converted to f32 (the CUDA bf16 paths
// also round the probabilities to bf16 before their tensor-core products).
//
// Every forward / backward case runs under both CUDA implementations (kernels/cuda_impl.h:
// wmma, and mma.sync where it supports the problem, i.e. bf16 with head dims that are
// multiples of 8 up to 128; elsewhere the mma setting falls back to wmma), each compared with
// the same CPU reference.
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/attention.h"
#include "tests/attention_test_case.h"
#include "tests/cuda/cuda_test_util.h"

#ifdef HYMBA_WITH_CUDA
#include "kernels/cuda_impl.h"
#endif

namespace hymba {
namespace {

using kernels::AttentionParams;

using Cfg = testutil::AttentionCase;
using testutil::cfg_str;

double rtol_of(DType dt) { return dt == DType::BF16 || dt == DType::F16 ? 2e-2 : 1e-4; }

// Runs f once under each CUDA attention implementation, with the implementation in the trace.
template <typename F>
void for_each_impl(F&& f) {
#ifdef HYMBA_WITH_CUDA
  using kernels::cuda::AttentionImpl;
  for (AttentionImpl impl : {AttentionImpl::Wmma, AttentionImpl::Mma}) {
    const kernels::cuda::ImplGuard<AttentionImpl> use(impl);
    SCOPED_TRACE(std::string("attention impl ") + kernels::cuda::impl_name(impl));
    f();
  }
#else
  f();
#endif
}

// Every T in {1, 17, 100, 300} with every window in {full, 0, 31, 64} and meta prefix in
// {0, 5, 128} (T < W, T >> W, a prefix longer than the sequence, one spanning tiles). Batch,
// head grouping and head dims rotate independently so each meets several of the others:
// batch 1 / 3; Hq = Hkv, Hq = 3 Hkv, and Hq = 25, Hkv = 5 at small T; dk = 64 / dv = 128
// (Hymba) and dk = dv = 17 (no tile or 16-multiple fits it).
std::vector<Cfg> configs() {
  std::vector<Cfg> out;
  int i = 0;
  for (int64_t T : {1, 17, 100, 300})
    for (int64_t W : {-1, 0, 31, 64})
      for (int64_t M : {0, 5, 128}) {
        const int sel = i++;
        const int64_t B = sel % 2 ? 3 : 1;
        int64_t Hq = 2, Hkv = 2;
        if (sel % 3 == 1) Hq = 6;
        if (sel % 3 == 2) {
          Hq = T <= 17 ? 25 : 3;
          Hkv = T <= 17 ? 5 : 3;
        }
        const bool hymba_dims = (sel / 2) % 2 == 0;
        out.push_back({B, Hq, Hkv, T, hymba_dims ? 64 : 17, hymba_dims ? 128 : 17, W, M});
      }
  return out;
}

struct Needs {
  bool dq, dk, dv;
};
// Every combination of requested gradients, cycled over the configurations.
const Needs kNeeds[] = {{true, true, true},  {true, false, false}, {false, true, false},
                        {false, false, true}, {false, true, true},  {true, true, false}};

// Forward (out, lse) and backward (each requested gradient) of one configuration in dtype dt,
// under each CUDA implementation, against the CPU kernel on the same values in f32 (f64 stays
// f64).
void check_case(const Cfg& c, DType dt, uint64_t seed, Needs need, double scale = 0) {
  SCOPED_TRACE(cfg_str(c) + " " + dtype_name(dt));
  const double rtol = rtol_of(dt);
  const DType ref_dt = dt == DType::F64 ? DType::F64 : DType::F32;
  const Device gpu = Device::cuda();
  Tensor q = cudatest::randn_cpu({c.B, c.Hq, c.T, c.dk}, seed, dt);
  Tensor k = cudatest::randn_cpu({c.B, c.Hkv, c.T, c.dk}, seed + 1, dt);
  Tensor v = cudatest::randn_cpu({c.B, c.Hkv, c.T, c.dv}, seed + 2, dt);
  Tensor dout = cudatest::randn_cpu({c.B, c.Hq, c.T, c.dv}, seed + 3, dt);
  const AttentionParams p{scale, c.window, c.meta};

  Tensor out_ref, lse_ref, dq_ref, dk_ref, dv_ref;
  std::tie(out_ref, lse_ref) = kernels::cpu::attention_forward(q.to(ref_dt), k.to(ref_dt), v.to(ref_dt), p);
  // The backward starts from the reference forward's saved tensors, the output stored in dt
  // as a forward in dt would store it, so it is checked on its own.
  Tensor out_saved = out_ref.to(dt);
  std::tie(dq_ref, dk_ref, dv_ref) = kernels::cpu::attention_backward(
      dout.to(ref_dt), q.to(ref_dt), k.to(ref_dt), v.to(ref_dt), out_saved.to(ref_dt), lse_ref, p, true, true, true);
  // When every query sees only itself (T = 1, or window 0 without meta keys) the softmax is
  // constant, so dq and dk are zero and both kernels return rounding noise: those are held
  // to the tolerance relative to the scale of dv (= dout there) instead.
  const bool single_key = c.T == 1 || (c.window == 0 && c.meta == 0);
  const double dv_scale = cudatest::compare(dv_ref, dv_ref).max_ref;

  for_each_impl([&] {
    auto [out, lse] = kernels::attention_forward(q.to(gpu), k.to(gpu), v.to(gpu), p);
    EXPECT_TRUE(out.is_cuda());
    EXPECT_EQ(out.dtype(), dt);
    EXPECT_EQ(lse.dtype(), ref_dt);
    EXPECT_CUDA_CLOSE(out, out_ref, rtol, "out");
    EXPECT_CUDA_CLOSE(lse, lse_ref, rtol, "lse");

    auto [dq, dk, dv] = kernels::attention_backward(dout.to(gpu), q.to(gpu), k.to(gpu), v.to(gpu),
                                                    out_saved.to(gpu), lse_ref.to(gpu), p, need.dq, need.dk, need.dv);
    const std::pair<const Tensor*, const Tensor*> grads[] = {{&dq, &dq_ref}, {&dk, &dk_ref}, {&dv, &dv_ref}};
    const bool needed[] = {need.dq, need.dk, need.dv};
    const char* names[] = {"dq", "dk", "dv"};
    for (int g = 0; g < 3; ++g) {
      const Tensor& got = *grads[g].first;
      ASSERT_EQ(got.defined(), needed[g]) << names[g];
      if (!needed[g]) continue;
      EXPECT_TRUE(got.is_cuda()) << names[g];
      EXPECT_EQ(got.dtype(), dt) << names[g];
      if (single_key && g < 2) {
        const cudatest::Diff e = cudatest::compare(got, *grads[g].second);
        EXPECT_EQ(e.nans, 0) << names[g] << ": NaN (never written?)";
        EXPECT_LE(e.max_abs_err, rtol * dv_scale) << names[g] << " (zero up to rounding)";
      } else {
        EXPECT_CUDA_CLOSE(got, *grads[g].second, rtol, names[g]);
      }
    }
  });
}

TEST(CudaAttention, ForwardBackwardF32) {
  HYMBA_REQUIRE_GPU();
  uint64_t seed = 1000;
  int i = 0;
  for (const Cfg& c : configs()) check_case(c, DType::F32, seed += 10, kNeeds[i++ % 6]);
}

TEST(CudaAttention, ForwardBackwardBF16TensorCores) {
  HYMBA_REQUIRE_GPU();
  uint64_t seed = 5000;
  int i = 0;
  // dk = dv = 17 runs on tensor cores too, zero-padded to 32.
  for (const Cfg& c : configs()) check_case(c, DType::BF16, seed += 10, kNeeds[(i++ + 3) % 6]);
}

TEST(CudaAttention, OtherDtypesAndWideHeadsGoThroughF32) {
  HYMBA_REQUIRE_GPU();
  const Needs all{true, true, true};
  // dv = 160 > 128: bf16 falls back to the f32 path.
  check_case({3, 6, 2, 100, 64, 160, 31, 5}, DType::BF16, 71, all);
  check_case({1, 4, 2, 130, 64, 128, -1, 3}, DType::F16, 72, all);
  check_case({3, 2, 1, 77, 17, 9, 20, 4}, DType::F64, 73, all);
  // Wide f32 heads shrink the tiles to fit shared memory.
  check_case({1, 2, 1, 70, 256, 256, -1, 0}, DType::F32, 74, all);
}

TEST(CudaAttention, ExplicitScale) {
  HYMBA_REQUIRE_GPU();
  check_case({1, 6, 2, 100, 64, 128, 31, 5}, DType::F32, 80, {true, true, true}, 0.3);
  check_case({1, 6, 2, 100, 64, 128, 31, 5}, DType::BF16, 81, {true, true, true}, 0.3);
}

TEST(CudaAttention, NonContiguousInputs) {
  HYMBA_REQUIRE_GPU();
  // q and k read as (B, T, H, d) projections permuted to (B, H, T, d); v a slice of a wider
  // tensor along its last dim (rows not contiguous).
  const Cfg c{3, 6, 2, 100, 64, 128, 31, 5};
  const AttentionParams p{0, c.window, c.meta};
  const Device gpu = Device::cuda();
  for (DType dt : {DType::F32, DType::BF16}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor q = cudatest::randn_cpu({c.B, c.T, c.Hq, c.dk}, 90, dt).permute({0, 2, 1, 3});
    Tensor k = cudatest::randn_cpu({c.B, c.T, c.Hkv, c.dk}, 91, dt).permute({0, 2, 1, 3});
    Tensor v = cudatest::randn_cpu({c.B, c.Hkv, c.T, c.dv + 8}, 92, dt).narrow(3, 8, c.dv);
    ASSERT_FALSE(q.is_contiguous());
    ASSERT_FALSE(v.is_contiguous());
    Tensor out_ref, lse_ref;
    std::tie(out_ref, lse_ref) = kernels::cpu::attention_forward(q.to(DType::F32), k.to(DType::F32), v.to(DType::F32), p);
    for_each_impl([&] {
      auto [out, lse] = kernels::attention_forward(q.to(gpu), k.to(gpu), v.to(gpu), p);
      EXPECT_CUDA_CLOSE(out, out_ref, rtol_of(dt), "out");
      EXPECT_CUDA_CLOSE(lse, lse_ref, rtol_of(dt), "lse");
    });
  }
}

TEST(CudaAttention, BackwardIsDeterministic) {
  HYMBA_REQUIRE_GPU();
  const Cfg c{3, 6, 2, 300, 64, 128, 64, 5};
  const AttentionParams p{0, c.window, c.meta};
  const Device gpu = Device::cuda();
  for_each_impl([&] {
    for (DType dt : {DType::F32, DType::BF16}) {
      Tensor q = cudatest::randn_cpu({c.B, c.Hq, c.T, c.dk}, 11, dt).to(gpu);
      Tensor k = cudatest::randn_cpu({c.B, c.Hkv, c.T, c.dk}, 12, dt).to(gpu);
      Tensor v = cudatest::randn_cpu({c.B, c.Hkv, c.T, c.dv}, 13, dt).to(gpu);
      Tensor dout = cudatest::randn_cpu({c.B, c.Hq, c.T, c.dv}, 14, dt).to(gpu);
      auto [out, lse] = kernels::attention_forward(q, k, v, p);
      auto a = kernels::attention_backward(dout, q, k, v, out, lse, p);
      auto b = kernels::attention_backward(dout, q, k, v, out, lse, p);
      EXPECT_EQ(std::get<0>(a).to_vector<float>(), std::get<0>(b).to_vector<float>()) << dtype_name(dt);
      EXPECT_EQ(std::get<1>(a).to_vector<float>(), std::get<1>(b).to_vector<float>()) << dtype_name(dt);
      EXPECT_EQ(std::get<2>(a).to_vector<float>(), std::get<2>(b).to_vector<float>()) << dtype_name(dt);
    }
  });
}

// The shapes the mma.sync kernels take (bf16; head dims multiples of 8 up to 128, padded to 64
// or 128 in the kernels): Hymba's (64, 128), (128, 128), (64, 64), and (40, 24) whose padded
// columns must stay out of the result. T from one row to several 64-row tiles (1000: windows
// of one and four tiles, meta prefixes spanning 0, 1 and 2 key tiles), windows from self-only
// to wider than T, meta prefixes longer than the sequence; Hq = Hkv, GQA (6 / 2 and 25 / 5),
// batch 1 and 3. The backward cases cycle through every combination of requested gradients.
std::vector<Cfg> mma_configs() {
  const int64_t dims[4][2] = {{64, 128}, {128, 128}, {40, 24}, {64, 64}};
  std::vector<Cfg> out;
  int i = 0;
  for (int64_t T : {1, 17, 100, 300})
    for (int64_t W : {-1, 0, 64, 255})
      for (int64_t M : {0, 5, 128}) {
        // sel = 12 T_index + 3 W_index + M_index; the shifts keep head layout and dims from
        // riding along with one value of M or W.
        const int sel = i++;
        const int64_t B = sel % 2 ? 1 : 3;
        int64_t Hq = 2, Hkv = 2;
        const int heads = (sel + sel / 3) % 3;
        if (heads == 0) Hq = 6;
        if (heads == 2 && T <= 17) Hq = 25, Hkv = 5;
        const int64_t* d = dims[(sel / 3 + sel / 12) % 4];
        out.push_back({B, Hq, Hkv, T, d[0], d[1], W, M});
      }
  out.push_back({1, 4, 2, 1000, 64, 128, 64, 0});
  out.push_back({1, 2, 2, 1000, 128, 128, 255, 5});
  out.push_back({1, 4, 2, 1000, 40, 24, 64, 128});
  out.push_back({1, 2, 1, 1000, 64, 128, 255, 128});
  out.push_back({1, 2, 2, 1000, 64, 64, -1, 5});
  return out;
}

TEST(CudaAttention, MmaShapesBF16) {
  HYMBA_REQUIRE_GPU();
  uint64_t seed = 7000;
  int i = 0;
  for (const Cfg& c : mma_configs()) check_case(c, DType::BF16, seed += 10, kNeeds[i++ % 6]);
}

// The mma forward's query tiles: 128 rows (4 warps x two m16 row tiles) against 32-key tiles
// for every padded head-dim pair but dk = dv = 128 (64 rows, 64-key tiles). T just below, at
// and above one and two 128-row tiles; windows (40, 50, 63, 90, 100, 160) and meta prefixes
// (70, 130) that end inside a 128-row tile and inside a 32-key tile, so the warps of one
// block see different key ranges (some none at all); the padded dims 40 / 24; a single row;
// batch 1 and 3; Hq = Hkv, GQA 3:1 and Hymba's 25 / 5.
TEST(CudaAttention, MmaQueryTiles128BF16) {
  HYMBA_REQUIRE_GPU();
  const std::vector<Cfg> cases = {
      {1, 2, 2, 127, 64, 128, -1, 0},    {3, 6, 2, 128, 64, 128, 40, 0},   {1, 4, 2, 129, 64, 128, 100, 70},
      {1, 2, 1, 255, 64, 128, 100, 5},   {3, 2, 2, 257, 64, 128, 40, 130}, {1, 6, 2, 257, 40, 24, 63, 70},
      {1, 2, 2, 255, 64, 64, -1, 70},    {1, 2, 2, 129, 128, 64, 100, 0},  {3, 4, 2, 1, 40, 24, -1, 0},
      {1, 2, 2, 257, 128, 128, 100, 70}, {1, 25, 5, 300, 64, 128, 160, 128},
      // W % 32 in [15, 30]: a key tile wholly visible to a warp's first row tile but not to
      // its second (the warp's mask decision must cover both).
      {1, 2, 1, 300, 64, 128, 50, 0},    {3, 2, 2, 257, 64, 64, 90, 5}};
  uint64_t seed = 9000;
  int i = 0;
  for (const Cfg& c : cases) check_case(c, DType::BF16, seed += 10, kNeeds[i++ % 6]);
}

// ---- decode ----

struct DecodeCase {
  int64_t Tq, P, window, meta, dk, dv;  // P keys appended (positions 0 .. P-1), the last Tq are the queries
};

// A cache of B = 3 entries: for a window, M meta slots plus a ring of window + Tq slots
// (kv_ring_slot), for full attention P + 5 slots in a different random order per entry;
// slots never written hold -1.
void check_decode(const DecodeCase& dc, DType dt, DType pos_dt, uint64_t seed) {
  SCOPED_TRACE("Tq=" + std::to_string(dc.Tq) + " P=" + std::to_string(dc.P) + " W=" + std::to_string(dc.window) +
               " M=" + std::to_string(dc.meta) + " dk=" + std::to_string(dc.dk) + " " + dtype_name(dt));
  const int64_t B = 3, Hq = 6, Hkv = 2;
  const int64_t ring = dc.window + dc.Tq;
  const int64_t S = dc.window >= 0 ? dc.meta + ring : dc.P + 5;
  std::vector<int64_t> kpos(size_t(B * S), -1), qpos;
  std::mt19937 rng(static_cast<uint32_t>(seed));
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int64_t> order(static_cast<size_t>(S));
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    for (int64_t p = 0; p < dc.P; ++p) {
      const int64_t slot = dc.window >= 0 ? kernels::kv_ring_slot(p, dc.meta, ring) : order[size_t(p)];
      kpos[size_t(b * S + slot)] = p;
    }
    for (int64_t p = dc.P - dc.Tq; p < dc.P; ++p) qpos.push_back(p);
  }
  ASSERT_TRUE(std::count(kpos.begin(), kpos.end(), -1) > 0 || dc.P > S) << "want empty slots or a wrapped ring";
  Tensor kp = from_vector<int64_t>(kpos, {B, S}).to(pos_dt);
  Tensor qp = from_vector<int64_t>(qpos, {B, dc.Tq}).to(pos_dt);
  Tensor q = cudatest::randn_cpu({B, Hq, dc.Tq, dc.dk}, seed, dt);
  Tensor kc = cudatest::randn_cpu({B, Hkv, S, dc.dk}, seed + 1, dt);
  Tensor vc = cudatest::randn_cpu({B, Hkv, S, dc.dv}, seed + 2, dt);
  const AttentionParams p{0, dc.window, dc.meta};
  Tensor want = kernels::cpu::attention_decode(q.to(DType::F32), kc.to(DType::F32), vc.to(DType::F32), qp, kp, p);
  const Device gpu = Device::cuda();
  Tensor got = kernels::attention_decode(q.to(gpu), kc.to(gpu), vc.to(gpu), qp.to(gpu), kp.to(gpu), p);
  EXPECT_TRUE(got.is_cuda());
  EXPECT_EQ(got.dtype(), dt);
  EXPECT_CUDA_CLOSE(got, want, rtol_of(dt), "decode out");
}

const DecodeCase kDecodeCases[] = {
    {1, 20, 31, 5, 64, 128},    // ring not yet full: empty slots
    {3, 150, 31, 5, 64, 128},   // wrapped ring, keys outside the window still cached
    {1, 200, 64, 128, 17, 17},  // meta prefix longer than the window
    {1, 50, 0, 5, 64, 128},     // window 0: self plus meta
    {2, 77, -1, 0, 17, 17},     // full cache, shuffled slots, empty ones
    {4, 300, -1, 5, 64, 128},
};

TEST(CudaAttention, DecodeMatchesCpuF32) {
  HYMBA_REQUIRE_GPU();
  uint64_t seed = 300;
  for (const DecodeCase& dc : kDecodeCases) check_decode(dc, DType::F32, DType::I64, seed += 10);
  check_decode(kDecodeCases[1], DType::F32, DType::I32, 399);
}

TEST(CudaAttention, DecodeMatchesCpuBF16) {
  HYMBA_REQUIRE_GPU();
  uint64_t seed = 400;
  for (const DecodeCase& dc : kDecodeCases) check_decode(dc, DType::BF16, DType::I64, seed += 10);
}

TEST(CudaAttention, DecodeEqualsForwardRows) {
  HYMBA_REQUIRE_GPU();
  // A full cache holding the whole sequence: decoding the last rows gives the forward's rows.
  const int64_t B = 3, Hq = 6, Hkv = 2, T = 100, dk = 64, dv = 128, Tq = 3;
  const AttentionParams p{0, 31, 5};
  const Device gpu = Device::cuda();
  Tensor q = cudatest::randn_cpu({B, Hq, T, dk}, 500).to(gpu);
  Tensor k = cudatest::randn_cpu({B, Hkv, T, dk}, 501).to(gpu);
  Tensor v = cudatest::randn_cpu({B, Hkv, T, dv}, 502).to(gpu);
  std::vector<int64_t> kpos, qpos;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t j = 0; j < T; ++j) kpos.push_back(j);
    for (int64_t j = T - Tq; j < T; ++j) qpos.push_back(j);
  }
  Tensor got = kernels::attention_decode(q.narrow(2, T - Tq, Tq), k, v, from_vector<int64_t>(qpos, {B, Tq}).to(gpu),
                                         from_vector<int64_t>(kpos, {B, T}).to(gpu), p);
  for_each_impl([&] {
    auto [out, lse] = kernels::attention_forward(q, k, v, p);
    EXPECT_CUDA_CLOSE(got, out.narrow(2, T - Tq, Tq), 1e-4, "decode vs forward rows");
  });
}

}  // namespace
}  // namespace hymba
