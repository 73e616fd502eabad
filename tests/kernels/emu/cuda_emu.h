// A small CPU emulation of the CUDA execution model, enough to run the attention kernels' device
// code (kernels/*/..._kernels.cuh) under g++ and compare it with the float64 references. Test-only;
// compile with -DMOR_CUDA_EMULATION and include this header before any kernel header.
//
// Model:
//   * A block is run by one OS thread; its blockDim threads are fibers (ucontext) with their own
//     stacks, switched only at barriers, so a thread runs alone until it reaches __syncthreads,
//     __syncwarp, a shuffle or its end. The order in which the fibers of a block are resumed is
//     thread-major (ascending, descending, shuffled) or warp-major (each warp runs alone up to its
//     next __syncthreads; warps ascending or descending), see Schedule / set_schedule, so a missing
//     barrier (a read of shared memory written by another thread) is caught by some order: the
//     reader runs before the writer and reads the 0xFF poison (NaN in fp32/bf16/fp16) the dynamic
//     shared memory is filled with before every block (plus a canary past its end).
//   * Blocks run one after another on each of a few worker OS threads (blocks in parallel).
//   * __syncthreads: barrier over the block's live threads; __syncwarp: over the warp's live lanes;
//     shuffles: per-warp exchange buffer between two warp barriers (reading an exited lane or a mask
//     other than 0xffffffff is reported). A barrier that completes while some thread of the block
//     has already exited is counted (partial_barriers()) since the kernels here only exit uniformly.
//   * nvcuda::wmma: every lane holds the full 16x16 tile (as floats: 16-bit inputs are exact);
//     load_matrix_sync honours the layout and ldm and checks the 32-byte pointer / 16-byte ldm
//     alignment; mma_sync multiplies in fp32; store_matrix_sync writes from lane 0 only (so a lane
//     that reads the stored tile before a __syncwarp reads what was there before).
//   * 16-bit types and conversions are CUDA's own host-side ones (cuda_bf16.h / cuda_fp16.h).
// Not modelled: the memory model (no stale caches or reordering), real intra-warp lockstep, bank
// conflicts, occupancy, register pressure, performance; global-memory bounds are not checked.
#pragma once

#if !defined(MOR_CUDA_EMULATION)
#error "cuda_emu.h needs -DMOR_CUDA_EMULATION"
#endif
#if defined(__CUDACC__)
#error "cuda_emu.h is for host compilers only"
#endif

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <ucontext.h>
#include <vector_functions.h>
#include <vector_types.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <math.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define MOR_EMU_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define MOR_EMU_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define MOR_EMU_POISON(p, n) ((void)(p), (void)(n))
#define MOR_EMU_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

// --- qualifiers ------------------------------------------------------------------------------
#undef __global__
#define __global__
#undef __device__
#define __device__
#undef __host__
#define __host__
#undef __forceinline__
#define __forceinline__ inline
#undef __launch_bounds__
#define __launch_bounds__(...)
#ifndef __restrict__
#define __restrict__ __restrict
#endif

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }

namespace mor_emu {

// Order in which a block's runnable fibers are resumed. Thread-major: one barrier phase of every
// thread per sweep (warps stay in step). Warp-major: each warp runs alone up to its next
// __syncthreads (or its end) before the next warp starts, the largest skew between warps, which
// turns a missing __syncthreads into a read of unwritten (poisoned) or stale shared memory.
enum class Schedule { kAscending, kDescending, kShuffled, kWarpMajorAscending, kWarpMajorDescending };

struct Block;

struct Fiber {
  ucontext_t ctx;
  Block* block = nullptr;
  uint3 tid{0, 0, 0};
  int linear = 0, warp = 0, lane = 0;
  bool done = false;
  int wait_kind = 0;  // 0 runnable, 1 block barrier, 2 warp barrier
  uint64_t wait_gen = 0;
  char* stack = nullptr;
  uint64_t mma_gen = ~uint64_t(0);  // warp barrier generation of mma_idx
  size_t mma_idx = 0;               // mma_sync calls of this lane since the last warp barrier
};

// One mma_sync of a warp (inputs and result), so that the other lanes, which repeat the same
// operation on their identical copies, only compare the inputs instead of recomputing.
struct MmaMemo {
  float a[256], b[256], c[256], d[256];
};

struct WarpState {
  int live = 0, arrived = 0;
  uint64_t gen = 0;
  uint64_t xchg[32];
  bool alive[32];
  uint64_t memo_gen = ~uint64_t(0);
  std::vector<MmaMemo> memo;
  size_t memo_size = 0;
};

struct Block {
  uint3 block_idx{0, 0, 0};
  dim3 grid, block;
  unsigned char* smem = nullptr;
  std::vector<Fiber>* fibers = nullptr;
  std::vector<WarpState> warps;
  int live = 0, arrived = 0;
  uint64_t gen = 0;
  std::function<void()> body;
  ucontext_t sched;
};

struct Errors {
  std::mutex mu;
  std::vector<std::string> msgs;
  std::atomic<int64_t> partial_barriers{0};
};
inline Errors& errors() {
  static Errors e;
  return e;
}
inline void report(const std::string& m) {
  std::lock_guard<std::mutex> lock(errors().mu);
  if (errors().msgs.size() < 50) errors().msgs.push_back(m);
}
inline std::vector<std::string> take_errors() {
  std::lock_guard<std::mutex> lock(errors().mu);
  std::vector<std::string> out;
  out.swap(errors().msgs);
  return out;
}
inline int64_t take_partial_barriers() { return errors().partial_barriers.exchange(0); }

inline Schedule& schedule() {
  static Schedule s = Schedule::kAscending;
  return s;
}
inline void set_schedule(Schedule s) { schedule() = s; }

inline thread_local Fiber* t_cur = nullptr;
inline thread_local Block* t_block = nullptr;

inline Fiber* cur() { return t_cur; }
inline const uint3& thread_idx() { return t_cur->tid; }
inline const uint3& block_idx() { return t_block->block_idx; }
inline const dim3& block_dim() { return t_block->block; }
inline const dim3& grid_dim() { return t_block->grid; }
inline unsigned char* dynamic_smem() { return t_block->smem; }

inline void yield_to_scheduler() { swapcontext(&t_cur->ctx, &t_block->sched); }

inline void syncthreads() {
  Block& b = *t_block;
  if (++b.arrived == b.live) {
    if (b.live != int(b.block.x * b.block.y * b.block.z)) errors().partial_barriers++;
    b.arrived = 0;
    ++b.gen;
    return;
  }
  t_cur->wait_kind = 1;
  t_cur->wait_gen = b.gen;
  yield_to_scheduler();
}

inline void warp_barrier() {
  WarpState& w = t_block->warps[t_cur->warp];
  if (++w.arrived == w.live) {
    w.arrived = 0;
    ++w.gen;
    return;
  }
  t_cur->wait_kind = 2;
  t_cur->wait_gen = w.gen;
  yield_to_scheduler();
}

template <typename T>
T shfl_impl(unsigned mask, T v, int src_lane, const char* what) {
  static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
  if (mask != 0xffffffffu) report(std::string(what) + ": mask other than 0xffffffff");
  WarpState& w = t_block->warps[t_cur->warp];
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  w.xchg[t_cur->lane] = bits;
  warp_barrier();
  T r = v;
  if (src_lane >= 0 && src_lane < 32) {
    if (!w.alive[src_lane]) report(std::string(what) + ": source lane has exited");
    std::memcpy(&r, &w.xchg[src_lane], sizeof(T));
  }
  warp_barrier();
  return r;
}

// The memo entry of this lane's next mma_sync (nullptr: compute and fill *fill instead).
inline const MmaMemo* mma_lookup(const float* a, const float* b, const float* c, MmaMemo** fill) {
  Fiber& f = *t_cur;
  WarpState& w = t_block->warps[f.warp];
  if (w.memo_gen != w.gen) {
    w.memo_gen = w.gen;
    w.memo_size = 0;
  }
  if (f.mma_gen != w.gen) {
    f.mma_gen = w.gen;
    f.mma_idx = 0;
  }
  const size_t idx = f.mma_idx++;
  *fill = nullptr;
  if (idx < w.memo_size) {
    const MmaMemo& m = w.memo[idx];
    if (std::memcmp(m.a, a, sizeof(m.a)) == 0 && std::memcmp(m.b, b, sizeof(m.b)) == 0 &&
        std::memcmp(m.c, c, sizeof(m.c)) == 0)
      return &m;
    return nullptr;
  }
  if (idx == w.memo_size) {
    if (w.memo.size() <= idx) w.memo.resize(idx + 1);
    w.memo_size = idx + 1;
    MmaMemo& m = w.memo[idx];
    std::memcpy(m.a, a, sizeof(m.a));
    std::memcpy(m.b, b, sizeof(m.b));
    std::memcpy(m.c, c, sizeof(m.c));
    *fill = &m;
  }
  return nullptr;
}

// Runs the kernel body for every block of the grid.
class Launcher {
 public:
  static constexpr size_t kStack = 256 * 1024;
  static constexpr size_t kGuard = 256;

  void run(dim3 grid, dim3 block, size_t smem_bytes, const std::function<void()>& body) {
    const int64_t nblocks = int64_t(grid.x) * grid.y * grid.z;
    const int nthreads = int(block.x * block.y * block.z);
    if (nthreads <= 0 || nthreads > 1024) {
      report("launch: bad block size");
      return;
    }
    const int workers = int(std::max<int64_t>(1, std::min<int64_t>(nblocks, std::max(1u, std::thread::hardware_concurrency()))));
    std::atomic<int64_t> next{0};
    auto work = [&](int wid) {
      std::vector<Fiber> fibers(nthreads);
      std::unique_ptr<char[]> stacks(new char[kStack * nthreads]);
      // Dynamic shared memory, 128-byte aligned, followed by kGuard canary bytes: a write past the
      // end is reported after the block, a read past it (under ASan) at once.
      std::unique_ptr<unsigned char[]> smem_raw(new unsigned char[smem_bytes + kGuard + 128]);
      unsigned char* smem = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw.get()) + 127) & ~uintptr_t(127));
      unsigned char* guard = smem + smem_bytes;
      std::mt19937 rng(1234 + wid);
      std::vector<int> order(nthreads);
      for (;;) {
        const int64_t bi = next.fetch_add(1);
        if (bi >= nblocks) break;
        Block b;
        b.grid = grid;
        b.block = block;
        b.block_idx = make_uint3(unsigned(bi % grid.x), unsigned((bi / grid.x) % grid.y), unsigned(bi / (int64_t(grid.x) * grid.y)));
        b.smem = smem;
        std::memset(smem, 0xFF, smem_bytes);
        std::memset(guard, 0xA5, kGuard);
        MOR_EMU_POISON(guard, kGuard);
        b.fibers = &fibers;
        b.body = body;
        b.live = nthreads;
        b.warps.assign((nthreads + 31) / 32, WarpState{});
        for (int i = 0; i < nthreads; ++i) {
          WarpState& w = b.warps[i / 32];
          w.live++;
          w.alive[i % 32] = true;
        }
        t_block = &b;
        for (int i = 0; i < nthreads; ++i) {
          Fiber& f = fibers[i];
          f = Fiber{};
          f.block = &b;
          f.linear = i;
          f.tid = make_uint3(unsigned(i % block.x), unsigned((i / block.x) % block.y), unsigned(i / (block.x * block.y)));
          f.warp = i / 32;
          f.lane = i % 32;
          f.stack = stacks.get() + kStack * size_t(i);
          make_fiber(f, &b.sched);
        }
        std::iota(order.begin(), order.end(), 0);
        const Schedule s = schedule();
        if (s == Schedule::kDescending) std::reverse(order.begin(), order.end());
        if (s == Schedule::kWarpMajorDescending) {
          // warps in descending order, lanes ascending within each
          for (size_t w0 = 0; w0 < order.size(); w0 += 32) {
            const size_t w1 = std::min(order.size(), w0 + 32);
            for (size_t j = w0; j < w1; ++j) order[j] = int(order.size() - w1 + (j - w0));
          }
        }
        const bool warp_major = s == Schedule::kWarpMajorAscending || s == Schedule::kWarpMajorDescending;
        int remaining = nthreads;
        // Resumes fiber i if it is runnable; returns whether it ran.
        auto step = [&](int i) {
          Fiber& f = fibers[i];
          if (f.done) return false;
          if (f.wait_kind == 1 && f.wait_gen == b.gen) return false;
          if (f.wait_kind == 2 && f.wait_gen == b.warps[f.warp].gen) return false;
          f.wait_kind = 0;
          t_cur = &f;
          swapcontext(&b.sched, &f.ctx);
          t_cur = nullptr;
          if (f.done) --remaining;
          return true;
        };
        while (remaining > 0) {
          bool progress = false;
          if (s == Schedule::kShuffled) std::shuffle(order.begin(), order.end(), rng);
          if (warp_major) {
            for (size_t w0 = 0; w0 < order.size(); w0 += 32) {
              const size_t w1 = std::min(order.size(), w0 + 32);
              for (bool again = true; again;) {
                again = false;
                for (size_t j = w0; j < w1; ++j) again = step(order[j]) || again;
                progress = progress || again;
              }
            }
          } else {
            for (int i : order) progress = step(i) || progress;
          }
          if (!progress) {
            std::fprintf(stderr, "cuda_emu: deadlock in block (%u,%u,%u): %d threads wait on barriers that cannot complete\n",
                         b.block_idx.x, b.block_idx.y, b.block_idx.z, remaining);
            std::abort();
          }
        }
        t_block = nullptr;
        MOR_EMU_UNPOISON(guard, kGuard);
        for (size_t i = 0; i < kGuard; ++i) {
          if (guard[i] != 0xA5) {
            report("dynamic shared memory written past its end (byte " + std::to_string(smem_bytes + i) + ")");
            break;
          }
        }
      }
    };
    if (workers == 1) {
      work(0);
    } else {
      std::vector<std::thread> ts;
      for (int w = 0; w < workers; ++w) ts.emplace_back(work, w);
      for (auto& t : ts) t.join();
    }
  }

 private:
  // Separate (not inlined) so that getcontext's returns-twice does not affect the caller's locals.
  [[gnu::noinline]] static void make_fiber(Fiber& f, ucontext_t* link) {
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack;
    f.ctx.uc_stack.ss_size = kStack;
    f.ctx.uc_link = link;
    makecontext(&f.ctx, &Launcher::entry, 0);
  }

  static void entry() {
    Fiber* f = t_cur;
    Block& b = *f->block;
    b.body();
    // Exit: leave the block and warp barriers (a barrier others wait on may complete now).
    f->done = true;
    WarpState& w = b.warps[f->warp];
    w.alive[f->lane] = false;
    if (--w.live > 0 && w.arrived == w.live) {
      w.arrived = 0;
      ++w.gen;
    }
    if (--b.live > 0 && b.arrived == b.live) {
      errors().partial_barriers++;
      b.arrived = 0;
      ++b.gen;
    }
    // returns to uc_link (the scheduler)
  }
};

// emu_launch(grid, block, smem, kernel, args...): kernel<<<grid, block, smem>>>(args...).
template <typename... KArgs, typename... Args>
void launch(dim3 grid, dim3 block, size_t smem, void (*kernel)(KArgs...), Args&&... args) {
  auto tup = std::make_tuple(KArgs(std::forward<Args>(args))...);
  Launcher l;
  l.run(grid, block, smem, [&]() { std::apply(kernel, tup); });
}

}  // namespace mor_emu

#define threadIdx (::mor_emu::thread_idx())
#define blockIdx (::mor_emu::block_idx())
#define blockDim (::mor_emu::block_dim())
#define gridDim (::mor_emu::grid_dim())

inline void __syncthreads() { ::mor_emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  if (mask != 0xffffffffu) ::mor_emu::report("__syncwarp: mask other than 0xffffffff");
  ::mor_emu::warp_barrier();
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  if (width != 32) ::mor_emu::report("__shfl_xor_sync: width != 32");
  return ::mor_emu::shfl_impl(mask, v, ::mor_emu::cur()->lane ^ lane_mask, "__shfl_xor_sync");
}
template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  if (width != 32) ::mor_emu::report("__shfl_sync: width != 32");
  return ::mor_emu::shfl_impl(mask, v, src & 31, "__shfl_sync");
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  if (width != 32) ::mor_emu::report("__shfl_down_sync: width != 32");
  const int src = ::mor_emu::cur()->lane + int(delta);
  return ::mor_emu::shfl_impl(mask, v, src < 32 ? src : -1, "__shfl_down_sync");
}
inline float atomicAdd(float* addr, float v) {
  std::atomic_ref<float> a(*addr);
  float old = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(old, old + v, std::memory_order_relaxed)) {
  }
  return old;
}
template <typename T>
inline T __ldg(const T* p) {
  if (reinterpret_cast<uintptr_t>(p) % alignof(T) != 0) ::mor_emu::report("__ldg: misaligned pointer");
  return *p;
}

// --- nvcuda::wmma --------------------------------------------------------------------------------
namespace nvcuda::wmma {

struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
enum layout_t { mem_row_major, mem_col_major };

// The whole 16x16 tile, logical (row, col) at v[row * 16 + col], in every lane.
template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "only 16x16x16 fragments are emulated");
  static constexpr int num_elements = 256;
  float v[256];
};

namespace detail {
inline float to_f(float x) { return x; }
inline float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
inline float to_f(__half x) { return __half2float(x); }

template <typename T>
inline void check(const T* p, unsigned ldm, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0) ::mor_emu::report(std::string(what) + ": pointer not 32-byte aligned");
  if ((size_t(ldm) * sizeof(T)) % 16 != 0) ::mor_emu::report(std::string(what) + ": ldm not a multiple of 16 bytes");
}
template <typename T>
inline void load(float* v, const T* p, unsigned ldm, bool row_major_mem) {
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) v[r * 16 + c] = to_f(row_major_mem ? p[size_t(r) * ldm + c] : p[size_t(c) * ldm + r]);
}
}  // namespace detail

template <typename Use, typename T, typename Layout>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned ldm) {
  static_assert(!std::is_same_v<Layout, void>, "matrix fragments need a layout");
  detail::check(p, ldm, "load_matrix_sync");
  detail::load(f.v, p, ldm, std::is_same_v<Layout, row_major>);
}
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ldm, layout_t l) {
  detail::check(p, ldm, "load_matrix_sync(acc)");
  detail::load(f.v, p, ldm, l == mem_row_major);
}
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm, layout_t l) {
  detail::check(p, ldm, "store_matrix_sync");
  if (::mor_emu::cur()->lane != 0) return;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) (l == mem_row_major ? p[size_t(r) * ldm + c] : p[size_t(c) * ldm + r]) = f.v[r * 16 + c];
}
template <typename Use, typename T, typename Layout>
inline void fill_fragment(fragment<Use, 16, 16, 16, T, Layout>& f, float x) {
  for (float& e : f.v) e = detail::to_f(x);
}
template <typename T, typename LA, typename LB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, LA>& a,
                     const fragment<matrix_b, 16, 16, 16, T, LB>& b, const fragment<accumulator, 16, 16, 16, float>& c) {
  ::mor_emu::MmaMemo* fill = nullptr;
  if (const ::mor_emu::MmaMemo* m = ::mor_emu::mma_lookup(a.v, b.v, c.v, &fill)) {
    std::memcpy(d.v, m->d, sizeof(d.v));
    return;
  }
  float out[256];
  for (int m = 0; m < 16; ++m) {
    float row[16];
    for (int n = 0; n < 16; ++n) row[n] = c.v[m * 16 + n];
    for (int k = 0; k < 16; ++k) {
      const float av = a.v[m * 16 + k];
      for (int n = 0; n < 16; ++n) row[n] += av * b.v[k * 16 + n];
    }
    for (int n = 0; n < 16; ++n) out[m * 16 + n] = row[n];
  }
  std::memcpy(d.v, out, sizeof(out));
  if (fill) std::memcpy(fill->d, out, sizeof(out));
}

}  // namespace nvcuda::wmma
