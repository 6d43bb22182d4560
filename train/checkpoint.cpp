#include "train/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <regex>
#include <sstream>

#include "core/error.h"
#include "data/h5.h"
#include "layers/model_config.h"

namespace hymba::train {

namespace h5 = hymba::data::h5;
namespace fs = std::filesystem;

namespace {

constexpr const char* kFormat = "hymba-checkpoint";
constexpr int64_t kFormatVersion = 1;

hid_t h5_type(DType t, const std::string& file, const std::string& name) {
  switch (t) {
    case DType::F32: return H5T_IEEE_F32LE;
    case DType::F64: return H5T_IEEE_F64LE;
    case DType::I32: return H5T_STD_I32LE;
    case DType::I64: return H5T_STD_I64LE;
    case DType::U8: return H5T_STD_U8LE;
    default: break;
  }
  HYMBA_USER_ERROR(file, ": cannot store tensor '", name, "' of dtype ", dtype_name(t),
                   " in a checkpoint (convert to f32 first)");
}

// The dtype a stored dataset reads back as, from its file type.
DType dtype_of(hid_t ftype, const std::string& file, const std::string& key) {
  H5T_class_t cls = H5Tget_class(ftype);
  size_t size = H5Tget_size(ftype);
  if (cls == H5T_FLOAT && size == 4) return DType::F32;
  if (cls == H5T_FLOAT && size == 8) return DType::F64;
  if (cls == H5T_INTEGER && size == 4) return DType::I32;
  if (cls == H5T_INTEGER && size == 8) return DType::I64;
  if (cls == H5T_INTEGER && size == 1) return DType::U8;
  HYMBA_USER_ERROR(file, ": key '", key, "' has an unsupported element type (class ", int(cls), ", ",
                   size, " bytes)");
}

void write_tensor(hid_t group, const std::string& name, const Tensor& t_in, const std::string& file,
                  hid_t lcpl) {
  Tensor t = t_in.detach().to(Device::cpu()).contiguous();
  hid_t type = h5_type(t.dtype(), file, name);
  h5::Handle space;
  if (t.dim() == 0) {
    space = h5::Handle(h5::check_id(H5Screate(H5S_SCALAR), file, "creating dataspace"));
  } else {
    std::vector<hsize_t> dims(t.shape().begin(), t.shape().end());
    space = h5::Handle(h5::check_id(H5Screate_simple(int(dims.size()), dims.data(), nullptr), file,
                                    "creating dataspace"));
  }
  h5::Handle dcpl(h5::check_id(H5Pcreate(H5P_DATASET_CREATE), file, "creating property list"));
  // No modification times, so that the same state gives byte-identical files.
  h5::check(H5Pset_obj_track_times(dcpl.get(), false), file, "disabling time tracking");
  h5::Handle ds(h5::check_id(H5Dcreate2(group, name.c_str(), type, space.get(), lcpl, dcpl.get(), H5P_DEFAULT),
                             file, "creating dataset " + name));
  if (t.numel() > 0)
    h5::check(H5Dwrite(ds.get(), type, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr()), file,
              "writing dataset " + name);
}

Tensor read_tensor(hid_t group, const std::string& name, const std::string& file, const std::string& key) {
  if (H5Lexists(group, name.c_str(), H5P_DEFAULT) <= 0)
    HYMBA_USER_ERROR(file, ": checkpoint is missing key '", key, "'");
  h5::Handle ds(h5::check_id(H5Dopen2(group, name.c_str(), H5P_DEFAULT), file, "opening dataset " + key));
  h5::Handle ftype(h5::check_id(H5Dget_type(ds.get()), file, "reading type of " + key));
  DType dt = dtype_of(ftype.get(), file, key);
  h5::Handle space(h5::check_id(H5Dget_space(ds.get()), file, "reading dataspace of " + key));
  int nd = H5Sget_simple_extent_ndims(space.get());
  if (nd < 0) HYMBA_USER_ERROR(file, ": key '", key, "' has an unreadable shape");
  std::vector<hsize_t> dims(size_t(nd), 0);
  if (nd > 0) H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  Shape shape(dims.begin(), dims.end());
  Tensor t = empty(shape, dt);
  if (t.numel() > 0)
    h5::check(H5Dread(ds.get(), h5_type(dt, file, key), H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr()), file,
              "reading dataset " + key);
  return t;
}

std::string join_lines(const std::vector<std::pair<std::string, Tensor>>& v) {
  std::string s;
  for (const auto& [n, t] : v) {
    s += n;
    s += '\n';
  }
  return s;
}

void write_group(hid_t file_id, const char* gname, const std::vector<std::pair<std::string, Tensor>>& tensors,
                 const std::string& file) {
  h5::Handle gcpl(h5::check_id(H5Pcreate(H5P_GROUP_CREATE), file, "creating property list"));
  h5::check(H5Pset_obj_track_times(gcpl.get(), false), file, "disabling time tracking");
  h5::Handle g(h5::check_id(H5Gcreate2(file_id, gname, H5P_DEFAULT, gcpl.get(), H5P_DEFAULT), file,
                            std::string("creating group ") + gname));
  // Optimizer names contain '/': let HDF5 create the intermediate groups.
  h5::Handle lcpl(h5::check_id(H5Pcreate(H5P_LINK_CREATE), file, "creating property list"));
  h5::check(H5Pset_create_intermediate_group(lcpl.get(), 1), file, "setting link property");
  for (const auto& [name, t] : tensors) {
    HYMBA_CHECK(!name.empty() && name.find('\n') == std::string::npos, "save_checkpoint: bad tensor name '",
                name, "'");
    HYMBA_CHECK(t.defined(), "save_checkpoint: tensor '", name, "' is undefined");
    write_tensor(g.get(), name, t, file, lcpl.get());
  }
  h5::write_attr_string(g.get(), "names", join_lines(tensors), file);
}

std::vector<std::pair<std::string, Tensor>> read_group(hid_t file_id, const char* gname, const std::string& file) {
  if (H5Lexists(file_id, gname, H5P_DEFAULT) <= 0)
    HYMBA_USER_ERROR(file, ": checkpoint is missing key '/", gname, "'");
  h5::Handle g(h5::check_id(H5Gopen2(file_id, gname, H5P_DEFAULT), file, std::string("opening group ") + gname));
  auto names = h5::read_attr_string(g.get(), "names", file);
  if (!names) HYMBA_USER_ERROR(file, ": checkpoint is missing key '/", gname, "@names'");
  std::vector<std::pair<std::string, Tensor>> out;
  std::istringstream in(*names);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    // Every prefix must exist for H5Lexists on a nested path not to fail.
    std::string key = std::string(gname) + "/" + line;
    size_t pos = 0;
    while ((pos = line.find('/', pos)) != std::string::npos) {
      if (H5Lexists(g.get(), line.substr(0, pos).c_str(), H5P_DEFAULT) <= 0)
        HYMBA_USER_ERROR(file, ": checkpoint is missing key '", key, "'");
      ++pos;
    }
    out.emplace_back(line, read_tensor(g.get(), line, file, key));
  }
  return out;
}

nlohmann::json parse_json_attr(hid_t obj, const char* name, const std::string& file) {
  auto s = h5::read_attr_string(obj, name, file);
  if (!s) HYMBA_USER_ERROR(file, ": checkpoint is missing key '@", name, "'");
  try {
    return nlohmann::json::parse(*s);
  } catch (const nlohmann::json::exception& e) {
    HYMBA_USER_ERROR(file, ": checkpoint key '@", name, "' is not valid JSON (", e.what(), ")");
  }
}

int64_t require_i64(hid_t obj, const char* name, const std::string& file) {
  auto v = h5::read_attr_i64(obj, name, file);
  if (!v) HYMBA_USER_ERROR(file, ": checkpoint is missing key '@", name, "'");
  return *v;
}

std::string require_str(hid_t obj, const char* name, const std::string& file) {
  auto v = h5::read_attr_string(obj, name, file);
  if (!v) HYMBA_USER_ERROR(file, ": checkpoint is missing key '@", name, "'");
  return *v;
}

}  // namespace

void save_checkpoint(const std::string& path, const Checkpoint& ck) {
  HYMBA_CHECK(!ck.model_config_yaml.empty(), "save_checkpoint: model_config_yaml is empty (", path, ")");
  h5::quiet_errors();
  const std::string tmp = path + ".tmp";
  std::error_code ec;
  fs::remove(tmp, ec);  // a stale .tmp from a crash
  {
    h5::Handle f(h5::check_id(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), tmp,
                              "creating checkpoint"));
    try {
      h5::write_attr_string(f.get(), "format", kFormat, tmp);
      h5::write_attr_i64(f.get(), "format_version", kFormatVersion, tmp);
      h5::write_attr_i64(f.get(), "step", ck.step, tmp);
      h5::write_attr_i64(f.get(), "tokens_seen", ck.tokens_seen, tmp);
      h5::write_attr_string(f.get(), "config", ck.config_yaml, tmp);
      h5::write_attr_string(f.get(), "model_config", ck.model_config_yaml, tmp);
      h5::write_attr_string(f.get(), "loader_state", ck.loader_state.dump(), tmp);
      h5::write_attr_string(f.get(), "rng_state", ck.rng_state.dump(), tmp);
      h5::write_attr_string(f.get(), "meta", ck.meta.dump(), tmp);
      write_group(f.get(), "model", ck.model, tmp);
      write_group(f.get(), "optimizer", ck.optimizer, tmp);
      h5::check(H5Fflush(f.get(), H5F_SCOPE_GLOBAL), tmp, "flushing checkpoint");
    } catch (...) {
      f.reset();
      fs::remove(tmp, ec);
      throw;
    }
    hid_t id = f.release();
    if (H5Fclose(id) < 0) {
      fs::remove(tmp, ec);
      HYMBA_USER_ERROR(tmp, ": closing checkpoint failed (", h5::last_error(), ")");
    }
  }
  // rename(2) is atomic within a file system: readers see the old file or the whole new one.
  fs::rename(tmp, path, ec);
  if (ec) HYMBA_USER_ERROR(path, ": cannot rename ", tmp, " into place (", ec.message(), ")");
}

Checkpoint load_checkpoint(const std::string& path, bool with_optimizer) {
  h5::quiet_errors();
  if (!fs::exists(path)) HYMBA_USER_ERROR(path, ": checkpoint file does not exist");
  h5::Handle f(h5::check_id(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), path, "opening checkpoint"));
  auto format = h5::read_attr_string(f.get(), "format", path);
  if (!format || *format != kFormat)
    HYMBA_USER_ERROR(path, ": not a hymba checkpoint (attribute 'format' is ",
                     format ? "'" + *format + "'" : std::string("missing"), ")");
  int64_t version = require_i64(f.get(), "format_version", path);
  if (version != kFormatVersion)
    HYMBA_USER_ERROR(path, ": checkpoint format_version ", version, " is not supported (expected ",
                     kFormatVersion, ")");
  Checkpoint ck;
  ck.step = require_i64(f.get(), "step", path);
  ck.tokens_seen = require_i64(f.get(), "tokens_seen", path);
  ck.config_yaml = require_str(f.get(), "config", path);
  ck.model_config_yaml = require_str(f.get(), "model_config", path);
  ck.loader_state = parse_json_attr(f.get(), "loader_state", path);
  ck.rng_state = parse_json_attr(f.get(), "rng_state", path);
  ck.meta = parse_json_attr(f.get(), "meta", path);
  ck.model = read_group(f.get(), "model", path);
  if (with_optimizer) ck.optimizer = read_group(f.get(), "optimizer", path);
  return ck;
}

std::unique_ptr<Model> load_model_from_checkpoint(const std::string& path) {
  Checkpoint ck = load_checkpoint(path, /*with_optimizer=*/false);
  ModelConfig cfg = parse_model_config_string(ck.model_config_yaml, path + ":model_config");
  auto model = std::make_unique<Model>(cfg);
  try {
    model->load_state_dict(ck.model, /*strict=*/true);
  } catch (const UserError& e) {
    HYMBA_USER_ERROR(path, ": ", e.what());
  }
  return model;
}

std::string checkpoint_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "ckpt_%08lld.h5", static_cast<long long>(step));
  return buf;
}

std::vector<std::string> list_checkpoints(const std::string& run_dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec)) return {};
  static const std::regex re(R"(ckpt_(\d+)\.h5)");
  for (const auto& e : fs::directory_iterator(run_dir, ec)) {
    std::smatch m;
    std::string name = e.path().filename().string();
    if (e.is_regular_file() && std::regex_match(name, m, re)) found.emplace_back(std::stoll(m[1].str()), e.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& [s, p] : found) out.push_back(p);
  return out;
}

std::string latest_checkpoint(const std::string& run_dir) {
  auto all = list_checkpoints(run_dir);
  return all.empty() ? std::string() : all.back();
}

std::vector<std::string> prune_checkpoints(const std::string& run_dir, int64_t keep_last) {
  std::vector<std::string> removed;
  if (keep_last <= 0) return removed;
  auto all = list_checkpoints(run_dir);
  if (int64_t(all.size()) <= keep_last) return removed;
  for (size_t i = 0; i + size_t(keep_last) < all.size(); ++i) {
    std::error_code ec;
    if (fs::remove(all[i], ec)) removed.push_back(all[i]);
  }
  return removed;
}

}  // namespace hymba::train
