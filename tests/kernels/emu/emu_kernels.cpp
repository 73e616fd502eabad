// The kernels' device code (kernels/*/..._kernels.cuh) under the CPU emulation of cuda_emu.h, with
// host-side logic mirroring the wrappers in varlen_attention.cu and paged_decode.cu. Keep in sync.
#include "emu/cuda_emu.h"
// clang-format off (the emulator must come first)
#include "paged_decode/paged_decode_kernels.cuh"
#include "varlen_attention/varlen_attention_kernels.cuh"
// clang-format on

#include "emu/emu_kernels.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace mor_emu_run {

namespace vd = mor::kernels::varlen_dev;
namespace pd = mor::kernels::paged_dev;
namespace tiles = mor::kernels::tiles;
using tiles::Mask;

namespace {

template <typename F>
void dispatch(Dtype dt, int d, int mask, F&& f) {
  auto with_mask = [&](auto tt, auto dd) {
    if (mask == int(Mask::kCausalPos))
      f(tt, dd, std::integral_constant<Mask, Mask::kCausalPos>{});
    else
      f(tt, dd, std::integral_constant<Mask, Mask::kCausalIndex>{});
  };
  auto with_d = [&](auto tt) {
    if (d == 64)
      with_mask(tt, std::integral_constant<int, 64>{});
    else if (d == 128)
      with_mask(tt, std::integral_constant<int, 128>{});
    else
      throw std::invalid_argument("head dim must be 64 or 128");
  };
  if (dt == Dtype::kBF16)
    with_d(__nv_bfloat16{});
  else
    with_d(__half{});
}

}  // namespace

void varlen_fwd(const VarlenIn& in, void* out, float* lse) {
  const int64_t m_blocks = (in.max_q + vd::kFwdBM - 1) / vd::kFwdBM;
  if (in.segments == 0 || m_blocks == 0 || in.total_q == 0 || in.hq == 0) return;
  const size_t smem = in.d == 64 ? vd::FwdSmem<64>::kBytes : vd::FwdSmem<128>::kBytes;
  dispatch(in.dtype, in.d, in.mask, [&](auto tt, auto dd, auto mm) {
    using T = decltype(tt);
    constexpr int D = decltype(dd)::value;
    constexpr Mask M = decltype(mm)::value;
    vd::FwdParams<T> p{};
    p.q = static_cast<const T*>(in.q);
    p.k = static_cast<const T*>(in.k);
    p.v = static_cast<const T*>(in.v);
    p.q_s0 = in.q_s0;
    p.q_s1 = in.q_s1;
    p.k_s0 = in.k_s0;
    p.k_s1 = in.k_s1;
    p.v_s0 = in.v_s0;
    p.v_s1 = in.v_s1;
    p.out = static_cast<T*>(out);
    p.lse = lse;
    p.cu_q = in.cu_q;
    p.cu_k = in.cu_k;
    p.q_pos = in.q_pos;
    p.k_pos = in.k_pos;
    p.total_q = in.total_q;
    p.hq = in.hq;
    p.group = in.hq / in.hkv;
    p.scale_log2 = static_cast<float>(in.scale) * vd::kLog2e;
    for (int64_t s0 = 0; s0 < in.segments; s0 += vd::kMaxGridYZ) {
      p.seg_base = static_cast<int>(s0);
      const dim3 grid(static_cast<unsigned>(m_blocks), static_cast<unsigned>(in.hq),
                      static_cast<unsigned>(std::min<int64_t>(vd::kMaxGridYZ, in.segments - s0)));
      mor_emu::launch(grid, dim3(vd::kThreads), smem, &vd::varlen_fwd_kernel<T, D, M>, p);
    }
  });
}

void varlen_bwd(const VarlenIn& in, const void* dout, int64_t do_s0, int64_t do_s1, const void* out, int64_t o_s0,
                int64_t o_s1, const float* lse, float* dsum, float* dq_accum, void* dq, void* dk, void* dv) {
  if (in.total_q == 0 && in.total_k == 0) return;
  const size_t smem = in.d == 64 ? vd::BwdSmem<64>::kBytes : vd::BwdSmem<128>::kBytes;
  const float scale = static_cast<float>(in.scale);
  dispatch(in.dtype, in.d, in.mask, [&](auto tt, auto dd, auto mm) {
    using T = decltype(tt);
    constexpr int D = decltype(dd)::value;
    constexpr Mask M = decltype(mm)::value;
    const int64_t pairs = in.total_q * in.hq;
    if (pairs > 0) {
      constexpr int kPreThreads = 256;
      const int64_t blocks = (pairs + kPreThreads / 32 - 1) / (kPreThreads / 32);
      mor_emu::launch(dim3(static_cast<unsigned>(blocks)), dim3(kPreThreads), 0, &vd::varlen_bwd_pre_kernel<T>,
                      static_cast<const T*>(dout), do_s0, do_s1, static_cast<const T*>(out), o_s0, o_s1, dsum,
                      dq_accum, in.total_q, in.hq, D);
    }
    const int64_t n_blocks = (in.max_k + vd::kBN - 1) / vd::kBN;
    if (in.segments > 0 && n_blocks > 0 && in.total_k > 0) {
      vd::BwdParams<T> p{};
      p.q = static_cast<const T*>(in.q);
      p.k = static_cast<const T*>(in.k);
      p.v = static_cast<const T*>(in.v);
      p.dout = static_cast<const T*>(dout);
      p.q_s0 = in.q_s0;
      p.q_s1 = in.q_s1;
      p.k_s0 = in.k_s0;
      p.k_s1 = in.k_s1;
      p.v_s0 = in.v_s0;
      p.v_s1 = in.v_s1;
      p.do_s0 = do_s0;
      p.do_s1 = do_s1;
      p.lse = lse;
      p.dsum = dsum;
      p.dq_accum = dq_accum;
      p.dk = static_cast<T*>(dk);
      p.dv = static_cast<T*>(dv);
      p.cu_q = in.cu_q;
      p.cu_k = in.cu_k;
      p.q_pos = in.q_pos;
      p.k_pos = in.k_pos;
      p.total_q = in.total_q;
      p.hq = in.hq;
      p.hkv = in.hkv;
      p.group = in.hq / in.hkv;
      p.scale = scale;
      p.scale_log2 = scale * vd::kLog2e;
      for (int64_t s0 = 0; s0 < in.segments; s0 += vd::kMaxGridYZ) {
        p.seg_base = static_cast<int>(s0);
        const dim3 grid(static_cast<unsigned>(n_blocks), static_cast<unsigned>(in.hkv),
                        static_cast<unsigned>(std::min<int64_t>(vd::kMaxGridYZ, in.segments - s0)));
        mor_emu::launch(grid, dim3(vd::kThreads), smem, &vd::varlen_bwd_kernel<T, D, M>, p);
      }
    }
    const int64_t n = in.total_q * in.hq * D;
    if (n > 0) {
      constexpr int kPostThreads = 256;
      const int64_t blocks = std::min<int64_t>((n + kPostThreads - 1) / kPostThreads, int64_t(1) << 20);
      mor_emu::launch(dim3(static_cast<unsigned>(blocks)), dim3(kPostThreads), 0, &vd::varlen_bwd_post_kernel<T>,
                      static_cast<const float*>(dq_accum), static_cast<T*>(dq), n, scale);
    }
  });
}

namespace {

int pick_gt(int group, int d) {
  const int max_gt = d == 64 ? 8 : 4;
  int gt = 1;
  while (gt < group && gt < max_gt) gt *= 2;
  return gt;
}

template <typename T, int D>
void launch_chunk_d(int gt, const pd::Params& p, dim3 grid, int64_t smem) {
  switch (gt) {
    case 1: mor_emu::launch(grid, dim3(pd::kThreads), size_t(smem), &pd::paged_decode_chunk_kernel<T, D, 1>, p); break;
    case 2: mor_emu::launch(grid, dim3(pd::kThreads), size_t(smem), &pd::paged_decode_chunk_kernel<T, D, 2>, p); break;
    case 4: mor_emu::launch(grid, dim3(pd::kThreads), size_t(smem), &pd::paged_decode_chunk_kernel<T, D, 4>, p); break;
    default:
      if constexpr (D == 64) {
        mor_emu::launch(grid, dim3(pd::kThreads), size_t(smem), &pd::paged_decode_chunk_kernel<T, D, 8>, p);
      } else {
        throw std::logic_error("head tile 8 for D = 128");
      }
  }
}

}  // namespace

int paged_decode(const PagedIn& in, void* out, float* lse) {
  const int64_t R = in.rows, hq = in.hq, d = in.d, hkv = in.hkv;
  if (R == 0 || hq == 0) return 0;
  const int kv_cap = static_cast<int>(std::min(in.max_kv_len, in.max_blocks * in.block_size));
  const int group = static_cast<int>(hq / hkv);
  const int gt = pick_gt(group, static_cast<int>(d));
  int64_t ch = std::min<int64_t>(in.chunk, std::max(kv_cap, 1));
  while (ch > 1 && pd::smem_bytes(gt, static_cast<int>(d), ch) > pd::kSmemLimit) ch = (ch + 1) / 2;
  const int64_t smem = pd::smem_bytes(gt, static_cast<int>(d), ch);
  if (smem > pd::kSmemLimit) throw std::logic_error("smem");
  const int n_chunks_max = std::max(1, tiles::num_chunks(kv_cap, static_cast<int>(ch)));
  std::vector<float> o_part, lse_part;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  if (n_chunks_max > 1) {
    o_part.assign(size_t(R * hq * n_chunks_max * d), nan);
    lse_part.assign(size_t(R * hq * n_chunks_max), nan);
  }
  pd::Params p{};
  p.q = in.q;
  p.q_stride_r = in.q_stride_r;
  p.q_stride_h = in.q_stride_h;
  p.k = in.k;
  p.v = in.v;
  p.block_table = in.block_table;
  p.kv_len = in.kv_len;
  p.out = out;
  p.lse = lse;
  p.o_part = n_chunks_max > 1 ? o_part.data() : nullptr;
  p.lse_part = n_chunks_max > 1 ? lse_part.data() : nullptr;
  p.max_blocks = in.max_blocks;
  p.block_size = static_cast<int>(in.block_size);
  p.hkv = static_cast<int>(hkv);
  p.hq = static_cast<int>(hq);
  p.group = group;
  p.chunk = static_cast<int>(ch);
  p.n_chunks_max = n_chunks_max;
  p.kv_cap = kv_cap;
  p.scale_log2 = static_cast<float>(in.scale) * pd::kLog2e;
  const dim3 grid(static_cast<unsigned>(R * n_chunks_max), static_cast<unsigned>(hkv), 1);
  auto all = [&](auto tt) {
    using T = decltype(tt);
    if (d == 64)
      launch_chunk_d<T, 64>(gt, p, grid, smem);
    else
      launch_chunk_d<T, 128>(gt, p, grid, smem);
    if (p.n_chunks_max > 1)
      mor_emu::launch(dim3(static_cast<unsigned>(R * hq)), dim3(static_cast<unsigned>(d)), 0,
                      &pd::paged_decode_merge_kernel<T>, p, static_cast<int>(d));
  };
  if (in.dtype == Dtype::kBF16)
    all(__nv_bfloat16{});
  else
    all(__half{});
  return n_chunks_max;
}

void set_schedule(int s) { mor_emu::set_schedule(static_cast<mor_emu::Schedule>(s)); }
std::vector<std::string> take_errors() { return mor_emu::take_errors(); }
int64_t take_partial_barriers() { return mor_emu::take_partial_barriers(); }

}  // namespace mor_emu_run
