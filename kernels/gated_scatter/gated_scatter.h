// gated_scatter_add: the combine step of a recursion, out = h with rows flat[i] increased by
// w[i] * y[slot[i]].
//
// h [N, d], y [M, d], w [K] (same dtype as h), flat [K] int64 distinct rows of h, slot [K] int64
// rows of y. Returns a new tensor [N, d]; h is not modified. The ATen reference is differentiable;
// the CUDA version is forward-only (inference) and must equal the reference.
#pragma once

#include <ATen/core/Tensor.h>

namespace mor::kernels {

at::Tensor gated_scatter_add_ref(const at::Tensor& h, const at::Tensor& y, const at::Tensor& w,
                                 const at::Tensor& flat, const at::Tensor& slot);

// True when this build has the CUDA kernels.
bool cuda_kernels_built();

// CUDA forward; throws mor::Error when the build has no CUDA kernels or inputs are not on CUDA.
at::Tensor gated_scatter_add_cuda(const at::Tensor& h, const at::Tensor& y, const at::Tensor& w,
                                  const at::Tensor& flat, const at::Tensor& slot);

}  // namespace mor::kernels
