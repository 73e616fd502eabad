// Builds without CUDA: NCCL is not available.
#include "backend_factory.h"

#include "mor/core/error.h"

namespace mor::dist::detail {

c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>&, int, int, int,
                                                    std::chrono::milliseconds) {
  fail("distributed training on CUDA needs NCCL, but this build of mor has no CUDA support "
       "(rebuild with -DMOR_WITH_CUDA=ON, or train on the CPU with train.device: cpu)");
}

std::string cuda_device_name(int) { return ""; }
double cuda_peak_memory_mb(int) { return -1.0; }

}  // namespace mor::dist::detail
