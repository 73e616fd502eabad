// compact_attention: softmax attention over compacted token sets, causal by ORIGINAL position.
//
// q [B, Hq, Tq, D], k/v [B, Hkv, Tk, D] (Hq % Hkv == 0), q_pos [B, Tq] / k_pos [B, Tk] int64,
// q_valid / k_valid [B, T*] bool or undefined (all valid). Query i attends to key j iff
// k_valid[j] && k_pos[j] <= q_pos[i] && (no documents || q_doc[i] == k_doc[j]). Invalid (padding) query rows attend to key 0 only, so they
// stay finite; callers discard them. Every valid query must have at least one allowed key.
// plain_causal: q and k are the same full sequence at positions 0..T-1 (positions are ignored).
// Returns [B, Hq, Tq, D] in q's dtype; differentiable in q, k, v.
#pragma once

#include <ATen/core/Tensor.h>

namespace mor::kernels {

// ATen reference: scaled_dot_product_attention with a boolean mask (or is_causal).
at::Tensor compact_attention_ref(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& q_pos, const at::Tensor& k_pos,
                                 const at::Tensor& q_valid, const at::Tensor& k_valid,
                                 const at::Tensor& q_doc, const at::Tensor& k_doc,
                                 bool plain_causal, double scale);

}  // namespace mor::kernels
