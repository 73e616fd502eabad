// paged_decode: attention of single query rows over a paged K/V cache (flash-decoding with
// split-K), the decode kernel of the engine. Every row carries its own block table and key count,
// so rows of different requests at different recursion depths (each depth's cache is its own list
// of blocks) go in one launch.
//
//   q [R, Hq, D] (last dim contiguous);
//   k_pool, v_pool [num_blocks, block_size, Hkv, D] contiguous (Hq % Hkv == 0);
//   block_table [R, max_blocks] int32: key t of row r lives in block block_table[r][t / block_size]
//     at offset t % block_size;
//   kv_len [R] int32: row r sees keys 0 .. kv_len[r]-1 (0: no key, output 0 and lse -inf);
//   max_kv_len: an upper bound of kv_len (grid sizing, no device-to-host sync).
// Returns out [R, Hq, D] in q's dtype and lse [R, Hq] fp32 (natural log).
//
// The CUDA kernel cuts each row's keys into chunks of `chunk` keys (tiles::num_chunks), computes
// every (row, kv head, chunk) in its own thread block with the query heads of the kv head packed
// together, and merges the partial results by log-sum-exp (tiles::merge_partials); rows with a
// single chunk skip the merge.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace mor::kernels {

struct PagedDecodeOut {
  at::Tensor out;  // [R, Hq, D]
  at::Tensor lse;  // [R, Hq] fp32
};

// Oracle: float64 inside, any device/dtype/head dim.
PagedDecodeOut paged_decode_ref(const at::Tensor& q, const at::Tensor& k_pool, const at::Tensor& v_pool,
                                const at::Tensor& block_table, const at::Tensor& kv_len, double scale);

// Whether the CUDA kernel takes these inputs (CUDA build, CUDA tensors, bf16/fp16, D 64 or 128).
bool paged_decode_cuda_supports(const at::Tensor& q, const at::Tensor& k_pool);
PagedDecodeOut paged_decode_cuda(const at::Tensor& q, const at::Tensor& k_pool, const at::Tensor& v_pool,
                                 const at::Tensor& block_table, const at::Tensor& kv_len, int64_t max_kv_len,
                                 double scale, int64_t chunk = 512);

}  // namespace mor::kernels
