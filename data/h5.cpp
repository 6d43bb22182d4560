#include "data/h5.h"

#include <mutex>

#include "core/error.h"

namespace hymba::data::h5 {

void quiet_errors() {
  static std::once_flag once;
  std::call_once(once, [] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); });
}

namespace {
herr_t innermost(unsigned n, const H5E_error2_t* err, void* out) {
  // The stack is walked from the innermost frame outward; keep the first description.
  auto* s = static_cast<std::string*>(out);
  if (n == 0 && err->desc) *s = err->desc;
  return 0;
}
}  // namespace

std::string last_error() {
  std::string msg;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, innermost, &msg);
  H5Eclear2(H5E_DEFAULT);
  return msg;
}

void check(herr_t rc, const std::string& file, const std::string& what) {
  if (rc >= 0) return;
  std::string detail = last_error();
  HYMBA_USER_ERROR(file, ": ", what, " failed", detail.empty() ? "" : " (" + detail + ")");
}

hid_t check_id(hid_t id, const std::string& file, const std::string& what) {
  check(id < 0 ? -1 : 0, file, what);
  return id;
}

void Handle::reset() {
  if (id_ >= 0) H5Idec_ref(id_);
  id_ = H5I_INVALID_HID;
}

namespace {

void write_attr(hid_t obj, const std::string& name, hid_t type, const void* value, const std::string& file) {
  if (H5Aexists(obj, name.c_str()) > 0) check(H5Adelete(obj, name.c_str()), file, "deleting attribute " + name);
  Handle space(check_id(H5Screate(H5S_SCALAR), file, "creating attribute space"));
  Handle attr(check_id(H5Acreate2(obj, name.c_str(), type, space.get(), H5P_DEFAULT, H5P_DEFAULT), file,
                       "creating attribute " + name));
  check(H5Awrite(attr.get(), type, value), file, "writing attribute " + name);
}

// Opens attribute `name`, or returns an empty handle when it does not exist.
Handle open_attr(hid_t obj, const std::string& name, const std::string& file) {
  htri_t exists = H5Aexists(obj, name.c_str());
  check(exists < 0 ? -1 : 0, file, "looking up attribute " + name);
  if (!exists) return Handle();
  return Handle(check_id(H5Aopen(obj, name.c_str(), H5P_DEFAULT), file, "opening attribute " + name));
}

}  // namespace

void write_attr_string(hid_t obj, const std::string& name, const std::string& value, const std::string& file) {
  Handle type(check_id(H5Tcopy(H5T_C_S1), file, "creating string type"));
  check(H5Tset_size(type.get(), value.empty() ? 1 : value.size()), file, "sizing string type");
  check(H5Tset_cset(type.get(), H5T_CSET_UTF8), file, "setting string charset");
  // Fixed-length string, null-padded: readable by h5py and h5dump without special handling.
  check(H5Tset_strpad(type.get(), H5T_STR_NULLPAD), file, "setting string padding");
  std::string buf = value.empty() ? std::string(1, '\0') : value;
  write_attr(obj, name, type.get(), buf.data(), file);
}

void write_attr_i64(hid_t obj, const std::string& name, int64_t value, const std::string& file) {
  write_attr(obj, name, H5T_NATIVE_INT64, &value, file);
}

void write_attr_u64(hid_t obj, const std::string& name, uint64_t value, const std::string& file) {
  write_attr(obj, name, H5T_NATIVE_UINT64, &value, file);
}

void write_attr_f64(hid_t obj, const std::string& name, double value, const std::string& file) {
  write_attr(obj, name, H5T_NATIVE_DOUBLE, &value, file);
}

std::optional<std::string> read_attr_string(hid_t obj, const std::string& name, const std::string& file) {
  Handle attr = open_attr(obj, name, file);
  if (!attr) return std::nullopt;
  Handle type(check_id(H5Aget_type(attr.get()), file, "reading type of attribute " + name));
  if (H5Tget_class(type.get()) != H5T_STRING)
    HYMBA_USER_ERROR(file, ": attribute '", name, "' should be a string");
  if (H5Tis_variable_str(type.get()) > 0) {
    // Written by other tools (h5py writes variable-length strings by default).
    char* p = nullptr;
    Handle mem(check_id(H5Tcopy(H5T_C_S1), file, "creating string type"));
    check(H5Tset_size(mem.get(), H5T_VARIABLE), file, "sizing string type");
    check(H5Aread(attr.get(), mem.get(), &p), file, "reading attribute " + name);
    std::string s = p ? p : "";
    H5free_memory(p);
    return s;
  }
  size_t size = H5Tget_size(type.get());
  std::string buf(size, '\0');
  check(H5Aread(attr.get(), type.get(), buf.data()), file, "reading attribute " + name);
  buf.resize(buf.find('\0') == std::string::npos ? buf.size() : buf.find('\0'));
  return buf;
}

std::optional<int64_t> read_attr_i64(hid_t obj, const std::string& name, const std::string& file) {
  Handle attr = open_attr(obj, name, file);
  if (!attr) return std::nullopt;
  Handle type(check_id(H5Aget_type(attr.get()), file, "reading type of attribute " + name));
  if (H5Tget_class(type.get()) != H5T_INTEGER)
    HYMBA_USER_ERROR(file, ": attribute '", name, "' should be an integer");
  int64_t v = 0;
  check(H5Aread(attr.get(), H5T_NATIVE_INT64, &v), file, "reading attribute " + name);
  return v;
}

std::optional<double> read_attr_f64(hid_t obj, const std::string& name, const std::string& file) {
  Handle attr = open_attr(obj, name, file);
  if (!attr) return std::nullopt;
  Handle type(check_id(H5Aget_type(attr.get()), file, "reading type of attribute " + name));
  H5T_class_t cls = H5Tget_class(type.get());
  if (cls != H5T_FLOAT && cls != H5T_INTEGER)
    HYMBA_USER_ERROR(file, ": attribute '", name, "' should be a number");
  double v = 0;
  check(H5Aread(attr.get(), H5T_NATIVE_DOUBLE, &v), file, "reading attribute " + name);
  return v;
}

}  // namespace hymba::data::h5
