// Scalar helpers of the kernels, host and device: the inline marker, and a multiply-add that
// rounds the same wherever it is written.
#pragma once

#include <type_traits>
#if defined(TORCHPLASTIC_CUDA_EMULATION)
#include <cmath>
#endif

#if defined(__CUDACC__)
#define TP_HD __host__ __device__ __forceinline__
#else
// Always inlined: the CPU kernels are compiled once per instruction set (csrc/cpu/), and an
// out-of-line copy built for AVX-512 must never be what the generic build links to.
#define TP_HD inline __attribute__((always_inline))
#endif

namespace torchplastic {
namespace kernels {

// a·b + c, rounded once where the hardware has a fused multiply-add (twice where it has
// none). Written out because a compiler's own contraction of a·b + c depends on what else the
// loop computes (a product with a second use is not fused), so the same trace step could round
// differently in the forward and in a replay inside the CPU backward, and results would depend
// on the checkpoint interval K.
template <typename T>
TP_HD T mul_add(T a, T b, T c) {
#if defined(__CUDA_ARCH__) || defined(TORCHPLASTIC_CUDA_EMULATION)
  // (The CUDA kernels' CPU emulation, tests/cuda_emulation, rounds as the device does.)
  if constexpr (std::is_same<T, float>::value) return fmaf(a, b, c);
  else return fma(a, b, c);
#elif defined(__FMA__)
  if constexpr (std::is_same<T, float>::value) return __builtin_fmaf(a, b, c);
  else return __builtin_fma(a, b, c);
#else
  return a * b + c;
#endif
}

}  // namespace kernels
}  // namespace torchplastic
