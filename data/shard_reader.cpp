#include "data/shard_reader.h"

#include <filesystem>

#include "core/error.h"
#include "data/shard_format.h"

namespace hymba::data {

namespace {

// Opens a 1-D unsigned integer dataset of one of the allowed element sizes; returns its length.
h5::Handle open_1d(hid_t file, const char* name, std::initializer_list<size_t> sizes, const std::string& path,
                   uint64_t& length, size_t& elem_size) {
  h5::Handle d(h5::check_id(H5Dopen2(file, name, H5P_DEFAULT), path, std::string("opening dataset ") + name));
  h5::Handle type(h5::check_id(H5Dget_type(d.get()), path, std::string("reading type of ") + name));
  elem_size = H5Tget_size(type.get());
  bool ok_size = false;
  for (size_t s : sizes) ok_size |= s == elem_size;
  if (H5Tget_class(type.get()) != H5T_INTEGER || H5Tget_sign(type.get()) != H5T_SGN_NONE || !ok_size)
    HYMBA_USER_ERROR(path, ": dataset '", name, "' has the wrong element type (expected an unsigned integer of ",
                     *sizes.begin(), sizes.size() > 1 ? " or " + std::to_string(*(sizes.begin() + 1)) : "",
                     " bytes)");
  h5::Handle space(h5::check_id(H5Dget_space(d.get()), path, std::string("reading shape of ") + name));
  if (H5Sget_simple_extent_ndims(space.get()) != 1)
    HYMBA_USER_ERROR(path, ": dataset '", name, "' should be one-dimensional");
  hsize_t dims[1];
  h5::check(H5Sget_simple_extent_dims(space.get(), dims, nullptr), path, "reading shape");
  length = dims[0];
  return d;
}

bool has_link(hid_t file, const char* name, const std::string& path) {
  htri_t e = H5Lexists(file, name, H5P_DEFAULT);
  h5::check(e < 0 ? -1 : 0, path, std::string("looking up ") + name);
  return e > 0;
}

}  // namespace

ShardReader::ShardReader(std::string path) : path_(std::move(path)) {
  h5::quiet_errors();
  std::error_code ec;
  if (!std::filesystem::exists(path_, ec)) HYMBA_USER_ERROR(path_, ": no such file");
  if (!std::filesystem::is_regular_file(path_, ec)) HYMBA_USER_ERROR(path_, ": not a regular file");
  htri_t is_h5 = H5Fis_hdf5(path_.c_str());
  if (is_h5 < 0) {
    h5::last_error();
    HYMBA_USER_ERROR(path_, ": cannot read file (permissions?)");
  }
  if (is_h5 == 0) HYMBA_USER_ERROR(path_, ": not an HDF5 file");
  file_ = h5::Handle(h5::check_id(H5Fopen(path_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), path_, "opening file"));

  for (const char* required : {format::kTokens, format::kDocOffsets})
    if (!has_link(file_.get(), required, path_))
      HYMBA_USER_ERROR(path_, ": missing dataset '", required, "' (not a hymba token file? make one with hymba prepare)");

  size_t elem = 0;
  tokens_ = open_1d(file_.get(), format::kTokens, {2, 4}, path_, num_tokens_, elem);
  token_bytes_ = int(elem);
  uint64_t n_off = 0;
  offsets_ = open_1d(file_.get(), format::kDocOffsets, {8}, path_, n_off, elem);
  if (n_off < 1) HYMBA_USER_ERROR(path_, ": dataset 'doc_offsets' is empty (needs num_docs + 1 entries)");
  num_docs_ = n_off - 1;
  uint64_t first = 0, last = 0;
  read_1d(offsets_.get(), H5T_NATIVE_UINT64, 0, 1, n_off, &first, format::kDocOffsets);
  read_1d(offsets_.get(), H5T_NATIVE_UINT64, n_off - 1, 1, n_off, &last, format::kDocOffsets);
  if (first != 0 || last != num_tokens_)
    HYMBA_USER_ERROR(path_, ": doc_offsets runs from ", first, " to ", last, " but should run from 0 to ",
                     num_tokens_, " (the length of 'tokens'); the file is truncated or inconsistent");

  if (has_link(file_.get(), format::kLossMask, path_)) {
    uint64_t n_mask = 0;
    mask_ = open_1d(file_.get(), format::kLossMask, {1}, path_, n_mask, elem);
    if (n_mask != num_tokens_)
      HYMBA_USER_ERROR(path_, ": dataset 'loss_mask' has ", n_mask, " entries but 'tokens' has ", num_tokens_);
    has_mask_ = true;
  }

  auto vocab = h5::read_attr_i64(file_.get(), "vocab_size", path_);
  if (!vocab) HYMBA_USER_ERROR(path_, ": missing attribute 'vocab_size'");
  if (*vocab <= 0) HYMBA_USER_ERROR(path_, ": attribute 'vocab_size' is ", *vocab, ", should be positive");
  vocab_size_ = uint64_t(*vocab);
  if (token_bytes_ == 2 && vocab_size_ > format::kMaxU16Vocab)
    HYMBA_USER_ERROR(path_, ": vocab_size ", vocab_size_, " does not fit the uint16 'tokens' dataset");
  if (auto n = h5::read_attr_i64(file_.get(), "num_tokens", path_); n && uint64_t(*n) != num_tokens_)
    HYMBA_USER_ERROR(path_, ": attribute num_tokens = ", *n, " but dataset 'tokens' has ", num_tokens_,
                     " entries (file truncated?)");
  sample_len_ = h5::read_attr_i64(file_.get(), "sample_len", path_).value_or(0);
  if (sample_len_ < 0 || (sample_len_ > 0 && num_tokens_ % uint64_t(sample_len_) != 0))
    HYMBA_USER_ERROR(path_, ": attribute sample_len = ", sample_len_, " does not divide num_tokens = ", num_tokens_);
  kind_ = h5::read_attr_string(file_.get(), "kind", path_).value_or("text");
}

void ShardReader::read_1d(hid_t dset, hid_t mtype, uint64_t start, uint64_t count, uint64_t length, void* out,
                          const char* name) const {
  HYMBA_CHECK(start + count <= length && start + count >= start, "read of [", start, ", ", start + count,
              ") outside ", name, " of length ", length, " in ", path_);
  if (count == 0) return;
  h5::Handle fspace(h5::check_id(H5Dget_space(dset), path_, "getting dataspace"));
  hsize_t s[1] = {start}, c[1] = {count};
  h5::check(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, s, nullptr, c, nullptr), path_, "selecting hyperslab");
  h5::Handle mspace(h5::check_id(H5Screate_simple(1, c, nullptr), path_, "creating memory space"));
  h5::check(H5Dread(dset, mtype, mspace.get(), fspace.get(), H5P_DEFAULT, out), path_,
            std::string("reading dataset ") + name);
}

void ShardReader::read_tokens(uint64_t start, uint64_t count, int32_t* out) const {
  read_1d(tokens_.get(), H5T_NATIVE_INT32, start, count, num_tokens_, out, format::kTokens);
}

void ShardReader::read_mask(uint64_t start, uint64_t count, uint8_t* out) const {
  HYMBA_CHECK(has_mask_, path_, " has no loss_mask");
  read_1d(mask_.get(), H5T_NATIVE_UINT8, start, count, num_tokens_, out, format::kLossMask);
}

std::vector<uint64_t> ShardReader::read_doc_offsets(uint64_t first, uint64_t count) const {
  std::vector<uint64_t> out(count);
  read_1d(offsets_.get(), H5T_NATIVE_UINT64, first, count, num_docs_ + 1, out.data(), format::kDocOffsets);
  return out;
}

std::optional<std::string> ShardReader::attr_string(const std::string& name) const {
  return h5::read_attr_string(file_.get(), name, path_);
}

std::optional<int64_t> ShardReader::attr_int(const std::string& name) const {
  return h5::read_attr_i64(file_.get(), name, path_);
}

}  // namespace hymba::data
