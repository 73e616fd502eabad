// CUDA forward of gated_scatter_add: one block per selected row, threads stride over the hidden dim.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "gated_scatter/gated_scatter.h"
#include "mor/core/error.h"

namespace mor::kernels {

namespace {

template <typename T>
__global__ void gated_scatter_add_kernel(T* __restrict__ out, const T* __restrict__ y,
                                         const T* __restrict__ w, const int64_t* __restrict__ flat,
                                         const int64_t* __restrict__ slot, int64_t d) {
  const int64_t i = blockIdx.x;
  const float gate = static_cast<float>(w[i]);
  T* dst = out + flat[i] * d;
  const T* src = y + slot[i] * d;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    dst[c] = static_cast<T>(static_cast<float>(dst[c]) + gate * static_cast<float>(src[c]));
  }
}

}  // namespace

bool cuda_kernels_built() { return true; }

at::Tensor gated_scatter_add_cuda(const at::Tensor& h, const at::Tensor& y, const at::Tensor& w,
                                  const at::Tensor& flat, const at::Tensor& slot) {
  MOR_CHECK(h.is_cuda() && y.is_cuda() && w.is_cuda() && flat.is_cuda() && slot.is_cuda(),
            "gated_scatter_add_cuda: all inputs must be CUDA tensors");
  MOR_CHECK(h.dim() == 2 && y.dim() == 2 && h.size(1) == y.size(1),
            "gated_scatter_add_cuda: h and y must be [rows, d] with the same d");
  MOR_CHECK(w.numel() == flat.numel() && flat.numel() == slot.numel(),
            "gated_scatter_add_cuda: w, flat and slot must have the same length");
  MOR_CHECK(h.scalar_type() == y.scalar_type() && h.scalar_type() == w.scalar_type(),
            "gated_scatter_add_cuda: h, y and w must share a dtype");
  const c10::cuda::CUDAGuard guard(h.device());
  at::Tensor out = h.contiguous().clone();
  const at::Tensor yc = y.contiguous(), wc = w.contiguous();
  const at::Tensor fc = flat.to(at::kLong).contiguous(), sc = slot.to(at::kLong).contiguous();
  const int64_t rows = fc.numel(), d = h.size(1);
  if (rows == 0 || d == 0) return out;
  const int threads = d >= 256 ? 256 : static_cast<int>(((d + 31) / 32) * 32);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "gated_scatter_add", [&] {
    gated_scatter_add_kernel<scalar_t><<<static_cast<unsigned>(rows), threads, 0, stream>>>(
        out.data_ptr<scalar_t>(), yc.data_ptr<scalar_t>(), wc.data_ptr<scalar_t>(),
        fc.data_ptr<int64_t>(), sc.data_ptr<int64_t>(), d);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace mor::kernels
