// Safetensors reader/writer: byte layout against a file assembled by hand, round trips of
// every dtype, sharded indexes, and corrupt/truncated files refused with messages naming the
// file and the tensor.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include <unistd.h>

#include "core/error.h"
#include "train/safetensors.h"

namespace hymba {
namespace {

namespace fs = std::filesystem;
using testing::HasSubstr;

class Safetensors : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("hymba_st_" + std::to_string(::getpid()) + "_" + testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& n) const { return (dir_ / n).string(); }

  // A file from a header string and a data buffer, exactly as the format lays them out.
  void write_raw(const std::string& p, const std::string& header, const std::string& data, int64_t len_override = -1) {
    std::ofstream out(p, std::ios::binary);
    uint64_t n = len_override >= 0 ? uint64_t(len_override) : header.size();
    for (int i = 0; i < 8; ++i) out.put(char((n >> (8 * i)) & 0xff));
    out << header << data;
  }
  std::string read_bytes(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
  }
  std::string error_of(const std::function<void()>& f) {
    try {
      f();
    } catch (const UserError& e) {
      return e.what();
    }
    ADD_FAILURE() << "expected a UserError";
    return "";
  }
  fs::path dir_;
};

TEST_F(Safetensors, ReadsAHandAssembledFile) {
  // Two f32 values then one bf16 (1.0 = 0x3f80) and an i64.
  std::string data;
  float f[2] = {1.5f, -2.25f};
  data.append(reinterpret_cast<const char*>(f), 8);
  data += std::string("\x80\x3f", 2);
  int64_t i = -7;
  data.append(reinterpret_cast<const char*>(&i), 8);
  write_raw(path("a.safetensors"),
            R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
            R"("b":{"dtype":"BF16","shape":[1,1],"data_offsets":[8,10]},"i":{"dtype":"I64","shape":[],"data_offsets":[10,18]}})",
            data);
  safetensors::File file(path("a.safetensors"));
  EXPECT_EQ(file.metadata().at("format"), "pt");
  ASSERT_EQ(file.tensors().size(), 3u);
  EXPECT_EQ(file.tensors()[0].name, "w");  // file order
  EXPECT_EQ(file.read("w").to_vector<float>(), (std::vector<float>{1.5f, -2.25f}));
  Tensor b = file.read("b");
  EXPECT_EQ(b.dtype(), DType::BF16);
  EXPECT_EQ(b.shape(), (Shape{1, 1}));
  EXPECT_EQ(b.to(DType::F32).item(), 1.0);
  Tensor it = file.read("i");
  EXPECT_EQ(it.dim(), 0);
  EXPECT_EQ(it.item(), -7.0);
  EXPECT_THAT(error_of([&] { file.read("nope"); }), HasSubstr("nope"));
}

TEST_F(Safetensors, WriterLayoutAndRoundTrip) {
  Tensor a = randn({3, 5}, DType::F32);
  Tensor d = randn({4}, DType::F64);
  Tensor h = randn({2, 3}, DType::F32).to(DType::F16);
  Tensor bf = randn({7}, DType::F32).to(DType::BF16);
  Tensor ix = from_vector<int64_t>({1, -2, 3}, {3});
  Tensor i32 = from_vector<int32_t>({5, 6}, {2});
  Tensor empty_t = zeros({0, 4});
  Tensor tr = randn({4, 3}, DType::F32).t();  // non-contiguous input
  safetensors::save(path("x.safetensors"),
                    {{"a", a}, {"d", d}, {"h", h}, {"bf", bf}, {"ix", ix}, {"i32", i32}, {"e", empty_t}, {"tr", tr}},
                    {{"k", "v"}});
  const std::string bytes = read_bytes(path("x.safetensors"));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(bytes[size_t(i)]);
  EXPECT_EQ((8 + n) % 8, 0u) << "data buffer must start 8-byte aligned";
  const size_t data_bytes = 15 * 4 + 4 * 8 + 6 * 2 + 7 * 2 + 3 * 8 + 2 * 4 + 0 + 12 * 4;
  EXPECT_EQ(bytes.size(), 8 + n + data_bytes);
  EXPECT_FALSE(fs::exists(path("x.safetensors.tmp")));

  auto all = safetensors::load(path("x.safetensors"));
  ASSERT_EQ(all.size(), 8u);
  EXPECT_EQ(all["a"].to_vector<float>(), a.to_vector<float>());
  EXPECT_EQ(all["d"].to_vector<double>(), d.to_vector<double>());
  EXPECT_EQ(all["h"].dtype(), DType::F16);
  EXPECT_EQ(all["h"].to(DType::F32).to_vector<float>(), h.to(DType::F32).to_vector<float>());
  EXPECT_EQ(all["bf"].to(DType::F32).to_vector<float>(), bf.to(DType::F32).to_vector<float>());
  EXPECT_EQ(all["ix"].to_vector<int64_t>(), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(all["i32"].to_vector<int32_t>(), (std::vector<int32_t>{5, 6}));
  EXPECT_EQ(all["e"].shape(), (Shape{0, 4}));
  EXPECT_EQ(all["tr"].shape(), (Shape{3, 4}));
  EXPECT_EQ(all["tr"].to_vector<float>(), tr.contiguous().to_vector<float>());
  EXPECT_EQ(safetensors::File(path("x.safetensors")).metadata().at("k"), "v");
}

TEST_F(Safetensors, ShardedIndex) {
  Tensor a = randn({2, 2}), b = randn({3});
  safetensors::save(path("model-00001-of-00002.safetensors"), {{"a", a}});
  safetensors::save(path("model-00002-of-00002.safetensors"), {{"b", b}});
  {
    std::ofstream idx(path("model.safetensors.index.json"));
    idx << R"({"metadata":{"total_size":28},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}})";
  }
  safetensors::Reader r(dir_.string());
  EXPECT_EQ(r.names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(r.read("b").to_vector<float>(), b.to_vector<float>());
  EXPECT_EQ(r.info("a").shape, (Shape{2, 2}));
  // An index naming a tensor its shard lacks is refused, naming both.
  {
    std::ofstream idx(path("model.safetensors.index.json"));
    idx << R"({"weight_map":{"a":"model-00001-of-00002.safetensors","c":"model-00002-of-00002.safetensors"}})";
  }
  std::string msg = error_of([&] { safetensors::Reader bad(dir_.string()); });
  EXPECT_THAT(msg, HasSubstr("'c'"));
  EXPECT_THAT(msg, HasSubstr("index.json"));
}

TEST_F(Safetensors, TruncatedFileNamesFileAndTensor) {
  safetensors::save(path("t.safetensors"), {{"first", randn({4})}, {"second.weight", randn({16, 16})}});
  const std::string bytes = read_bytes(path("t.safetensors"));
  {
    std::ofstream out(path("t.safetensors"), std::ios::binary | std::ios::trunc);
    out << bytes.substr(0, bytes.size() - 10);
  }
  std::string msg = error_of([&] { safetensors::File f(path("t.safetensors")); });
  EXPECT_THAT(msg, HasSubstr("t.safetensors"));
  EXPECT_THAT(msg, HasSubstr("second.weight"));
  EXPECT_THAT(msg, HasSubstr("truncated"));
  // Cut inside the header and before the length: both refused.
  {
    std::ofstream out(path("t.safetensors"), std::ios::binary | std::ios::trunc);
    out << bytes.substr(0, 20);
  }
  EXPECT_THAT(error_of([&] { safetensors::File f(path("t.safetensors")); }), HasSubstr("header length"));
  {
    std::ofstream out(path("t.safetensors"), std::ios::binary | std::ios::trunc);
    out << bytes.substr(0, 5);
  }
  EXPECT_THAT(error_of([&] { safetensors::File f(path("t.safetensors")); }), HasSubstr("truncated"));
}

TEST_F(Safetensors, CorruptHeadersRefused) {
  const std::string data(16, '\0');
  auto msg_for = [&](const std::string& header) {
    write_raw(path("c.safetensors"), header, data);
    return error_of([&] { safetensors::File f(path("c.safetensors")); });
  };
  EXPECT_THAT(msg_for("{not json"), HasSubstr("not valid JSON"));
  EXPECT_THAT(msg_for(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})"), HasSubstr("'w'"));
  EXPECT_THAT(msg_for(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})"), HasSubstr("needs 12"));
  EXPECT_THAT(msg_for(R"({"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})"), HasSubstr("unsupported safetensors dtype 'Q4'"));
  EXPECT_THAT(msg_for(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})"), HasSubstr("reversed"));
  EXPECT_THAT(msg_for(R"({"w":{"dtype":"F32","shape":[2]}})"), HasSubstr("data_offsets"));
  std::string overlap = msg_for(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})");
  EXPECT_THAT(overlap, HasSubstr("overlap"));
  EXPECT_THAT(overlap, HasSubstr("'a'"));
  EXPECT_THAT(overlap, HasSubstr("'b'"));
  EXPECT_THAT(msg_for(R"({"w":{"dtype":"F64","shape":[4],"data_offsets":[0,32]}})"), HasSubstr("past the data buffer"));
  // A header length larger than the file.
  write_raw(path("c.safetensors"), "{}", data, 1 << 20);
  EXPECT_THAT(error_of([&] { safetensors::File f(path("c.safetensors")); }), HasSubstr("header length"));
  EXPECT_THAT(error_of([&] { safetensors::File f(path("missing.safetensors")); }), HasSubstr("missing.safetensors"));
}

}  // namespace
}  // namespace hymba
