// Thin RAII and error-checking helpers over the HDF5 C API, shared by the shard writer and
// reader. Every HDF5 call's result is checked; a failure becomes a hymba::UserError naming
// the file and the operation (HDF5 failures here come from the file: missing, corrupt,
// wrong layout, disk full), with HDF5's own innermost message appended.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

namespace hymba::data::h5 {

// Turns off HDF5's automatic printing of its error stack (we report errors ourselves).
// Idempotent and cheap; called by every entry point that opens or creates a file.
void quiet_errors();

// The innermost message of the current HDF5 error stack ("" when empty).
std::string last_error();

// Throws hymba::UserError "<file>: <what> failed (<hdf5 message>)" when rc < 0.
void check(herr_t rc, const std::string& file, const std::string& what);
hid_t check_id(hid_t id, const std::string& file, const std::string& what);

// Owns one HDF5 identifier of any kind and closes it with H5Idec_ref.
class Handle {
 public:
  Handle() = default;
  explicit Handle(hid_t id) : id_(id) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  Handle(Handle&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)) {}
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
    }
    return *this;
  }
  ~Handle() { reset(); }
  hid_t get() const { return id_; }
  explicit operator bool() const { return id_ >= 0; }
  void reset();
  // Gives up ownership (the caller closes the identifier itself).
  hid_t release() { return std::exchange(id_, H5I_INVALID_HID); }

 private:
  hid_t id_ = H5I_INVALID_HID;
};

// Attribute helpers on a file or object `obj`. Writers overwrite; readers return nullopt
// when the attribute is absent and throw UserError when it has the wrong type.
void write_attr_string(hid_t obj, const std::string& name, const std::string& value, const std::string& file);
void write_attr_i64(hid_t obj, const std::string& name, int64_t value, const std::string& file);
void write_attr_u64(hid_t obj, const std::string& name, uint64_t value, const std::string& file);
void write_attr_f64(hid_t obj, const std::string& name, double value, const std::string& file);
std::optional<std::string> read_attr_string(hid_t obj, const std::string& name, const std::string& file);
std::optional<int64_t> read_attr_i64(hid_t obj, const std::string& name, const std::string& file);
std::optional<double> read_attr_f64(hid_t obj, const std::string& name, const std::string& file);

}  // namespace hymba::data::h5
