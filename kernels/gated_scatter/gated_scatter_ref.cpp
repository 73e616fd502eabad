#include <ATen/ATen.h>

#include "gated_scatter/gated_scatter.h"
#include "mor/core/error.h"

namespace mor::kernels {

at::Tensor gated_scatter_add_ref(const at::Tensor& h, const at::Tensor& y, const at::Tensor& w,
                                 const at::Tensor& flat, const at::Tensor& slot) {
  return h.index_add(0, flat, y.index_select(0, slot) * w.unsqueeze(1));
}

#ifndef MOR_WITH_CUDA
bool cuda_kernels_built() { return false; }

at::Tensor gated_scatter_add_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                  const at::Tensor&, const at::Tensor&) {
  fail("gated_scatter_add_cuda: this build has no CUDA kernels (configure with MOR_WITH_CUDA=ON)");
}
#endif

}  // namespace mor::kernels
