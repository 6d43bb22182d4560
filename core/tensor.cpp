#include "core/tensor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "core/convert.h"
#include "core/profiler.h"
#include "core/strided.h"
#ifdef HYMBA_WITH_CUDA
#include "core/cuda_ops.h"
#endif

namespace hymba {

// ---------------------------------------------------------------- shapes

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t v : s) n *= v;
  return n;
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (int64_t i = int64_t(s.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= std::max<int64_t>(s[i], 1);
  }
  return st;
}

int64_t wrap_dim(int64_t d, int64_t ndim, const char* op) {
  int64_t lo = -std::max<int64_t>(ndim, 1), hi = std::max<int64_t>(ndim, 1) - 1;
  HYMBA_CHECK(d >= lo && d <= hi, op, ": dim ", d, " out of range for a tensor of ", ndim, " dims");
  return d < 0 ? d + std::max<int64_t>(ndim, 1) : d;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  size_t n = std::max(a.size(), b.size());
  Shape r(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t x = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t y = i < n - b.size() ? 1 : b[i - (n - b.size())];
    HYMBA_CHECK(x == y || x == 1 || y == 1, op, ": shapes ", shape_str(a), " and ", shape_str(b),
                " cannot be broadcast together");
    r[i] = x == 1 ? y : x;
  }
  return r;
}

Shape broadcast_strides(const Tensor& t, const Shape& shape, const char* op) {
  const Shape& ts = t.shape();
  HYMBA_CHECK(ts.size() <= shape.size(), op, ": cannot broadcast ", shape_str(ts), " to ", shape_str(shape));
  Shape st(shape.size(), 0);
  size_t lead = shape.size() - ts.size();
  for (size_t i = 0; i < ts.size(); ++i) {
    if (ts[i] == shape[lead + i]) {
      st[lead + i] = shape[lead + i] == 1 ? 0 : t.strides()[i];
    } else {
      HYMBA_CHECK(ts[i] == 1, op, ": cannot broadcast ", shape_str(ts), " to ", shape_str(shape));
    }
  }
  return st;
}

// ---------------------------------------------------------------- grad mode

namespace {
thread_local bool g_grad_enabled = true;
}
bool GradMode::is_enabled() { return g_grad_enabled; }
void GradMode::set_enabled(bool on) { g_grad_enabled = on; }

// ---------------------------------------------------------------- basics

Tensor Tensor::make(StoragePtr storage, Shape shape, Shape strides, int64_t offset, DType dtype) {
  HYMBA_CHECK(shape.size() == strides.size(), "Tensor::make: shape ", shape_str(shape), " and strides ",
              shape_str(strides), " differ in rank");
  for (int64_t s : shape) HYMBA_CHECK(s >= 0, "Tensor::make: negative size in ", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::move(storage);
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

#define HYMBA_DEFINED_CHECK(op) HYMBA_CHECK(defined(), op, " on an undefined tensor")

const Shape& Tensor::shape() const { HYMBA_DEFINED_CHECK("shape()"); return impl_->shape; }
const Shape& Tensor::strides() const { HYMBA_DEFINED_CHECK("strides()"); return impl_->strides; }
int64_t Tensor::dim() const { return int64_t(shape().size()); }
int64_t Tensor::size(int64_t d) const { return shape()[wrap_dim(d, dim(), "size")]; }
int64_t Tensor::stride(int64_t d) const { return strides()[wrap_dim(d, dim(), "stride")]; }
int64_t Tensor::numel() const { return shape_numel(shape()); }
int64_t Tensor::offset() const { HYMBA_DEFINED_CHECK("offset()"); return impl_->offset; }
DType Tensor::dtype() const { HYMBA_DEFINED_CHECK("dtype()"); return impl_->dtype; }
Device Tensor::device() const { HYMBA_DEFINED_CHECK("device()"); return impl_->storage->device(); }
const StoragePtr& Tensor::storage() const { HYMBA_DEFINED_CHECK("storage()"); return impl_->storage; }

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (impl_->shape[i] == 1) continue;
    if (impl_->strides[i] != expected) return false;
    expected *= impl_->shape[i];
  }
  return true;
}

std::string Tensor::meta_str() const {
  if (!defined()) return "undefined";
  return str(dtype_name(dtype()), shape_str(shape()), " ", device().str());
}

void* Tensor::data_ptr() const {
  HYMBA_DEFINED_CHECK("data_ptr()");
  return static_cast<char*>(impl_->storage->data()) + impl_->offset * int64_t(dtype_size(impl_->dtype));
}

void Tensor::check_raw_view(const char* op) const {
  HYMBA_DEFINED_CHECK(op);
  HYMBA_CHECK(!(impl_->autograd.requires_grad && GradMode::is_enabled()), "Tensor::", op,
              " is a raw op that records no gradient, called on a tensor that requires grad: use the "
              "differentiable hymba::", op, " from autograd/ops.h, or wrap the call in NoGradGuard");
}

// ---------------------------------------------------------------- views

namespace {

Tensor make_view(const Tensor& t, Shape shape, Shape strides, int64_t offset) {
  return Tensor::make(t.storage(), std::move(shape), std::move(strides), offset, t.dtype());
}

Shape infer_shape(const Shape& shape, int64_t numel, const char* op, const Shape& from) {
  Shape out = shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      HYMBA_CHECK(infer < 0, op, ": more than one -1 in ", shape_str(shape));
      infer = int64_t(i);
    } else {
      HYMBA_CHECK(out[i] >= 0, op, ": invalid size in ", shape_str(shape));
      known *= out[i];
    }
  }
  if (infer >= 0) {
    HYMBA_CHECK(known != 0 && numel % known == 0, op, ": cannot view ", shape_str(from), " as ", shape_str(shape));
    out[infer] = numel / known;
  }
  HYMBA_CHECK(shape_numel(out) == numel, op, ": cannot view ", shape_str(from), " (", numel, " elements) as ",
              shape_str(shape));
  return out;
}

// Strides for viewing (old_shape, old_strides) as new_shape without a copy, or empty when
// impossible. Same algorithm as numpy/ATen: match runs of old dims that are contiguous among
// themselves against runs of new dims with the same element count.
bool compute_view_strides(const Shape& os, const Shape& ost, const Shape& ns, Shape& nst) {
  nst.assign(ns.size(), 0);
  if (shape_numel(os) == 0 || os.empty()) {
    nst = contiguous_strides(ns);
    return true;
  }
  int64_t view_d = int64_t(ns.size()) - 1;
  int64_t chunk_base_stride = ost.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t d = int64_t(os.size()) - 1; d >= 0; --d) {
    tensor_numel *= os[d];
    if (d == 0 || (os[d - 1] != 1 && ost[d - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || ns[view_d] == 1)) {
        nst[view_d] = view_numel * chunk_base_stride;
        view_numel *= ns[view_d];
        view_d--;
      }
      if (view_numel != tensor_numel) return false;
      if (d > 0) {
        chunk_base_stride = ost[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  return view_d == -1;
}

}  // namespace

Tensor Tensor::view(const Shape& shape) const {
  check_raw_view("view");
  Shape ns = infer_shape(shape, numel(), "view", this->shape());
  Shape nst;
  HYMBA_CHECK(compute_view_strides(this->shape(), strides(), ns, nst), "view: cannot view ", meta_str(),
              " with strides ", shape_str(strides()), " as ", shape_str(ns),
              " without a copy (use reshape)");
  return make_view(*this, ns, nst, offset());
}

Tensor Tensor::reshape(const Shape& shape) const {
  check_raw_view("reshape");
  Shape ns = infer_shape(shape, numel(), "reshape", this->shape());
  Shape nst;
  if (compute_view_strides(this->shape(), strides(), ns, nst)) return make_view(*this, ns, nst, offset());
  return contiguous().view(ns);
}

Tensor Tensor::flatten(int64_t start, int64_t end) const {
  if (dim() == 0) return reshape({1});
  start = wrap_dim(start, dim(), "flatten");
  end = wrap_dim(end, dim(), "flatten");
  HYMBA_CHECK(start <= end, "flatten: start dim ", start, " after end dim ", end);
  Shape ns;
  for (int64_t i = 0; i < start; ++i) ns.push_back(shape()[i]);
  int64_t m = 1;
  for (int64_t i = start; i <= end; ++i) m *= shape()[i];
  ns.push_back(m);
  for (int64_t i = end + 1; i < dim(); ++i) ns.push_back(shape()[i]);
  return reshape(ns);
}

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  check_raw_view("permute");
  HYMBA_CHECK(int64_t(dims.size()) == dim(), "permute: ", dims.size(), " dims given for a tensor of ", dim(),
              " dims ", meta_str());
  Shape ns(dims.size()), nst(dims.size());
  std::vector<bool> seen(dims.size(), false);
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = wrap_dim(dims[i], dim(), "permute");
    HYMBA_CHECK(!seen[d], "permute: dim ", d, " repeated");
    seen[d] = true;
    ns[i] = shape()[d];
    nst[i] = strides()[d];
  }
  return make_view(*this, ns, nst, offset());
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  std::vector<int64_t> p(dim());
  for (int64_t i = 0; i < dim(); ++i) p[i] = i;
  std::swap(p[wrap_dim(d0, dim(), "transpose")], p[wrap_dim(d1, dim(), "transpose")]);
  return permute(p);
}

Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const {
  return slice(d, start, start + length);
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  check_raw_view("slice");
  d = wrap_dim(d, dim(), "slice");
  int64_t n = shape()[d];
  HYMBA_CHECK(step >= 1, "slice: step must be positive, got ", step);
  if (start < 0) start += n;
  if (end < 0) end += n;
  HYMBA_CHECK(start >= 0 && start <= n && end >= start && end <= n, "slice: range [", start, ", ", end,
              ") out of bounds for dim ", d, " of ", meta_str());
  Shape ns = shape(), nst = strides();
  ns[d] = (end - start + step - 1) / step;
  nst[d] = strides()[d] * step;
  return make_view(*this, ns, nst, offset() + start * strides()[d]);
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  check_raw_view("select");
  d = wrap_dim(d, dim(), "select");
  int64_t n = shape()[d];
  if (index < 0) index += n;
  HYMBA_CHECK(index >= 0 && index < n, "select: index ", index, " out of range for dim ", d, " of ", meta_str());
  Shape ns = shape(), nst = strides();
  ns.erase(ns.begin() + d);
  nst.erase(nst.begin() + d);
  return make_view(*this, ns, nst, offset() + index * strides()[d]);
}

Tensor Tensor::expand(const Shape& shape) const {
  check_raw_view("expand");
  HYMBA_CHECK(shape.size() >= size_t(dim()), "expand: cannot expand ", meta_str(), " to ", shape_str(shape));
  Shape ns = shape;
  size_t lead = shape.size() - size_t(dim());
  for (size_t i = 0; i < lead; ++i) HYMBA_CHECK(ns[i] >= 0, "expand: -1 not allowed for new leading dims");
  for (size_t i = 0; i < size_t(dim()); ++i)
    if (ns[lead + i] == -1) ns[lead + i] = this->shape()[i];
  Shape st = broadcast_strides(*this, ns, "expand");
  return make_view(*this, ns, st, offset());
}

Tensor Tensor::squeeze(int64_t d) const {
  check_raw_view("squeeze");
  d = wrap_dim(d, dim(), "squeeze");
  if (shape()[d] != 1) return detach();
  Shape ns = shape(), nst = strides();
  ns.erase(ns.begin() + d);
  nst.erase(nst.begin() + d);
  return make_view(*this, ns, nst, offset());
}

Tensor Tensor::unsqueeze(int64_t d) const {
  check_raw_view("unsqueeze");
  d = wrap_dim(d, dim() + 1, "unsqueeze");
  Shape ns = shape(), nst = strides();
  int64_t st = d < dim() ? strides()[d] * shape()[d] : 1;
  ns.insert(ns.begin() + d, 1);
  nst.insert(nst.begin() + d, st);
  return make_view(*this, ns, nst, offset());
}

Tensor Tensor::as_strided(const Shape& shape, const Shape& strides, int64_t offset) const {
  check_raw_view("as_strided");
  HYMBA_CHECK(shape.size() == strides.size(), "as_strided: shape and strides differ in rank");
  int64_t max_off = offset;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 0) return make_view(*this, shape, strides, offset);
    HYMBA_CHECK(strides[i] >= 0, "as_strided: negative strides are not supported");
    max_off += (shape[i] - 1) * strides[i];
  }
  HYMBA_CHECK(offset >= 0 && size_t(max_off + 1) * dtype_size(dtype()) <= storage()->nbytes(),
              "as_strided: view ", shape_str(shape), " with strides ", shape_str(strides), " at offset ", offset,
              " exceeds the storage of ", storage()->nbytes(), " bytes");
  return make_view(*this, shape, strides, offset);
}

// ---------------------------------------------------------------- copies

namespace {

void cpu_copy(const Tensor& dst, const Tensor& src) {
  // src already has dst's shape (possibly with 0 strides from broadcasting).
  if (dst.dtype() == src.dtype() && dst.is_contiguous() && src.is_contiguous() &&
      src.numel() == dst.numel()) {
    if (dst.data_ptr() != src.data_ptr()) std::memcpy(dst.data_ptr(), src.data_ptr(), dst.nbytes());
    return;
  }
  auto L = make_layout<2>(dst.shape(), {&dst.strides(), &src.strides()});
  dispatch_all(dst.dtype(), "copy_", [&](auto dt) {
    using D = typename decltype(dt)::type;
    dispatch_all(src.dtype(), "copy_", [&](auto st) {
      using S = typename decltype(st)::type;
      D* d = static_cast<D*>(dst.data_ptr());
      const S* s = static_cast<const S*>(src.data_ptr());
      for_each_row<2>(L, 1 << 15, [&](const std::array<int64_t, 2>& off, int64_t n, const std::array<int64_t, 2>& in) {
        D* dp = d + off[0];
        const S* sp = s + off[1];
        for (int64_t i = 0; i < n; ++i) dp[i * in[0]] = convert<D>(sp[i * in[1]]);
      });
    });
  });
}

}  // namespace

const Tensor& Tensor::copy_(const Tensor& src) const {
  check_raw_view("copy_");
  HYMBA_CHECK(src.defined(), "copy_: source is undefined");
  Tensor s = src.detach();
  if (s.shape() != shape()) {
    HYMBA_CHECK(broadcast_shapes(s.shape(), shape(), "copy_") == shape(), "copy_: cannot copy ", src.meta_str(),
                " into ", meta_str());
    s = s.expand(shape());
  }
  if (numel() == 0) return *this;
  // Copies outside kernels (layout changes, casts, moves) are a family of their own in
  // `hymba bench train`'s profile; inside a kernel's scope they count as copy time, not its.
  profiler::Scope scope("copy_");
  Device dd = device(), sd = s.device();
  if (dd.is_cpu() && sd.is_cpu()) {
    // A source sharing our storage in another layout (x.copy_(x.t()), shifted slices) would
    // be overwritten while read: stage it first. The identical view is a no-op.
    if (s.storage() == storage()) {
      if (s.strides() == strides() && s.offset() == offset()) return *this;
      s = s.clone();
    }
    cpu_copy(*this, s);
    return *this;
  }
#ifdef HYMBA_WITH_CUDA
  if (dd.is_cuda() && sd.is_cuda()) {
    if (dd == sd) {
      cuda::copy_strided(*this, s);
    } else {
      Tensor staged = s.to(Device::cpu());
      copy_(staged);
    }
    return *this;
  }
  if (dd.is_cuda()) {  // host -> device: stage a contiguous host copy in the source dtype
    Tensor hs = s.contiguous();
    if (is_contiguous() && dtype() == hs.dtype()) {
      cuda::memcpy_h2d(data_ptr(), hs.data_ptr(), nbytes());
    } else {
      Tensor tmp = empty(shape(), TensorOptions(hs.dtype(), dd));
      cuda::memcpy_h2d(tmp.data_ptr(), hs.data_ptr(), hs.nbytes());
      cuda::copy_strided(*this, tmp);
    }
    return *this;
  }
  // device -> host
  Tensor ds = s.is_contiguous() ? s : s.contiguous();
  if (is_contiguous() && dtype() == ds.dtype()) {
    cuda::memcpy_d2h(data_ptr(), ds.data_ptr(), nbytes());
  } else {
    Tensor tmp = empty(shape(), TensorOptions(ds.dtype(), Device::cpu()));
    cuda::memcpy_d2h(tmp.data_ptr(), ds.data_ptr(), ds.nbytes());
    cpu_copy(*this, tmp);
  }
  return *this;
#else
  HYMBA_FAIL("copy_: ", src.meta_str(), " -> ", meta_str(), " needs CUDA, which this build lacks");
#endif
}

const Tensor& Tensor::fill_(double value) const {
  check_raw_view("fill_");
  if (numel() == 0) return *this;
  profiler::Scope scope("fill_");
  if (device().is_cuda()) {
#ifdef HYMBA_WITH_CUDA
    cuda::fill(*this, value);
    return *this;
#else
    HYMBA_FAIL("fill_ on ", meta_str(), " needs CUDA");
#endif
  }
  auto L = make_layout<1>(shape(), {&strides()});
  dispatch_all(dtype(), "fill_", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_integral_v<T>) {
      HYMBA_CHECK(std::isfinite(value) && value >= double(std::numeric_limits<T>::min()) &&
                      value <= double(std::numeric_limits<T>::max()),
                  "fill_: value ", value, " does not fit a ", dtype_name(dtype()), " tensor");
    }
    T v = convert<T>(value);
    T* p = static_cast<T*>(data_ptr());
    for_each_row<1>(L, 1 << 15, [&](const std::array<int64_t, 1>& off, int64_t n, const std::array<int64_t, 1>& in) {
      T* q = p + off[0];
      for (int64_t i = 0; i < n; ++i) q[i * in[0]] = v;
    });
  });
  return *this;
}

Tensor Tensor::contiguous() const {
  check_raw_view("contiguous");
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  check_raw_view("clone");
  Tensor out = empty(shape(), TensorOptions(dtype(), device()));
  out.copy_(*this);
  return out;
}

Tensor Tensor::to(DType t) const {
  check_raw_view("to");
  if (t == dtype()) return *this;
  Tensor out = empty(shape(), TensorOptions(t, device()));
  out.copy_(*this);
  return out;
}

Tensor Tensor::to(Device d) const {
  check_raw_view("to");
  if (d == device()) return *this;
  Tensor out = empty(shape(), TensorOptions(dtype(), d));
  out.copy_(*this);
  return out;
}

double Tensor::item() const {
  HYMBA_CHECK(defined() && numel() == 1, "item(): expected a one-element tensor, got ", meta_str());
  return to_vector<double>()[0];
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  HYMBA_DEFINED_CHECK("to_vector");
  NoGradGuard ng;
  Tensor c = empty(shape(), TensorOptions(dtype_of<T>::value, Device::cpu()));
  c.copy_(*this);
  const T* p = c.data<T>();
  return std::vector<T>(p, p + c.numel());
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<bf16> Tensor::to_vector<bf16>() const;
template std::vector<f16> Tensor::to_vector<f16>() const;
template std::vector<int32_t> Tensor::to_vector<int32_t>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;
template std::vector<uint8_t> Tensor::to_vector<uint8_t>() const;

// ---------------------------------------------------------------- autograd metadata

bool Tensor::requires_grad() const { return defined() && impl_->autograd.requires_grad; }

const Tensor& Tensor::set_requires_grad(bool r) const {
  HYMBA_DEFINED_CHECK("set_requires_grad");
  HYMBA_CHECK(!r || is_floating(dtype()), "set_requires_grad: only floating tensors can require grad, got ",
              meta_str());
  HYMBA_CHECK(impl_->autograd.grad_fn == nullptr || r, "set_requires_grad(false) on a non-leaf tensor: use detach()");
  impl_->autograd.requires_grad = r;
  return *this;
}

bool Tensor::is_leaf() const { return defined() && impl_->autograd.grad_fn == nullptr; }

const Tensor& Tensor::grad() const {
  HYMBA_DEFINED_CHECK("grad()");
  return impl_->autograd.grad;
}

void Tensor::set_grad(const Tensor& g) const {
  HYMBA_DEFINED_CHECK("set_grad");
  if (g.defined())
    HYMBA_CHECK(g.shape() == shape() && g.device() == device(), "set_grad: gradient ", g.meta_str(),
                " does not match tensor ", meta_str());
  impl_->autograd.grad = g;
}

const std::shared_ptr<autograd::Node>& Tensor::grad_fn() const {
  HYMBA_DEFINED_CHECK("grad_fn()");
  return impl_->autograd.grad_fn;
}

uint32_t Tensor::output_nr() const { return defined() ? impl_->autograd.output_nr : 0; }

Tensor Tensor::detach() const {
  HYMBA_DEFINED_CHECK("detach");
  return Tensor::make(storage(), shape(), strides(), offset(), dtype());
}

void Tensor::register_grad_hook(GradHook hook) const {
  HYMBA_CHECK(is_leaf() && requires_grad(), "register_grad_hook: only leaves that require grad have hooks, got ",
              meta_str());
  impl_->autograd.hooks.push_back(std::move(hook));
}

// ---------------------------------------------------------------- factories

Tensor empty(const Shape& shape, TensorOptions opts) {
  for (int64_t s : shape) HYMBA_CHECK(s >= 0, "empty: negative size in ", shape_str(shape));
  size_t nbytes = size_t(shape_numel(shape)) * dtype_size(opts.dtype);
  auto storage = std::make_shared<Storage>(nbytes, opts.device);
  return Tensor::make(std::move(storage), shape, contiguous_strides(shape), 0, opts.dtype);
}

Tensor full(const Shape& shape, double value, TensorOptions opts) {
  Tensor t = empty(shape, opts);
  t.fill_(value);
  return t;
}

Tensor zeros(const Shape& shape, TensorOptions opts) {
  Tensor t = empty(shape, opts);
  if (opts.device.is_cpu()) {
    std::memset(t.data_ptr(), 0, t.nbytes());  // all-zero bits is 0 for every dtype we have
  } else {
    t.fill_(0.0);
  }
  return t;
}

Tensor ones(const Shape& shape, TensorOptions opts) { return full(shape, 1.0, opts); }
Tensor scalar_tensor(double value, TensorOptions opts) { return full({}, value, opts); }
Tensor empty_like(const Tensor& t) { return empty(t.shape(), TensorOptions(t.dtype(), t.device())); }
Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), TensorOptions(t.dtype(), t.device())); }

Tensor arange(double start, double end, double step, TensorOptions opts) {
  HYMBA_CHECK(step != 0, "arange: step must be non-zero");
  double n_real = std::ceil((end - start) / step);
  int64_t n = n_real > 0 ? int64_t(n_real) : 0;
  Tensor t = empty({n}, TensorOptions(DType::F64, Device::cpu()));
  double* p = t.data<double>();
  for (int64_t i = 0; i < n; ++i) p[i] = start + double(i) * step;
  return t.to(opts.dtype).to(opts.device);
}

template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, TensorOptions opts) {
  HYMBA_CHECK(int64_t(values.size()) == shape_numel(shape), "from_vector: ", values.size(),
              " values for shape ", shape_str(shape));
  Tensor t = empty(shape, TensorOptions(dtype_of<T>::value, Device::cpu()));
  if (!values.empty()) std::memcpy(t.data_ptr(), values.data(), values.size() * sizeof(T));
  return t.to(opts.dtype).to(opts.device);
}
template Tensor from_vector<float>(const std::vector<float>&, const Shape&, TensorOptions);
template Tensor from_vector<double>(const std::vector<double>&, const Shape&, TensorOptions);
template Tensor from_vector<int32_t>(const std::vector<int32_t>&, const Shape&, TensorOptions);
template Tensor from_vector<int64_t>(const std::vector<int64_t>&, const Shape&, TensorOptions);
template Tensor from_vector<uint8_t>(const std::vector<uint8_t>&, const Shape&, TensorOptions);

}  // namespace hymba
