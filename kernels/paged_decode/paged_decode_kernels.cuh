// Device code of paged_decode (see paged_decode.cu for the design notes): the split-K chunk kernel,
// the merge kernel, their parameters and helpers. Torch-free: included by paged_decode.cu (nvcc) and
// by the CPU emulation test (tests/kernels/emu, g++ with MOR_CUDA_EMULATION, which provides the CUDA
// built-ins before including this header).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#if defined(__CUDACC__)
#include <cuda_runtime.h>
#endif

#include <math.h>

#include <cstdint>

#include "common/attention_tiles.h"
#include "common/cuda_compat.cuh"

namespace mor::kernels::paged_dev {
MOR_DEVICE_CODE_BEGIN

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kLanesPerKey = 8;                        // 8 lanes x 16 bytes = one 128-byte segment
constexpr int kKeysPerWarp = 32 / kLanesPerKey;        // 4
constexpr int kKeysPerStep = kWarps * kKeysPerWarp;    // 16 keys per block per step
constexpr int kSmemLimit = 48 * 1024;                  // default dynamic shared memory limit
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

template <typename T>
__device__ __forceinline__ float to_float(T x);
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }
template <>
__device__ __forceinline__ float to_float<__half>(__half x) { return __half2float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half(x); }

// 8 packed elements (16 bytes) -> 8 floats.
template <typename T>
__device__ __forceinline__ void unpack8(const uint4& u, float* f);
template <>
__device__ __forceinline__ void unpack8<__nv_bfloat16>(const uint4& u, float* f) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 p = __bfloat1622float2(h[i]);
    f[2 * i] = p.x;
    f[2 * i + 1] = p.y;
  }
}
template <>
__device__ __forceinline__ void unpack8<__half>(const uint4& u, float* f) {
  const __half2* h = reinterpret_cast<const __half2*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 p = __half22float2(h[i]);
    f[2 * i] = p.x;
    f[2 * i + 1] = p.y;
  }
}

struct Params {
  const void* q;
  int64_t q_stride_r, q_stride_h;  // elements; q's last dim is contiguous
  const void* k;
  const void* v;
  const int32_t* block_table;  // [R, max_blocks] contiguous
  const int32_t* kv_len;       // [R]
  void* out;                   // [R, Hq, D]
  float* lse;                  // [R, Hq]
  float* o_part;               // [R, Hq, n_chunks_max, D] (null when n_chunks_max == 1)
  float* lse_part;             // [R, Hq, n_chunks_max]
  int64_t max_blocks;
  int block_size, hkv, hq, group;  // group = G = Hq / Hkv
  int chunk, n_chunks_max;
  int kv_cap;  // min(max_kv_len, max_blocks * block_size): kv_len is clamped to [0, kv_cap]
  float scale_log2;
};

// The key count of row r as both kernels see it (a no-op for inputs that meet the contract; it
// keeps a bad kv_len from reading past the block table or the scratch buffers).
__device__ __forceinline__ int row_kv_len(const Params& p, int64_t r) {
  const int kv = p.kv_len[r];
  return kv < 0 ? 0 : (kv > p.kv_cap ? p.kv_cap : kv);
}

// Dynamic shared memory of the chunk kernel, in this order (all 4-byte words):
//   red [kWarps][GT][D] float | s [GT][chunk] float | m [GT] float | l [GT] float | rows [chunk] int
__host__ __device__ constexpr int64_t smem_bytes(int gt, int d, int64_t chunk) {
  return 4 * (static_cast<int64_t>(kWarps) * gt * d + gt * chunk + 2 * gt + chunk);
}

template <typename T, int D, int GT>
__global__ void __launch_bounds__(kThreads) paged_decode_chunk_kernel(const Params p) {
  constexpr int P = D / 64;          // 16-byte loads per lane per key row (1 or 2)
  constexpr int EPL = 8 * P;         // elements per lane: d = pp*64 + sub*8 + e, pp < P, e < 8
  constexpr int U = 4 / P;           // steps whose loads are issued together (latency hiding)
  constexpr int kStride = kKeysPerStep * U;

  const int nmax = p.n_chunks_max;
  const int c = static_cast<int>(blockIdx.x % static_cast<unsigned>(nmax));
  const int64_t r = blockIdx.x / static_cast<unsigned>(nmax);
  const int g = blockIdx.y;
  const int G = p.group;
  const int tid = threadIdx.x;

  const int kv = row_kv_len(p, r);
  const int nc = tiles::num_chunks(kv, p.chunk);
  T* out = static_cast<T*>(p.out);
  if (nc == 0) {
    // No key: out = 0, lse = -inf, written once by the chunk-0 block (the merge skips the row).
    if (c == 0) {
      const int64_t head0 = r * p.hq + static_cast<int64_t>(g) * G;
      for (int i = tid; i < G * D; i += kThreads) out[head0 * D + i] = from_float<T>(0.f);
      for (int j = tid; j < G; j += kThreads) p.lse[head0 + j] = -INFINITY;
    }
    return;
  }
  if (c >= nc) return;  // beyond this row's keys: the merge reads only chunks < nc
  const int t0 = c * p.chunk;
  const int n = min(kv - t0, p.chunk);  // >= 1 keys in this chunk

  MOR_DYNAMIC_SMEM(float4, smem_f4, 16);
  float* red_s = reinterpret_cast<float*>(smem_f4);
  float* s_s = red_s + kWarps * GT * D;
  float* m_s = s_s + GT * p.chunk;
  float* l_s = m_s + GT;
  int* rows_s = reinterpret_cast<int*>(l_s + GT);

  // 1. Physical row (block * block_size + offset) of every key of the chunk.
  const int32_t* table = p.block_table + r * p.max_blocks;
  for (int i = tid; i < n; i += kThreads) {
    const int t = t0 + i;
    rows_s[i] = table[t / p.block_size] * p.block_size + t % p.block_size;
  }
  __syncthreads();

  const int warp = tid / 32, lane = tid % 32;
  const int kq = lane / kLanesPerKey;  // which of the warp's 4 keys
  const int sub = lane % kLanesPerKey; // which 16-byte piece of the (64-element) segment
  const int key_in_step = warp * kKeysPerWarp + kq;
  const int64_t row_stride = static_cast<int64_t>(p.hkv) * D;  // elements between physical rows
  const int64_t head_off = static_cast<int64_t>(g) * D + sub * 8;
  const T* k_base = static_cast<const T*>(p.k) + head_off;
  const T* v_base = static_cast<const T*>(p.v) + head_off;
  const T* q = static_cast<const T*>(p.q);

  for (int j0 = 0; j0 < G; j0 += GT) {
    const int gt = min(GT, G - j0);  // heads in this tile (block-uniform)

    // Query slice of this lane for the tile's heads, scaled into the exp2 domain.
    float qr[GT][EPL];
#pragma unroll
    for (int jj = 0; jj < GT; ++jj) {
      const T* qh = q + r * p.q_stride_r + static_cast<int64_t>(g * G + j0 + jj) * p.q_stride_h;
#pragma unroll
      for (int pp = 0; pp < P; ++pp) {
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          qr[jj][pp * 8 + e] = jj < gt ? to_float(qh[pp * 64 + sub * 8 + e]) * p.scale_log2 : 0.f;
        }
      }
    }

    // 2. Scores s[jj][i] for the chunk's keys i < n.
    for (int base = 0; base < n; base += kStride) {
      uint4 kr[U][P];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int i = base + u * kKeysPerStep + key_in_step;
        if (i < n) {
          const T* src = k_base + static_cast<int64_t>(rows_s[i]) * row_stride;
#pragma unroll
          for (int pp = 0; pp < P; ++pp) kr[u][pp] = __ldg(reinterpret_cast<const uint4*>(src + pp * 64));
        } else {
#pragma unroll
          for (int pp = 0; pp < P; ++pp) kr[u][pp] = make_uint4(0u, 0u, 0u, 0u);
        }
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int i = base + u * kKeysPerStep + key_in_step;
        float kf[EPL];
#pragma unroll
        for (int pp = 0; pp < P; ++pp) unpack8<T>(kr[u][pp], kf + pp * 8);
#pragma unroll
        for (int jj = 0; jj < GT; ++jj) {
          if (jj < gt) {  // block-uniform: every lane takes the same branch around the shuffles
            float s = 0.f;
#pragma unroll
            for (int e = 0; e < EPL; ++e) s = fmaf(qr[jj][e], kf[e], s);
            s += __shfl_xor_sync(0xffffffffu, s, 4);
            s += __shfl_xor_sync(0xffffffffu, s, 2);
            s += __shfl_xor_sync(0xffffffffu, s, 1);
            if (sub == 0 && i < n) s_s[jj * p.chunk + i] = s;
          }
        }
      }
    }
    __syncthreads();

    // 3. Per head: m = max s, l = sum exp2(s - m); p = exp2(s - m) replaces s.
    for (int jj = warp; jj < gt; jj += kWarps) {
      float* srow = s_s + jj * p.chunk;
      float m = -INFINITY;
      for (int i = lane; i < n; i += 32) m = fmaxf(m, srow[i]);
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
      float l = 0.f;
      for (int i = lane; i < n; i += 32) {
        const float e = exp2f(srow[i] - m);
        srow[i] = e;
        l += e;
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) l += __shfl_xor_sync(0xffffffffu, l, o);
      if (lane == 0) {
        m_s[jj] = m;
        l_s[jj] = l;
      }
    }
    __syncthreads();

    // 4. acc[jj][e] = sum over this lane's keys of p[jj][i] * V[i][d].
    float acc[GT][EPL];
#pragma unroll
    for (int jj = 0; jj < GT; ++jj) {
#pragma unroll
      for (int e = 0; e < EPL; ++e) acc[jj][e] = 0.f;
    }
    for (int base = 0; base < n; base += kStride) {
      uint4 vr[U][P];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int i = base + u * kKeysPerStep + key_in_step;
        if (i < n) {
          const T* src = v_base + static_cast<int64_t>(rows_s[i]) * row_stride;
#pragma unroll
          for (int pp = 0; pp < P; ++pp) vr[u][pp] = __ldg(reinterpret_cast<const uint4*>(src + pp * 64));
        } else {
#pragma unroll
          for (int pp = 0; pp < P; ++pp) vr[u][pp] = make_uint4(0u, 0u, 0u, 0u);
        }
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int i = base + u * kKeysPerStep + key_in_step;
        if (i < n) {  // keys past the chunk: neither V (possibly garbage) nor p is read
          float vf[EPL];
#pragma unroll
          for (int pp = 0; pp < P; ++pp) unpack8<T>(vr[u][pp], vf + pp * 8);
#pragma unroll
          for (int jj = 0; jj < GT; ++jj) {
            if (jj < gt) {
              const float pj = s_s[jj * p.chunk + i];
#pragma unroll
              for (int e = 0; e < EPL; ++e) acc[jj][e] = fmaf(pj, vf[e], acc[jj][e]);
            }
          }
        }
      }
    }
    // Sum the warp's 4 keys (lanes sub, sub+8, sub+16, sub+24 hold the same d), then park the
    // warp's partial sums in shared memory.
#pragma unroll
    for (int jj = 0; jj < GT; ++jj) {
      if (jj < gt) {  // block-uniform
#pragma unroll
        for (int e = 0; e < EPL; ++e) {
          float a = acc[jj][e];
          a += __shfl_xor_sync(0xffffffffu, a, 8);
          a += __shfl_xor_sync(0xffffffffu, a, 16);
          if (kq == 0) red_s[(warp * GT + jj) * D + (e / 8) * 64 + sub * 8 + (e % 8)] = a;
        }
      }
    }
    __syncthreads();

    // 5. Sum the 4 warps, normalise, write the result (direct) or the partial (split rows).
    for (int idx = tid; idx < gt * D; idx += kThreads) {
      const int jj = idx / D, d = idx % D;
      float o = 0.f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) o += red_s[(w * GT + jj) * D + d];
      const float l = l_s[jj];
      o = o / l;
      const float lse_nat = (m_s[jj] + log2f(l)) * kLn2;  // log sum exp(score), natural log
      const int64_t rh = r * p.hq + static_cast<int64_t>(g) * G + j0 + jj;
      if (nc == 1) {
        out[rh * D + d] = from_float<T>(o);
        if (d == 0) p.lse[rh] = lse_nat;
      } else {
        const int64_t slot = rh * nmax + c;
        p.o_part[slot * D + d] = o;
        if (d == 0) p.lse_part[slot] = lse_nat;
      }
    }
    __syncthreads();  // the next head tile reuses s, m, l and red
  }
}

// Merge of split rows: one block of D threads per (row, query head); thread x merges element x
// with tiles::merge_partials (the tested code; m and z are recomputed per thread, n is small).
// Rows with 0 or 1 chunk were written by the chunk kernel.
template <typename T>
__global__ void paged_decode_merge_kernel(const Params p, int d) {
  const int64_t rh = blockIdx.x;
  const int64_t r = rh / p.hq;
  const int nc = tiles::num_chunks(row_kv_len(p, r), p.chunk);
  if (nc <= 1) return;
  const int x = threadIdx.x;
  const float* lse_c = p.lse_part + rh * p.n_chunks_max;
  const float* o_c = p.o_part + rh * p.n_chunks_max * d;
  float o, lse;
  tiles::merge_partials(nc, lse_c, o_c + x, d, 1, &o, &lse);
  static_cast<T*>(p.out)[rh * d + x] = from_float<T>(o);
  if (x == 0) p.lse[rh] = lse;
}


// ---------------------------------------------------------------------------------------------
// Host side: the launch plan shared by the CUDA wrapper (paged_decode.cu) and the CPU emulation
// test. `launch(kernel, grid, block, smem_bytes, args...)` starts one kernel: <<<>>> on the current
// stream under nvcc, the emulator on the CPU.

// Head-tile size: the smallest of 1, 2, 4, 8 covering G, capped so that the per-lane query /
// accumulator registers (GT * D / 8 floats) stay at 64.
constexpr int max_gt(int d) { return d == 64 ? 8 : 4; }
inline int pick_gt(int group, int d) {
  int gt = 1;
  while (gt < group && gt < max_gt(d)) gt *= 2;
  return gt;
}

struct Plan {
  int gt;            // head tile
  int64_t chunk;     // keys per chunk
  int64_t smem;      // dynamic shared memory of the chunk kernel, <= kSmemLimit
  int n_chunks_max;  // chunks of the longest possible row (>= 1)
  int kv_cap;        // min(max_kv_len, max_blocks * block_size)
};

// The chunk only moves split points: no longer than the longest row, and small enough for the
// shared-memory budget.
inline Plan plan(int64_t hq, int64_t hkv, int d, int64_t max_blocks, int64_t block_size, int64_t max_kv_len,
                 int64_t chunk) {
  Plan pl{};
  const int64_t cap = max_kv_len < max_blocks * block_size ? max_kv_len : max_blocks * block_size;
  pl.kv_cap = static_cast<int>(cap);
  pl.gt = pick_gt(static_cast<int>(hq / hkv), d);
  int64_t ch = chunk < (pl.kv_cap > 1 ? pl.kv_cap : 1) ? chunk : (pl.kv_cap > 1 ? pl.kv_cap : 1);
  while (ch > 1 && smem_bytes(pl.gt, d, ch) > kSmemLimit) ch = (ch + 1) / 2;
  pl.chunk = ch;
  pl.smem = smem_bytes(pl.gt, d, ch);
  const int nc = tiles::num_chunks(pl.kv_cap, static_cast<int>(ch));
  pl.n_chunks_max = nc > 1 ? nc : 1;
  return pl;
}

// Pointer-level arguments of one call (validated by the caller).
struct Raw {
  const void* q;
  int64_t q_stride_r, q_stride_h;  // elements; q's last dim is contiguous
  const void* k;
  const void* v;
  const int32_t* block_table;  // [rows, max_blocks] contiguous
  const int32_t* kv_len;       // [rows]
  int64_t rows, max_blocks, block_size, hkv, hq;
  float scale;
};

// o_part [rows, Hq, n_chunks_max, D] and lse_part [rows, Hq, n_chunks_max] only when
// pl.n_chunks_max > 1 (else null).
inline Params make_params(const Raw& a, const Plan& pl, void* out, float* lse, float* o_part, float* lse_part) {
  Params p{};
  p.q = a.q;
  p.q_stride_r = a.q_stride_r;
  p.q_stride_h = a.q_stride_h;
  p.k = a.k;
  p.v = a.v;
  p.block_table = a.block_table;
  p.kv_len = a.kv_len;
  p.out = out;
  p.lse = lse;
  p.o_part = pl.n_chunks_max > 1 ? o_part : nullptr;
  p.lse_part = pl.n_chunks_max > 1 ? lse_part : nullptr;
  p.max_blocks = a.max_blocks;
  p.block_size = static_cast<int>(a.block_size);
  p.hkv = static_cast<int>(a.hkv);
  p.hq = static_cast<int>(a.hq);
  p.group = static_cast<int>(a.hq / a.hkv);
  p.chunk = static_cast<int>(pl.chunk);
  p.n_chunks_max = pl.n_chunks_max;
  p.kv_cap = pl.kv_cap;
  p.scale_log2 = a.scale * kLog2e;
  return p;
}

template <typename T, int D, typename Launch>
void launch_chunk(const Plan& pl, const Params& p, dim3 grid, Launch&& launch) {
  const size_t smem = static_cast<size_t>(pl.smem);
  switch (pl.gt) {
    case 1: launch(&paged_decode_chunk_kernel<T, D, 1>, grid, dim3(kThreads), smem, p); break;
    case 2: launch(&paged_decode_chunk_kernel<T, D, 2>, grid, dim3(kThreads), smem, p); break;
    case 4: launch(&paged_decode_chunk_kernel<T, D, 4>, grid, dim3(kThreads), smem, p); break;
    default:
      if constexpr (max_gt(D) >= 8) launch(&paged_decode_chunk_kernel<T, D, 8>, grid, dim3(kThreads), smem, p);
  }
}

// Params p filled by the caller (p.chunk, p.n_chunks_max, p.kv_cap from the plan); rows R, Hq heads.
template <typename T, typename Launch>
void run(const Plan& pl, const Params& p, int d, int64_t rows, Launch&& launch) {
  const dim3 grid(static_cast<unsigned>(rows * pl.n_chunks_max), static_cast<unsigned>(p.hkv), 1);
  if (d == 64)
    launch_chunk<T, 64>(pl, p, grid, launch);
  else
    launch_chunk<T, 128>(pl, p, grid, launch);
  if (pl.n_chunks_max > 1) {
    launch(&paged_decode_merge_kernel<T>, dim3(static_cast<unsigned>(rows * p.hq)), dim3(static_cast<unsigned>(d)),
           size_t(0), p, d);
  }
}

MOR_DEVICE_CODE_END
}  // namespace mor::kernels::paged_dev
