// CUDA varlen attention (see varlen_attention.h): a FlashAttention-2 style forward (online softmax,
// one CTA per 64-query tile) and backward (one CTA per 64-key tile: dK/dV accumulated in shared
// memory, dQ by fp32 atomics into a scratch buffer), on tensor cores through the WMMA API
// (16x16x16 bf16/fp16 fragments, fp32 accumulators). All range and mask arithmetic goes through
// common/attention_tiles.h, the code the CPU tests check.
//
// Shared-memory conventions: 16-bit tiles have rows padded by 8 elements, fp32 tiles by 4; every
// region starts on a 128-byte boundary and every fragment pointer lands on a 32-byte boundary
// (row offsets are multiples of 16 rows, column offsets multiples of 16 elements).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "common/attention_tiles.h"
#include "mor/core/error.h"
#include "varlen_attention/varlen_attention.h"
#include "varlen_attention/varlen_attention_kernels.cuh"

namespace mor::kernels {

namespace {

using namespace varlen_dev;  // kernels, params, smem layouts (varlen_attention_kernels.cuh)
// ---------------------------------------------------------------------------------------------
// Host side.

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls f(TypeTag<T>, integral_constant<int, D>, integral_constant<Mask, M>) for the runtime triple.
template <typename F>
void dispatch(at::ScalarType st, int64_t d, Mask mask, F&& f) {
  auto with_mask = [&](auto tt, auto dd) {
    if (mask == Mask::kCausalPos)
      f(tt, dd, std::integral_constant<Mask, Mask::kCausalPos>{});
    else
      f(tt, dd, std::integral_constant<Mask, Mask::kCausalIndex>{});
  };
  auto with_d = [&](auto tt) {
    if (d == 64)
      with_mask(tt, std::integral_constant<int, 64>{});
    else
      with_mask(tt, std::integral_constant<int, 128>{});
  };
  if (st == at::kBFloat16)
    with_d(TypeTag<__nv_bfloat16>{});
  else
    with_d(TypeTag<__half>{});
}

size_t fwd_smem_bytes(int64_t d) { return d == 64 ? FwdSmem<64>::kBytes : FwdSmem<128>::kBytes; }
size_t bwd_smem_bytes(int64_t d) { return d == 64 ? BwdSmem<64>::kBytes : BwdSmem<128>::kBytes; }

// Opt-in shared memory per block of the current device (0 if the query fails).
int64_t device_smem_optin(int device) {
  int v = 0;
  if (cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return v;
}

int device_cc_major(int device) {
  int v = 0;
  if (cudaDeviceGetAttribute(&v, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return v;
}

void check_device_fits(const at::Tensor& q, size_t smem, const char* what) {
  const int dev = q.get_device();
  const int cc = device_cc_major(dev);
  MOR_CHECK(cc >= 8, what, ": needs compute capability >= 8.0 (bf16/fp16 tensor cores), device ", dev,
            " has major version ", cc);
  const int64_t optin = device_smem_optin(dev);
  MOR_CHECK(int64_t(smem) <= optin, what, ": needs ", smem, " bytes of shared memory per block, device ", dev,
            " allows ", optin);
}

// A [rows, heads, D] input the kernels can read with 16-byte row loads: last dim contiguous, strides of
// dims 0 and 1 multiples of 8 elements, 16-byte aligned base. Otherwise a contiguous copy.
at::Tensor rows_16b(const at::Tensor& t) {
  const auto ok = [](const at::Tensor& x) {
    return x.stride(2) == 1 && x.stride(0) % 8 == 0 && x.stride(1) % 8 == 0 &&
           reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0;
  };
  if (ok(t)) return t;
  at::Tensor c = t.contiguous();
  if (!ok(c)) c = c.clone(at::MemoryFormat::Contiguous);  // contiguous but misaligned view
  return c;
}

void check_index_tensor(const at::Tensor& t, const at::Tensor& q, const char* name, const char* what) {
  MOR_CHECK(t.defined(), what, ": ", name, " is undefined");
  MOR_CHECK(t.scalar_type() == at::kInt, what, ": ", name, " must be int32, got ", t.scalar_type());
  MOR_CHECK(t.dim() == 1, what, ": ", name, " must be 1-D, got ", t.dim(), " dims");
  MOR_CHECK(t.device() == q.device(), what, ": ", name, " is on ", t.device(), ", q on ", q.device());
}

struct Checked {
  int64_t total_q, total_k, hq, hkv, d, segments;
  at::Tensor cu_q, cu_k, q_pos, k_pos;  // contiguous
};

// Shapes, dtypes, devices and segment metadata shared by forward and backward.
Checked check_common(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const VarlenArgs& args,
                     const char* what) {
  MOR_CHECK(q.defined() && k.defined() && v.defined(), what, ": q, k and v must be defined");
  MOR_CHECK(q.is_cuda() && k.is_cuda() && v.is_cuda(), what, ": q, k and v must be CUDA tensors, got ", q.device(),
            ", ", k.device(), ", ", v.device());
  MOR_CHECK(k.device() == q.device() && v.device() == q.device(), what, ": q, k and v must be on one device, got ",
            q.device(), ", ", k.device(), ", ", v.device());
  const auto st = q.scalar_type();
  MOR_CHECK(st == at::kBFloat16 || st == at::kHalf, what, ": dtype must be bfloat16 or float16, got ", st);
  MOR_CHECK(k.scalar_type() == st && v.scalar_type() == st, what, ": q, k and v must share a dtype, got ", st, ", ",
            k.scalar_type(), ", ", v.scalar_type());
  MOR_CHECK(q.dim() == 3 && k.dim() == 3 && v.dim() == 3, what, ": q, k, v must be [total, heads, D], got ",
            q.sizes(), ", ", k.sizes(), ", ", v.sizes());
  Checked c;
  c.total_q = q.size(0);
  c.hq = q.size(1);
  c.d = q.size(2);
  c.total_k = k.size(0);
  c.hkv = k.size(1);
  MOR_CHECK(c.d == 64 || c.d == 128, what, ": head dim must be 64 or 128, got ", c.d);
  MOR_CHECK(k.size(2) == c.d && v.sizes() == k.sizes(), what, ": k and v must be [total_k, Hkv, ", c.d, "], got ",
            k.sizes(), " and ", v.sizes());
  MOR_CHECK(c.hkv > 0 && c.hq % c.hkv == 0, what, ": Hq (", c.hq, ") must be a positive multiple of Hkv (", c.hkv,
            ")");
  MOR_CHECK(c.hq <= kMaxGridYZ && c.hkv <= kMaxGridYZ, what, ": at most ", kMaxGridYZ, " heads, got ", c.hq);
  MOR_CHECK(c.total_q <= std::numeric_limits<int32_t>::max() && c.total_k <= std::numeric_limits<int32_t>::max(),
            what, ": total_q and total_k must fit int32, got ", c.total_q, " and ", c.total_k);

  check_index_tensor(args.cu_q, q, "cu_q", what);
  check_index_tensor(args.cu_k, q, "cu_k", what);
  MOR_CHECK(args.cu_q.numel() >= 1 && args.cu_q.numel() == args.cu_k.numel(), what,
            ": cu_q and cu_k must both be [S+1], got ", args.cu_q.numel(), " and ", args.cu_k.numel(), " entries");
  c.segments = args.cu_q.numel() - 1;
  c.cu_q = args.cu_q.contiguous();
  c.cu_k = args.cu_k.contiguous();
  MOR_CHECK(args.max_q >= 0 && args.max_k >= 0 && args.max_q <= std::numeric_limits<int32_t>::max() &&
                args.max_k <= std::numeric_limits<int32_t>::max(),
            what, ": max_q and max_k must be in [0, 2^31), got ", args.max_q, " and ", args.max_k);

  if (args.mask == Mask::kCausalPos) {
    check_index_tensor(args.q_pos, q, "q_pos", what);
    check_index_tensor(args.k_pos, q, "k_pos", what);
    MOR_CHECK(args.q_pos.numel() == c.total_q && args.k_pos.numel() == c.total_k, what,
              ": q_pos/k_pos must have total_q (", c.total_q, ") / total_k (", c.total_k, ") entries, got ",
              args.q_pos.numel(), " / ", args.k_pos.numel());
    c.q_pos = args.q_pos.contiguous();
    c.k_pos = args.k_pos.contiguous();
  } else {
    MOR_CHECK(args.mask == Mask::kCausalIndex, what, ": unknown mask mode ", static_cast<int>(args.mask));
    MOR_CHECK(!args.q_pos.defined() && !args.k_pos.defined(), what,
              ": q_pos/k_pos are only taken with Mask::kCausalPos");
  }
  return c;
}

template <typename T>
const T* ptr(const at::Tensor& t) {
  return reinterpret_cast<const T*>(t.data_ptr());
}
template <typename T>
T* mut_ptr(const at::Tensor& t) {
  return reinterpret_cast<T*>(t.data_ptr());
}
const int32_t* opt_i32(const at::Tensor& t) { return t.defined() ? t.data_ptr<int32_t>() : nullptr; }

Raw raw_args(const Checked& c, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const VarlenArgs& args) {
  Raw a{};
  a.q = q.data_ptr();
  a.k = k.data_ptr();
  a.v = v.data_ptr();
  a.q_s0 = q.stride(0);
  a.q_s1 = q.stride(1);
  a.k_s0 = k.stride(0);
  a.k_s1 = k.stride(1);
  a.v_s0 = v.stride(0);
  a.v_s1 = v.stride(1);
  a.cu_q = c.cu_q.data_ptr<int32_t>();
  a.cu_k = c.cu_k.data_ptr<int32_t>();
  a.q_pos = opt_i32(c.q_pos);
  a.k_pos = opt_i32(c.k_pos);
  a.segments = c.segments;
  a.total_q = c.total_q;
  a.total_k = c.total_k;
  a.max_q = args.max_q;
  a.max_k = args.max_k;
  a.hq = static_cast<int>(c.hq);
  a.hkv = static_cast<int>(c.hkv);
  a.scale = static_cast<float>(args.scale);
  return a;
}

// The launcher of the launch plans (varlen_attention_kernels.cuh): <<<>>> on `stream`, opting in to
// more than 48 KB of dynamic shared memory where a kernel needs it.
auto cuda_launcher(cudaStream_t stream) {
  return [stream](auto kernel, dim3 grid, dim3 block, size_t smem, const auto&... args) {
    if (smem > 48 * 1024) {
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    }
    kernel<<<grid, block, smem, stream>>>(args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
}

}  // namespace

bool varlen_attention_cuda_supports(const at::Tensor& q, const at::Tensor& k) {
  if (!q.defined() || !k.defined() || !q.is_cuda() || !k.is_cuda() || q.device() != k.device()) return false;
  const auto st = q.scalar_type();
  if ((st != at::kBFloat16 && st != at::kHalf) || k.scalar_type() != st) return false;
  if (q.dim() != 3 || k.dim() != 3) return false;
  const int64_t d = q.size(2);
  if ((d != 64 && d != 128) || k.size(2) != d) return false;
  if (q.stride(2) != 1 || k.stride(2) != 1) return false;
  // The device must have bf16/fp16 tensor cores and room for the larger (backward) tile set.
  const int dev = q.get_device();
  return device_cc_major(dev) >= 8 && int64_t(bwd_smem_bytes(d)) <= device_smem_optin(dev) &&
         int64_t(fwd_smem_bytes(d)) <= device_smem_optin(dev);
}

VarlenOut varlen_attention_fwd_cuda(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                                    const VarlenArgs& args) {
  constexpr const char* what = "varlen_attention_fwd_cuda";
  const Checked c = check_common(q_in, k_in, v_in, args, what);
  const c10::cuda::CUDAGuard guard(q_in.device());
  const at::Tensor q = rows_16b(q_in), k = rows_16b(k_in), v = rows_16b(v_in);

  VarlenOut res;
  res.out = at::empty({c.total_q, c.hq, c.d}, q.options());
  res.lse = at::empty({c.hq, c.total_q}, q.options().dtype(at::kFloat));
  if (poison_buffers()) {
    res.out.fill_(NAN);
    res.lse.fill_(NAN);
  }
  const int64_t m_blocks = (args.max_q + kFwdBM - 1) / kFwdBM;
  if (c.segments == 0 || m_blocks == 0 || c.total_q == 0 || c.hq == 0) return res;  // nothing to write
  const size_t smem = fwd_smem_bytes(c.d);
  check_device_fits(q, smem, what);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  const Raw a = raw_args(c, q, k, v, args);
  dispatch(q.scalar_type(), c.d, args.mask, [&](auto tt, auto dd, auto mm) {
    using T = typename decltype(tt)::type;
    run_fwd<T, decltype(dd)::value, decltype(mm)::value>(a, mut_ptr<T>(res.out), res.lse.data_ptr<float>(),
                                                         cuda_launcher(stream));
  });
  return res;
}

VarlenGrads varlen_attention_bwd_cuda(const at::Tensor& dout_in, const at::Tensor& q_in, const at::Tensor& k_in,
                                      const at::Tensor& v_in, const at::Tensor& out_in, const at::Tensor& lse_in,
                                      const VarlenArgs& args) {
  constexpr const char* what = "varlen_attention_bwd_cuda";
  const Checked c = check_common(q_in, k_in, v_in, args, what);
  MOR_CHECK(dout_in.defined() && out_in.defined() && lse_in.defined(), what, ": dout, out and lse must be defined");
  MOR_CHECK(dout_in.device() == q_in.device() && out_in.device() == q_in.device() && lse_in.device() == q_in.device(),
            what, ": dout, out and lse must be on q's device ", q_in.device());
  MOR_CHECK(dout_in.scalar_type() == q_in.scalar_type() && out_in.scalar_type() == q_in.scalar_type(), what,
            ": dout and out must have q's dtype ", q_in.scalar_type(), ", got ", dout_in.scalar_type(), " and ",
            out_in.scalar_type());
  MOR_CHECK(dout_in.sizes() == q_in.sizes() && out_in.sizes() == q_in.sizes(), what,
            ": dout and out must have q's shape ", q_in.sizes(), ", got ", dout_in.sizes(), " and ", out_in.sizes());
  MOR_CHECK(lse_in.scalar_type() == at::kFloat, what, ": lse must be float32, got ", lse_in.scalar_type());
  MOR_CHECK(lse_in.dim() == 2 && lse_in.size(0) == c.hq && lse_in.size(1) == c.total_q, what,
            ": lse must be [Hq, total_q] = [", c.hq, ", ", c.total_q, "], got ", lse_in.sizes());

  const c10::cuda::CUDAGuard guard(q_in.device());
  const at::Tensor q = rows_16b(q_in), k = rows_16b(k_in), v = rows_16b(v_in);
  const at::Tensor dout = rows_16b(dout_in);
  const at::Tensor out = out_in.stride(2) == 1 ? out_in : out_in.contiguous();  // read by scalar loads
  const at::Tensor lse = lse_in.contiguous();

  VarlenGrads g;
  g.dq = at::empty({c.total_q, c.hq, c.d}, q.options());
  g.dk = at::empty({c.total_k, c.hkv, c.d}, q.options());
  g.dv = at::empty({c.total_k, c.hkv, c.d}, q.options());
  at::Tensor dq_accum = at::empty({c.total_q, c.hq, c.d}, q.options().dtype(at::kFloat));
  at::Tensor dsum = at::empty({c.hq, c.total_q}, q.options().dtype(at::kFloat));
  if (poison_buffers()) {
    g.dq.fill_(NAN);
    g.dk.fill_(NAN);
    g.dv.fill_(NAN);
    dq_accum.fill_(NAN);
    dsum.fill_(NAN);
  }
  if (c.total_q == 0 && c.total_k == 0) return g;
  const size_t smem = bwd_smem_bytes(c.d);
  check_device_fits(q, smem, what);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  MOR_CHECK((c.total_q * c.hq + kPreThreads / 32 - 1) / (kPreThreads / 32) <= std::numeric_limits<int32_t>::max(),
            what, ": too many query rows x heads (", c.total_q * c.hq, ")");
  const Raw a = raw_args(c, q, k, v, args);
  dispatch(q.scalar_type(), c.d, args.mask, [&](auto tt, auto dd, auto mm) {
    using T = typename decltype(tt)::type;
    run_bwd<T, decltype(dd)::value, decltype(mm)::value>(
        a, ptr<T>(dout), dout.stride(0), dout.stride(1), ptr<T>(out), out.stride(0), out.stride(1),
        lse.data_ptr<float>(), dsum.data_ptr<float>(), dq_accum.data_ptr<float>(), mut_ptr<T>(g.dq),
        mut_ptr<T>(g.dk), mut_ptr<T>(g.dv), cuda_launcher(stream));
  });
  return g;
}

}  // namespace mor::kernels
