// ATen reference of paged_decode (the oracle of the CUDA kernel): every row's keys are gathered
// through its block table into a padded [R, max_len, Hkv, D] with a validity mask, then one masked
// float64 softmax attention per (row, query head). No per-element loops: the model's CPU path
// calls this once per decode step and layer.
#include <ATen/ATen.h>

#include <limits>

#include "mor/core/error.h"
#include "paged_decode/paged_decode.h"

namespace mor::kernels {

PagedDecodeOut paged_decode_ref(const at::Tensor& q, const at::Tensor& k_pool, const at::Tensor& v_pool,
                                const at::Tensor& block_table, const at::Tensor& kv_len, double scale) {
  constexpr const char* fn = "paged_decode_ref";
  constexpr double kNegInf = -std::numeric_limits<double>::infinity();
  MOR_CHECK(q.defined() && k_pool.defined() && v_pool.defined() && block_table.defined() && kv_len.defined(), fn,
            ": all inputs must be defined");
  MOR_CHECK(q.dim() == 3, fn, ": q must be [R, Hq, D], got ", q.sizes());
  MOR_CHECK(k_pool.dim() == 4, fn, ": k_pool must be [num_blocks, block_size, Hkv, D], got ", k_pool.sizes());
  MOR_CHECK(v_pool.sizes() == k_pool.sizes(), fn, ": v_pool ", v_pool.sizes(), " must have k_pool's shape ",
            k_pool.sizes());
  MOR_CHECK(q.is_floating_point(), fn, ": q must be floating point, got ", q.scalar_type());
  MOR_CHECK(k_pool.scalar_type() == q.scalar_type() && v_pool.scalar_type() == q.scalar_type(), fn,
            ": q, k_pool and v_pool must share a dtype");
  const int64_t rows = q.size(0), hq = q.size(1), d = q.size(2);
  const int64_t num_blocks = k_pool.size(0), block_size = k_pool.size(1), hkv = k_pool.size(2);
  MOR_CHECK(k_pool.size(3) == d, fn, ": k_pool head dim ", k_pool.size(3), " differs from q head dim ", d);
  MOR_CHECK(hkv > 0 && hq % hkv == 0, fn, ": Hq = ", hq, " must be a multiple of Hkv = ", hkv);
  MOR_CHECK(block_size > 0, fn, ": block_size must be positive");
  MOR_CHECK(block_table.dim() == 2 && block_table.size(0) == rows, fn, ": block_table must be [R = ", rows,
            ", max_blocks], got ", block_table.sizes());
  MOR_CHECK(block_table.scalar_type() == at::kInt, fn, ": block_table must be int32, got ",
            block_table.scalar_type());
  MOR_CHECK(kv_len.dim() == 1 && kv_len.size(0) == rows, fn, ": kv_len must be [R = ", rows, "], got ",
            kv_len.sizes());
  MOR_CHECK(kv_len.scalar_type() == at::kInt, fn, ": kv_len must be int32, got ", kv_len.scalar_type());
  const at::Device device = q.device();
  MOR_CHECK(k_pool.device() == device && v_pool.device() == device && block_table.device() == device &&
                kv_len.device() == device,
            fn, ": all inputs must be on q's device ", device);
  const int64_t group = hq / hkv, max_blocks = block_table.size(1);

  const at::Tensor lens = kv_len.to(at::kLong);
  const int64_t max_len = rows == 0 ? 0 : lens.max().item<int64_t>();
  MOR_CHECK(rows == 0 || lens.min().item<int64_t>() >= 0, fn, ": kv_len must not be negative");
  MOR_CHECK(max_len <= max_blocks * block_size, fn, ": a row has ", max_len, " keys but the block table holds ",
            max_blocks, " blocks of ", block_size);
  PagedDecodeOut res;
  if (max_len == 0 || hq == 0) {
    res.out = at::zeros({rows, hq, d}, q.options());
    res.lse = at::full({rows, hq}, kNegInf, q.options().dtype(at::kFloat));
    return res;
  }

  // Key t of row r: block block_table[r][t / block_size], offset t % block_size.
  const at::Tensor t = at::arange(max_len, at::TensorOptions().dtype(at::kLong).device(device));
  const at::Tensor valid = t.unsqueeze(0) < lens.unsqueeze(1);  // [R, L]
  const at::Tensor blocks =
      block_table.to(at::kLong).index_select(1, t.div(block_size, "floor")).masked_fill(valid.logical_not(), 0);
  if (valid.any().item<bool>()) {
    const at::Tensor used = blocks.masked_select(valid);
    MOR_CHECK(used.min().item<int64_t>() >= 0 && used.max().item<int64_t>() < num_blocks, fn,
              ": block_table names a block outside the pool of ", num_blocks, " blocks");
  }
  const at::Tensor slots = (blocks * block_size + t.remainder(block_size).unsqueeze(0)).view({-1});
  auto gather = [&](const at::Tensor& pool) {  // -> [R, Hkv, L, D] float64
    return pool.reshape({num_blocks * block_size, hkv, d})
        .index_select(0, slots)
        .view({rows, max_len, hkv, d})
        .to(at::kDouble)
        .permute({0, 2, 1, 3});
  };
  const at::Tensor k64 = gather(k_pool), v64 = gather(v_pool);
  const at::Tensor q64 = q.to(at::kDouble).reshape({rows, hkv, group, d});  // query head h -> kv head h/group

  at::Tensor s = at::matmul(q64, k64.transpose(2, 3)).mul_(scale);  // [R, Hkv, G, L]
  s.masked_fill_(valid.logical_not().view({rows, 1, 1, max_len}), kNegInf);
  at::Tensor m = std::get<0>(s.max(-1, /*keepdim=*/true));
  m.masked_fill_(m.isneginf(), 0.0);
  at::Tensor e = s.sub_(m).exp_();  // 0 where masked
  const at::Tensor z = e.sum(-1, /*keepdim=*/true);
  const at::Tensor lse = m + z.log();  // -inf for rows without keys
  e.div_(z.clamp_min(1.0));            // z >= 1 wherever a key is visible; 0/0 -> 0 otherwise
  res.out = at::matmul(e, v64).reshape({rows, hq, d}).to(q.scalar_type()).contiguous();
  res.lse = lse.reshape({rows, hq}).to(at::kFloat).contiguous();
  return res;
}

}  // namespace mor::kernels
