// varlen_attention: causal softmax attention over packed variable-length segments, the training
// kernel of MoR's depth-masked attention (compacted active tokens, see ../common/attention_tiles.h
// for the two mask modes).
//
// Layout (packed, "cu_seqlens" style):
//   q [total_q, Hq, D], k/v [total_k, Hkv, D]  (Hq % Hkv == 0: query head h reads kv head h/(Hq/Hkv));
//     the last dim must be contiguous, the other two may be strided (views of a fused projection).
//   cu_q, cu_k [S+1] int32, ascending from 0: segment s owns query rows [cu_q[s], cu_q[s+1]) and key
//     rows [cu_k[s], cu_k[s+1]). Empty segments are allowed (nothing to do).
//   q_pos [total_q], k_pos [total_k] int32, kCausalPos only: ascending within each segment.
//   max_q, max_k: upper bounds of the segment lengths (grid sizing; no device-to-host sync needed).
// Outputs: out [total_q, Hq, D] in q's dtype; lse [Hq, total_q] fp32, natural log of the softmax
// normaliser of the scaled scores. A query row that sees no key gets out = 0 and lse = -inf.
// Backward: dq [total_q, Hq, D], dk/dv [total_k, Hkv, D] (summed over each GQA group), in q's dtype.
//
// The _ref functions are the oracle: plain ATen, float64 inside, any device, any floating dtype and
// head dim. The _cuda functions take bf16/fp16 with D in {64, 128}, fp32 accumulation and an
// online softmax; they throw mor::Error on a CPU-only build or unsupported inputs.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "common/attention_tiles.h"

namespace mor::kernels {

using tiles::Mask;

struct VarlenArgs {
  at::Tensor cu_q, cu_k;    // [S+1] int32, on the tensors' device
  at::Tensor q_pos, k_pos;  // [total_q] / [total_k] int32 (kCausalPos), else undefined
  int64_t max_q = 0, max_k = 0;
  Mask mask = Mask::kCausalIndex;
  double scale = 1.0;
};

struct VarlenOut {
  at::Tensor out;  // [total_q, Hq, D]
  at::Tensor lse;  // [Hq, total_q] fp32
};

struct VarlenGrads {
  at::Tensor dq, dk, dv;
};

VarlenOut varlen_attention_fwd_ref(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const VarlenArgs& args);
VarlenGrads varlen_attention_bwd_ref(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                     const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                                     const VarlenArgs& args);

// Whether the CUDA kernels take these inputs (CUDA build, CUDA tensors, bf16/fp16, D 64 or 128).
bool varlen_attention_cuda_supports(const at::Tensor& q, const at::Tensor& k);
VarlenOut varlen_attention_fwd_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    const VarlenArgs& args);
VarlenGrads varlen_attention_bwd_cuda(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                      const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                                      const VarlenArgs& args);

// Test hook: when on, the CUDA wrappers fill every output and scratch buffer they allocate with NaN
// before launching, so an element a kernel fails to write shows up. Off by default.
void set_poison_buffers(bool on);
bool poison_buffers();

}  // namespace mor::kernels
