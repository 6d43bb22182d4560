#include "train/cli/args.h"

#include <cstdlib>

namespace hymba::cli {

Args::Args(const std::vector<std::string>& argv, const std::vector<FlagSpec>& specs) {
  auto find = [&](const std::string& n) -> const FlagSpec* {
    for (const auto& s : specs)
      if (s.name == n) return &s;
    return nullptr;
  };
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a == "--help" || a == "-h") {
      help_ = true;
      continue;
    }
    if (a.size() > 2 && a.rfind("--", 0) == 0) {
      std::string name = a.substr(2), value;
      bool inline_value = false;
      if (auto eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
        inline_value = true;
      }
      const FlagSpec* spec = find(name);
      if (!spec) throw ArgError("unknown flag --" + name);
      if (spec->takes_value) {
        if (!inline_value) {
          if (i + 1 >= argv.size()) throw ArgError("flag --" + name + " expects a value");
          value = argv[++i];
        }
      } else if (inline_value) {
        throw ArgError("flag --" + name + " takes no value");
      }
      if (!spec->repeated && values_.count(name))
        throw ArgError("flag --" + name + " given more than once");
      values_[name].push_back(value);
      continue;
    }
    positionals_.push_back(a);
  }
}

std::optional<std::string> Args::get(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end() || it->second.empty()) return std::nullopt;
  return it->second.back();
}

std::string Args::get_or(const std::string& name, const std::string& def) const {
  auto v = get(name);
  return v ? *v : def;
}

std::string Args::require(const std::string& name) const {
  auto v = get(name);
  if (!v) throw ArgError("missing required flag --" + name);
  return *v;
}

std::vector<std::string> Args::get_all(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

long long Args::get_int(const std::string& name, long long def) const {
  auto v = get(name);
  if (!v) return def;
  char* end = nullptr;
  long long x = std::strtoll(v->c_str(), &end, 10);
  if (v->empty() || *end != '\0') throw ArgError("flag --" + name + " expects an integer, got '" + *v + "'");
  return x;
}

double Args::get_double(const std::string& name, double def) const {
  auto v = get(name);
  if (!v) return def;
  char* end = nullptr;
  double x = std::strtod(v->c_str(), &end);
  if (v->empty() || *end != '\0') throw ArgError("flag --" + name + " expects a number, got '" + *v + "'");
  return x;
}

}  // namespace hymba::cli
