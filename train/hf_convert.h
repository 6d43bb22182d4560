// Conversion between Hugging Face Hymba checkpoints (config.json + model.safetensors, the
// layout of nvidia/Hymba-1.5B-Base) and our ModelConfig + state_dict.
//
// Only what our Model computes identically is accepted: every layer a parallel hybrid block
// with mean fusion, SwiGLU MLP (one expert), no q/k norm, no KV weight reuse, meta tokens
// only as a prefix. Anything else is refused with a hymba::UserError naming the config key
// and its value, never loaded approximately. Names follow the table in layers/model.h; the
// conv1d weight is (I, W) here and (I, 1, W) in HF; a tied lm_head is absent from HF files
// we write and ignored (after a shape check) when present in files we read.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "layers/model_config.h"
#include "layers/module.h"
#include "train/safetensors.h"

namespace hymba::hf {

// config.json -> ModelConfig (validated by parse_model_config). `source` names the file in
// messages.
ModelConfig config_from_json(const nlohmann::json& j, const std::string& source);
// DIR/config.json, or a config.json path.
ModelConfig load_config(const std::string& dir_or_file);
// ModelConfig -> config.json; refuses configs the HF Hymba model cannot express.
nlohmann::json config_to_json(const ModelConfig& cfg);

struct NameMapping {
  std::string ours, hf;
  Shape our_shape, hf_shape;
};
// One entry per parameter of Model(cfg), in state_dict order. Refuses non-HF-expressible
// configs like config_to_json.
std::vector<NameMapping> name_map(const ModelConfig& cfg);

// Reads HF weights into our names and shapes, as f32 CPU tensors in state_dict order. A
// missing tensor, a shape mismatch, or an HF tensor with no counterpart is a UserError.
StateDict import_weights(const ModelConfig& cfg, const safetensors::Reader& reader);
// Our state (by name; extra entries are an error) -> HF names and shapes in `dtype`.
std::vector<std::pair<std::string, Tensor>> export_weights(const ModelConfig& cfg,
                                                           const std::map<std::string, Tensor>& state,
                                                           DType dtype = DType::F32);

struct HFModel {
  ModelConfig config;
  StateDict state;  // our names
};
// A directory with config.json and model.safetensors (or a sharded index).
HFModel load(const std::string& dir);
// Writes DIR/config.json and DIR/model.safetensors (creating DIR).
void save(const std::string& dir, const ModelConfig& cfg, const StateDict& state, DType dtype = DType::F32);

}  // namespace hymba::hf
