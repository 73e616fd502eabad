// Index arithmetic shared by the attention kernels and their CPU tests: which keys a tile of
// queries must visit (and which of them need the per-element mask), which queries a tile of keys
// contributes to (backward), the split-K chunking of the decode kernel and the log-sum-exp merge of
// its partial results. Header-only and torch-free; every function is usable on host and device, so
// the CPU tests check the very code the kernels run.
//
// Mask modes, within one segment (a sequence or a document; queries and keys are segment-local):
//   kCausalIndex: query i sees key j iff j <= i (top-left aligned; plain causal attention and
//                 recursion-wise caching, where the keys are the active queries themselves).
//   kCausalPos:   query i sees key j iff k_pos[j] <= q_pos[i] (KV sharing: compacted queries
//                 over the full keys of the first recursion). Positions ascend within a segment.
#pragma once

#include <math.h>

#include <cstdint>

#if defined(__CUDACC__)
#define MOR_HD __host__ __device__ __forceinline__
#else
#define MOR_HD inline
#endif

namespace mor::kernels::tiles {

enum class Mask : int { kCausalIndex = 0, kCausalPos = 1 };

// Number of entries of the ascending a[0..n) that are <= x.
MOR_HD int count_le(const int32_t* a, int n, int32_t x) {
  int lo = 0, hi = n;
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (a[mid] <= x) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// Number of entries of the ascending a[0..n) that are < x.
MOR_HD int count_lt(const int32_t* a, int n, int32_t x) {
  int lo = 0, hi = n;
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (a[mid] < x) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// Whether query i sees key j (segment-local indices; q_pos/k_pos unused for kCausalIndex).
MOR_HD bool visible(Mask mask, int i, int j, const int32_t* q_pos, const int32_t* k_pos) {
  return mask == Mask::kCausalIndex ? j <= i : k_pos[j] <= q_pos[i];
}

// Keys a query tile [m0, m1) (m0 < m1 <= len_q) must visit, segment-local:
//   [0, full):   visible to every query of the tile (no mask needed),
//   [full, end): visible to some of them (per-element mask),
//   [end, len_k): visible to none (skipped).
struct KeyRange {
  int full;
  int end;
};
MOR_HD KeyRange key_range(Mask mask, int m0, int m1, int len_k, const int32_t* q_pos, const int32_t* k_pos) {
  if (mask == Mask::kCausalIndex) {
    const int full = m0 + 1 < len_k ? m0 + 1 : len_k;
    const int end = m1 < len_k ? m1 : len_k;
    return {full, end};
  }
  return {count_le(k_pos, len_k, q_pos[m0]), count_le(k_pos, len_k, q_pos[m1 - 1])};
}

// Queries a key tile [n0, n1) (n0 < n1 <= len_k) contributes to, segment-local:
//   [0, begin):     see no key of the tile (skipped),
//   [begin, full):  see some of them (per-element mask),
//   [full, len_q):  see all of them (no mask needed).
struct QueryRange {
  int begin;
  int full;
};
MOR_HD QueryRange query_range(Mask mask, int n0, int n1, int len_q, const int32_t* q_pos, const int32_t* k_pos) {
  if (mask == Mask::kCausalIndex) {
    const int begin = n0 < len_q ? n0 : len_q;
    const int full = n1 - 1 < len_q ? n1 - 1 : len_q;
    return {begin, full};
  }
  return {count_lt(q_pos, len_q, k_pos[n0]), count_lt(q_pos, len_q, k_pos[n1 - 1])};
}

MOR_HD int ceil_div(int a, int b) { return (a + b - 1) / b; }

// Split-K decode: a row with kv_len keys is cut into chunks of `chunk` keys; chunk c covers
// [c*chunk, min(kv_len, (c+1)*chunk)). A row with no keys has no chunk (its output is zero).
MOR_HD int num_chunks(int kv_len, int chunk) { return kv_len <= 0 ? 0 : ceil_div(kv_len, chunk); }

// Merges n partial attention states (o_c normalised within its chunk, lse_c its natural-log
// sum of exp of the scaled scores) into out[0..d) and *lse: out = sum_c w_c o_c with
// w_c = exp(lse_c - lse), lse = log sum_c exp(lse_c). Partials with lse_c = -inf (no visible key)
// weigh nothing; with n == 0 or all -inf, out = 0 and lse = -inf. o is laid out [n][o_stride].
MOR_HD void merge_partials(int n, const float* lse, const float* o, int o_stride, int d, float* out, float* lse_out) {
  float m = -INFINITY;
  for (int c = 0; c < n; ++c) m = lse[c] > m ? lse[c] : m;
  if (m == -INFINITY) {
    for (int x = 0; x < d; ++x) out[x] = 0.f;
    *lse_out = -INFINITY;
    return;
  }
  float z = 0.f;
  for (int c = 0; c < n; ++c) z += expf(lse[c] - m);
  for (int x = 0; x < d; ++x) {
    float acc = 0.f;
    for (int c = 0; c < n; ++c) {
      if (lse[c] != -INFINITY) acc += expf(lse[c] - m) * o[c * o_stride + x];
    }
    out[x] = acc / z;
  }
  *lse_out = m + logf(z);
}

}  // namespace mor::kernels::tiles
