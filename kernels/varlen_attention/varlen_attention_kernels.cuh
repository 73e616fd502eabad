// Device code of varlen_attention (see varlen_attention.cu for the design notes): the forward and
// backward kernels, their parameter structs, shared-memory layouts and helpers. Torch-free: included
// by varlen_attention.cu (nvcc) and by the CPU emulation test (tests/kernels/emu, g++ with
// MOR_CUDA_EMULATION, which provides the CUDA built-ins before including this header).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#if defined(__CUDACC__)
#include <cuda_runtime.h>
#include <mma.h>
#endif

#include <math.h>

#include <cstddef>
#include <cstdint>

#include "common/attention_tiles.h"
#include "common/cuda_compat.cuh"

namespace mor::kernels::varlen_dev {
MOR_DEVICE_CODE_BEGIN

using tiles::Mask;

namespace wmma = nvcuda::wmma;

constexpr int kThreads = 128;  // 4 warps per CTA, forward and backward
constexpr int kFwdBM = 64;  // queries per forward CTA (16 per warp)
constexpr int kBN = 64;     // keys per tile (forward inner loop, backward CTA)
constexpr int kBwdBM = 32;  // queries per backward inner step
constexpr int kMaxGridYZ = 65535;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// ---------------------------------------------------------------------------------------------
// Element traits: explicit conversions (the build disables the implicit half/bf16 operators).
template <typename T>
struct Elem;
template <>
struct Elem<__nv_bfloat16> {
  static __device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
  static __device__ __forceinline__ unsigned short bits(float x) { return __bfloat16_as_ushort(__float2bfloat16(x)); }
  static __device__ __forceinline__ __nv_bfloat16 from_float(float x) { return __float2bfloat16(x); }
};
template <>
struct Elem<__half> {
  static __device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
  static __device__ __forceinline__ unsigned short bits(float x) { return __half_as_ushort(__float2half(x)); }
  static __device__ __forceinline__ __half from_float(float x) { return __float2half(x); }
};

__host__ __device__ constexpr size_t round128(size_t bytes) { return (bytes + 127) / 128 * 128; }

// Forward shared memory: Q, K, V [64][D+8] (16-bit), S [64][68] fp32, P [64][72] (16-bit),
// O accumulator [64][D+4] fp32.
template <int D>
struct FwdSmem {
  static constexpr int kLdT = D + 8;    // 16-bit Q/K/V tiles
  static constexpr int kLdS = kBN + 4;  // fp32 scores
  static constexpr int kLdP = kBN + 8;  // 16-bit probabilities
  static constexpr int kLdO = D + 4;    // fp32 output accumulator
  static constexpr size_t kQ = 0;
  static constexpr size_t kK = kQ + round128(size_t(kFwdBM) * kLdT * 2);
  static constexpr size_t kV = kK + round128(size_t(kBN) * kLdT * 2);
  static constexpr size_t kS = kV + round128(size_t(kBN) * kLdT * 2);
  static constexpr size_t kP = kS + round128(size_t(kFwdBM) * kLdS * 4);
  static constexpr size_t kO = kP + round128(size_t(kFwdBM) * kLdP * 2);
  static constexpr size_t kBytes = kO + round128(size_t(kFwdBM) * kLdO * 4);
};

// Backward shared memory: K, V [64][D+8] (16-bit), dK, dV [64][D+4] fp32, Q, dO [32][D+8] (16-bit),
// one fp32 region holding S [32][68] and dP [32][68] (reused as the dQ tile [32][D+4] once dS is
// built), P, dS [32][72] (16-bit), lse*log2e and dsum per query row [32] fp32.
template <int D>
struct BwdSmem {
  static constexpr int kLdT = D + 8;
  static constexpr int kLdS = kBN + 4;
  static constexpr int kLdP = kBN + 8;
  static constexpr int kLdO = D + 4;
  static constexpr size_t kSdPFloats = size_t(2) * kBwdBM * kLdS;
  static constexpr size_t kDqFloats = size_t(kBwdBM) * kLdO;
  static constexpr size_t kF32Floats = kSdPFloats > kDqFloats ? kSdPFloats : kDqFloats;
  static constexpr size_t kK = 0;
  static constexpr size_t kV = kK + round128(size_t(kBN) * kLdT * 2);
  static constexpr size_t kDK = kV + round128(size_t(kBN) * kLdT * 2);
  static constexpr size_t kDV = kDK + round128(size_t(kBN) * kLdO * 4);
  static constexpr size_t kQ = kDV + round128(size_t(kBN) * kLdO * 4);
  static constexpr size_t kDO = kQ + round128(size_t(kBwdBM) * kLdT * 2);
  static constexpr size_t kF32 = kDO + round128(size_t(kBwdBM) * kLdT * 2);
  static constexpr size_t kP = kF32 + round128(kF32Floats * 4);
  static constexpr size_t kDS = kP + round128(size_t(kBwdBM) * kLdP * 2);
  static constexpr size_t kLse = kDS + round128(size_t(kBwdBM) * kLdP * 2);
  static constexpr size_t kDsum = kLse + round128(size_t(kBwdBM) * 4);
  static constexpr size_t kBytes = kDsum + round128(size_t(kBwdBM) * 4);
};

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Copies rows [0, ROWS) x [0, D) of a strided 16-bit matrix (row r at src + r * row_stride, the
// D elements contiguous and 16-byte aligned) into smem [ROWS][ld]; rows >= nvalid become zeros
// (so that padded keys/queries contribute 0 and never NaN). 16-byte vector accesses.
template <typename T, int D, int ROWS>
__device__ __forceinline__ void load_rows(T* __restrict__ dst, int ld, const T* __restrict__ src, int64_t row_stride,
                                          int nvalid) {
  constexpr int kVecPerRow = D / 8;
  for (int idx = threadIdx.x; idx < ROWS * kVecPerRow; idx += kThreads) {
    const int r = idx / kVecPerRow;
    const int c = (idx % kVecPerRow) * 8;
    uint4 val = make_uint4(0u, 0u, 0u, 0u);
    if (r < nvalid) val = *reinterpret_cast<const uint4*>(src + int64_t(r) * row_stride + c);
    *reinterpret_cast<uint4*>(dst + r * ld + c) = val;
  }
}

// One warp stores one row of D fp32 values (times mul) as 16-bit: lane covers D/32 consecutive
// elements with one 4- or 8-byte store (dst row is D*2-byte aligned).
template <typename T, int D>
__device__ __forceinline__ void store_row16(T* __restrict__ dst, const float* __restrict__ src, float mul, int lane) {
  constexpr int kEpl = D / 32;
  const int c = lane * kEpl;
  if constexpr (kEpl == 2) {
    const uint32_t lo = Elem<T>::bits(src[c] * mul), hi = Elem<T>::bits(src[c + 1] * mul);
    *reinterpret_cast<uint32_t*>(dst + c) = lo | (hi << 16);
  } else {
    static_assert(kEpl == 4, "D must be 64 or 128");
    uint2 v;
    v.x = uint32_t(Elem<T>::bits(src[c] * mul)) | (uint32_t(Elem<T>::bits(src[c + 1] * mul)) << 16);
    v.y = uint32_t(Elem<T>::bits(src[c + 2] * mul)) | (uint32_t(Elem<T>::bits(src[c + 3] * mul)) << 16);
    *reinterpret_cast<uint2*>(dst + c) = v;
  }
}

// ---------------------------------------------------------------------------------------------
// Forward.
template <typename T>
struct FwdParams {
  const T* q;
  const T* k;
  const T* v;
  int64_t q_s0, q_s1, k_s0, k_s1, v_s0, v_s1;  // element strides of dims 0 and 1
  T* out;                                      // [total_q, Hq, D] contiguous
  float* lse;                                  // [Hq, total_q]
  const int32_t* cu_q;
  const int32_t* cu_k;
  const int32_t* q_pos;  // kCausalPos only
  const int32_t* k_pos;
  int64_t total_q;
  int hq;
  int group;        // Hq / Hkv
  float scale_log2;  // scale * log2(e)
  int seg_base;     // segment of blockIdx.z == 0 (launches are split every 65535 segments)
};

// grid (ceil(max_q/64), Hq, segments), 128 threads. Warp w owns query rows [16w, 16w+16) of the
// tile for the whole kernel: its S, P and O rows and its softmax statistics (held in registers,
// identical in all lanes). The only cross-warp data are the Q/K/V tiles and the O zero-fill.
template <typename T, int D, Mask MASK>
__global__ void __launch_bounds__(kThreads) varlen_fwd_kernel(const FwdParams<T> p) {
  using L = FwdSmem<D>;
  MOR_DYNAMIC_SMEM(unsigned char, smem, 128);
  T* const q_s = reinterpret_cast<T*>(smem + L::kQ);
  T* const k_s = reinterpret_cast<T*>(smem + L::kK);
  T* const v_s = reinterpret_cast<T*>(smem + L::kV);
  float* const s_s = reinterpret_cast<float*>(smem + L::kS);
  T* const p_s = reinterpret_cast<T*>(smem + L::kP);
  float* const o_s = reinterpret_cast<float*>(smem + L::kO);

  const int seg = p.seg_base + int(blockIdx.z);
  const int h = blockIdx.y;
  const int m0 = (int(gridDim.x) - 1 - int(blockIdx.x)) * kFwdBM;  // last (heaviest causal) tile first
  const int q_begin = p.cu_q[seg];
  const int len_q = p.cu_q[seg + 1] - q_begin;
  if (m0 >= len_q) return;
  const int k_begin = p.cu_k[seg];
  const int len_k = p.cu_k[seg + 1] - k_begin;
  const int g = h / p.group;
  const int32_t* const qp = MASK == Mask::kCausalPos ? p.q_pos + q_begin : nullptr;
  const int32_t* const kp = MASK == Mask::kCausalPos ? p.k_pos + k_begin : nullptr;
  const int m1 = min(m0 + kFwdBM, len_q);
  const tiles::KeyRange kr = tiles::key_range(MASK, m0, m1, len_k, qp, kp);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row0 = warp * 16;  // first tile row of this warp

  load_rows<T, D, kFwdBM>(q_s, L::kLdT, p.q + int64_t(q_begin + m0) * p.q_s0 + int64_t(h) * p.q_s1, p.q_s0, m1 - m0);
  for (int i = threadIdx.x; i < kFwdBM * L::kLdO; i += kThreads) o_s[i] = 0.f;

  // Running max (log2 domain, of scale*log2e*S) and running sum of this warp's 16 rows.
  float m_run[16], l_run[16];
#pragma unroll
  for (int rr = 0; rr < 16; ++rr) {
    m_run[rr] = -INFINITY;
    l_run[rr] = 0.f;
  }

  for (int n0 = 0; n0 < kr.end; n0 += kBN) {
    __syncthreads();  // previous tile's K/V reads are done (first pass: Q load and O zero-fill visible)
    const int nk = min(kBN, len_k - n0);
    load_rows<T, D, kBN>(k_s, L::kLdT, p.k + int64_t(k_begin + n0) * p.k_s0 + int64_t(g) * p.k_s1, p.k_s0, nk);
    load_rows<T, D, kBN>(v_s, L::kLdT, p.v + int64_t(k_begin + n0) * p.v_s0 + int64_t(g) * p.v_s1, p.v_s0, nk);
    __syncthreads();

    // S[row0:row0+16, 0:64] = Q K^T (K tile read col-major = K^T).
    {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kBN / 16];
#pragma unroll
      for (int j = 0; j < kBN / 16; ++j) wmma::fill_fragment(acc[j], 0.f);
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::load_matrix_sync(a, q_s + row0 * L::kLdT + kk * 16, L::kLdT);
#pragma unroll
        for (int j = 0; j < kBN / 16; ++j) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;
          wmma::load_matrix_sync(b, k_s + (j * 16) * L::kLdT + kk * 16, L::kLdT);
          wmma::mma_sync(acc[j], a, b, acc[j]);
        }
      }
#pragma unroll
      for (int j = 0; j < kBN / 16; ++j)
        wmma::store_matrix_sync(s_s + row0 * L::kLdS + j * 16, acc[j], L::kLdS, wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax over this warp's rows; lane owns columns lane and lane + 32.
    const bool need_mask = min(n0 + kBN, len_k) > kr.full;  // some key of the tile hidden from some row
#pragma unroll
    for (int rr = 0; rr < 16; ++rr) {
      const int r = row0 + rr;
      const int qi = m0 + r;
      const bool row_ok = qi < len_q;
      float sv[2];
#pragma unroll
      for (int t = 0; t < 2; ++t) {
        const int c = lane + 32 * t;
        const int kj = n0 + c;
        const bool ok = row_ok && kj < len_k && (!need_mask || tiles::visible(MASK, qi, kj, qp, kp));
        sv[t] = ok ? s_s[r * L::kLdS + c] * p.scale_log2 : -INFINITY;
      }
      const float m_new = fmaxf(m_run[rr], warp_max(fmaxf(sv[0], sv[1])));
      const float base = m_new == -INFINITY ? 0.f : m_new;  // no visible key yet: exp2 gives 0, not NaN
      const float alpha = exp2f(m_run[rr] - base);         // 0 when m_run was -inf (O, l are 0 then)
      const float p0 = exp2f(sv[0] - base), p1 = exp2f(sv[1] - base);
      l_run[rr] = l_run[rr] * alpha + warp_sum(p0 + p1);
      m_run[rr] = m_new;
      p_s[r * L::kLdP + lane] = Elem<T>::from_float(p0);
      p_s[r * L::kLdP + lane + 32] = Elem<T>::from_float(p1);
#pragma unroll
      for (int c = lane; c < D; c += 32) o_s[r * L::kLdO + c] *= alpha;
    }
    __syncwarp();

    // O[row0:row0+16, :] += P V.
    {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[D / 16];
#pragma unroll
      for (int j = 0; j < D / 16; ++j)
        wmma::load_matrix_sync(acc[j], o_s + row0 * L::kLdO + j * 16, L::kLdO, wmma::mem_row_major);
#pragma unroll
      for (int kk = 0; kk < kBN / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::load_matrix_sync(a, p_s + row0 * L::kLdP + kk * 16, L::kLdP);
#pragma unroll
        for (int j = 0; j < D / 16; ++j) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b;
          wmma::load_matrix_sync(b, v_s + (kk * 16) * L::kLdT + j * 16, L::kLdT);
          wmma::mma_sync(acc[j], a, b, acc[j]);
        }
      }
#pragma unroll
      for (int j = 0; j < D / 16; ++j)
        wmma::store_matrix_sync(o_s + row0 * L::kLdO + j * 16, acc[j], L::kLdO, wmma::mem_row_major);
    }
  }
  __syncthreads();  // O rows visible to all lanes (also when no tile ran: the zero-fill)

  // Epilogue: out = O / l, lse = ln(2^m * l); rows without a visible key get 0 and -inf.
#pragma unroll
  for (int rr = 0; rr < 16; ++rr) {
    const int r = row0 + rr;
    const int qi = m0 + r;
    if (qi >= len_q) continue;  // warp-uniform
    const float l = l_run[rr];
    const int64_t row = int64_t(q_begin) + qi;
    store_row16<T, D>(p.out + (row * p.hq + h) * D, o_s + r * L::kLdO, l > 0.f ? 1.f / l : 0.f, lane);
    if (lane == 0) p.lse[int64_t(h) * p.total_q + row] = l > 0.f ? m_run[rr] * kLn2 + logf(l) : -INFINITY;
  }
}

// ---------------------------------------------------------------------------------------------
// Backward.

// dsum[h][i] = sum_d dout[i,h,d] * out[i,h,d]; dq_accum[i,h,:] = 0. One warp per (i, h).
template <typename T>
__global__ void varlen_bwd_pre_kernel(const T* __restrict__ dout, int64_t do_s0, int64_t do_s1,
                                      const T* __restrict__ out, int64_t o_s0, int64_t o_s1,
                                      float* __restrict__ dsum, float* __restrict__ dq_accum, int64_t total_q,
                                      int hq, int d) {
  const int64_t wid = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (wid >= total_q * hq) return;
  const int64_t i = wid / hq;
  const int h = int(wid % hq);
  const T* dop = dout + i * do_s0 + h * do_s1;
  const T* op = out + i * o_s0 + h * o_s1;
  float acc = 0.f;
  for (int c = lane; c < d; c += 32) acc += Elem<T>::to_float(dop[c]) * Elem<T>::to_float(op[c]);
  acc = warp_sum(acc);
  if (lane == 0) dsum[int64_t(h) * total_q + i] = acc;
  float* dqa = dq_accum + (i * hq + h) * d;
  for (int c = lane; c < d; c += 32) dqa[c] = 0.f;
}

// dq = dq_accum * scale, in q's dtype (both contiguous [total_q, Hq, D]).
template <typename T>
__global__ void varlen_bwd_post_kernel(const float* __restrict__ dq_accum, T* __restrict__ dq, int64_t n, float scale) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dq[i] = Elem<T>::from_float(dq_accum[i] * scale);
}

template <typename T>
struct BwdParams {
  const T* q;
  const T* k;
  const T* v;
  const T* dout;
  int64_t q_s0, q_s1, k_s0, k_s1, v_s0, v_s1, do_s0, do_s1;
  const float* lse;   // [Hq, total_q]
  const float* dsum;  // [Hq, total_q]
  float* dq_accum;    // [total_q, Hq, D]
  T* dk;              // [total_k, Hkv, D] contiguous
  T* dv;
  const int32_t* cu_q;
  const int32_t* cu_k;
  const int32_t* q_pos;
  const int32_t* k_pos;
  int64_t total_q;
  int hq, hkv, group;
  float scale;
  float scale_log2;
  int seg_base;
};

// grid (ceil(max_k/64), Hkv, segments), 128 threads. The CTA owns keys [n0, n0+64) of kv head g and
// walks, for each query head of the group, the query tiles of 32 rows that can see them. Per step:
//   B: S = Q K^T and dP = dO V^T (warp w: rows 16*(w/2), cols 32*(w%2)) -> fp32 smem
//   C: P = exp2(S*scale*log2e - lse*log2e) masked, dS = P (dP - dsum) -> 16-bit smem (all threads)
//   D: dV += P^T dO, dK += dS^T Q (warp w owns key rows 16w..16w+15 of dK/dV);
//      dQ = dS K (warp w: rows 16*(w%2), cols (D/2)*(w/2)) -> fp32 smem (over S/dP) -> atomicAdd.
template <typename T, int D, Mask MASK>
__global__ void __launch_bounds__(kThreads) varlen_bwd_kernel(const BwdParams<T> p) {
  using L = BwdSmem<D>;
  MOR_DYNAMIC_SMEM(unsigned char, smem, 128);
  T* const k_s = reinterpret_cast<T*>(smem + L::kK);
  T* const v_s = reinterpret_cast<T*>(smem + L::kV);
  float* const dk_s = reinterpret_cast<float*>(smem + L::kDK);
  float* const dv_s = reinterpret_cast<float*>(smem + L::kDV);
  T* const q_s = reinterpret_cast<T*>(smem + L::kQ);
  T* const do_s = reinterpret_cast<T*>(smem + L::kDO);
  float* const s_s = reinterpret_cast<float*>(smem + L::kF32);  // [32][kLdS]
  float* const dp_s = s_s + kBwdBM * L::kLdS;                    // [32][kLdS], 8704 bytes after s_s
  float* const dq_s = s_s;                                       // [32][kLdO], aliases S/dP in phase D
  T* const p_s = reinterpret_cast<T*>(smem + L::kP);
  T* const ds_s = reinterpret_cast<T*>(smem + L::kDS);
  float* const lse_s = reinterpret_cast<float*>(smem + L::kLse);
  float* const dsum_s = reinterpret_cast<float*>(smem + L::kDsum);

  const int seg = p.seg_base + int(blockIdx.z);
  const int g = blockIdx.y;
  const int n0 = int(blockIdx.x) * kBN;  // first (heaviest causal) key tile first
  const int k_begin = p.cu_k[seg];
  const int len_k = p.cu_k[seg + 1] - k_begin;
  if (n0 >= len_k) return;
  const int q_begin = p.cu_q[seg];
  const int len_q = p.cu_q[seg + 1] - q_begin;
  const int32_t* const qp = MASK == Mask::kCausalPos ? p.q_pos + q_begin : nullptr;
  const int32_t* const kp = MASK == Mask::kCausalPos ? p.k_pos + k_begin : nullptr;
  const int n1 = min(n0 + kBN, len_k);
  const tiles::QueryRange qr = tiles::query_range(MASK, n0, n1, len_q, qp, kp);

  const int tid = threadIdx.x;
  const int warp = tid / 32, lane = tid % 32;

  load_rows<T, D, kBN>(k_s, L::kLdT, p.k + int64_t(k_begin + n0) * p.k_s0 + int64_t(g) * p.k_s1, p.k_s0, n1 - n0);
  load_rows<T, D, kBN>(v_s, L::kLdT, p.v + int64_t(k_begin + n0) * p.v_s0 + int64_t(g) * p.v_s1, p.v_s0, n1 - n0);
  for (int i = tid; i < kBN * L::kLdO; i += kThreads) {
    dk_s[i] = 0.f;
    dv_s[i] = 0.f;
  }
  __syncthreads();

  // Query tiles [m_start, len_q): rows before qr.begin see no key of this tile.
  const int m_start = qr.begin < len_q ? (qr.begin / kBwdBM) * kBwdBM : len_q;
  for (int j = 0; j < p.group; ++j) {
    const int h = g * p.group + j;
    for (int m0 = m_start; m0 < len_q; m0 += kBwdBM) {
      const int nq = min(kBwdBM, len_q - m0);
      // A: Q, dO rows (zeros past len_q) and per-row lse (log2 units; +inf -> P = 0) and dsum.
      load_rows<T, D, kBwdBM>(q_s, L::kLdT, p.q + int64_t(q_begin + m0) * p.q_s0 + int64_t(h) * p.q_s1, p.q_s0, nq);
      load_rows<T, D, kBwdBM>(do_s, L::kLdT, p.dout + int64_t(q_begin + m0) * p.do_s0 + int64_t(h) * p.do_s1,
                              p.do_s0, nq);
      if (tid < kBwdBM) {
        float l2 = INFINITY, ds = 0.f;
        if (tid < nq) {
          const int64_t idx = int64_t(h) * p.total_q + q_begin + m0 + tid;
          const float lse = p.lse[idx];
          l2 = lse == -INFINITY ? INFINITY : lse * kLog2e;
          ds = p.dsum[idx];
        }
        lse_s[tid] = l2;
        dsum_s[tid] = ds;
      }
      __syncthreads();

      // B: S = Q K^T, dP = dO V^T; warp w -> rows [16*(w/2), +16), cols [32*(w%2), +32).
      {
        const int rf = warp >> 1, cf = (warp & 1) * 2;
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc_s[2], acc_dp[2];
#pragma unroll
        for (int t = 0; t < 2; ++t) {
          wmma::fill_fragment(acc_s[t], 0.f);
          wmma::fill_fragment(acc_dp[t], 0.f);
        }
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a_q, a_do;
          wmma::load_matrix_sync(a_q, q_s + (rf * 16) * L::kLdT + kk * 16, L::kLdT);
          wmma::load_matrix_sync(a_do, do_s + (rf * 16) * L::kLdT + kk * 16, L::kLdT);
#pragma unroll
          for (int t = 0; t < 2; ++t) {
            wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;
            wmma::load_matrix_sync(b, k_s + ((cf + t) * 16) * L::kLdT + kk * 16, L::kLdT);
            wmma::mma_sync(acc_s[t], a_q, b, acc_s[t]);
            wmma::load_matrix_sync(b, v_s + ((cf + t) * 16) * L::kLdT + kk * 16, L::kLdT);
            wmma::mma_sync(acc_dp[t], a_do, b, acc_dp[t]);
          }
        }
#pragma unroll
        for (int t = 0; t < 2; ++t) {
          wmma::store_matrix_sync(s_s + (rf * 16) * L::kLdS + (cf + t) * 16, acc_s[t], L::kLdS, wmma::mem_row_major);
          wmma::store_matrix_sync(dp_s + (rf * 16) * L::kLdS + (cf + t) * 16, acc_dp[t], L::kLdS, wmma::mem_row_major);
        }
      }
      __syncthreads();

      // C: P and dS (masked entries, padded rows and padded keys give exactly 0).
      {
        const bool need_mask = m0 < qr.full;  // some row of this tile misses some key of the tile
        for (int e = tid; e < kBwdBM * kBN; e += kThreads) {
          const int r = e / kBN, c = e % kBN;
          const int qi = m0 + r, kj = n0 + c;
          const bool ok = qi < len_q && kj < len_k && (!need_mask || tiles::visible(MASK, qi, kj, qp, kp));
          const float pv = ok ? exp2f(s_s[r * L::kLdS + c] * p.scale_log2 - lse_s[r]) : 0.f;
          const float dsv = pv * (dp_s[r * L::kLdS + c] - dsum_s[r]);
          p_s[r * L::kLdP + c] = Elem<T>::from_float(pv);
          ds_s[r * L::kLdP + c] = Elem<T>::from_float(dsv);
        }
      }
      __syncthreads();

      // D1: dV[16w:16w+16, :] += P^T dO; P^T read as a col-major view of P.
      // D2: dK[16w:16w+16, :] += dS^T Q.
#pragma unroll
      for (int pass = 0; pass < 2; ++pass) {
        const T* const lhs = pass == 0 ? p_s : ds_s;
        const T* const rhs = pass == 0 ? do_s : q_s;
        float* const accum = pass == 0 ? dv_s : dk_s;
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[D / 16];
#pragma unroll
        for (int jd = 0; jd < D / 16; ++jd)
          wmma::load_matrix_sync(acc[jd], accum + (warp * 16) * L::kLdO + jd * 16, L::kLdO, wmma::mem_row_major);
#pragma unroll
        for (int kk = 0; kk < kBwdBM / 16; ++kk) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::col_major> a;
          // element (key i, query k) at lhs[(16kk + k) * kLdP + 16w + i] = P[query][key]
          wmma::load_matrix_sync(a, lhs + (kk * 16) * L::kLdP + warp * 16, L::kLdP);
#pragma unroll
          for (int jd = 0; jd < D / 16; ++jd) {
            wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b;
            wmma::load_matrix_sync(b, rhs + (kk * 16) * L::kLdT + jd * 16, L::kLdT);
            wmma::mma_sync(acc[jd], a, b, acc[jd]);
          }
        }
#pragma unroll
        for (int jd = 0; jd < D / 16; ++jd)
          wmma::store_matrix_sync(accum + (warp * 16) * L::kLdO + jd * 16, acc[jd], L::kLdO, wmma::mem_row_major);
      }

      // D3: dQ tile = dS K; warp w -> rows [16*(w%2), +16), cols [(D/2)*(w/2), +D/2). Each warp
      // writes and then reads back only its own block of dq_s (S/dP are dead after phase C).
      {
        constexpr int kNf = D / 32;  // 16-wide column fragments per warp
        const int rf = warp & 1, cb = (warp >> 1) * kNf;
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kNf];
#pragma unroll
        for (int t = 0; t < kNf; ++t) wmma::fill_fragment(acc[t], 0.f);
#pragma unroll
        for (int kk = 0; kk < kBN / 16; ++kk) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
          wmma::load_matrix_sync(a, ds_s + (rf * 16) * L::kLdP + kk * 16, L::kLdP);
#pragma unroll
          for (int t = 0; t < kNf; ++t) {
            wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b;
            wmma::load_matrix_sync(b, k_s + (kk * 16) * L::kLdT + (cb + t) * 16, L::kLdT);
            wmma::mma_sync(acc[t], a, b, acc[t]);
          }
        }
#pragma unroll
        for (int t = 0; t < kNf; ++t)
          wmma::store_matrix_sync(dq_s + (rf * 16) * L::kLdO + (cb + t) * 16, acc[t], L::kLdO, wmma::mem_row_major);
        __syncwarp();
        constexpr int kCols = D / 2;
        for (int e = lane; e < 16 * kCols; e += 32) {
          const int rr = e / kCols, c = cb * 16 + e % kCols;
          const int qi = m0 + rf * 16 + rr;
          if (qi < len_q)
            atomicAdd(p.dq_accum + ((int64_t(q_begin) + qi) * p.hq + h) * D + c, dq_s[(rf * 16 + rr) * L::kLdO + c]);
        }
      }
      __syncthreads();  // all reads of Q/dO/P/dS/dq_s done before the next step overwrites them
    }
  }

  // Epilogue (dK/dV complete and visible: the last barrier above, or the one after the zero-fill):
  // warp w writes key rows 16w..16w+15 of dk = scale * dK and dv = dV.
  for (int rr = 0; rr < 16; ++rr) {
    const int r = warp * 16 + rr;
    const int kj = n0 + r;
    if (kj >= len_k) break;  // warp-uniform
    const int64_t off = ((int64_t(k_begin) + kj) * p.hkv + g) * D;
    store_row16<T, D>(p.dk + off, dk_s + r * L::kLdO, p.scale, lane);
    store_row16<T, D>(p.dv + off, dv_s + r * L::kLdO, 1.f, lane);
  }
}


// ---------------------------------------------------------------------------------------------
// Host side: launch plans shared by the CUDA wrappers (varlen_attention.cu) and the CPU emulation
// test, so that both run the same grid shapes, segment split and parameters. `launch(kernel, grid,
// block, smem_bytes, args...)` starts one kernel: <<<>>> on the current stream under nvcc, the
// emulator on the CPU.

// Pointer-level arguments of one call (validated by the caller). Element strides of dims 0 and 1;
// the last dim is contiguous.
struct Raw {
  const void* q;
  const void* k;
  const void* v;
  int64_t q_s0, q_s1, k_s0, k_s1, v_s0, v_s1;
  const int32_t* cu_q;
  const int32_t* cu_k;
  const int32_t* q_pos;  // kCausalPos only, else null
  const int32_t* k_pos;
  int64_t segments, total_q, total_k, max_q, max_k;
  int hq, hkv;
  float scale;
};

constexpr int kPreThreads = 256;   // backward preprocess: one warp per (query row, head)
constexpr int kPostThreads = 256;  // backward postprocess

// Forward: out [total_q, Hq, D], lse [Hq, total_q].
template <typename T, int D, Mask M, typename Launch>
void run_fwd(const Raw& a, T* out, float* lse, Launch&& launch) {
  const int64_t m_blocks = (a.max_q + kFwdBM - 1) / kFwdBM;
  if (a.segments == 0 || m_blocks == 0 || a.total_q == 0 || a.hq == 0) return;  // nothing to write
  FwdParams<T> p{};
  p.q = static_cast<const T*>(a.q);
  p.k = static_cast<const T*>(a.k);
  p.v = static_cast<const T*>(a.v);
  p.q_s0 = a.q_s0;
  p.q_s1 = a.q_s1;
  p.k_s0 = a.k_s0;
  p.k_s1 = a.k_s1;
  p.v_s0 = a.v_s0;
  p.v_s1 = a.v_s1;
  p.out = out;
  p.lse = lse;
  p.cu_q = a.cu_q;
  p.cu_k = a.cu_k;
  p.q_pos = a.q_pos;
  p.k_pos = a.k_pos;
  p.total_q = a.total_q;
  p.hq = a.hq;
  p.group = a.hq / a.hkv;
  p.scale_log2 = a.scale * kLog2e;
  for (int64_t s0 = 0; s0 < a.segments; s0 += kMaxGridYZ) {
    p.seg_base = static_cast<int>(s0);
    const int64_t segs = a.segments - s0 < kMaxGridYZ ? a.segments - s0 : kMaxGridYZ;
    const dim3 grid(static_cast<unsigned>(m_blocks), static_cast<unsigned>(a.hq), static_cast<unsigned>(segs));
    launch(&varlen_fwd_kernel<T, D, M>, grid, dim3(kThreads), FwdSmem<D>::kBytes, p);
  }
}

// Backward: dout/out with their own dim-0/1 strides; dsum [Hq, total_q] and dq_accum
// [total_q, Hq, D] are scratch; dq [total_q, Hq, D], dk/dv [total_k, Hkv, D] contiguous.
template <typename T, int D, Mask M, typename Launch>
void run_bwd(const Raw& a, const T* dout, int64_t do_s0, int64_t do_s1, const T* out, int64_t o_s0, int64_t o_s1,
             const float* lse, float* dsum, float* dq_accum, T* dq, T* dk, T* dv, Launch&& launch) {
  // 1. dsum and dq_accum = 0 (every (row, head) of q).
  const int64_t pairs = a.total_q * a.hq;
  if (pairs > 0) {
    const int64_t blocks = (pairs + kPreThreads / 32 - 1) / (kPreThreads / 32);
    launch(&varlen_bwd_pre_kernel<T>, dim3(static_cast<unsigned>(blocks)), dim3(kPreThreads), size_t(0), dout, do_s0,
           do_s1, out, o_s0, o_s1, dsum, dq_accum, a.total_q, a.hq, D);
  }
  // 2. dK, dV per key tile; dQ accumulated atomically.
  const int64_t n_blocks = (a.max_k + kBN - 1) / kBN;
  if (a.segments > 0 && n_blocks > 0 && a.total_k > 0) {
    BwdParams<T> p{};
    p.q = static_cast<const T*>(a.q);
    p.k = static_cast<const T*>(a.k);
    p.v = static_cast<const T*>(a.v);
    p.dout = dout;
    p.q_s0 = a.q_s0;
    p.q_s1 = a.q_s1;
    p.k_s0 = a.k_s0;
    p.k_s1 = a.k_s1;
    p.v_s0 = a.v_s0;
    p.v_s1 = a.v_s1;
    p.do_s0 = do_s0;
    p.do_s1 = do_s1;
    p.lse = lse;
    p.dsum = dsum;
    p.dq_accum = dq_accum;
    p.dk = dk;
    p.dv = dv;
    p.cu_q = a.cu_q;
    p.cu_k = a.cu_k;
    p.q_pos = a.q_pos;
    p.k_pos = a.k_pos;
    p.total_q = a.total_q;
    p.hq = a.hq;
    p.hkv = a.hkv;
    p.group = a.hq / a.hkv;
    p.scale = a.scale;
    p.scale_log2 = a.scale * kLog2e;
    for (int64_t s0 = 0; s0 < a.segments; s0 += kMaxGridYZ) {
      p.seg_base = static_cast<int>(s0);
      const int64_t segs = a.segments - s0 < kMaxGridYZ ? a.segments - s0 : kMaxGridYZ;
      const dim3 grid(static_cast<unsigned>(n_blocks), static_cast<unsigned>(a.hkv), static_cast<unsigned>(segs));
      launch(&varlen_bwd_kernel<T, D, M>, grid, dim3(kThreads), BwdSmem<D>::kBytes, p);
    }
  }
  // 3. dq = scale * dq_accum.
  const int64_t n = a.total_q * a.hq * D;
  if (n > 0) {
    const int64_t blocks0 = (n + kPostThreads - 1) / kPostThreads;
    const int64_t blocks = blocks0 < (int64_t(1) << 20) ? blocks0 : (int64_t(1) << 20);
    launch(&varlen_bwd_post_kernel<T>, dim3(static_cast<unsigned>(blocks)), dim3(kPostThreads), size_t(0),
           static_cast<const float*>(dq_accum), dq, n, a.scale);
  }
}


MOR_DEVICE_CODE_END
}  // namespace mor::kernels::varlen_dev
