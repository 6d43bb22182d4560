// Module: the unit models are built from, after torch.nn.Module.
//
// A module owns named parameters (leaf tensors that require grad), named buffers (state that
// is not trained: saved with the model unless registered as non-persistent, e.g. a RoPE
// table that is cheaper to recompute than to store) and named child modules. Names are
// stable and dotted by position in the tree ("layers.3.mixer.in_proj.weight"), ordered as
// PyTorch orders them (a module's own entries in registration order, then each child's), because
// checkpoints, the Hugging Face name map and the optimizer's weight-decay rules key on them.
//
// Tensors are handles: a concrete layer keeps the Tensor returned by register_parameter and
// uses it directly. to(DType)/to(Device) therefore convert parameters *in place* (the
// handle's storage and dtype change, the handle stays the same), so layers, tied weights and
// an optimizer built earlier all see the converted tensor.
//
// A tensor registered under two names (tied embeddings) is one parameter: named_parameters,
// parameters, state_dict and num_parameters list it once, under the name met first.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace hymba {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;
// Ordered (registration order), as state_dict returns it.
using StateDict = NamedTensors;

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Short type name for summaries and error messages ("Linear", "HybridBlock").
  virtual std::string type_name() const { return "Module"; }

  // ---- registration (names: non-empty, no '.', unique within this module) ----
  // Marks `t` as requiring grad (unless requires_grad is false: a frozen parameter) and
  // returns it. `t` must be a floating leaf.
  Tensor register_parameter(const std::string& name, Tensor t, bool requires_grad = true);
  // A non-persistent buffer moves with to() but is not part of state_dict.
  Tensor register_buffer(const std::string& name, Tensor t, bool persistent = true);
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    add_child(name, m);
    return m;
  }

  // ---- traversal (registration order, depth first: own entries, then each child's) ----
  NamedTensors named_parameters(const std::string& prefix = "") const;
  std::vector<Tensor> parameters() const;
  NamedTensors named_buffers(const std::string& prefix = "", bool persistent_only = false) const;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const;
  std::vector<std::shared_ptr<Module>> children() const;
  // Every descendant with its dotted path (this module itself is not included).
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_modules(const std::string& prefix = "") const;
  // The parameter or buffer at a dotted path; throws naming the path when there is none.
  Tensor find(const std::string& dotted_name) const;

  // ---- state ----
  // Parameters then persistent buffers of each module, in traversal order. The tensors alias
  // the module's (detached): copy them before modifying if the module must stay unchanged.
  StateDict state_dict() const;
  struct LoadResult {
    std::vector<std::string> missing;     // in the module, absent from the state
    std::vector<std::string> unexpected;  // in the state, absent from the module
  };
  // Copies values into the existing tensors (casting dtype, crossing devices). A shape
  // mismatch is always an error naming the key and both shapes; with strict, so are missing
  // and unexpected keys (UserError: a checkpoint is user input). Without strict they are
  // returned. Nothing is modified unless every check passes.
  LoadResult load_state_dict(const std::map<std::string, Tensor>& state, bool strict = true);
  LoadResult load_state_dict(const StateDict& state, bool strict = true);

  // ---- conversion (in place, keeps requires_grad; gradients are converted too) ----
  Module& to(DType dtype);  // floating parameters and buffers only; integer buffers are kept
  Module& to(Device device);

  // ---- training ----
  void zero_grad();  // drops every parameter's .grad (cheaper than writing zeros)
  Module& train(bool on = true);  // recursive
  Module& eval() { return train(false); }
  bool is_training() const { return training_; }
  int64_t num_parameters() const;

 private:
  void add_child(const std::string& name, std::shared_ptr<Module> m);
  void check_new_name(const std::string& name, const char* what) const;
  // Visits every (dotted name, tensor) pair, duplicates included.
  template <typename F>
  void visit_parameters(const std::string& prefix, F&& f) const;
  template <typename F>
  void visit_buffers(const std::string& prefix, F&& f) const;

  struct Buffer {
    std::string name;
    Tensor tensor;
    bool persistent;
  };
  NamedTensors params_;
  std::vector<Buffer> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

// An indexed list of modules, named "0", "1", ... like torch.nn.ModuleList, so that a stack
// of blocks gets the names "layers.0.*", "layers.1.*".
class ModuleList : public Module {
 public:
  std::string type_name() const override { return "ModuleList"; }
  template <typename M>
  std::shared_ptr<M> push_back(std::shared_ptr<M> m) {
    HYMBA_CHECK(m != nullptr, "ModuleList::push_back: null module at index ", items_.size());
    register_module(std::to_string(items_.size()), m);
    items_.push_back(m);
    return m;
  }
  size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }
  const std::shared_ptr<Module>& operator[](size_t i) const;
  // The i-th module as M; throws when it is of another type.
  template <typename M>
  std::shared_ptr<M> at(size_t i) const {
    auto p = std::dynamic_pointer_cast<M>((*this)[i]);
    HYMBA_CHECK(p != nullptr, "ModuleList::at(", i, "): module is a ", (*this)[i]->type_name(),
                ", not the requested type");
    return p;
  }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }

 private:
  std::vector<std::shared_ptr<Module>> items_;
};

}  // namespace hymba
