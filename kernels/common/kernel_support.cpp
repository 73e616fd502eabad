// Support shared by the attention kernels: the NaN-poisoning test hook, and the CUDA entry points
// of a build without CUDA kernels (they report no support and throw mor::Error when called).
#include <atomic>

#include "mor/core/error.h"
#include "paged_decode/paged_decode.h"
#include "varlen_attention/varlen_attention.h"

namespace mor::kernels {

namespace {
std::atomic<bool> g_poison_buffers{false};
}  // namespace

void set_poison_buffers(bool on) { g_poison_buffers.store(on, std::memory_order_relaxed); }
bool poison_buffers() { return g_poison_buffers.load(std::memory_order_relaxed); }

#ifndef MOR_WITH_CUDA
bool varlen_attention_cuda_supports(const at::Tensor&, const at::Tensor&) { return false; }

VarlenOut varlen_attention_fwd_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&, const VarlenArgs&) {
  fail("varlen_attention_fwd_cuda: this build has no CUDA kernels (configure with MOR_WITH_CUDA=ON)");
}

VarlenGrads varlen_attention_bwd_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                      const at::Tensor&, const at::Tensor&, const VarlenArgs&) {
  fail("varlen_attention_bwd_cuda: this build has no CUDA kernels (configure with MOR_WITH_CUDA=ON)");
}

bool paged_decode_cuda_supports(const at::Tensor&, const at::Tensor&) { return false; }

PagedDecodeOut paged_decode_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                 const at::Tensor&, int64_t, double, int64_t) {
  fail("paged_decode_cuda: this build has no CUDA kernels (configure with MOR_WITH_CUDA=ON)");
}
#endif

}  // namespace mor::kernels
