// tanh for float that GCC vectorises: the CPU forward computes a block of rows' outputs in one
// loop over this function instead of calling glibc's tanhf per row, which was a large share of
// the whole forward (docs/performance.md, "CPU kernels: what was measured").
//
// Branch-free and built from + − × ÷, selects and bit casts, so `#pragma omp simd`
// loops over it vectorise on every instruction set. Accuracy: within 1 ulp of the correctly
// rounded tanh on every 101st float with |x| ≤ 20 (tests/cpp/test_vector_math.cpp, which
// allows 2); ±0, ±Inf exact; NaN in, NaN out. The double path keeps std::tanh.
#pragma once

#include <cstdint>

namespace torchplastic {
namespace cpu {

// e^x for 0 ≤ x ≤ 20 (Cephes expf: Cody–Waite reduction by ln 2, degree-5 polynomial).
inline __attribute__((always_inline)) float exp_positive(float x) {
  // n = round(x / ln 2) by the 1.5·2^23 trick: the sum's low mantissa bits hold n as an
  // integer. (A float→int conversion would do, but GCC does not vectorise one that follows a
  // select unless -fno-trapping-math.)
  constexpr float kRound = 12582912.0f;
  const float shifted = x * 1.44269504088896341f + kRound;
  const float n = shifted - kRound;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  const float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e_r = p * r2 + r + 1.0f;
  // Unsigned, so that the shift is defined for every input (a NaN's garbage n included).
  const uint32_t n_bits =
      __builtin_bit_cast(uint32_t, shifted) - __builtin_bit_cast(uint32_t, kRound);
  const uint32_t bits = (n_bits + 127u) << 23;
  return e_r * __builtin_bit_cast(float, bits);
}

// tanh(x) for float: an odd polynomial below |x| = 0.625 (Cephes tanhf), 1 − 2/(e^{2|x|} + 1)
// above, ±1 from |x| = 9.01 on, where float tanh rounds to ±1.
inline __attribute__((always_inline)) float tanh_vectorizable(float x) {
  const float ax = x < 0.0f ? -x : x;
  const float z = x * x;
  float small = -5.70498872745e-3f;
  small = small * z + 2.06390887954e-2f;
  small = small * z - 5.37397155531e-2f;
  small = small * z + 1.33314422036e-1f;
  small = small * z - 3.33332819422e-1f;
  small = x * (1.0f + small * z);  // x (1 + z P(z)), not x + x z P(z): keeps tanh(−0) = −0
  // Clamped so that the exponential cannot overflow. A NaN x passes through as NaN.
  // (Both arms of every ?: are computed first: GCC does not blend an arm that may trap.)
  const float doubled = 2.0f * ax;
  const float two_ax = doubled > 20.0f ? 20.0f : doubled;
  const float large_abs = 1.0f - 2.0f / (exp_positive(two_ax) + 1.0f);
  const float large = x < 0.0f ? -large_abs : large_abs;
  return ax < 0.625f ? small : large;
}

}  // namespace cpu
}  // namespace torchplastic
