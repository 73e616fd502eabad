// Plain (torch-free, CUDA-free) interface to the emulated kernel launches of emu_kernels.cpp: each
// function runs the launch plan the host wrapper in the .cu runs (grid sizes, params, shared memory,
// launch split, merge launch), with the device code under cuda_emu.h. Buffers are host memory.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mor_emu_run {

enum class Dtype { kBF16, kF16 };

struct VarlenIn {
  Dtype dtype = Dtype::kBF16;
  int d = 64;
  int mask = 0;  // tiles::Mask value
  const void *q = nullptr, *k = nullptr, *v = nullptr;
  int64_t q_s0 = 0, q_s1 = 0, k_s0 = 0, k_s1 = 0, v_s0 = 0, v_s1 = 0;
  const int32_t *cu_q = nullptr, *cu_k = nullptr, *q_pos = nullptr, *k_pos = nullptr;
  int64_t segments = 0, total_q = 0, total_k = 0, max_q = 0, max_k = 0;
  int hq = 1, hkv = 1;
  double scale = 1.0;
};

// out [total_q, Hq, D] (16-bit), lse [Hq, total_q].
void varlen_fwd(const VarlenIn& in, void* out, float* lse);

// dsum [Hq, total_q] and dq_accum [total_q, Hq, D] are scratch; dq like q, dk/dv [total_k, Hkv, D].
void varlen_bwd(const VarlenIn& in, const void* dout, int64_t do_s0, int64_t do_s1, const void* out, int64_t o_s0,
                int64_t o_s1, const float* lse, float* dsum, float* dq_accum, void* dq, void* dk, void* dv);

struct PagedIn {
  Dtype dtype = Dtype::kBF16;
  int d = 64;
  const void* q = nullptr;
  int64_t q_stride_r = 0, q_stride_h = 0;
  const void *k = nullptr, *v = nullptr;
  const int32_t* block_table = nullptr;
  const int32_t* kv_len = nullptr;
  int64_t rows = 0, max_blocks = 0, block_size = 1, hkv = 1, hq = 1, max_kv_len = 0, chunk = 512;
  double scale = 1.0;
};
// out [R, Hq, D] (16-bit), lse [R, Hq]. Returns the number of chunks per row used (n_chunks_max).
int paged_decode(const PagedIn& in, void* out, float* lse);

// Emulator controls and diagnostics.
void set_schedule(int s);  // 0 ascending, 1 descending, 2 shuffled, 3/4 warp-major ascending/descending
std::vector<std::string> take_errors();
int64_t take_partial_barriers();

}  // namespace mor_emu_run
