// CUDA's device side as cuda/*.cu use it, emulated on the CPU: the keywords, the built-in
// thread indices, barriers, warp shuffles and atomics (tests/cuda_emulation/runtime.cpp runs
// each CUDA thread as a fiber and switches between them only at barriers, so every barrier the
// code relies on must be there).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cuda_runtime_api.h"

#ifndef TORCHPLASTIC_CUDA_EMULATION
#error "the CUDA emulation's headers are for builds with TORCHPLASTIC_CUDA_EMULATION defined"
#endif

#define __global__
#define __device__
#define __host__
#define __shared__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// The kernels' promises (that a pointer is into shared memory) are checked: a broken one
// fails the launch.
#define __builtin_assume(condition) \
  ::tp_emulation::check_assumption((condition), #condition, __FILE__, __LINE__)
// Thread block clusters of up to 8 blocks, as on sm_90.
#define TORCHPLASTIC_CLUSTERS 1
// A block's dynamic shared memory: each emulated block's own.
#define TORCHPLASTIC_DYNAMIC_SMEM(name) \
  unsigned char* name = ::tp_emulation::dynamic_shared_memory()

// The running thread's indices: set by the runtime each time it switches to a thread (threads
// switch only inside the runtime's barriers).
extern dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace tp_emulation {
unsigned char* dynamic_shared_memory();
bool in_shared_memory(const void* p);
void check_assumption(bool holds, const char* condition, const char* file, int line);
void sync_block();
void sync_warp();
void sync_cluster();
unsigned cluster_block_rank();
void* map_shared_rank(void* p, unsigned rank);
// This lane's `bytes` of value, exchanged within its warp: returns lane `source`'s.
void warp_exchange(const void* value, void* out, unsigned bytes, unsigned source);
}  // namespace tp_emulation

inline void __syncthreads() { tp_emulation::sync_block(); }
inline void __syncwarp(unsigned /*mask*/ = 0xffffffffu) { tp_emulation::sync_warp(); }

// Every lane of the warp takes part (the kernels shuffle with a full mask).
template <typename T>
T __shfl_xor_sync(unsigned /*mask*/, T value, int lane_mask, int /*width*/ = 32) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8, "__shfl_xor_sync");
  const unsigned lane = threadIdx.x & 31u;
  T out;
  tp_emulation::warp_exchange(&value, &out, sizeof(T), lane ^ static_cast<unsigned>(lane_mask));
  return out;
}

template <typename T>
T __shfl_sync(unsigned /*mask*/, T value, int source_lane, int /*width*/ = 32) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8, "__shfl_sync");
  T out;
  tp_emulation::warp_exchange(&value, &out, sizeof(T), static_cast<unsigned>(source_lane) & 31u);
  return out;
}

inline unsigned __isShared(const void* p) { return tp_emulation::in_shared_memory(p) ? 1u : 0u; }

// One emulated thread runs at a time, between barriers: a plain add is atomic.
template <typename T>
T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}

template <typename A, typename B>
constexpr std::common_type_t<A, B> min(A a, B b) {
  return b < a ? b : a;
}
template <typename A, typename B>
constexpr std::common_type_t<A, B> max(A a, B b) {
  return a < b ? b : a;
}

// The device's math overloads for float and double.
using std::exp;
using std::sqrt;
using std::tanh;
