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

// The launcher of the launch plan (paged_decode_kernels.cuh): <<<>>> on `stream`.
auto cuda_launcher(cudaStream_t stream) {
  return [stream](auto kernel, dim3 grid, dim3 block, size_t smem, const auto&... args) {
    kernel<<<grid, block, smem, stream>>>(args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
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

  Raw a{};
  a.q = qc.data_ptr();
  a.q_stride_r = qc.stride(0);
  a.q_stride_h = qc.stride(1);
  a.k = k_pool.data_ptr();
  a.v = v_pool.data_ptr();
  a.block_table = table.data_ptr<int32_t>();
  a.kv_len = lens.data_ptr<int32_t>();
  a.rows = R;
  a.max_blocks = table.size(1);
  a.block_size = block_size;
  a.hkv = hkv;
  a.hq = hq;
  a.scale = static_cast<float>(scale);
  const Plan pl = plan(hq, hkv, static_cast<int>(d), a.max_blocks, block_size, max_kv_len, chunk);
  MOR_CHECK(pl.smem <= kSmemLimit, "paged_decode_cuda: internal: shared memory ", pl.smem, " bytes");
  MOR_CHECK(R * pl.n_chunks_max <= kIntMax && R * hq <= kIntMax, "paged_decode_cuda: too many rows (", R, ")");

  at::Tensor o_part, lse_part;
  if (pl.n_chunks_max > 1) {
    o_part = at::empty({R, hq, pl.n_chunks_max, d}, q.options().dtype(at::kFloat));
    lse_part = at::empty({R, hq, pl.n_chunks_max}, q.options().dtype(at::kFloat));
    if (poison) {
      o_part.fill_(std::numeric_limits<double>::quiet_NaN());
      lse_part.fill_(std::numeric_limits<double>::quiet_NaN());
    }
  }
  const Params p = make_params(a, pl, out.data_ptr(), lse.data_ptr<float>(),
                               pl.n_chunks_max > 1 ? o_part.data_ptr<float>() : nullptr,
                               pl.n_chunks_max > 1 ? lse_part.data_ptr<float>() : nullptr);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (q.scalar_type() == at::kBFloat16) {
    run<__nv_bfloat16>(pl, p, static_cast<int>(d), R, cuda_launcher(stream));
  } else {
    run<__half>(pl, p, static_cast<int>(d), R, cuda_launcher(stream));
  }
  return {out, lse};
}

}  // namespace mor::kernels
