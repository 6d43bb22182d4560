// A small flag parser shared by the subcommands: --flag value, --flag=value, boolean
// --switch, repeated flags, and positionals. Unknown flags are errors (exit 2 with usage).
#pragma once

#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace hymba::cli {

struct FlagSpec {
  std::string name;      // without dashes: "vocab"
  bool takes_value = true;
  bool repeated = false;  // may appear many times (values collected in order)
};

class ArgError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Args {
 public:
  // Throws ArgError for an unknown flag or a flag missing its value.
  Args(const std::vector<std::string>& argv, const std::vector<FlagSpec>& specs);

  bool has(const std::string& name) const { return values_.count(name) > 0; }
  bool help() const { return help_; }
  // The last value of a flag, or nullopt.
  std::optional<std::string> get(const std::string& name) const;
  std::string get_or(const std::string& name, const std::string& def) const;
  // Throws ArgError naming the flag when absent.
  std::string require(const std::string& name) const;
  std::vector<std::string> get_all(const std::string& name) const;
  // Typed getters throw ArgError naming the flag and the bad value.
  long long get_int(const std::string& name, long long def) const;
  double get_double(const std::string& name, double def) const;
  const std::vector<std::string>& positionals() const { return positionals_; }

 private:
  std::map<std::string, std::vector<std::string>> values_;
  std::vector<std::string> positionals_;
  bool help_ = false;
};

}  // namespace hymba::cli
