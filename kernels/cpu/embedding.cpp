#include "kernels/embedding.h"

#include <cstring>
#include <vector>

#include "core/parallel.h"

namespace hymba::kernels::cpu {
namespace {

constexpr int64_t kGrain = 1 << 15;  // elements copied / added before another thread pays off

// ids as a contiguous i64 vector, every id checked against [0, V) (serially, before any
// parallel work, so the error is the first bad id in order).
std::vector<int64_t> checked_ids(const Tensor& ids, int64_t V, const char* op, const std::string& table) {
  HYMBA_CHECK(ids.defined(), op, ": undefined ids");
  const Tensor c = ids.detach().contiguous();
  std::vector<int64_t> out(size_t(c.numel()));
  dispatch_index(ids.dtype(), op, [&](auto tag) {
    using I = typename decltype(tag)::type;
    const I* p = static_cast<const I*>(c.data_ptr());
    for (size_t i = 0; i < out.size(); ++i) {
      const int64_t id = int64_t(p[i]);
      if (id < 0 || id >= V) [[unlikely]]
        embed_check::fail_bad_id(op, id, int64_t(i), ids, V, table);
      out[i] = id;
    }
  });
  return out;
}

}  // namespace

Tensor embedding_forward(const Tensor& weight, const Tensor& ids) {
  const char* op = "embedding";
  embed_check::check_weight(op, weight);
  const int64_t V = weight.size(0), H = weight.size(1);
  std::vector<int64_t> idv = checked_ids(ids, V, op, "(weight " + weight.meta_str() + ")");
  Tensor out = empty(embed_check::output_shape(ids, H), TensorOptions(weight.dtype(), weight.device()));
  const int64_t n = int64_t(idv.size());
  if (n == 0 || H == 0) return out;
  const int64_t rs = weight.stride(0), cs = weight.stride(1);
  dispatch_float(weight.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* w = static_cast<const T*>(weight.data_ptr());
    T* o = out.data<T>();
    parallel_for(n, std::max<int64_t>(1, kGrain / H), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const T* src = w + idv[size_t(i)] * rs;
        T* dst = o + i * H;
        if (cs == 1) {
          std::memcpy(dst, src, size_t(H) * sizeof(T));
        } else {
          for (int64_t j = 0; j < H; ++j) dst[j] = src[j * cs];
        }
      }
    });
  });
  return out;
}

Tensor embedding_backward(const Tensor& grad, const Tensor& ids, int64_t V, int64_t padding_idx) {
  const char* op = "embedding_backward";
  embed_check::check_backward(op, grad, ids, V, padding_idx);
  const int64_t H = grad.size(-1);
  std::vector<int64_t> idv = checked_ids(ids, V, op, "");
  Tensor dw = zeros({V, H}, TensorOptions(grad.dtype(), grad.device()));
  const int64_t n = int64_t(idv.size());
  if (n == 0 || H == 0) return dw;
  const Tensor g = grad.detach().contiguous();

  // Group positions by id with a stable counting sort: each row of dW is then owned by one
  // thread and sums its rows in position order, so the result is the same bits for any
  // thread count (no atomics, no per-thread copies of dW).
  std::vector<int64_t> start(size_t(V) + 1, 0);
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t id : idv) start[size_t(id) + 1]++;
  for (int64_t v = 0; v < V; ++v) start[size_t(v) + 1] += start[size_t(v)];
  {
    std::vector<int64_t> pos(start.begin(), start.end() - 1);
    for (int64_t i = 0; i < n; ++i) order[size_t(pos[size_t(idv[size_t(i)])]++)] = i;
  }
  std::vector<int64_t> rows;  // ids that receive a gradient
  for (int64_t v = 0; v < V; ++v)
    if (start[size_t(v) + 1] > start[size_t(v)] && v != padding_idx) rows.push_back(v);

  dispatch_float(grad.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* gp = g.data<T>();
    T* d = dw.data<T>();
    const int64_t avg_work = std::max<int64_t>(1, n / std::max<int64_t>(1, int64_t(rows.size())) * H);
    parallel_for(int64_t(rows.size()), std::max<int64_t>(1, kGrain / avg_work), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t v = rows[size_t(r)];
        T* dst = d + v * H;
        for (int64_t k = start[size_t(v)]; k < start[size_t(v) + 1]; ++k) {
          const T* src = gp + order[size_t(k)] * H;
          for (int64_t j = 0; j < H; ++j) dst[j] += src[j];
        }
      }
    });
  });
  return dw;
}

}  // namespace hymba::kernels::cpu
