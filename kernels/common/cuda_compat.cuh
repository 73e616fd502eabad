// Constructs of the CUDA kernels that differ between nvcc and the CPU emulation of the execution
// model (tests/kernels/emu/cuda_emu.h, compiled with MOR_CUDA_EMULATION). Under nvcc every macro
// expands to the plain CUDA declaration it names.
#pragma once

#if defined(MOR_CUDA_EMULATION)
// The emulator provides mor_emu::dynamic_smem(): the current block's dynamic shared memory.
#define MOR_DYNAMIC_SMEM(type, name, align) type* const name = reinterpret_cast<type*>(::mor_emu::dynamic_smem())
#elif defined(__CUDACC__)
// extern __shared__ __align__(align) type name[]: the block's dynamic shared memory.
#define MOR_DYNAMIC_SMEM(type, name, align) extern __shared__ __align__(align) type name[]
#else
#error "cuda_compat.cuh: compile with nvcc or define MOR_CUDA_EMULATION"
#endif

// Opens/closes the namespace body of the device code. Under the emulation it is an inline namespace,
// so that the g++-compiled kernels (same names, other code) never share a mangled name with the
// nvcc-compiled host stubs of the same templates when both are linked into one program.
#if defined(MOR_CUDA_EMULATION)
#define MOR_DEVICE_CODE_BEGIN inline namespace cpu_emulation {
#define MOR_DEVICE_CODE_END }
#else
#define MOR_DEVICE_CODE_BEGIN
#define MOR_DEVICE_CODE_END
#endif
