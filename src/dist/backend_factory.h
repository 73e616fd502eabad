// Internal: the NCCL process group lives in its own translation unit (built only with CUDA, since
// it needs nccl.h); builds without CUDA link comm_nonccl.cpp, which reports that clearly.
#pragma once

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <string>

namespace mor::dist::detail {

c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                                    int world_size, int device_index,
                                                    std::chrono::milliseconds timeout);

// CUDA device facts for the trainer's console (CUDA builds; otherwise "" / -1).
std::string cuda_device_name(int device_index);
double cuda_peak_memory_mb(int device_index);  // caching allocator's peak allocated bytes, MiB

}  // namespace mor::dist::detail
