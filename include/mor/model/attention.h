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

#include <functional>
#include <memory>
#include <string>
#include <tuple>
#include <utility>

#include "varlen_attention/varlen_attention.h"

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

// Decoding over a paged K/V cache: one query row per new token, each with its own block table
// (the blocks of the cache slot it reads) and key count (the keys it may see: causal order within
// a slot is position order, so a row sees a prefix of its slot).
struct PagedAttentionInputs {
  at::Tensor q;                // [R, Hq, D]
  at::Tensor k_pool, v_pool;   // [num_blocks, block_size, Hkv, D]
  at::Tensor block_table;      // [R, max_blocks] int32
  at::Tensor kv_len;           // [R] int32, >= 1
  int64_t max_kv_len = 0;      // upper bound of kv_len
  double scale = 1.0;
};

class AttentionBackend {
 public:
  virtual ~AttentionBackend() = default;
  virtual std::string name() const = 0;
  // Returns [B, Hq, Tq, D] in q's dtype; softmax in fp32 or wider. Rows of invalid queries hold
  // finite values that callers discard. Differentiable with respect to q, k and v.
  virtual at::Tensor attend(const AttentionInputs& in) const = 0;
  // Whether attend_paged takes queries like q [R, Hq, D] (device, dtype, head dim). Callers that get false
  // gather the K/V themselves and call attend().
  virtual bool supports_paged(const at::Tensor& q) const { return false; }
  // Returns [R, Hq, D] in q's dtype (inference only).
  virtual at::Tensor attend_paged(const PagedAttentionInputs& in) const;
};

// The ATen reference path (kernels/compact_attention): works on every device and dtype.
std::shared_ptr<AttentionBackend> make_aten_attention();


// The operations a kernel backend runs, so the same packing and autograd code drives the CUDA
// kernels in production and the float64 reference kernels in CPU tests. `takes` says whether the
// varlen/paged operation accepts the inputs; when it does not, the backend uses the ATen path.
// The backend asks BEFORE packing, with empty tensors of the ops' layouts and the inputs' device,
// dtype and head counts/dim (q [0, Hq, D], k [0, Hkv, D]; paged: the real q [R, Hq, D] and a pool
// [0, 1, 1, D]), so `takes` must decide from device, dtype, rank and head dim alone.
struct KernelOps {
  std::string name;
  std::function<bool(const at::Tensor& q, const at::Tensor& k)> takes_varlen;
  std::function<bool(const at::Tensor& q, const at::Tensor& k_pool)> takes_paged;
  // kernels/varlen_attention: (q, k, v, args) -> out, lse; backward -> dq, dk, dv. The backend sets
  // q_pos/k_pos only for Mask::kCausalPos.
  std::function<std::pair<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                  const kernels::VarlenArgs&)> varlen_fwd;
  std::function<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
      const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
      const at::Tensor& lse, const kernels::VarlenArgs&)> varlen_bwd;
  // kernels/paged_decode: -> out [R, Hq, D].
  std::function<at::Tensor(const PagedAttentionInputs&)> paged;
};

KernelOps cuda_kernel_ops();       // the CUDA kernels (takes nothing on a CPU-only build)
KernelOps reference_kernel_ops();  // the float64 reference kernels, any device (tests)

// Packs the compacted [B, H, T, D] inputs into varlen segments (one per batch row, or per
// document with document masking), runs ops.varlen_fwd/bwd as an autograd function and unpacks;
// decodes through ops.paged. Per call, inputs the ops do not take go to the ATen path.
std::shared_ptr<AttentionBackend> make_kernel_attention(KernelOps ops);

// The default backend: the CUDA kernels where they apply (CUDA tensors, bf16/fp16, head dim 64 or
// 128), ATen elsewhere. The environment variable MOR_ATTENTION=aten forces the ATen path (A/B
// comparisons); MOR_ATTENTION=auto (or unset) is the default; anything else is an error.
std::shared_ptr<AttentionBackend> make_default_attention();

}  // namespace mor::model
