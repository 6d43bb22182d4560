// Helpers every test suite uses (tests/<suite>/ include it as "tests/test_util.h").
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <exception>
#include <functional>
#include <string>
#include <vector>

namespace hymba::testutil {

// The message of the exception f throws, or "(no error)": tests check error messages by
// substring, so a missing throw fails with a readable diff.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

// Element-wise |got - ref| <= atol + rtol |ref|, stopping at the first failure.
inline void expect_close(const std::vector<double>& got, const std::vector<double>& ref, double rtol, double atol,
                         const std::string& what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], ref[i], atol + rtol * std::fabs(ref[i])) << what << " at " << i;
}

}  // namespace hymba::testutil
