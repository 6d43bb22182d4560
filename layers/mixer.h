// The interface every sequence mixer (attention, ssm, hybrid) implements, and the per-forward
// store through which a KV consumer reads its producer's keys and values.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "layers/model_config.h"
#include "layers/inference_cache.h"
#include "layers/module.h"

namespace hymba {

// Filled during one forward pass: entry i holds layer i's (k after RoPE, v), each
// (B, Hkv, T, d), when layer i is a KV producer with consumers. Consumers come later in the
// stack (the config checks it), so the entry is always there when read. The tensors carry
// autograd history: gradients from consumers flow back into the producer's projection.
// `capture`, when set (Model::prefill), receives each layer's decode state as the forward
// computes it: raw k, v (B, Hkv, T, d) in its LayerCache's k and v, and the SSM states.
struct KVStore {
  std::vector<std::pair<Tensor, Tensor>> kv;
  InferenceCache* capture = nullptr;
  explicit KVStore(size_t num_layers = 0) : kv(num_layers) {}
};

class Mixer : public Module {
 public:
  // u (B, T, hidden) -> (B, T, hidden); T counts the meta tokens.
  virtual Tensor forward(const Tensor& u, KVStore& store) const = 0;
  // One generation step: u (B, 1, hidden) at positions cache.pos -> (B, 1, hidden), updating
  // this layer's cache (a KV consumer reads its producer's, already updated this step).
  // Runs without a graph (callers hold a NoGradGuard).
  virtual Tensor decode(const Tensor& u, InferenceCache& cache) const = 0;
};

}  // namespace hymba
