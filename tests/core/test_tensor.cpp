// Tensor core: views share storage and index correctly, copies and casts, factories, errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

#include "core/tensor.h"
#include "tests/test_util.h"

using namespace hymba;
using ::testing::HasSubstr;

namespace {

// Element (i0, i1, ...) read straight from storage through the view's strides.
double at(const Tensor& t, std::vector<int64_t> idx) {
  int64_t off = t.offset();
  for (size_t d = 0; d < idx.size(); ++d) off += idx[d] * t.strides()[d];
  return static_cast<const double*>(t.storage()->data())[off];
}

Tensor iota(const Shape& s) { return arange(0.0, double(shape_numel(s)), 1.0, DType::F64).reshape(s); }

using testutil::error_of;

}  // namespace

TEST(Tensor, FactoriesShapesAndContiguity) {
  Tensor z = zeros({2, 3, 4});
  EXPECT_EQ(z.shape(), (Shape{2, 3, 4}));
  EXPECT_EQ(z.strides(), (Shape{12, 4, 1}));
  EXPECT_EQ(z.numel(), 24);
  EXPECT_EQ(z.dtype(), DType::F32);
  EXPECT_TRUE(z.is_contiguous());
  for (float v : z.to_vector<float>()) EXPECT_EQ(v, 0.0f);
  for (double v : full({5}, 2.5, DType::F64).to_vector<double>()) EXPECT_EQ(v, 2.5);
  for (int32_t v : ones({3}, DType::I32).to_vector<int32_t>()) EXPECT_EQ(v, 1);
  EXPECT_EQ(arange(0.0, 1.0, 0.25, DType::F64).to_vector<double>(), (std::vector<double>{0, 0.25, 0.5, 0.75}));
  EXPECT_EQ(arange(5, DType::I64).to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(scalar_tensor(3.0).dim(), 0);
  EXPECT_EQ(scalar_tensor(3.0).item(), 3.0);
  EXPECT_EQ(empty({0, 3}).numel(), 0);
  // 64-byte alignment of CPU storage: vector loads and cache lines rely on it.
  EXPECT_EQ(reinterpret_cast<uintptr_t>(empty({7}).data_ptr()) % 64, 0u);
}

TEST(Tensor, ViewsShareStorageAndIndexCorrectly) {
  Tensor x = iota({2, 3, 4});
  Tensor p = x.permute({2, 0, 1});
  EXPECT_EQ(p.shape(), (Shape{4, 2, 3}));
  EXPECT_FALSE(p.is_contiguous());
  EXPECT_EQ(p.storage(), x.storage());
  for (int64_t a = 0; a < 4; ++a)
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t c = 0; c < 3; ++c) EXPECT_EQ(at(p, {a, b, c}), double(b * 12 + c * 4 + a));

  Tensor t = x.transpose(0, 2);
  EXPECT_EQ(t.shape(), (Shape{4, 3, 2}));
  EXPECT_EQ(at(t, {3, 1, 1}), double(1 * 12 + 1 * 4 + 3));

  Tensor n = x.narrow(2, 1, 2);
  EXPECT_EQ(n.shape(), (Shape{2, 3, 2}));
  EXPECT_EQ(at(n, {1, 2, 0}), double(12 + 8 + 1));

  Tensor s = x.slice(2, 0, 4, 3);  // elements 0 and 3
  EXPECT_EQ(s.shape(), (Shape{2, 3, 2}));
  EXPECT_EQ(at(s, {0, 1, 1}), double(4 + 3));

  Tensor sel = x.select(1, 2);
  EXPECT_EQ(sel.shape(), (Shape{2, 4}));
  EXPECT_EQ(at(sel, {1, 3}), double(12 + 8 + 3));

  Tensor u = x.unsqueeze(1);
  EXPECT_EQ(u.shape(), (Shape{2, 1, 3, 4}));
  EXPECT_EQ(u.squeeze(1).shape(), (Shape{2, 3, 4}));
  EXPECT_EQ(x.unsqueeze(-1).shape(), (Shape{2, 3, 4, 1}));

  Tensor row = iota({1, 4});
  Tensor e = row.expand({3, 4});
  EXPECT_EQ(e.strides()[0], 0);
  EXPECT_EQ(at(e, {2, 3}), 3.0);
  EXPECT_EQ(iota({4}).expand({2, -1}).shape(), (Shape{2, 4}));

  // Writing through a view is visible in the base.
  n.fill_(-1.0);
  EXPECT_EQ(at(x, {0, 0, 1}), -1.0);
  EXPECT_EQ(at(x, {0, 0, 0}), 0.0);
}

TEST(Tensor, ReshapeViewsWhenPossibleAndCopiesOtherwise) {
  Tensor x = iota({2, 3, 4});
  Tensor v = x.view({6, -1});
  EXPECT_EQ(v.shape(), (Shape{6, 4}));
  EXPECT_EQ(v.storage(), x.storage());
  // A transposed tensor viewed with its split dims intact needs no copy.
  Tensor t = x.transpose(1, 2);  // (2, 4, 3)
  EXPECT_EQ(t.view({2, 4, 3, 1}).storage(), x.storage());
  EXPECT_THAT(error_of([&] { t.view({2, 12}); }), HasSubstr("without a copy"));
  Tensor r = t.reshape({2, 12});
  EXPECT_NE(r.storage(), x.storage());
  std::vector<double> rv = r.to_vector<double>();
  for (int64_t a = 0; a < 2; ++a)
    for (int64_t b = 0; b < 4; ++b)
      for (int64_t c = 0; c < 3; ++c) EXPECT_EQ(rv[size_t(a * 12 + b * 3 + c)], double(a * 12 + c * 4 + b));
  EXPECT_EQ(x.flatten().shape(), (Shape{24}));
  EXPECT_EQ(x.flatten(1).shape(), (Shape{2, 12}));
  EXPECT_THAT(error_of([&] { x.view({5, 5}); }), HasSubstr("cannot view"));
}

TEST(Tensor, ContiguousCloneAndCopyWithBroadcast) {
  Tensor x = iota({3, 4});
  Tensor t = x.t();
  Tensor c = t.contiguous();
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_EQ(c.shape(), (Shape{4, 3}));
  std::vector<double> cv = c.to_vector<double>();
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 3; ++j) EXPECT_EQ(cv[size_t(i * 3 + j)], double(j * 4 + i));
  EXPECT_TRUE(x.contiguous().storage() == x.storage());
  EXPECT_FALSE(x.clone().storage() == x.storage());

  Tensor dst = zeros({3, 4}, DType::F64);
  dst.copy_(iota({4}));  // broadcast a row into every row
  std::vector<double> dv = dst.to_vector<double>();
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) EXPECT_EQ(dv[size_t(i * 4 + j)], double(j));
  EXPECT_THAT(error_of([&] { dst.copy_(iota({3})); }), HasSubstr("copy_"));
}

TEST(Tensor, DtypeConversionsRoundTrip) {
  Tensor x = from_vector<double>({-2.5, -1, 0, 0.1, 1, 3.75, 65504, 1e-3}, {8});
  EXPECT_EQ(x.to(DType::F32).to(DType::F64).to_vector<double>()[3], double(0.1f));
  std::vector<double> hb = x.to(DType::BF16).to(DType::F64).to_vector<double>();
  std::vector<double> hh = x.to(DType::F16).to(DType::F64).to_vector<double>();
  std::vector<double> ref = x.to_vector<double>();
  for (size_t i = 0; i < ref.size(); ++i) {
    EXPECT_NEAR(hb[i], ref[i], std::fabs(ref[i]) * (1.0 / 256));   // 8 mantissa bits
    EXPECT_NEAR(hh[i], ref[i], std::fabs(ref[i]) * (1.0 / 2048));  // 11 mantissa bits
  }
  EXPECT_EQ(hh[6], 65504.0);  // the largest f16
  std::vector<int32_t> iv = x.to(DType::I32).to_vector<int32_t>();
  EXPECT_EQ(iv[0], -2);  // C++ truncation toward zero, like PyTorch's .to(int)
  EXPECT_EQ(iv[5], 3);
  Tensor big = from_vector<int64_t>({int64_t(1) << 40, -7}, {2});
  EXPECT_EQ(big.to(DType::I64).to_vector<int64_t>()[0], int64_t(1) << 40);
  EXPECT_EQ(from_vector<int32_t>({200, 3}, {2}).to(DType::U8).to_vector<uint8_t>()[0], 200);
}

TEST(Half, ConversionsAreExactOnRepresentableValuesAndRoundToNearestEven) {
  // Every f16 bit pattern converts to float and back unchanged (NaNs stay NaN).
  for (uint32_t b = 0; b < 65536; ++b) {
    float f = f16::to_float(uint16_t(b));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(float(f16(f))));
      continue;
    }
    ASSERT_EQ(f16::from_float(f), uint16_t(b)) << "f16 bits " << b;
  }
  for (uint32_t b = 0; b < 65536; ++b) {
    bf16 h;
    h.x = uint16_t(b);
    float f = float(h);
    if (std::isnan(f)) continue;
    ASSERT_EQ(bf16::from_float(f), uint16_t(b)) << "bf16 bits " << b;
  }
  // Ties go to even: 1 + 2^-8 is halfway between two bf16 values, 1 + 3*2^-8 too.
  EXPECT_EQ(float(bf16(1.0f + 1.0f / 256)), 1.0f);
  EXPECT_EQ(float(bf16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);
  EXPECT_EQ(float(f16(1.0f + 1.0f / 2048)), 1.0f);
  EXPECT_EQ(float(f16(65520.0f)), INFINITY);  // rounds past the largest finite f16
  EXPECT_EQ(float(f16(5.9604645e-08f)), 5.9604645e-08f);  // the smallest subnormal
}

TEST(Tensor, PrintingShowsValuesAndMetadata) {
  std::ostringstream os;
  os << iota({2, 2});
  EXPECT_THAT(os.str(), HasSubstr("[[0.0000, 1.0000],"));
  EXPECT_THAT(os.str(), HasSubstr("f64[2, 2] cpu"));
  std::string big = zeros({100}).to_string();
  EXPECT_THAT(big, HasSubstr("..."));
  EXPECT_LT(big.size(), 200u);
  EXPECT_THAT(arange(3, DType::I64).to_string(), HasSubstr("[0, 1, 2]"));
}

TEST(Tensor, BadArgumentsThrowWithContext) {
  Tensor x = zeros({2, 3});
  EXPECT_THAT(error_of([&] { x.permute({0}); }), HasSubstr("permute"));
  EXPECT_THAT(error_of([&] { x.narrow(1, 2, 5); }), HasSubstr("out of bounds"));
  EXPECT_THAT(error_of([&] { x.select(0, 2); }), HasSubstr("out of range"));
  EXPECT_THAT(error_of([&] { x.size(2); }), HasSubstr("out of range"));
  EXPECT_THAT(error_of([&] { x.expand({3, 3}); }), HasSubstr("cannot broadcast [2, 3] to [3, 3]"));
  EXPECT_THAT(error_of([&] { x.data<double>(); }), HasSubstr("data<f64>() on a f32 tensor"));
  EXPECT_THAT(error_of([&] { Tensor().shape(); }), HasSubstr("undefined"));
  EXPECT_THAT(error_of([&] { zeros({2}, DType::I32).set_requires_grad(true); }), HasSubstr("floating"));
  EXPECT_THAT(error_of([&] { parse_dtype("float8"); }), HasSubstr("expected one of"));
  EXPECT_THAT(error_of([&] { Device::parse("tpu"); }), HasSubstr("expected cpu, cuda or cuda:N"));
  EXPECT_EQ(Device::parse("cuda:3"), Device::cuda(3));
}

TEST(Tensor, RawViewOfATensorThatRequiresGradThrowsUnlessGradModeIsOff) {
  Tensor w = zeros({2, 3}).set_requires_grad(true);
  EXPECT_THAT(error_of([&] { w.reshape({6}); }), HasSubstr("hymba::reshape"));
  NoGradGuard ng;
  EXPECT_EQ(w.reshape({6}).shape(), (Shape{6}));
  EXPECT_FALSE(w.reshape({6}).requires_grad());
}

TEST(Tensor, CudaTensorsFailClearlyWithoutCuda) {
  if (cuda_available()) GTEST_SKIP() << "a CUDA device is present; covered by test_cuda_core";
  if (built_with_cuda()) {
    // Built with CUDA but no GPU: allocation reports the driver error, not a crash.
    EXPECT_ANY_THROW(zeros({2}, Device::cuda()));
  } else {
    EXPECT_THAT(error_of([&] { zeros({2}, Device::cuda()); }), HasSubstr("no CUDA support"));
  }
}

TEST(Tensor, OverlappingCopiesAreStagedAndIntegerFillsChecked) {
  Tensor x = iota({3, 3});
  x.copy_(x.t());  // in-place transpose through a copy of the source
  std::vector<double> v = x.to_vector<double>();
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) EXPECT_EQ(v[size_t(i * 3 + j)], double(j * 3 + i));
  Tensor y = iota({6});
  y.narrow(0, 1, 5).copy_(y.narrow(0, 0, 5));  // shift right by one
  EXPECT_EQ(y.to_vector<double>(), (std::vector<double>{0, 0, 1, 2, 3, 4}));
  EXPECT_THAT(error_of([&] { zeros({2}, DType::U8).fill_(300); }), HasSubstr("does not fit a u8"));
  EXPECT_THAT(error_of([&] { zeros({2}, DType::I32).fill_(NAN); }), HasSubstr("does not fit"));
}
