// Printing, PyTorch-like: nested brackets, long dims elided with "...", then the metadata.
#include <cmath>
#include <cstdio>
#include <sstream>

#include "core/tensor.h"

namespace hymba {
namespace {

void format_value(std::ostringstream& os, double v, bool integral) {
  char buf[64];
  if (integral) {
    std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(v));
  } else if (std::isfinite(v) && v != 0 && (std::fabs(v) < 1e-4 || std::fabs(v) >= 1e6)) {
    std::snprintf(buf, sizeof buf, "%.4e", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.4f", v);
  }
  os << buf;
}

void print_dim(std::ostringstream& os, const std::vector<double>& v, const Shape& shape, const Shape& st,
               int64_t d, int64_t base, int64_t max_per_dim, bool integral, int indent) {
  if (d == int64_t(shape.size())) {
    format_value(os, v[base], integral);
    return;
  }
  os << "[";
  int64_t n = shape[d];
  bool elide = n > max_per_dim;
  int64_t head = elide ? max_per_dim / 2 : n;
  for (int64_t i = 0; i < n; ++i) {
    if (elide && i == head) {
      os << (d + 1 == int64_t(shape.size()) ? "..., " : "...,\n" + std::string(indent + 1, ' '));
      i = n - (max_per_dim - head) - 1;
      continue;
    }
    print_dim(os, v, shape, st, d + 1, base + i * st[d], max_per_dim, integral, indent + 1);
    if (i + 1 < n) os << (d + 1 == int64_t(shape.size()) ? ", " : ",\n" + std::string(indent + 1, ' '));
  }
  os << "]";
}

}  // namespace

std::string Tensor::to_string(int64_t max_per_dim) const {
  if (!defined()) return "Tensor(undefined)";
  std::ostringstream os;
  os << "Tensor(";
  std::vector<double> v = to_vector<double>();
  print_dim(os, v, shape(), contiguous_strides(shape()), 0, 0, std::max<int64_t>(max_per_dim, 2),
            !is_floating(dtype()), 7);
  os << ", " << meta_str();
  if (requires_grad()) os << ", requires_grad";
  os << ")";
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.to_string(); }

}  // namespace hymba
