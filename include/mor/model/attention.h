// Attention over compacted token sets, behind a backend interface (ATen now, CUDA kernels later).
//
// Queries and keys are compacted: each batch row holds only the tokens active at some recursion,
// padded to a common length, with their ORIGINAL positions. Query i may attend to key j iff
// k_valid[j] and k_pos[j] <= q_pos[i] ("causal by original position"). This covers plain causal
// attention (pos = 0..T-1), recursion-wise caching (keys = the active queries) and KV sharing
// (keys = the first recursion's tokens, queries a subset of them). With document masking, keys
// must also belong to the query's document (q_doc[i] == k_doc[j]).
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>

namespace mor::model {

struct AttentionInputs {
  at::Tensor q;        // [B, Hq, Tq, D]
  at::Tensor k;        // [B, Hkv, Tk, D]; Hq % Hkv == 0 (grouped-query heads)
  at::Tensor v;        // [B, Hkv, Tk, D]
  at::Tensor q_pos;    // [B, Tq] int64, ascending over valid entries
  at::Tensor k_pos;    // [B, Tk] int64, ascending over valid entries
  at::Tensor q_valid;  // [B, Tq] bool, or undefined: all valid
  at::Tensor k_valid;  // [B, Tk] bool, or undefined: all valid
  at::Tensor q_doc;    // [B, Tq] int64 document (segment) ids, or undefined: no document masking
  at::Tensor k_doc;    // [B, Tk] int64, defined together with q_doc
  // True when q and k are the same full sequence at positions 0..T-1 (no compaction) and there is
  // no document masking: plain causal.
  bool plain_causal = false;
  double scale = 1.0;
};

class AttentionBackend {
 public:
  virtual ~AttentionBackend() = default;
  virtual std::string name() const = 0;
  // Returns [B, Hq, Tq, D] in q's dtype; softmax in fp32 or wider. Rows of invalid queries hold
  // finite values that callers discard. Differentiable with respect to q, k and v.
  virtual at::Tensor attend(const AttentionInputs& in) const = 0;
};

// The ATen reference path (kernels/compact_attention): works on every device and dtype.
std::shared_ptr<AttentionBackend> make_aten_attention();

}  // namespace mor::model
