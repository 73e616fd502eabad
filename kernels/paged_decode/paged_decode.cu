// CUDA paged decode attention (flash-decoding with split-K), see paged_decode.h.
//
// Chunk kernel: one thread block of 128 threads (4 warps) per (row r, kv head g, chunk c). The
// G = Hq / Hkv query heads of kv head g are processed together (one K/V row read serves all of
// them), in tiles of GT heads whose query vectors / output accumulators live in registers; G > GT
// takes several passes over the chunk (the re-reads mostly hit L1/L2).
//   1. The physical row of every key of the chunk (block table lookup) goes to shared memory.
//   2. Scores: 8 lanes share one key row, each lane loads 16 bytes (D = 64) or 2 x 16 bytes
//      (D = 128), so a warp reads 4 whole rows per load instruction; dot products are reduced over
//      the 8 lanes with shuffles. Scores are in the exp2 domain (q is pre-scaled by scale*log2(e)).
//   3. Softmax statistics: one warp per head, max m and sum l of exp2(s - m); p overwrites s.
//   4. O = sum_t p_t V_t with the same lane mapping as 2; the 4 keys of a warp are reduced with
//      shuffles, the 4 warps through shared memory.
//   5. A row with one chunk writes out / lse directly; otherwise the block writes its normalised
//      partial output and natural-log lse to scratch, merged by the merge kernel
//      (tiles::merge_partials). A row with no key is written (out 0, lse -inf) by its chunk-0 block.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "common/attention_tiles.h"
#include "mor/core/error.h"
#include "paged_decode/paged_decode.h"
#include "varlen_attention/varlen_attention.h"

namespace mor::kernels {

namespace {

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

  extern __shared__ float4 smem_f4[];
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

template <typename T, int D, int GT>
void launch_chunk(const Params& p, dim3 grid, int64_t smem, cudaStream_t stream) {
  paged_decode_chunk_kernel<T, D, GT><<<grid, kThreads, static_cast<size_t>(smem), stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Head-tile size: the smallest of 1, 2, 4, 8 covering G, capped so that the per-lane query /
// accumulator registers (GT * D / 8 floats) stay at 64.
constexpr int max_gt(int d) { return d == 64 ? 8 : 4; }
int pick_gt(int group, int d) {
  int gt = 1;
  while (gt < group && gt < max_gt(d)) gt *= 2;
  return gt;
}

template <typename T, int D>
void launch_chunk_d(int gt, const Params& p, dim3 grid, int64_t smem, cudaStream_t stream) {
  switch (gt) {
    case 1: launch_chunk<T, D, 1>(p, grid, smem, stream); break;
    case 2: launch_chunk<T, D, 2>(p, grid, smem, stream); break;
    case 4: launch_chunk<T, D, 4>(p, grid, smem, stream); break;
    default:
      if constexpr (max_gt(D) >= 8) {
        launch_chunk<T, D, 8>(p, grid, smem, stream);
      } else {
        MOR_CHECK(false, "paged_decode_cuda: internal: head tile ", gt, " for head dim ", D);
      }
  }
}

template <typename T>
void launch_all(int d, int gt, const Params& p, dim3 chunk_grid, int64_t smem, int64_t merge_blocks,
                cudaStream_t stream) {
  if (d == 64) {
    launch_chunk_d<T, 64>(gt, p, chunk_grid, smem, stream);
  } else {
    launch_chunk_d<T, 128>(gt, p, chunk_grid, smem, stream);
  }
  if (p.n_chunks_max > 1) {
    paged_decode_merge_kernel<T><<<static_cast<unsigned>(merge_blocks), d, 0, stream>>>(p, d);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

bool half_type(at::ScalarType t) { return t == at::kBFloat16 || t == at::kHalf; }

}  // namespace

bool paged_decode_cuda_supports(const at::Tensor& q, const at::Tensor& k_pool) {
  if (!q.defined() || !k_pool.defined()) return false;
  if (!q.is_cuda() || !k_pool.is_cuda()) return false;
  if (!half_type(q.scalar_type()) || k_pool.scalar_type() != q.scalar_type()) return false;
  if (q.dim() != 3 || k_pool.dim() != 4) return false;
  const int64_t d = q.size(2);
  return (d == 64 || d == 128) && k_pool.size(3) == d;
}

PagedDecodeOut paged_decode_cuda(const at::Tensor& q, const at::Tensor& k_pool, const at::Tensor& v_pool,
                                 const at::Tensor& block_table, const at::Tensor& kv_len, int64_t max_kv_len,
                                 double scale, int64_t chunk) {
  constexpr int64_t kIntMax = std::numeric_limits<int32_t>::max();
  MOR_CHECK(q.defined() && k_pool.defined() && v_pool.defined() && block_table.defined() && kv_len.defined(),
            "paged_decode_cuda: undefined input tensor");
  MOR_CHECK(q.is_cuda() && k_pool.is_cuda() && v_pool.is_cuda() && block_table.is_cuda() && kv_len.is_cuda(),
            "paged_decode_cuda: all inputs must be CUDA tensors");
  MOR_CHECK(k_pool.device() == q.device() && v_pool.device() == q.device() &&
                block_table.device() == q.device() && kv_len.device() == q.device(),
            "paged_decode_cuda: all inputs must be on one device (q on ", q.device(), ")");
  MOR_CHECK(half_type(q.scalar_type()), "paged_decode_cuda: q must be bf16 or fp16, got ", q.scalar_type());
  MOR_CHECK(k_pool.scalar_type() == q.scalar_type() && v_pool.scalar_type() == q.scalar_type(),
            "paged_decode_cuda: k_pool and v_pool must have q's dtype (", q.scalar_type(), "), got ",
            k_pool.scalar_type(), " and ", v_pool.scalar_type());
  MOR_CHECK(block_table.scalar_type() == at::kInt && kv_len.scalar_type() == at::kInt,
            "paged_decode_cuda: block_table and kv_len must be int32");
  MOR_CHECK(q.dim() == 3, "paged_decode_cuda: q must be [R, Hq, D], got ", q.sizes());
  MOR_CHECK(k_pool.dim() == 4 && k_pool.sizes() == v_pool.sizes(),
            "paged_decode_cuda: k_pool and v_pool must be [num_blocks, block_size, Hkv, D] of one shape, got ",
            k_pool.sizes(), " and ", v_pool.sizes());
  MOR_CHECK(k_pool.is_contiguous() && v_pool.is_contiguous(), "paged_decode_cuda: k_pool and v_pool must be contiguous");
  const int64_t R = q.size(0), hq = q.size(1), d = q.size(2);
  const int64_t num_blocks = k_pool.size(0), block_size = k_pool.size(1), hkv = k_pool.size(2);
  MOR_CHECK(d == 64 || d == 128, "paged_decode_cuda: head dim must be 64 or 128, got ", d);
  MOR_CHECK(k_pool.size(3) == d, "paged_decode_cuda: pool head dim ", k_pool.size(3), " differs from q's ", d);
  MOR_CHECK(hkv >= 1 && hq % hkv == 0, "paged_decode_cuda: Hq (", hq, ") must be a multiple of Hkv (", hkv, ")");
  MOR_CHECK(block_size >= 1, "paged_decode_cuda: block_size must be >= 1");
  MOR_CHECK(block_table.dim() == 2 && block_table.size(0) == R,
            "paged_decode_cuda: block_table must be [R, max_blocks] with R = ", R, ", got ", block_table.sizes());
  MOR_CHECK(kv_len.dim() == 1 && kv_len.size(0) == R, "paged_decode_cuda: kv_len must be [R] with R = ", R,
            ", got ", kv_len.sizes());
  MOR_CHECK(chunk >= 1, "paged_decode_cuda: chunk must be >= 1, got ", chunk);
  MOR_CHECK(max_kv_len >= 0 && max_kv_len <= kIntMax, "paged_decode_cuda: max_kv_len out of range: ", max_kv_len);
  MOR_CHECK(num_blocks * block_size <= kIntMax, "paged_decode_cuda: the pool has more than 2^31 - 1 rows");
  MOR_CHECK(hkv <= 65535, "paged_decode_cuda: at most 65535 kv heads, got ", hkv);
  MOR_CHECK(reinterpret_cast<uintptr_t>(k_pool.data_ptr()) % 16 == 0 &&
                reinterpret_cast<uintptr_t>(v_pool.data_ptr()) % 16 == 0,
            "paged_decode_cuda: k_pool and v_pool must be 16-byte aligned");

  const c10::cuda::CUDAGuard guard(q.device());
  const at::Tensor qc = q.stride(2) == 1 ? q : q.contiguous();
  const at::Tensor table = block_table.contiguous();
  const at::Tensor lens = kv_len.contiguous();

  at::Tensor out = at::empty({R, hq, d}, q.options());
  at::Tensor lse = at::empty({R, hq}, q.options().dtype(at::kFloat));
  const bool poison = poison_buffers();
  if (poison) {
    out.fill_(std::numeric_limits<double>::quiet_NaN());
    lse.fill_(std::numeric_limits<double>::quiet_NaN());
  }
  if (R == 0 || hq == 0) return {out, lse};

  const int64_t max_blocks = table.size(1);
  const int kv_cap = static_cast<int>(std::min(max_kv_len, max_blocks * block_size));
  const int group = static_cast<int>(hq / hkv);
  const int gt = pick_gt(group, static_cast<int>(d));
  // The chunk only moves split points: no longer than the longest row, and small enough for the
  // shared-memory budget.
  int64_t ch = std::min<int64_t>(chunk, std::max(kv_cap, 1));
  while (ch > 1 && smem_bytes(gt, static_cast<int>(d), ch) > kSmemLimit) ch = (ch + 1) / 2;
  const int64_t smem = smem_bytes(gt, static_cast<int>(d), ch);
  MOR_CHECK(smem <= kSmemLimit, "paged_decode_cuda: internal: shared memory ", smem, " bytes");
  const int n_chunks_max = std::max(1, tiles::num_chunks(kv_cap, static_cast<int>(ch)));
  MOR_CHECK(R * n_chunks_max <= kIntMax && R * hq <= kIntMax, "paged_decode_cuda: too many rows (", R, ")");

  at::Tensor o_part, lse_part;
  if (n_chunks_max > 1) {
    o_part = at::empty({R, hq, n_chunks_max, d}, q.options().dtype(at::kFloat));
    lse_part = at::empty({R, hq, n_chunks_max}, q.options().dtype(at::kFloat));
    if (poison) {
      o_part.fill_(std::numeric_limits<double>::quiet_NaN());
      lse_part.fill_(std::numeric_limits<double>::quiet_NaN());
    }
  }

  Params p{};
  p.q = qc.data_ptr();
  p.q_stride_r = qc.stride(0);
  p.q_stride_h = qc.stride(1);
  p.k = k_pool.data_ptr();
  p.v = v_pool.data_ptr();
  p.block_table = table.data_ptr<int32_t>();
  p.kv_len = lens.data_ptr<int32_t>();
  p.out = out.data_ptr();
  p.lse = lse.data_ptr<float>();
  p.o_part = n_chunks_max > 1 ? o_part.data_ptr<float>() : nullptr;
  p.lse_part = n_chunks_max > 1 ? lse_part.data_ptr<float>() : nullptr;
  p.max_blocks = max_blocks;
  p.block_size = static_cast<int>(block_size);
  p.hkv = static_cast<int>(hkv);
  p.hq = static_cast<int>(hq);
  p.group = group;
  p.chunk = static_cast<int>(ch);
  p.n_chunks_max = n_chunks_max;
  p.kv_cap = kv_cap;
  p.scale_log2 = static_cast<float>(scale) * kLog2e;

  const dim3 grid(static_cast<unsigned>(R * n_chunks_max), static_cast<unsigned>(hkv), 1);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (q.scalar_type() == at::kBFloat16) {
    launch_all<__nv_bfloat16>(static_cast<int>(d), gt, p, grid, smem, R * hq, stream);
  } else {
    launch_all<__half>(static_cast<int>(d), gt, p, grid, smem, R * hq, stream);
  }
  return {out, lse};
}

}  // namespace mor::kernels
