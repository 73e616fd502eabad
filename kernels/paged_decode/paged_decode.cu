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
#include "paged_decode/paged_decode_kernels.cuh"

namespace mor::kernels {

namespace {

using namespace paged_dev;  // kernels, params, smem layout (paged_decode_kernels.cuh)

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
