#include "compact_attention/compact_attention.h"

#include <ATen/ATen.h>

namespace mor::kernels {

at::Tensor compact_attention_ref(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& q_pos, const at::Tensor& k_pos,
                                 const at::Tensor& q_valid, const at::Tensor& k_valid,
                                 const at::Tensor& q_doc, const at::Tensor& k_doc,
                                 bool plain_causal, double scale) {
  const bool gqa = q.size(1) != k.size(1);
  if (plain_causal) {
    return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0,
                                            /*is_causal=*/true, scale, gqa);
  }
  at::Tensor allowed = k_pos.unsqueeze(1) <= q_pos.unsqueeze(2);  // [B, Tq, Tk]
  if (k_valid.defined()) allowed = allowed.logical_and(k_valid.unsqueeze(1));
  if (q_doc.defined()) allowed = allowed.logical_and(k_doc.unsqueeze(1) == q_doc.unsqueeze(2));
  if (q_valid.defined()) {
    at::Tensor first_key = at::zeros({1, 1, k.size(2)}, allowed.options());
    first_key.select(2, 0).fill_(true);
    allowed = at::where(q_valid.unsqueeze(2), allowed, first_key);
  }
  return at::scaled_dot_product_attention(q, k, v, allowed.unsqueeze(1), 0.0, false, scale, gqa);
}

}  // namespace mor::kernels
