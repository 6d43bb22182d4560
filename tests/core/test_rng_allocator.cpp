// Philox generator and the CPU allocator.
#include <gtest/gtest.h>

#include <cmath>

#include "core/allocator.h"
#include "core/philox.h"
#include "core/rng.h"
#include "core/tensor.h"

using namespace hymba;

TEST(Philox, MatchesTheRandom123KnownAnswer) {
  // Known-answer vector of Philox4x32-10 from the Random123 distribution (kat_vectors):
  // counter = 0, key = 0 -> 6627e8d5 e169c58d bc57ac4c 9b00dbd8.
  philox::U32x4 r = philox::philox4x32_10(0, 0);
  EXPECT_EQ(r.v[0], 0x6627e8d5u);
  EXPECT_EQ(r.v[1], 0xe169c58du);
  EXPECT_EQ(r.v[2], 0xbc57ac4cu);
  EXPECT_EQ(r.v[3], 0x9b00dbd8u);
}

TEST(Generator, SameSeedSameNumbersAndStreamsAdvance) {
  Generator a(42), b(42);
  Tensor x1 = randn({1000}, DType::F32, &a);
  Tensor y1 = randn({1000}, DType::F32, &b);
  EXPECT_EQ(x1.to_vector<float>(), y1.to_vector<float>());
  Tensor x2 = randn({1000}, DType::F32, &a);
  EXPECT_NE(x1.to_vector<float>(), x2.to_vector<float>());
  EXPECT_EQ(a.offset(), 500u);  // 250 blocks of 4 per 1000 draws
  // Restoring (seed, offset) replays the stream exactly: what checkpoints rely on.
  Generator c(0);
  c.set_state(42, 250);
  EXPECT_EQ(randn({1000}, DType::F32, &c).to_vector<float>(), x2.to_vector<float>());
  Generator d(43);
  EXPECT_NE(randn({1000}, DType::F32, &d).to_vector<float>(), x1.to_vector<float>());
}

TEST(Generator, UniformAndNormalMoments) {
  Generator g(7);
  const int n = 200000;
  for (DType t : {DType::F32, DType::F64}) {
    std::vector<double> u = rand({n}, t, &g, -1.0, 3.0).to_vector<double>();
    double mean = 0, mn = 1e9, mx = -1e9;
    for (double v : u) mean += v, mn = std::min(mn, v), mx = std::max(mx, v);
    mean /= n;
    EXPECT_NEAR(mean, 1.0, 0.02);
    EXPECT_GE(mn, -1.0);
    EXPECT_LT(mx, 3.0);
    std::vector<double> z = randn({n}, t, &g, 2.0, 0.5).to_vector<double>();
    double m = 0, v2 = 0;
    for (double v : z) m += v;
    m /= n;
    for (double v : z) v2 += (v - m) * (v - m);
    v2 /= n;
    EXPECT_NEAR(m, 2.0, 0.01);
    EXPECT_NEAR(std::sqrt(v2), 0.5, 0.01);
  }
}

TEST(Generator, ElementValuesDoNotDependOnTensorShape) {
  // Element i of a fill is philox(offset + i/4)[i%4]: the same numbers whatever the shape,
  // and bf16 draws are the f32 draws rounded.
  Generator a(5), b(5), c(5);
  std::vector<float> flat = rand({24}, DType::F32, &a).to_vector<float>();
  std::vector<float> shaped = rand({2, 3, 4}, DType::F32, &b).to_vector<float>();
  EXPECT_EQ(flat, shaped);
  std::vector<float> half = rand({24}, DType::BF16, &c).to_vector<float>();
  for (size_t i = 0; i < flat.size(); ++i) EXPECT_EQ(half[i], float(bf16(flat[i])));
}

TEST(CpuAllocator, StatsTrackLiveBytesAndPeak) {
  Allocator* a = get_allocator(Device::cpu());
  AllocatorStats s0 = a->stats();
  a->reset_peak();
  {
    Tensor t = empty({1000}, DType::F64);
    AllocatorStats s1 = a->stats();
    EXPECT_EQ(s1.allocated, s0.allocated + 8000);
    EXPECT_GE(s1.peak_allocated, s1.allocated);
    EXPECT_EQ(s1.num_allocs, s0.num_allocs + 1);
    Tensor v = t.view({10, 100});  // views allocate nothing
    EXPECT_EQ(a->stats().num_allocs, s1.num_allocs);
  }
  AllocatorStats s2 = a->stats();
  EXPECT_EQ(s2.allocated, s0.allocated);
  EXPECT_GE(s2.peak_allocated, s0.allocated + 8000);
}

TEST(Storage, WrapsExternalMemoryAndCallsTheDeleter) {
  static int deleted = 0;
  float* buf = new float[6]{0, 1, 2, 3, 4, 5};
  {
    auto st = std::make_shared<Storage>(buf, sizeof(float) * 6, Device::cpu(), [](void* p) {
      delete[] static_cast<float*>(p);
      deleted++;
    });
    Tensor t = Tensor::make(st, {2, 3}, {3, 1}, 0, DType::F32);
    EXPECT_EQ(t.select(0, 1).to_vector<float>(), (std::vector<float>{3, 4, 5}));
  }
  EXPECT_EQ(deleted, 1);
}

TEST(CpuAllocator, LargeBlocksAreReusedAndEmptyCacheReturnsThem) {
  Allocator* a = get_allocator(Device::cpu());
  a->empty_cache();
  const size_t reserved0 = a->stats().reserved;
  { Tensor t = empty({3 << 20}, DType::U8); }  // 3 MiB: above the cached size
  AllocatorStats s1 = a->stats();
  EXPECT_EQ(s1.reserved, reserved0 + (size_t(3) << 20));  // cached, still reserved
  { Tensor t = empty({3 << 20}, DType::U8); }
  EXPECT_EQ(a->stats().num_system_allocs, s1.num_system_allocs);  // served from the cache
  a->empty_cache();
  EXPECT_EQ(a->stats().reserved, reserved0);
}
