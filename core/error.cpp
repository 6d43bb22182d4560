#include "core/error.h"

namespace hymba::detail {

void throw_error(const char* file, int line, const char* cond, const std::string& msg) {
  std::ostringstream os;
  os << msg;
  if (cond) os << (msg.empty() ? "" : " ") << "[check failed: " << cond << "]";
  // Keep the last two path parts ("cpu/matmul.cpp"): enough to find the check, and CPU and
  // CUDA files of one op family share a file name.
  std::string f(file);
  auto slash = f.find_last_of('/');
  if (slash != std::string::npos && slash > 0) {
    auto prev = f.find_last_of('/', slash - 1);
    f = prev == std::string::npos ? f : f.substr(prev + 1);
  }
  os << " (" << f << ":" << line << ")";
  throw Error(os.str());
}

}  // namespace hymba::detail
