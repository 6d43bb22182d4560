// Activations on CUDA (kernels/activation.h): SiLU, sigmoid, softplus and SwiGLU (split and
// packed), forwards and backwards, with the CPU kernel's formulas evaluated in fp32 (f64 for
// f64 tensors).
//
// One kernel per dtype serves every op (a runtime code picks the element function). Operands
// are described as `rows` rows of `cols` unit-stride elements, each operand with its own row
// stride: a dense tensor is one row, and the halves of a packed [gate | up] tensor are two
// operands with row stride 2H - so the packed forms run without splitting copies. Within a
// row, a thread handles 16 bytes of each operand with vector loads when every row start is
// 16-byte aligned. Inputs whose layout is not of that form (a transposed view) are made
// contiguous first.
#include <array>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/activation.h"
#include "kernels/cuda/common.cuh"

namespace hymba::kernels::cuda {
namespace {

enum class Act : int { SiluF, SiluB, SigmoidF, SigmoidB, SoftplusF, SoftplusB, SwigluF, SwigluB };

// Tensor inputs of each op: forward x; backward (dy, x); swiglu forward (gate, up); swiglu
// backward (dy, gate, up). Outputs: one, except swiglu backward (dgate, dup).
constexpr int num_inputs(Act op) {
  return op == Act::SwigluB ? 3 : (op == Act::SwigluF || op == Act::SiluB || op == Act::SigmoidB || op == Act::SoftplusB) ? 2 : 1;
}

// s = sigmoid(x) and sm = 1 - s = sigmoid(-x), both to a few ulp (see the CPU kernel).
template <typename A> __device__ __forceinline__ void sigmoid_pair(A x, A& s, A& sm) {
  const A e = ::exp(-::fabs(x));
  const A inv = A(1) / (A(1) + e);
  const bool pos = x >= A(0);
  s = (pos ? A(1) : e) * inv;
  sm = (pos ? e : A(1)) * inv;
}

constexpr double kSoftplusThreshold = 20.0;  // as the CPU, PyTorch and the Mamba reference

template <typename A> __device__ __forceinline__ void act_elem(Act op, A v0, A v1, A v2, A& o0, A& o1) {
  A s, sm;
  switch (op) {
    case Act::SiluF:
      sigmoid_pair(v0, s, sm);
      o0 = v0 * s;
      break;
    case Act::SiluB:  // silu'(x) = s (1 + x (1 - s))
      sigmoid_pair(v1, s, sm);
      o0 = v0 * s * (A(1) + v1 * sm);
      break;
    case Act::SigmoidF:
      sigmoid_pair(v0, s, sm);
      o0 = s;
      break;
    case Act::SigmoidB:
      sigmoid_pair(v1, s, sm);
      o0 = v0 * s * sm;
      break;
    case Act::SoftplusF: {
      // max(x, 0) written as the CPU's std::max(x, 0), which keeps a NaN x.
      const A v = (v0 < A(0) ? A(0) : v0) + ::log1p(::exp(-::fabs(v0)));
      o0 = v0 > A(kSoftplusThreshold) ? v0 : v;
      break;
    }
    case Act::SoftplusB:
      sigmoid_pair(v1, s, sm);
      o0 = v0 * (v1 > A(kSoftplusThreshold) ? A(1) : s);
      break;
    case Act::SwigluF:
      sigmoid_pair(v0, s, sm);
      o0 = v0 * s * v1;
      break;
    case Act::SwigluB:  // v0 = dy, v1 = gate, v2 = up; o0 = dgate, o1 = dup
      sigmoid_pair(v1, s, sm);
      o1 = v0 * (v1 * s);
      o0 = v0 * v2 * s * (A(1) + v1 * sm);
      break;
  }
}

template <typename T> struct ActArgs {
  const T* in[3];
  T* out[2];
  int64_t ld_in[3], ld_out[2];  // row strides in elements
  int64_t rows, cols;
};

constexpr int kThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kThreads) act_kernel(Act op, ActArgs<T> a, bool vec) {
  using A = acc_t<T>;
  using V = Vec16<T>;
  constexpr int kN = V::kN;
  const int nin = num_inputs(op);
  const int nout = op == Act::SwigluB ? 2 : 1;
  const int64_t chunks = vec ? (a.cols + kN - 1) / kN : a.cols;  // work items per row
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t r = blockIdx.y; r < a.rows; r += gridDim.y) {
    const T* in0 = a.in[0] + r * a.ld_in[0];
    const T* in1 = nin > 1 ? a.in[1] + r * a.ld_in[1] : in0;
    const T* in2 = nin > 2 ? a.in[2] + r * a.ld_in[2] : in0;
    T* out0 = a.out[0] + r * a.ld_out[0];
    T* out1 = nout > 1 ? a.out[1] + r * a.ld_out[1] : out0;
    for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < chunks; c += step) {
      if (vec && (c + 1) * kN <= a.cols) {
        V x0 = reinterpret_cast<const V*>(in0)[c], x1, x2, y0, y1;
        if (nin > 1) x1 = reinterpret_cast<const V*>(in1)[c];
        if (nin > 2) x2 = reinterpret_cast<const V*>(in2)[c];
#pragma unroll
        for (int j = 0; j < kN; ++j) {
          A o0 = A(0), o1 = A(0);
          act_elem<A>(op, load_acc(x0.v[j]), nin > 1 ? load_acc(x1.v[j]) : A(0), nin > 2 ? load_acc(x2.v[j]) : A(0),
                      o0, o1);
          y0.v[j] = store_acc<T>(o0);
          y1.v[j] = store_acc<T>(o1);
        }
        reinterpret_cast<V*>(out0)[c] = y0;
        if (nout > 1) reinterpret_cast<V*>(out1)[c] = y1;
      } else {
        // One element, or the scalar tail of a row in the vector layout.
        const int64_t j0 = vec ? c * kN : c;
        const int64_t j1 = vec ? (a.cols < j0 + kN ? a.cols : j0 + kN) : c + 1;
        for (int64_t j = j0; j < j1; ++j) {
          A o0 = A(0), o1 = A(0);
          act_elem<A>(op, load_acc(in0[j]), nin > 1 ? load_acc(in1[j]) : A(0), nin > 2 ? load_acc(in2[j]) : A(0), o0,
                      o1);
          out0[j] = store_acc<T>(o0);
          if (nout > 1) out1[j] = store_acc<T>(o1);
        }
      }
    }
  }
}

// The (rows, cols, row strides) form of same-shape operands, when their coalesced layout has
// it: at most two dims, the inner one unit-stride for all (or a single dim of any strides,
// read as rows of one element). Operand order: outputs, then inputs.
struct RowForm {
  bool ok = false;
  int64_t rows = 1, cols = 1;
  int64_t ld[5] = {};
};

RowForm row_form(const Shape& shape, const std::array<const Shape*, 5>& strides, const char* op) {
  const StridedLayout<5> L = make_layout<5>(shape, strides, op);
  RowForm f;
  if (L.ndim == 0) {
    f.ok = true;
    return f;
  }
  if (L.ndim > 2) return f;
  bool unit_inner = true;
  for (int k = 0; k < 5; ++k) unit_inner = unit_inner && L.strides[k][L.ndim - 1] == 1;
  if (L.ndim == 1 && !unit_inner) {  // a strided vector: rows of one element
    f.ok = true;
    f.rows = L.shape[0];
    for (int k = 0; k < 5; ++k) f.ld[k] = L.strides[k][0];
    return f;
  }
  if (!unit_inner) return f;
  f.ok = true;
  f.cols = L.shape[L.ndim - 1];
  if (L.ndim == 2) {
    f.rows = L.shape[0];
    for (int k = 0; k < 5; ++k) f.ld[k] = L.strides[k][0];
  }
  return f;
}

void check_float(const char* op, const Tensor& x) {
  HYMBA_CHECK(x.defined(), op, ": undefined input tensor");
  check_cuda_tensor(op, "input", x);
  HYMBA_CHECK(is_floating(x.dtype()), op, ": dtype ", dtype_name(x.dtype()),
              " not supported, expected a float dtype (input ", x.meta_str(), ")");
}

using activation_check::check_grad_like;

// Runs `op` over same-shape `ins` into `outs` (outputs this file allocated: contiguous, or
// halves of a contiguous packed tensor, so they always have a row form).
void run(const char* name, Act op, std::vector<Tensor> ins, const std::vector<Tensor>& outs) {
  const Tensor& o0 = outs[0];
  if (o0.numel() == 0) return;
  ::hymba::cuda::DeviceGuard guard(o0.device().index);
  auto form = [&]() {
    std::array<const Shape*, 5> st;
    for (int k = 0; k < 5; ++k) {
      const int i = k - 2;
      st[size_t(k)] = k < 2 ? &outs[size_t(k) < outs.size() ? size_t(k) : 0].strides()
                            : &ins[size_t(i) < ins.size() ? size_t(i) : 0].strides();
    }
    return row_form(o0.shape(), st, name);
  };
  RowForm f = form();
  if (!f.ok) {
    for (Tensor& t : ins) t = t.contiguous();
    f = form();
  }
  HYMBA_CHECK(f.ok, name, ": internal error, outputs without a row layout: ", o0.meta_str());
  dispatch_cuda_float(o0.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    ActArgs<T> a{};
    a.rows = f.rows;
    a.cols = f.cols;
    bool vec = true;
    auto row_aligned = [&](const void* p, int64_t ld) {
      return aligned16(p) && (f.rows == 1 || (ld * int64_t(sizeof(T))) % 16 == 0);
    };
    for (size_t k = 0; k < 2; ++k) {
      const size_t src = k < outs.size() ? k : 0;
      a.out[k] = ptr_of<T>(outs[src]);
      a.ld_out[k] = f.ld[k];
      vec = vec && row_aligned(a.out[k], a.ld_out[k]);
    }
    for (size_t i = 0; i < 3; ++i) {
      const size_t src = i < ins.size() ? i : 0;
      a.in[i] = ptr_of<const T>(ins[src]);
      a.ld_in[i] = f.ld[2 + i];
      vec = vec && row_aligned(a.in[i], a.ld_in[i]);
    }
    constexpr int kN = Vec16<T>::kN;
    vec = vec && f.cols >= kN;
    const int64_t chunks = vec ? ceil_div(f.cols, kN) : f.cols;
    const dim3 grid(grid_for(chunks, kThreads), unsigned(f.rows < 65535 ? f.rows : 65535));
    act_kernel<T><<<grid, kThreads, 0, stream()>>>(op, a, vec);
    HYMBA_CUDA_CHECK_LAUNCH(name, " ", o0.meta_str());
  });
}

Tensor unary_forward(const char* name, Act op, const Tensor& x) {
  check_float(name, x);
  Tensor y = empty(x.shape(), TensorOptions(x.dtype(), x.device()));
  run(name, op, {x}, {y});
  return y;
}

Tensor unary_backward(const char* name, Act op, const Tensor& dy, const Tensor& x) {
  check_float(name, x);
  check_grad_like(name, dy, x);
  Tensor dx = empty(x.shape(), TensorOptions(x.dtype(), x.device()));
  run(name, op, {dy, x}, {dx});
  return dx;
}

void check_swiglu_pair(const char* op, const Tensor& gate, const Tensor& up) {
  activation_check::check_swiglu_pair(op, gate, up, check_float);
}

using activation_check::packed_half;

}  // namespace

Tensor silu_forward(const Tensor& x) { return unary_forward("silu", Act::SiluF, x); }
Tensor silu_backward(const Tensor& dy, const Tensor& x) { return unary_backward("silu_backward", Act::SiluB, dy, x); }
Tensor sigmoid_forward(const Tensor& x) { return unary_forward("sigmoid", Act::SigmoidF, x); }
Tensor sigmoid_backward(const Tensor& dy, const Tensor& x) {
  return unary_backward("sigmoid_backward", Act::SigmoidB, dy, x);
}
Tensor softplus_forward(const Tensor& x) { return unary_forward("softplus", Act::SoftplusF, x); }
Tensor softplus_backward(const Tensor& dy, const Tensor& x) {
  return unary_backward("softplus_backward", Act::SoftplusB, dy, x);
}

Tensor swiglu_forward(const Tensor& gate, const Tensor& up) {
  const char* op = "swiglu";
  check_swiglu_pair(op, gate, up);
  Tensor y = empty(gate.shape(), TensorOptions(gate.dtype(), gate.device()));
  run(op, Act::SwigluF, {gate, up}, {y});
  return y;
}

std::tuple<Tensor, Tensor> swiglu_backward(const Tensor& dy, const Tensor& gate, const Tensor& up) {
  const char* op = "swiglu_backward";
  check_swiglu_pair(op, gate, up);
  check_grad_like(op, dy, gate);
  Tensor dg = empty(gate.shape(), TensorOptions(gate.dtype(), gate.device()));
  Tensor du = empty(gate.shape(), TensorOptions(gate.dtype(), gate.device()));
  run(op, Act::SwigluB, {dy, gate, up}, {dg, du});
  return {dg, du};
}

Tensor swiglu_packed_forward(const Tensor& x_in) {
  const char* op = "swiglu_packed";
  check_float(op, x_in);
  const int64_t h = packed_half(op, x_in);
  const Shape ys = activation_check::packed_out_shape(x_in, h);
  Tensor y = empty(ys, TensorOptions(x_in.dtype(), x_in.device()));
  if (y.numel() == 0) return y;
  const Tensor x = x_in.detach().contiguous();  // detached: narrow is a raw view
  run(op, Act::SwigluF, {x.narrow(-1, 0, h), x.narrow(-1, h, h)}, {y});
  return y;
}

Tensor swiglu_packed_backward(const Tensor& dy, const Tensor& x_in) {
  const char* op = "swiglu_packed_backward";
  check_float(op, x_in);
  const int64_t h = packed_half(op, x_in);
  const Shape ys = activation_check::packed_out_shape(x_in, h);
  activation_check::check_packed_grad(op, dy, x_in, ys);
  Tensor dx = empty(x_in.shape(), TensorOptions(x_in.dtype(), x_in.device()));
  if (dx.numel() == 0) return dx;
  const Tensor x = x_in.detach().contiguous();  // detached: narrow is a raw view
  run(op, Act::SwigluB, {dy, x.narrow(-1, 0, h), x.narrow(-1, h, h)}, {dx.narrow(-1, 0, h), dx.narrow(-1, h, h)});
  return dx;
}

}  // namespace hymba::kernels::cuda
