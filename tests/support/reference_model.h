// An independent float64 reference of the MoR model, for tests only.
//
// It reads the weights of a MoRModel by parameter name (never through its internals), and runs
// every layer on the FULL sequence with dense masked attention: a recursion's active tokens are a
// boolean mask [B, T] over all positions, never a gathered subset. Inactive rows are computed too
// (they attend to themselves so nothing is NaN) and their outputs are discarded by the mask.
// The semantics are written from the specification (variants, EC/TC routing, KV modes, losses),
// not from the model's code.
//
// Weights are `tensor.to(kDouble)`: for a double model these are the model's own leaf tensors, so
// backward() through the reference fills the same .grad fields as the model's backward.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "mor/config/config.h"
#include "mor/model/layout.h"
#include "mor/model/model.h"

namespace mor::testing {

struct ReferenceOptions {
  bool training = true;
  config::RoutingMode routing = config::RoutingMode::kCausal;
  int64_t step = 0;
  at::Tensor balance_bias;    // [N_r] loss-free bias; undefined: zeros
  bool untie_layers = false;  // each unrolled layer gets its own leaf copies of its weights
};

struct ReferenceOutput {
  at::Tensor logits;                // [B, T, V] double
  at::Tensor depth;                 // [B, T] int64
  std::vector<at::Tensor> active;   // per recursion [B, T] bool
  std::vector<at::Tensor> candidates;  // per recursion [B, T] bool (expert-choice)
  at::Tensor router_bce, aux_router_bce, balance_loss, z_loss, router_accuracy, depth_counts;
  // untie_layers: unrolled layer j -> "self_attn.q_proj.weight" ... -> leaf copy (requires grad).
  std::vector<std::map<std::string, at::Tensor>> untied;
};

struct ReferenceLoss {
  at::Tensor total, lm, aux;
  int64_t targets = 0;
};

class ReferenceModel {
 public:
  explicit ReferenceModel(const model::MoRModel& model);

  ReferenceOutput forward(const at::Tensor& tokens, const ReferenceOptions& options) const;
  ReferenceLoss loss(const ReferenceOutput& out, const at::Tensor& targets,
                     double normalizer = 0.0) const;

  // The double weight of a parameter name (throws std::out_of_range if the model lacks it).
  const at::Tensor& weight(const std::string& name) const { return weights_.at(name); }
  const model::Layout& layout() const { return layout_; }

 private:
  struct LayerWeights {
    at::Tensor q, k, v, o, gate, up, down, norm_in, norm_post;
  };
  struct Kv {
    at::Tensor k, v;  // [B, Hkv, T, D] post-RoPE
  };

  LayerWeights layer_weights(int64_t unrolled, int64_t param_set,
                             std::vector<std::map<std::string, at::Tensor>>* untied) const;
  at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w) const;
  at::Tensor rope(const at::Tensor& x) const;  // x [B, heads, T, D], positions 0..T-1
  // allowed [B, T, T] (query, key). shared: use these K/V instead of computing k/v projections.
  at::Tensor decoder_layer(const at::Tensor& x, const LayerWeights& w, const at::Tensor& allowed,
                           const Kv* shared, Kv* produced) const;
  at::Tensor router_logits(const std::string& prefix, const at::Tensor& x) const;
  // Runs the block once on x with active mask `active` [B, T]. kv_mode share at recursion >= 1
  // reads `cache` (keys from recursion 0, valid where `first_active`); recursion 0 fills it.
  at::Tensor run_block(const at::Tensor& x, int64_t recursion, const at::Tensor& active,
                       const at::Tensor& first_active, std::vector<Kv>& cache,
                       std::vector<std::map<std::string, at::Tensor>>* untied) const;

  config::ModelConfig cfg_;
  model::Layout layout_;
  std::map<std::string, at::Tensor> weights_;
  int64_t heads_ = 0, kv_heads_ = 0, head_dim_ = 0;
};

}  // namespace mor::testing
