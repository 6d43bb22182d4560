// Errors for hymba.cpp.
//
// Two kinds, both exceptions so a CLI can turn them into a message and a non-zero exit:
//  - hymba::Error: an internal invariant failed or an op was called with bad arguments
//    (HYMBA_CHECK). The message carries file:line so a bug report points at the code.
//  - hymba::UserError: bad user input (config, data file, checkpoint, CLI flag). The message
//    names the file / key / line and what was expected; no source location, because the
//    user needs to fix their input, not read our code.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace hymba {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

class UserError : public std::runtime_error {
 public:
  explicit UserError(const std::string& msg) : std::runtime_error(msg) {}
};

namespace detail {
template <typename... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
[[noreturn]] void throw_error(const char* file, int line, const char* cond, const std::string& msg);
}  // namespace detail

// Builds a message from any streamable pieces: hymba::str("expected ", n, " got ", m).
template <typename... Args>
std::string str(const Args&... args) {
  return detail::str_cat(args...);
}

}  // namespace hymba

// HYMBA_CHECK(cond, "message pieces", ...): throws hymba::Error naming the condition,
// the message and file:line when cond is false.
#define HYMBA_CHECK(cond, ...)                                                       \
  do {                                                                               \
    if (!(cond)) [[unlikely]] {                                                      \
      ::hymba::detail::throw_error(__FILE__, __LINE__, #cond,                        \
                                   ::hymba::detail::str_cat("" __VA_OPT__(, ) __VA_ARGS__)); \
    }                                                                                \
  } while (0)

#define HYMBA_FAIL(...) \
  ::hymba::detail::throw_error(__FILE__, __LINE__, nullptr, ::hymba::detail::str_cat(__VA_ARGS__))

// For bad user input: throws hymba::UserError with exactly the given message.
#define HYMBA_USER_ERROR(...) throw ::hymba::UserError(::hymba::detail::str_cat(__VA_ARGS__))
