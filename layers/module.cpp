#include "layers/module.h"

#include <functional>
#include <set>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

namespace hymba {
namespace {

std::string join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

// Replaces t's data by `converted` without changing the handle (see module.h: layers and the
// optimizer keep handles, so conversion must be visible through them).
void assign_in_place(const Tensor& t, const Tensor& converted) {
  TensorImpl* impl = t.impl();
  impl->storage = converted.storage();
  impl->shape = converted.shape();
  impl->strides = converted.strides();
  impl->offset = converted.offset();
  impl->dtype = converted.dtype();
}

// Joins up to `limit` problems into one message, counting the rest.
std::string summarize(const std::vector<std::string>& problems, size_t limit = 8) {
  std::ostringstream os;
  for (size_t i = 0; i < problems.size() && i < limit; ++i) os << (i ? "; " : "") << problems[i];
  if (problems.size() > limit) os << "; ... and " << problems.size() - limit << " more";
  return os.str();
}

}  // namespace

// ---------------------------------------------------------------- registration

void Module::check_new_name(const std::string& name, const char* what) const {
  HYMBA_CHECK(!name.empty(), type_name(), ": ", what, " name is empty");
  HYMBA_CHECK(name.find('.') == std::string::npos, type_name(), ": ", what, " name '", name,
              "' contains '.', which separates path components");
  for (const auto& [n, _] : params_)
    HYMBA_CHECK(n != name, type_name(), ": ", what, " name '", name, "' is already a parameter");
  for (const auto& b : buffers_)
    HYMBA_CHECK(b.name != name, type_name(), ": ", what, " name '", name, "' is already a buffer");
  for (const auto& [n, _] : children_)
    HYMBA_CHECK(n != name, type_name(), ": ", what, " name '", name, "' is already a submodule");
}

Tensor Module::register_parameter(const std::string& name, Tensor t, bool requires_grad) {
  check_new_name(name, "parameter");
  HYMBA_CHECK(t.defined(), type_name(), ": parameter '", name, "' is undefined");
  HYMBA_CHECK(is_floating(t.dtype()), type_name(), ": parameter '", name, "' must be floating, got ", t.meta_str());
  HYMBA_CHECK(t.is_leaf(), type_name(), ": parameter '", name,
              "' is the result of an op (not a leaf): register a fresh tensor or its detach()");
  t.set_requires_grad(requires_grad);
  params_.emplace_back(name, t);
  return t;
}

Tensor Module::register_buffer(const std::string& name, Tensor t, bool persistent) {
  check_new_name(name, "buffer");
  HYMBA_CHECK(t.defined(), type_name(), ": buffer '", name, "' is undefined");
  HYMBA_CHECK(!t.requires_grad(), type_name(), ": buffer '", name,
              "' requires grad: register it as a parameter, or pass its detach()");
  buffers_.push_back({name, t, persistent});
  return t;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> m) {
  check_new_name(name, "submodule");
  HYMBA_CHECK(m != nullptr, type_name(), ": submodule '", name, "' is null");
  HYMBA_CHECK(m.get() != this, type_name(), ": submodule '", name, "' is the module itself");
  children_.emplace_back(name, std::move(m));
}

// ---------------------------------------------------------------- traversal

template <typename F>
void Module::visit_parameters(const std::string& prefix, F&& f) const {
  for (const auto& [n, t] : params_) f(join(prefix, n), t);
  for (const auto& [n, c] : children_) c->visit_parameters(join(prefix, n), f);
}

template <typename F>
void Module::visit_buffers(const std::string& prefix, F&& f) const {
  for (const auto& b : buffers_) f(join(prefix, b.name), b.tensor, b.persistent);
  for (const auto& [n, c] : children_) c->visit_buffers(join(prefix, n), f);
}

NamedTensors Module::named_parameters(const std::string& prefix) const {
  NamedTensors out;
  std::unordered_set<const TensorImpl*> seen;
  visit_parameters(prefix, [&](const std::string& name, const Tensor& t) {
    if (seen.insert(t.impl()).second) out.emplace_back(name, t);
  });
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [_, t] : named_parameters()) out.push_back(t);
  return out;
}

NamedTensors Module::named_buffers(const std::string& prefix, bool persistent_only) const {
  NamedTensors out;
  std::unordered_set<const TensorImpl*> seen;
  visit_buffers(prefix, [&](const std::string& name, const Tensor& t, bool persistent) {
    if ((persistent || !persistent_only) && seen.insert(t.impl()).second) out.emplace_back(name, t);
  });
  return out;
}

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::named_children() const { return children_; }

std::vector<std::shared_ptr<Module>> Module::children() const {
  std::vector<std::shared_ptr<Module>> out;
  for (const auto& [_, c] : children_) out.push_back(c);
  return out;
}

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::named_modules(const std::string& prefix) const {
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> out;
  for (const auto& [n, c] : children_) {
    std::string path = join(prefix, n);
    out.emplace_back(path, c);
    for (auto& sub : c->named_modules(path)) out.push_back(std::move(sub));
  }
  return out;
}

Tensor Module::find(const std::string& dotted_name) const {
  Tensor found;
  visit_parameters("", [&](const std::string& name, const Tensor& t) {
    if (!found.defined() && name == dotted_name) found = t;
  });
  visit_buffers("", [&](const std::string& name, const Tensor& t, bool) {
    if (!found.defined() && name == dotted_name) found = t;
  });
  HYMBA_CHECK(found.defined(), type_name(), ": no parameter or buffer named '", dotted_name, "'");
  return found;
}

// ---------------------------------------------------------------- state

StateDict Module::state_dict() const {
  StateDict out;
  std::unordered_set<const TensorImpl*> seen;
  auto add = [&](const std::string& name, const Tensor& t) {
    if (seen.insert(t.impl()).second) out.emplace_back(name, t.detach());
  };
  // Per module, parameters before buffers; a child's entries follow its parent's.
  std::function<void(const Module&, const std::string&)> walk = [&](const Module& m, const std::string& prefix) {
    for (const auto& [n, t] : m.params_) add(join(prefix, n), t);
    for (const auto& b : m.buffers_)
      if (b.persistent) add(join(prefix, b.name), b.tensor);
    for (const auto& [n, c] : m.children_) walk(*c, join(prefix, n));
  };
  walk(*this, "");
  return out;
}

Module::LoadResult Module::load_state_dict(const StateDict& state, bool strict) {
  std::map<std::string, Tensor> m;
  for (const auto& [name, t] : state) {
    if (!m.emplace(name, t).second) HYMBA_USER_ERROR("load_state_dict: key '", name, "' appears twice in the state");
  }
  return load_state_dict(m, strict);
}

Module::LoadResult Module::load_state_dict(const std::map<std::string, Tensor>& state, bool strict) {
  // Every name a saved tensor is reachable by (tied weights have several); a tensor counts
  // as present when the state holds any of them.
  struct Target {
    Tensor tensor;
    std::vector<std::string> names;
  };
  std::vector<Target> targets;
  std::unordered_map<const TensorImpl*, size_t> index;
  auto add = [&](const std::string& name, const Tensor& t) {
    auto [it, fresh] = index.emplace(t.impl(), targets.size());
    if (fresh) targets.push_back({t, {}});
    targets[it->second].names.push_back(name);
  };
  visit_parameters("", [&](const std::string& n, const Tensor& t) { add(n, t); });
  visit_buffers("", [&](const std::string& n, const Tensor& t, bool persistent) {
    if (persistent) add(n, t);
  });

  LoadResult result;
  std::vector<std::string> problems;
  std::vector<std::pair<Tensor, Tensor>> copies;  // (destination, source)
  std::set<std::string> known;
  for (const Target& target : targets) {
    bool present = false;
    for (const std::string& name : target.names) {
      known.insert(name);
      auto it = state.find(name);
      if (it == state.end()) continue;
      present = true;
      const Tensor& src = it->second;
      if (!src.defined()) {
        problems.push_back(str("key '", name, "' holds no tensor"));
      } else if (src.shape() != target.tensor.shape()) {
        problems.push_back(str("shape mismatch for '", name, "': state has ", shape_str(src.shape()),
                               ", the module expects ", shape_str(target.tensor.shape())));
      } else {
        copies.emplace_back(target.tensor, src);
      }
    }
    if (!present) result.missing.push_back(target.names.front());
  }
  for (const auto& [name, _] : state)
    if (!known.count(name)) result.unexpected.push_back(name);

  if (strict) {
    for (const auto& n : result.missing) problems.push_back(str("missing key '", n, "'"));
    for (const auto& n : result.unexpected) problems.push_back(str("unexpected key '", n, "'"));
  }
  if (!problems.empty()) HYMBA_USER_ERROR("load_state_dict (", type_name(), "): ", summarize(problems));

  NoGradGuard ng;
  for (auto& [dst, src] : copies) dst.detach().copy_(src);
  return result;
}

// ---------------------------------------------------------------- conversion

Module& Module::to(DType dtype) {
  HYMBA_CHECK(is_floating(dtype), type_name(), ".to(", dtype_name(dtype), "): parameters must stay floating");
  NoGradGuard ng;
  std::unordered_set<const TensorImpl*> done;
  auto convert = [&](const Tensor& t) {
    if (!is_floating(t.dtype()) || t.dtype() == dtype || !done.insert(t.impl()).second) return;
    const Tensor& g = t.grad();
    if (g.defined()) t.impl()->autograd.grad = g.detach().to(dtype);
    assign_in_place(t, t.detach().to(dtype));
  };
  visit_parameters("", [&](const std::string&, const Tensor& t) { convert(t); });
  visit_buffers("", [&](const std::string&, const Tensor& t, bool) { convert(t); });
  return *this;
}

Module& Module::to(Device device) {
  NoGradGuard ng;
  std::unordered_set<const TensorImpl*> done;
  auto convert = [&](const Tensor& t) {
    if (t.device() == device || !done.insert(t.impl()).second) return;
    const Tensor& g = t.grad();
    if (g.defined()) t.impl()->autograd.grad = g.detach().to(device);
    assign_in_place(t, t.detach().to(device));
  };
  visit_parameters("", [&](const std::string&, const Tensor& t) { convert(t); });
  visit_buffers("", [&](const std::string&, const Tensor& t, bool) { convert(t); });
  return *this;
}

// ---------------------------------------------------------------- training

void Module::zero_grad() {
  visit_parameters("", [](const std::string&, const Tensor& t) { t.set_grad(Tensor()); });
}

Module& Module::train(bool on) {
  training_ = on;
  for (const auto& [_, c] : children_) c->train(on);
  return *this;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (const auto& [_, t] : named_parameters()) n += t.numel();
  return n;
}

const std::shared_ptr<Module>& ModuleList::operator[](size_t i) const {
  HYMBA_CHECK(i < items_.size(), "ModuleList: index ", i, " out of range for a list of ", items_.size());
  return items_[i];
}

}  // namespace hymba
