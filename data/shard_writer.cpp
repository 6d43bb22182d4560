#include "data/shard_writer.h"

#include <filesystem>

#include "core/error.h"
#include "data/shard_format.h"

namespace hymba::data {

namespace {

constexpr size_t kFlushTokens = size_t(1) << 20;

h5::Handle create_dataset(hid_t file, const char* name, hid_t type, uint64_t chunk, const std::string& path) {
  hsize_t dims[1] = {0}, maxdims[1] = {H5S_UNLIMITED}, chunks[1] = {chunk};
  h5::Handle space(h5::check_id(H5Screate_simple(1, dims, maxdims), path, "creating dataspace"));
  h5::Handle dcpl(h5::check_id(H5Pcreate(H5P_DATASET_CREATE), path, "creating property list"));
  h5::check(H5Pset_chunk(dcpl.get(), 1, chunks), path, "setting chunk size");
  // No modification times: the same input must give byte-identical files.
  h5::check(H5Pset_obj_track_times(dcpl.get(), false), path, "disabling time tracking");
  return h5::Handle(h5::check_id(
      H5Dcreate2(file, name, type, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT), path,
      std::string("creating dataset ") + name));
}

// Appends n elements of memory type `mtype` at the end of a 1-D extendible dataset.
void append_1d(hid_t dset, hid_t mtype, const void* data, uint64_t at, uint64_t n, const std::string& path,
               const char* name) {
  if (n == 0) return;
  hsize_t new_size[1] = {at + n};
  h5::check(H5Dset_extent(dset, new_size), path, std::string("extending dataset ") + name);
  h5::Handle fspace(h5::check_id(H5Dget_space(dset), path, "getting dataspace"));
  hsize_t start[1] = {at}, count[1] = {n};
  h5::check(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start, nullptr, count, nullptr), path,
            "selecting hyperslab");
  h5::Handle mspace(h5::check_id(H5Screate_simple(1, count, nullptr), path, "creating memory space"));
  h5::check(H5Dwrite(dset, mtype, mspace.get(), fspace.get(), H5P_DEFAULT, data), path,
            std::string("writing dataset ") + name);
}

}  // namespace

ShardWriter::ShardWriter(std::string path, uint64_t vocab_size, bool with_mask)
    : path_(std::move(path)), vocab_size_(vocab_size), with_mask_(with_mask) {
  HYMBA_CHECK(vocab_size_ > 0 && vocab_size_ <= (uint64_t(1) << 31), "vocab_size ", vocab_size_,
              " out of range");
  h5::quiet_errors();
  h5::Handle fcpl(h5::check_id(H5Pcreate(H5P_FILE_CREATE), path_, "creating property list"));
  file_ = h5::Handle(h5::check_id(H5Fcreate(path_.c_str(), H5F_ACC_EXCL, fcpl.get(), H5P_DEFAULT), path_,
                                  "creating file"));
  hid_t tok_type = vocab_size_ <= format::kMaxU16Vocab ? H5T_STD_U16LE : H5T_STD_U32LE;
  tokens_ = create_dataset(file_.get(), format::kTokens, tok_type, format::kTokenChunk, path_);
  offsets_ = create_dataset(file_.get(), format::kDocOffsets, H5T_STD_U64LE, format::kOffsetChunk, path_);
  if (with_mask_) mask_ = create_dataset(file_.get(), format::kLossMask, H5T_STD_U8LE, format::kTokenChunk, path_);
  off_buf_.push_back(0);
}

ShardWriter::~ShardWriter() {
  if (closed_) return;
  mask_.reset();
  offsets_.reset();
  tokens_.reset();
  file_.reset();
  std::error_code ec;
  std::filesystem::remove(path_, ec);
}

void ShardWriter::append(std::span<const int32_t> tokens, std::span<const uint8_t> mask) {
  HYMBA_CHECK(!closed_, "append after close");
  HYMBA_CHECK(with_mask_ ? mask.size() == tokens.size() : mask.empty(), "mask length ", mask.size(),
              " does not fit ", tokens.size(), " tokens (with_mask=", with_mask_, ")");
  for (int32_t t : tokens) {
    HYMBA_CHECK(t >= 0 && uint64_t(t) < vocab_size_, "token id ", t, " outside vocabulary of ", vocab_size_);
    tok_buf_.push_back(uint32_t(t));
  }
  if (with_mask_)
    for (uint8_t m : mask) mask_buf_.push_back(m ? 1 : 0);
  if (tok_buf_.size() >= kFlushTokens) flush();
}

void ShardWriter::end_document() {
  uint64_t end = num_tokens();
  if (end == last_offset_) return;
  off_buf_.push_back(end);
  last_offset_ = end;
  ++docs_;
}

void ShardWriter::flush() {
  append_1d(tokens_.get(), H5T_NATIVE_UINT32, tok_buf_.data(), written_, tok_buf_.size(), path_, format::kTokens);
  if (with_mask_)
    append_1d(mask_.get(), H5T_NATIVE_UINT8, mask_buf_.data(), written_, mask_buf_.size(), path_,
              format::kLossMask);
  written_ += tok_buf_.size();
  tok_buf_.clear();
  mask_buf_.clear();
  append_1d(offsets_.get(), H5T_NATIVE_UINT64, off_buf_.data(), offsets_written_, off_buf_.size(), path_,
            format::kDocOffsets);
  offsets_written_ += off_buf_.size();
  off_buf_.clear();
}

void ShardWriter::close(const ShardInfo& info) {
  HYMBA_CHECK(!closed_, "close twice");
  end_document();
  flush();
  hid_t f = file_.get();
  h5::write_attr_string(f, "format", format::kFormatName, path_);
  h5::write_attr_i64(f, "format_version", format::kFormatVersion, path_);
  h5::write_attr_string(f, "kind", info.kind, path_);
  h5::write_attr_string(f, "split", info.split, path_);
  h5::write_attr_u64(f, "vocab_size", vocab_size_, path_);
  h5::write_attr_u64(f, "num_tokens", written_, path_);
  h5::write_attr_u64(f, "num_docs", docs_, path_);
  h5::write_attr_i64(f, "sample_len", info.sample_len, path_);
  h5::write_attr_string(f, "tokenizer", info.tokenizer, path_);
  h5::write_attr_string(f, "tokenizer_name", info.tokenizer_name, path_);
  h5::write_attr_u64(f, "tokenizer_fingerprint", info.tokenizer_fingerprint, path_);
  h5::write_attr_i64(f, "bos_id", info.bos_id, path_);
  h5::write_attr_i64(f, "eos_id", info.eos_id, path_);
  h5::write_attr_i64(f, "pad_id", info.pad_id, path_);
  h5::write_attr_string(f, "source", info.source, path_);
  h5::write_attr_string(f, "settings", info.settings.empty() ? "{}" : info.settings, path_);
  mask_.reset();
  offsets_.reset();
  tokens_.reset();
  // Close explicitly, not through the handle, so that a failing final write is reported.
  h5::check(H5Fclose(file_.release()), path_, "closing file");
  closed_ = true;
}

}  // namespace hymba::data
