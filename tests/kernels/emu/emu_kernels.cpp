// The kernels' device code (kernels/*/..._kernels.cuh) under the CPU emulation of cuda_emu.h. The
// grid shapes, launch splits, chunk plan and parameters come from the same launch plans the CUDA
// wrappers use (run_fwd / run_bwd / plan + run in the _kernels.cuh headers); only the launcher
// differs (the emulator instead of <<<>>>).
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

namespace {

vd::Raw raw_args(const VarlenIn& in) {
  vd::Raw a{};
  a.q = in.q;
  a.k = in.k;
  a.v = in.v;
  a.q_s0 = in.q_s0;
  a.q_s1 = in.q_s1;
  a.k_s0 = in.k_s0;
  a.k_s1 = in.k_s1;
  a.v_s0 = in.v_s0;
  a.v_s1 = in.v_s1;
  a.cu_q = in.cu_q;
  a.cu_k = in.cu_k;
  a.q_pos = in.q_pos;
  a.k_pos = in.k_pos;
  a.segments = in.segments;
  a.total_q = in.total_q;
  a.total_k = in.total_k;
  a.max_q = in.max_q;
  a.max_k = in.max_k;
  a.hq = in.hq;
  a.hkv = in.hkv;
  a.scale = static_cast<float>(in.scale);
  return a;
}

// The launch plans' launcher: the emulator instead of <<<>>>.
const auto emu_launcher = [](auto kernel, dim3 grid, dim3 block, size_t smem, const auto&... args) {
  mor_emu::launch(grid, block, smem, kernel, args...);
};

}  // namespace

void varlen_fwd(const VarlenIn& in, void* out, float* lse) {
  const vd::Raw a = raw_args(in);
  dispatch(in.dtype, in.d, in.mask, [&](auto tt, auto dd, auto mm) {
    using T = decltype(tt);
    vd::run_fwd<T, decltype(dd)::value, decltype(mm)::value>(a, static_cast<T*>(out), lse, emu_launcher);
  });
}

void varlen_bwd(const VarlenIn& in, const void* dout, int64_t do_s0, int64_t do_s1, const void* out, int64_t o_s0,
                int64_t o_s1, const float* lse, float* dsum, float* dq_accum, void* dq, void* dk, void* dv) {
  if (in.total_q == 0 && in.total_k == 0) return;
  const vd::Raw a = raw_args(in);
  dispatch(in.dtype, in.d, in.mask, [&](auto tt, auto dd, auto mm) {
    using T = decltype(tt);
    vd::run_bwd<T, decltype(dd)::value, decltype(mm)::value>(
        a, static_cast<const T*>(dout), do_s0, do_s1, static_cast<const T*>(out), o_s0, o_s1, lse, dsum, dq_accum,
        static_cast<T*>(dq), static_cast<T*>(dk), static_cast<T*>(dv), emu_launcher);
  });
}

int paged_decode(const PagedIn& in, void* out, float* lse) {
  if (in.rows == 0 || in.hq == 0) return 0;
  pd::Raw a{};
  a.q = in.q;
  a.q_stride_r = in.q_stride_r;
  a.q_stride_h = in.q_stride_h;
  a.k = in.k;
  a.v = in.v;
  a.block_table = in.block_table;
  a.kv_len = in.kv_len;
  a.rows = in.rows;
  a.max_blocks = in.max_blocks;
  a.block_size = in.block_size;
  a.hkv = in.hkv;
  a.hq = in.hq;
  a.scale = static_cast<float>(in.scale);
  const pd::Plan pl = pd::plan(in.hq, in.hkv, in.d, in.max_blocks, in.block_size, in.max_kv_len, in.chunk);
  if (pl.smem > pd::kSmemLimit) throw std::logic_error("smem");
  std::vector<float> o_part, lse_part;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  if (pl.n_chunks_max > 1) {
    o_part.assign(size_t(in.rows * in.hq * pl.n_chunks_max * in.d), nan);
    lse_part.assign(size_t(in.rows * in.hq * pl.n_chunks_max), nan);
  }
  const pd::Params p = pd::make_params(a, pl, out, lse, o_part.data(), lse_part.data());
  if (in.dtype == Dtype::kBF16)
    pd::run<__nv_bfloat16>(pl, p, in.d, in.rows, emu_launcher);
  else
    pd::run<__half>(pl, p, in.d, in.rows, emu_launcher);
  return pl.n_chunks_max;
}

void set_schedule(int s) { mor_emu::set_schedule(static_cast<mor_emu::Schedule>(s)); }
std::vector<std::string> take_errors() { return mor_emu::take_errors(); }
int64_t take_partial_barriers() { return mor_emu::take_partial_barriers(); }

}  // namespace mor_emu_run
