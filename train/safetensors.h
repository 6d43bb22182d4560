// Safetensors files (the Hugging Face weight format), read and written without Python.
//
// Layout: 8-byte little-endian header length N, N bytes of JSON
//   {"__metadata__": {"k": "v"}, "name": {"dtype": "BF16", "shape": [a, b], "data_offsets": [begin, end]}}
// then the data buffer; offsets are relative to the buffer's start, row-major, little-endian.
// Every tensor's byte range must lie inside the buffer, match dtype size * numel, and not
// overlap another's; any violation (or a truncated file, bad JSON, unknown dtype) is a
// hymba::UserError naming the file and the tensor. A sharded checkpoint has
// model.safetensors.index.json ({"weight_map": {"name": "model-00001-of-00002.safetensors"}}).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace hymba::safetensors {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t begin = 0, end = 0;  // within the data buffer
};

// "F32" <-> DType (F64, F32, BF16, F16, I64, I32, U8). Unknown strings throw naming `where`.
DType dtype_from_string(const std::string& s, const std::string& where);
const char* dtype_to_string(DType t);

// One .safetensors file. The header is read and validated on open; tensors are read on
// demand, so a reader holds no weights.
class File {
 public:
  explicit File(const std::string& path);
  const std::string& path() const { return path_; }
  // In file order (ascending data offset).
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(const std::string& name) const { return index_.count(name) > 0; }
  const TensorInfo& info(const std::string& name) const;  // throws naming file and tensor
  // A contiguous CPU tensor in the stored dtype.
  Tensor read(const std::string& name) const;

 private:
  std::string path_;
  uint64_t data_start_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// A model's weights: a single file, or a directory holding model.safetensors or a sharded
// model.safetensors.index.json (the index wins when both exist), or the index file itself.
class Reader {
 public:
  explicit Reader(const std::string& path);
  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const { return where_.count(name) > 0; }
  const TensorInfo& info(const std::string& name) const;
  Tensor read(const std::string& name) const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<std::unique_ptr<File>> files_;
  std::map<std::string, size_t> where_;  // tensor -> file
};

// Writes tensors (any device, any layout; copied to contiguous CPU) in the given order.
// The header is space-padded so the data buffer starts at a multiple of 8 bytes. Written to
// path + ".tmp" and renamed, so a failed write leaves no half file under `path`.
void save(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
          const std::map<std::string, std::string>& metadata = {});

// Every tensor of a file or directory (see Reader), by name.
std::map<std::string, Tensor> load(const std::string& path);

}  // namespace hymba::safetensors
