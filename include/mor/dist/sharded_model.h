// FSDP-style sharding of a MoRModel's parameter units across data-parallel ranks.
//
// Every unit (model::ParamUnit: root, each outer layer, the whole shared block) is one flat fp32
// vector: its parameters concatenated in unit order, zero-padded to world * S elements. Rank r owns
// elements [r*S, (r+1)*S): the fp32 master shard the optimizer updates, and the fp32 gradient
// shard. The model's own parameter tensors (in the model dtype: bf16 on GPU) are the unsharded
// views, written only by this class.
//
// Modes (config::ShardingMode):
//   zero3 — parameters, gradients and optimizer state sharded. A unit is all-gathered when the
//           forward enters it (UnitHooks::before) and, with reshard_after_forward, freed when it
//           leaves and re-gathered by a hook on its output before its backward runs. The shared
//           block is one unit: gathered once per forward and kept for all its recursions. The
//           root unit stays gathered until the micro-batch's gradients are reduced.
//   zero2 — parameters replicated; gradients reduce-scattered, optimizer state sharded; after the
//           optimizer step the updated shards are all-gathered into the parameters.
//   none  — everything replicated; gradients all-reduced; every rank updates all elements.
// Gradients of a micro-batch are reduced (reduce-scatter in fp32, SUM; all-reduce for mode none)
// once per unit and accumulated into the gradient shard, as soon as the unit's backward is over:
// the pre-backward hook of unit u reduces every later unit v > u still pending (and frees it in
// zero3), and reduce_gradients() after backward() reduces the rest. Full-size gradients therefore
// live only for the units whose backward is in flight.
//
// Why the hooks are safe: a hook sits on a fresh view of unit u's output, created after every
// node of units < u and before every node of units > u. The autograd engine runs ready nodes in
// decreasing creation order (AccumulateGrad first), so when the view's gradient is complete every
// node of units > u, and their parameter-gradient accumulation, has run; and no node of unit u has.
// The hooks fire in reverse unit order on every rank, whatever the router decided, so collectives
// stay matched across ranks.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "mor/config/config.h"
#include "mor/dist/comm.h"
#include "mor/model/model.h"

namespace mor::dist {

struct UnitShard {
  std::string name;
  std::vector<int64_t> params;   // indices into model.parameters()
  std::vector<int64_t> offsets;  // each parameter's first element in the unit's flat vector
  int64_t numel = 0;             // unpadded flat size
  int64_t shard_numel = 0;       // S (numel for mode none)
  int64_t shard_begin = 0;       // first flat element this rank owns
  at::Tensor master;             // fp32 [S], on the model device
  at::Tensor grad;               // fp32 [S]
  bool gathered = false;         // the model tensors hold the unit's values

  // Elements of the shard that hold real values: [0, valid()) (the rest is padding).
  int64_t valid() const;
};

// A parameter's slice inside this rank's shard of its unit.
struct ShardSpan {
  int64_t param = 0;        // index into model.parameters()
  int64_t shard_offset = 0; // first element in the shard
  int64_t param_offset = 0; // first element in the (flattened) parameter
  int64_t length = 0;
};

class ShardedModel final : public model::UnitHooks {
 public:
  // Builds the shards from the model's current (identical on every rank) parameter values; in
  // zero3 mode the model tensors are then freed until gathered.
  ShardedModel(model::MoRModel& model, Communicator& comm, config::ShardingMode mode, bool reshard_after_forward);
  ~ShardedModel() override;
  ShardedModel(const ShardedModel&) = delete;
  ShardedModel& operator=(const ShardedModel&) = delete;

  model::MoRModel& model() { return model_; }
  Communicator& comm() { return comm_; }
  config::ShardingMode mode() const { return mode_; }
  std::vector<UnitShard>& units() { return units_; }
  const std::vector<UnitShard>& units() const { return units_; }
  // This rank's slices of every parameter of unit u (parameters outside the shard are omitted).
  std::vector<ShardSpan> spans(int64_t unit) const;

  // Hooks for model.forward: gathers (zero3) and early gradient reduction (every mode).
  model::UnitHooks* hooks() { return this; }
  void before(int64_t unit) override;
  at::Tensor after(int64_t unit, const at::Tensor& output) override;

  // After a micro-batch's backward: reduces the parameter gradients of every unit the backward
  // hooks did not reduce into the gradient shards (adding), clears the model gradients and frees
  // gathered units (zero3).
  void reduce_gradients();
  void zero_grad_shards();
  // After the optimizer changed the master shards: refresh replicated parameters (zero2, none).
  void master_updated();
  // Gathers every unit (evaluation with many forwards, export); release() frees them again (zero3).
  void gather_all();
  void release();

  // The full fp32 value of parameter `param` (all ranks must call it, in the same order).
  at::Tensor full_parameter(int64_t param);
  // The full fp32 reduced gradient of parameter `param` from the gradient shards (collective).
  at::Tensor full_gradient(int64_t param);

 private:
  at::Tensor full_value(int64_t param, bool gradient);
  void gather(UnitShard& unit);
  void free(UnitShard& unit);
  void reduce_unit(int64_t unit);

  model::MoRModel& model_;
  Communicator& comm_;
  config::ShardingMode mode_;
  bool reshard_after_forward_;
  std::vector<UnitShard> units_;
  std::vector<int64_t> unit_of_param_;
  std::vector<char> reduced_;  // per unit: this micro-batch's gradients already reduced
};

}  // namespace mor::dist
