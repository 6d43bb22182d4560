#include "train/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace hymba::safetensors {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; a big-endian host would need byte swaps");

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Headers above this are certainly corrupt (the format itself caps them at 100 MB).
constexpr uint64_t kMaxHeader = 100ull << 20;

}  // namespace

DType dtype_from_string(const std::string& s, const std::string& where) {
  if (s == "F32") return DType::F32;
  if (s == "F64") return DType::F64;
  if (s == "BF16") return DType::BF16;
  if (s == "F16") return DType::F16;
  if (s == "I64") return DType::I64;
  if (s == "I32") return DType::I32;
  if (s == "U8") return DType::U8;
  HYMBA_USER_ERROR(where, ": unsupported safetensors dtype '", s, "' (supported: F64 F32 BF16 F16 I64 I32 U8)");
}

const char* dtype_to_string(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::BF16: return "BF16";
    case DType::F16: return "F16";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::U8: return "U8";
  }
  HYMBA_FAIL("safetensors: unknown dtype");
}

File::File(const std::string& path) : path_(path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) HYMBA_USER_ERROR(path, ": cannot open safetensors file");
  std::error_code ec;
  const uint64_t file_size = fs::file_size(path, ec);
  if (ec) HYMBA_USER_ERROR(path, ": cannot stat: ", ec.message());
  if (file_size < 8) HYMBA_USER_ERROR(path, ": truncated safetensors file (", file_size, " bytes, no header length)");
  unsigned char len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > kMaxHeader || header_len > file_size - 8)
    HYMBA_USER_ERROR(path, ": corrupt or truncated safetensors file: header length ", header_len,
                     " exceeds the file (", file_size, " bytes)");
  std::string header(header_len, '\0');
  in.read(header.data(), std::streamsize(header_len));
  if (!in) HYMBA_USER_ERROR(path, ": truncated safetensors header");
  data_start_ = 8 + header_len;
  const uint64_t buffer_size = file_size - data_start_;

  json h;
  try {
    h = json::parse(header);
  } catch (const json::exception& e) {
    HYMBA_USER_ERROR(path, ": safetensors header is not valid JSON: ", e.what());
  }
  if (!h.is_object()) HYMBA_USER_ERROR(path, ": safetensors header is not a JSON object");
  for (const auto& [name, v] : h.items()) {
    if (name == "__metadata__") {
      if (!v.is_object()) HYMBA_USER_ERROR(path, ": __metadata__ is not an object");
      for (const auto& [k, mv] : v.items()) {
        if (!mv.is_string()) HYMBA_USER_ERROR(path, ": __metadata__ value of '", k, "' is not a string");
        metadata_[k] = mv.get<std::string>();
      }
      continue;
    }
    const std::string where = path + ": tensor '" + name + "'";
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      HYMBA_USER_ERROR(where, ": expected an object with dtype, shape and data_offsets");
    TensorInfo t;
    t.name = name;
    if (!v["dtype"].is_string()) HYMBA_USER_ERROR(where, ": dtype is not a string");
    t.dtype = dtype_from_string(v["dtype"].get<std::string>(), where);
    const json& shape = v["shape"];
    if (!shape.is_array()) HYMBA_USER_ERROR(where, ": shape is not an array");
    uint64_t numel = 1;
    for (const auto& d : shape) {
      if (!d.is_number_unsigned()) HYMBA_USER_ERROR(where, ": shape entries must be non-negative integers");
      const uint64_t n = d.get<uint64_t>();
      if (n != 0 && numel > (uint64_t(1) << 62) / n) HYMBA_USER_ERROR(where, ": shape overflows");
      numel *= n;
      t.shape.push_back(int64_t(n));
    }
    const json& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      HYMBA_USER_ERROR(where, ": data_offsets must be two non-negative integers");
    t.begin = off[0].get<uint64_t>();
    t.end = off[1].get<uint64_t>();
    if (t.end < t.begin) HYMBA_USER_ERROR(where, ": data_offsets [", t.begin, ", ", t.end, "] are reversed");
    if (t.end - t.begin != numel * dtype_size(t.dtype))
      HYMBA_USER_ERROR(where, ": data_offsets [", t.begin, ", ", t.end, "] hold ", t.end - t.begin, " bytes but ",
                       dtype_to_string(t.dtype), shape_str(t.shape), " needs ", numel * dtype_size(t.dtype));
    if (t.end > buffer_size)
      HYMBA_USER_ERROR(where, ": data_offsets [", t.begin, ", ", t.end, "] run past the data buffer (",
                       buffer_size, " bytes): the file is truncated or corrupt");
    tensors_.push_back(std::move(t));
  }
  std::sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (size_t i = 0; i + 1 < tensors_.size(); ++i) {
    const TensorInfo &a = tensors_[i], &b = tensors_[i + 1];
    // Empty tensors occupy no bytes and may share an offset with anything.
    if (a.end > b.begin && a.end > a.begin && b.end > b.begin)
      HYMBA_USER_ERROR(path, ": tensors '", a.name, "' [", a.begin, ", ", a.end, ") and '", b.name, "' [", b.begin,
                       ", ", b.end, ") overlap");
  }
  for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
}

const TensorInfo& File::info(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) HYMBA_USER_ERROR(path_, ": no tensor named '", name, "'");
  return tensors_[it->second];
}

Tensor File::read(const std::string& name) const {
  const TensorInfo& t = info(name);
  Tensor out = empty(t.shape, TensorOptions(t.dtype));
  const uint64_t n = t.end - t.begin;
  if (n == 0) return out;
  std::ifstream in(path_, std::ios::binary);
  if (!in) HYMBA_USER_ERROR(path_, ": cannot open safetensors file");
  in.seekg(std::streamoff(data_start_ + t.begin));
  in.read(static_cast<char*>(out.data_ptr()), std::streamsize(n));
  if (!in) HYMBA_USER_ERROR(path_, ": tensor '", name, "': read failed (file truncated?)");
  return out;
}

Reader::Reader(const std::string& path) : path_(path) {
  fs::path p(path);
  fs::path index;
  std::vector<fs::path> shards;
  if (fs::is_directory(p)) {
    if (fs::exists(p / "model.safetensors.index.json")) index = p / "model.safetensors.index.json";
    else if (fs::exists(p / "model.safetensors")) shards.push_back(p / "model.safetensors");
    else HYMBA_USER_ERROR(path, ": directory has neither model.safetensors nor model.safetensors.index.json");
  } else if (p.string().size() >= 5 && p.string().ends_with(".json")) {
    index = p;
  } else {
    if (!fs::exists(p)) HYMBA_USER_ERROR(path, ": no such file");
    shards.push_back(p);
  }
  std::map<std::string, std::string> expected;  // tensor -> shard file name, from the index
  if (!index.empty()) {
    std::ifstream in(index);
    if (!in) HYMBA_USER_ERROR(index.string(), ": cannot open");
    json j;
    try {
      j = json::parse(in);
    } catch (const json::exception& e) {
      HYMBA_USER_ERROR(index.string(), ": not valid JSON: ", e.what());
    }
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      HYMBA_USER_ERROR(index.string(), ": expected an object with a \"weight_map\" object");
    std::set<std::string> files;
    for (const auto& [name, f] : j["weight_map"].items()) {
      if (!f.is_string()) HYMBA_USER_ERROR(index.string(), ": weight_map entry '", name, "' is not a file name");
      expected[name] = f.get<std::string>();
      files.insert(f.get<std::string>());
    }
    for (const auto& f : files) shards.push_back(index.parent_path() / f);
  }
  for (const auto& s : shards) {
    files_.push_back(std::make_unique<File>(s.string()));
    const File& f = *files_.back();
    for (const auto& t : f.tensors()) {
      if (where_.count(t.name))
        HYMBA_USER_ERROR(path, ": tensor '", t.name, "' appears in both ", files_[where_[t.name]]->path(), " and ",
                         f.path());
      where_[t.name] = files_.size() - 1;
    }
  }
  for (const auto& [name, file] : expected) {
    auto it = where_.find(name);
    if (it == where_.end())
      HYMBA_USER_ERROR(index.string(), ": tensor '", name, "' is listed in the index but missing from ", file);
    if (fs::path(files_[it->second]->path()).filename() != fs::path(file).filename())
      HYMBA_USER_ERROR(index.string(), ": tensor '", name, "' is listed in ", file, " but found in ",
                       files_[it->second]->path());
  }
  if (!index.empty())
    for (const auto& [name, fi] : where_)
      if (!expected.count(name))
        HYMBA_USER_ERROR(index.string(), ": tensor '", name, "' in ", files_[fi]->path(), " is not in the index");
}

std::vector<std::string> Reader::names() const {
  std::vector<std::string> out;
  for (const auto& [n, _] : where_) out.push_back(n);
  return out;
}

const TensorInfo& Reader::info(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) HYMBA_USER_ERROR(path_, ": no tensor named '", name, "'");
  return files_[it->second]->info(name);
}

Tensor Reader::read(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) HYMBA_USER_ERROR(path_, ": no tensor named '", name, "'");
  return files_[it->second]->read(name);
}

void save(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
          const std::map<std::string, std::string>& metadata) {
  json h = json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  std::vector<Tensor> host;
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& [name, t0] : tensors) {
    HYMBA_CHECK(t0.defined(), "safetensors::save: tensor '", name, "' is undefined");
    HYMBA_CHECK(name != "__metadata__" && !name.empty(), "safetensors::save: bad tensor name '", name, "'");
    HYMBA_CHECK(seen.insert(name).second, "safetensors::save: duplicate tensor name '", name, "'");
    Tensor t = t0.detach().to(Device::cpu()).contiguous();
    const uint64_t n = t.nbytes();
    h[name] = {{"dtype", dtype_to_string(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {offset, offset + n}}};
    offset += n;
    host.push_back(t);
  }
  std::string header = h.dump();
  // Pad with spaces (valid JSON whitespace) so the data buffer is 8-byte aligned.
  header.append((8 - header.size() % 8) % 8, ' ');
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) HYMBA_USER_ERROR(tmp, ": cannot create file");
    unsigned char len[8];
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(header.data(), std::streamsize(header.size()));
    for (const Tensor& t : host)
      if (t.nbytes() > 0) out.write(static_cast<const char*>(t.data_ptr()), std::streamsize(t.nbytes()));
    out.close();
    if (!out) HYMBA_USER_ERROR(tmp, ": write failed");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) HYMBA_USER_ERROR(path, ": cannot rename from ", tmp, ": ", ec.message());
}

std::map<std::string, Tensor> load(const std::string& path) {
  Reader r(path);
  std::map<std::string, Tensor> out;
  for (const auto& n : r.names()) out[n] = r.read(n);
  return out;
}

}  // namespace hymba::safetensors
