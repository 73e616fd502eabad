// Parameter and FLOP accounting of a model configuration: pure arithmetic, no tensors.
//
// Parameters (names match the model's tensors; d hidden, H heads, Hkv KV heads, D head dim,
// ff intermediate, V vocab, N = N_r):
//   embed [V,d]; lm_head [V,d] unless tie_embeddings; final norm [d].
//   per parameter set: q [H*D,d], k [Hkv*D,d], v [Hkv*D,d], o [d,H*D], gate/up [ff,d], down [d,ff]
//   (P_matmul), input and post-attention norms [d] each. With recursion.share_norms false every
//   unrolled layer owns its two norms; the matmul weights are still per parameter set.
//   expert-choice: one router per recursion, linear [1,d] or mlp [2d,d]+[1,2d]; expert.aux == router
//   adds one auxiliary router per recursion of the same shapes.
//   token-choice: one router, linear [N,d] or mlp [2d,d]+[N,2d]; the loss-free bias [N] is a buffer.
//
// Cost model (forward FLOPs per token of a sequence of length T, averaged over all T tokens;
// one multiply-add = 2 FLOPs; the embedding lookup is free):
//   - A layer run on a fraction c of the tokens costs c * 2 * P_matmul.
//   - Recursion-wise attention (active tokens attend only among themselves, causally):
//     c^2 * 2 * H*D * T. A layer that runs on all tokens is c = 1. (mor-spec §6.3 with 2*d*T
//     replaced by 2*H*D*T.)
//   - kv_mode share, recursions r >= 1 of the block: k and v are not computed (c * 2 * P_kv less,
//     P_kv = 2*Hkv*D*d) and active queries attend to the recursion-0 K/V of the earlier tokens:
//     c_r * c_0 * 2 * H*D * T (c_0 = 1 unless explicit expert capacities say otherwise).
//     K/V are cached only at recursion 0 (and in prelude/coda). Layouts without a block
//     (none, sequence, middle_sequence) are unaffected by kv_mode.
//   - Active fraction c_r at recursion r: expert-choice resolved_capacities(); token-choice assumes
//     a balanced router, c_r = (N - r) / N; a recursive model without router, 1.
//   - Routers: expert-choice router r (and its auxiliary router) runs on the candidates of
//     recursion r, the survivors of r-1 (fraction c_{r-1}, 1 for r = 0): c_{r-1} * 2 * weights.
//     The token-choice router runs once on all tokens before recursion 0 (charged to recursion 0).
//   - KV values cached per token per layer: 2 * Hkv * D times the fraction of tokens storing there.
//   - lm head: 2 * V * d. Training: 3 * (forward + lm head).
// Per-recursion costs are summed over the b layers of the block at that recursion.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mor/config/config.h"

namespace mor::model {

// Cost of one stage of the unrolled stack: the prelude, one recursion of the block, or the coda.
struct StageCost {
  int64_t recursion = -1;          // 0-based recursion; -1 for prelude and coda
  int64_t layers = 0;              // unrolled layers in the stage
  double active_fraction = 1.0;    // fraction of all tokens processed
  double matmul_flops = 0.0;       // per token of the sequence, summed over the stage's layers
  double attention_flops = 0.0;    // QK^T + AV at the accounting context length
  double router_flops = 0.0;
  double kv_values_per_token = 0.0;  // K+V values cached per token of the sequence

  double flops() const { return matmul_flops + attention_flops + router_flops; }
};

struct Accounting {
  int64_t matmul_params_per_layer = 0;  // q,k,v,o,gate,up,down of one parameter set
  int64_t params_per_layer = 0;         // one parameter set: matmul weights + its 2 norms
  int64_t non_embedding_params = 0;     // all parameter sets, + unshared norms (no routers)
  int64_t embedding_params = 0;
  int64_t lm_head_params = 0;           // 0 when tied
  int64_t final_norm_params = 0;
  int64_t router_params = 0;
  int64_t aux_router_params = 0;
  int64_t router_buffer_values = 0;     // token-choice loss-free bias [N_r]; not parameters
  int64_t total_params = 0;

  int64_t num_param_sets = 0;
  int64_t unrolled_depth = 0;  // L
  int64_t context = 0;         // T used for attention FLOPs

  StageCost prelude;              // all-token layers before the block (all layers without a block)
  std::vector<StageCost> depths;  // one per recursion; empty for none / sequence sharing
  StageCost coda;

  double forward_flops_per_token = 0.0;  // all decoder layers + routers, excluding lm head
  double lm_head_flops_per_token = 0.0;  // 2*V*d
  double train_flops_per_token = 0.0;    // 3 * (forward + lm head)
  double kv_values_per_token = 0.0;      // over all layers
  double vanilla_forward_flops_per_token = 0.0;  // vanilla model of the same shapes and depth L
  double vanilla_kv_values_per_token = 0.0;
};

// Throws mor::Error for a context < 1, a layer count that does not split (make_layout), a router
// on a layout without a recursive block, or capacities whose count is not num_recursions.
Accounting account(const config::ModelConfig& model, int64_t context);

// Human-readable report for `mor model info`: variant, layout, parameter counts, a per-stage cost
// table, totals and ratios vs vanilla.
std::string format_model_info(const config::ModelConfig& model, int64_t context);

}  // namespace mor::model
