// Tensor: a strided view (shape, strides, offset in elements, dtype) onto a ref-counted
// Storage, plus the autograd metadata the engine needs (requires_grad, grad, grad_fn).
//
// Tensor is a cheap handle (a shared_ptr to TensorImpl): copying a Tensor aliases it, like
// torch.Tensor. The member view methods here (reshape, permute, narrow, ...) are *raw*: they
// record no autograd history. Differentiable versions with the same names live in
// autograd/ops.h (hymba::reshape(x, ...)). Calling a raw view on a tensor that requires grad
// while grad mode is on throws, so a gradient is never lost silently.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/storage.h"

namespace hymba {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);
Shape contiguous_strides(const Shape& s);

namespace autograd {
class Node;
}

class Tensor;
class TensorImpl;

struct TensorOptions {
  DType dtype = DType::F32;
  Device device = Device::cpu();
  TensorOptions() = default;
  TensorOptions(DType t) : dtype(t) {}  // NOLINT: implicit on purpose, zeros(s, DType::F64)
  TensorOptions(Device d) : device(d) {}  // NOLINT
  TensorOptions(DType t, Device d) : dtype(t), device(d) {}
};

// Called with the leaf's final gradient once per backward (see autograd/engine.h).
using GradHook = std::function<void(const Tensor& leaf)>;

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // A tensor over an existing storage.
  static Tensor make(StoragePtr storage, Shape shape, Shape strides, int64_t offset, DType dtype);

  bool defined() const { return impl_ != nullptr; }
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool is_same(const Tensor& o) const { return impl_ == o.impl_; }

  // ---- metadata ----
  const Shape& shape() const;
  const Shape& strides() const;
  int64_t dim() const;
  int64_t size(int64_t d) const;    // negative d counts from the end
  int64_t stride(int64_t d) const;
  int64_t numel() const;
  int64_t offset() const;
  DType dtype() const;
  Device device() const;
  bool is_cpu() const { return device().is_cpu(); }
  bool is_cuda() const { return device().is_cuda(); }
  bool is_contiguous() const;
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype()); }
  const StoragePtr& storage() const;
  std::string meta_str() const;  // "f32[2, 3] cpu" for error messages

  // ---- data access (CPU; checks dtype) ----
  void* data_ptr() const;  // points at element 0 of the view (storage + offset)
  template <typename T> T* data() const {
    HYMBA_CHECK(dtype() == dtype_of<T>::value, "data<", dtype_name(dtype_of<T>::value),
                ">() on a ", dtype_name(dtype()), " tensor");
    return static_cast<T*>(data_ptr());
  }
  // The value of a one-element tensor, converted to double (copies from the GPU if needed).
  double item() const;
  // All elements in row-major order, converted to T (copies from the GPU if needed).
  template <typename T> std::vector<T> to_vector() const;

  // ---- raw views (share storage, no autograd) ----
  Tensor view(const Shape& shape) const;      // requires compatible strides; -1 infers one dim
  Tensor reshape(const Shape& shape) const;   // a view when possible, else a contiguous copy
  Tensor flatten(int64_t start = 0, int64_t end = -1) const;
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor t() const { return transpose(-2, -1); }
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int64_t dim, int64_t index) const;  // drops `dim`
  Tensor expand(const Shape& shape) const;          // -1 keeps a dim; size-1 dims broadcast
  Tensor squeeze(int64_t dim) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor as_strided(const Shape& shape, const Shape& strides, int64_t offset) const;

  // ---- copies ----
  Tensor contiguous() const;  // self when already contiguous
  Tensor clone() const;       // always a fresh contiguous copy
  Tensor to(DType t) const;   // self when already of that dtype
  Tensor to(Device d) const;  // self when already there
  Tensor to(DType t, Device d) const { return to(d).to(t); }
  // Copies src into this view (shapes equal, or src broadcastable to ours); casts dtype,
  // crosses devices. Returns *this.
  const Tensor& copy_(const Tensor& src) const;
  const Tensor& fill_(double value) const;
  const Tensor& zero_() const { return fill_(0.0); }

  // ---- autograd ----
  bool requires_grad() const;
  // Marks a leaf as requiring grad. Returns *this for chaining.
  const Tensor& set_requires_grad(bool r) const;
  bool is_leaf() const;
  const Tensor& grad() const;  // undefined until a backward reached this leaf
  void set_grad(const Tensor& g) const;
  const std::shared_ptr<autograd::Node>& grad_fn() const;
  uint32_t output_nr() const;
  // A tensor sharing storage with this one, outside the graph.
  Tensor detach() const;
  // Registers a hook called once per backward with this leaf, after its .grad is final.
  void register_grad_hook(GradHook hook) const;
  // Runs the backward pass from this tensor (defined in autograd/engine.cpp). `grad` may be
  // omitted only for a one-element tensor.
  void backward(const Tensor& grad = Tensor(), bool retain_graph = false) const;

  std::string to_string(int64_t max_per_dim = 6) const;

 private:
  void check_raw_view(const char* op) const;
  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

struct AutogradMeta {
  bool requires_grad = false;
  Tensor grad;
  std::shared_ptr<autograd::Node> grad_fn;  // null for leaves
  uint32_t output_nr = 0;
  // Leaves only: the node that accumulates into .grad, created on first use and shared by
  // every graph that reads this leaf. Weak so that the leaf does not keep graphs alive.
  std::weak_ptr<autograd::Node> grad_accumulator;
  std::vector<GradHook> hooks;
};

class TensorImpl {
 public:
  StoragePtr storage;
  Shape shape;
  Shape strides;
  int64_t offset = 0;  // in elements
  DType dtype = DType::F32;
  AutogradMeta autograd;
};

// ---- grad mode ----
// Thread-local switch: while off, ops record no graph. NoGradGuard turns it off for a scope.
struct GradMode {
  static bool is_enabled();
  static void set_enabled(bool on);
};

class NoGradGuard {
 public:
  NoGradGuard() : prev_(GradMode::is_enabled()) { GradMode::set_enabled(false); }
  ~NoGradGuard() { GradMode::set_enabled(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

// ---- factories ----
class Generator;  // core/rng.h

Tensor empty(const Shape& shape, TensorOptions opts = {});
Tensor zeros(const Shape& shape, TensorOptions opts = {});
Tensor ones(const Shape& shape, TensorOptions opts = {});
Tensor full(const Shape& shape, double value, TensorOptions opts = {});
Tensor scalar_tensor(double value, TensorOptions opts = {});  // 0-dim
// [start, end) with step, like torch.arange.
Tensor arange(double start, double end, double step = 1.0, TensorOptions opts = {});
inline Tensor arange(int64_t end, TensorOptions opts = {}) { return arange(0.0, double(end), 1.0, opts); }
// Uniform in [low, high) and normal(mean, std) from a Philox generator (core/rng.h):
// the same generator state gives the same numbers on CPU and CUDA. gen = nullptr uses the
// default generator.
Tensor rand(const Shape& shape, TensorOptions opts = {}, Generator* gen = nullptr,
            double low = 0.0, double high = 1.0);
Tensor randn(const Shape& shape, TensorOptions opts = {}, Generator* gen = nullptr,
             double mean = 0.0, double std = 1.0);
// Copies values (row-major) into a new tensor: of T's dtype on the CPU, or as `opts` says.
template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, TensorOptions opts);
template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape) {
  return from_vector<T>(values, shape, TensorOptions(dtype_of<T>::value));
}

Tensor empty_like(const Tensor& t);
Tensor zeros_like(const Tensor& t);

// Normalizes a possibly negative dim against `ndim`, naming `op` in the error.
int64_t wrap_dim(int64_t d, int64_t ndim, const char* op);

}  // namespace hymba
