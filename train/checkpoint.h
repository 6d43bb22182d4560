// Training checkpoints: one HDF5 file holding everything a run needs to continue
// bit-identically, or a model needs to be rebuilt elsewhere (eval, generate, convert).
//
// File layout (all names are stable; other tools read them):
//   /model/<dotted name>        one dataset per model state_dict entry, its dtype and shape
//                               (f32 today; f64/i32/i64 also round-trip)
//   /optimizer/<name>           AdamW::state_dict entries: "exp_avg/<param>",
//                               "exp_avg_sq/<param>", "step" (a 0-dim tensor is a scalar
//                               dataspace). '/' in a name becomes a nested group.
//   Each group carries an attribute "names": the entry names in order, one per line, so the
//   order of state_dict survives (HDF5 iterates groups alphabetically).
//   attributes on the root:
//     format          "hymba-checkpoint"        format_version  1
//     step, tokens_seen                         i64
//     config          the resolved training config as YAML (what `hymba train` printed)
//     model_config    dump_model_config(model) : enough to rebuild the Model without `config`
//     loader_state, rng_state, meta             JSON text (objects; "{}" when unused)
//
// Writing goes to PATH.tmp which is renamed onto PATH only after the file is closed, so a
// crash never leaves a half checkpoint under the real name (a stale .tmp may remain and is
// ignored/overwritten). Reading validates everything and throws hymba::UserError naming the
// file and the missing or malformed key: a checkpoint is user input.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/tensor.h"
#include "layers/model.h"

namespace hymba::train {

struct Checkpoint {
  std::string config_yaml;        // resolved training config (may be "" for a bare model)
  std::string model_config_yaml;  // dump_model_config(...); required
  std::vector<std::pair<std::string, Tensor>> model;      // state_dict order
  std::vector<std::pair<std::string, Tensor>> optimizer;  // AdamW::state_dict order; may be empty
  int64_t step = 0;
  int64_t tokens_seen = 0;
  nlohmann::json loader_state = nlohmann::json::object();
  nlohmann::json rng_state = nlohmann::json::object();
  nlohmann::json meta = nlohmann::json::object();
};

// Writes `ck` atomically to `path` (via path + ".tmp" and rename). Tensors may be on any
// device and non-contiguous; they are copied to contiguous CPU memory for writing.
void save_checkpoint(const std::string& path, const Checkpoint& ck);

// Reads a checkpoint. with_optimizer = false skips the optimizer moments (eval, generate):
// `optimizer` is then empty. Tensors come back as contiguous CPU tensors in file order,
// which is the order they were written in.
Checkpoint load_checkpoint(const std::string& path, bool with_optimizer = true);

// Builds the Model from the checkpoint's model_config and loads its weights (strict).
std::unique_ptr<Model> load_model_from_checkpoint(const std::string& path);

// Checkpoint files of a run directory: RUN_DIR/ckpt_XXXXXXXX.h5 (8-digit step), sorted by
// step ascending. .tmp files are not listed.
std::string checkpoint_name(int64_t step);  // "ckpt_00001234.h5"
std::vector<std::string> list_checkpoints(const std::string& run_dir);
// The newest checkpoint of run_dir, or "" when there is none.
std::string latest_checkpoint(const std::string& run_dir);
// Deletes all but the newest `keep_last` checkpoints (keep_last <= 0 keeps everything).
// Returns the deleted paths.
std::vector<std::string> prune_checkpoints(const std::string& run_dir, int64_t keep_last);

}  // namespace hymba::train
