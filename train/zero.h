// ZeRO-1 (optim.zero: 1): AdamW whose moments are sharded across the data-parallel ranks.
//
// The shards follow the gradient buckets of the GradReducer (train/ddp.h) in ReduceScatter
// mode: every bucket of `padded` elements splits into `world` equal blocks, and rank r owns
// block r of every bucket. Per step:
//   1. the reducer's reduce-scatter leaves each rank the summed gradient of its blocks;
//   2. the global gradient norm is the all-reduced sum of the blocks' sums of squares (the
//      padding is zero), then the blocks are clipped like clip_grad_norm_;
//   3. AdamW updates the rank's blocks of the parameters and moments, element by element
//      with the same kernel and the same per-group lr and weight decay as the unsharded
//      AdamW, so the result matches plain DDP up to the rounding of the norm;
//   4. an all-gather of every bucket's blocks gives every rank the whole updated parameters.
// Memory: the moments take 2/world of the unsharded optimizer's (fp32 master weights would
// be sharded the same way once the CUDA path has them).
//
// Checkpoints: state_dict() gathers the moments and returns exactly AdamW::state_dict()'s
// entries (names, order, shapes), so a checkpoint resumes with any rank count, sharded or
// not; load_state_dict() keeps this rank's blocks of a full state.
#pragma once

#include <memory>
#include <vector>

#include "train/ddp.h"
#include "train/optimizer.h"

namespace hymba::train {

class ShardedAdamW {
 public:
  // groups: as for AdamW (the parameters must be the reducer's, in any order). The reducer
  // must be in ReduceScatter mode and outlive the optimizer.
  ShardedAdamW(std::vector<ParamGroup> groups, AdamWOptions opts, GradReducer& reducer);

  // All collective: every rank calls them, in the same order.
  double grad_norm() const;
  double clip_grad_norm_(double max_norm);  // returns the norm before clipping
  void step(double lr);
  NamedTensors state_dict() const;

  void zero_grad();  // drops the gradient shards and any local .grad
  void load_state_dict(const NamedTensors& state);
  int64_t step_count() const { return step_; }
  std::vector<Tensor> params() const;
  // Elements of moment state this rank holds (per moment), for reports and tests.
  int64_t shard_numel() const;

 private:
  // The part of a parameter inside this rank's block of a bucket.
  struct Piece {
    size_t bucket;
    size_t slot;            // index into slots_
    int64_t param_offset;   // first element in the flattened parameter
    int64_t shard_offset;   // first element in the rank's block of the bucket
    int64_t numel;
  };
  struct Slot {
    std::string name;
    Tensor param;
    size_t group;
    size_t reducer_index;  // into reducer.params()
  };

  std::vector<ParamGroup> groups_;
  AdamWOptions opts_;
  GradReducer& reducer_;
  std::vector<Slot> slots_;         // group order, as AdamW lists its state
  std::vector<size_t> slot_of_;     // reducer index -> slot
  std::vector<Piece> pieces_;
  std::vector<Tensor> exp_avg_, exp_avg_sq_;  // per bucket: this rank's block
  int64_t step_ = 0;
};

}  // namespace hymba::train
