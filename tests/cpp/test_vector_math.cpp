// The CPU forward's vectorised float tanh (csrc/cpu/vector_math.h) against the correctly rounded
// tanh, compiled as the kernels compile it: plain x86-64, AVX2+FMA and AVX-512 (each run only
// where this CPU has it), in `#pragma omp simd` loops.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/vector_math.h"

namespace {

using torchplastic::cpu::tanh_vectorizable;

void tanh_generic(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = tanh_vectorizable(x[i]);
}

__attribute__((target("avx2,fma"))) void tanh_avx2(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = tanh_vectorizable(x[i]);
}

__attribute__((target("avx512f,avx512vl,avx2,fma"))) void tanh_avx512(const float* x, float* y,
                                                                       int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = tanh_vectorizable(x[i]);
}

// Distance in units in the last place between two finite floats.
int64_t ulp_distance(float a, float b) {
  int32_t ia, ib;
  std::memcpy(&ia, &a, sizeof a);
  std::memcpy(&ib, &b, sizeof b);
  // Map the sign-magnitude bit patterns onto a monotone integer line.
  const int64_t la = ia < 0 ? int64_t(INT32_MIN) - ia : ia;
  const int64_t lb = ib < 0 ? int64_t(INT32_MIN) - ib : ib;
  return std::llabs(la - lb);
}

// Every 101st float with |x| ≤ 20 (about 21 million values), then the special values.
std::vector<float> inputs() {
  std::vector<float> x;
  for (uint32_t bits = 0;; bits += 101) {
    float v;
    std::memcpy(&v, &bits, sizeof v);
    if (!(v <= 20.0f)) break;
    x.push_back(v);
    x.push_back(-v);
  }
  for (float v : {0.625f, std::nextafter(0.625f, 0.0f), 9.0f, 18.0f, 88.0f, 1e30f,
                  std::numeric_limits<float>::max(), std::numeric_limits<float>::denorm_min()}) {
    x.push_back(v);
    x.push_back(-v);
  }
  return x;
}

void check(void (*tanh_loop)(const float*, float*, int64_t)) {
  const std::vector<float> x = inputs();
  std::vector<float> y(x.size());
  tanh_loop(x.data(), y.data(), static_cast<int64_t>(x.size()));
  int64_t worst = 0;
  float worst_x = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const float exact = static_cast<float>(std::tanh(static_cast<double>(x[i])));
    const int64_t d = ulp_distance(y[i], exact);
    if (d > worst) worst = d, worst_x = x[i];
  }
  EXPECT_LE(worst, 2) << "worst at x = " << worst_x;
  std::printf("worst: %lld ulp at x = %.9g\n", static_cast<long long>(worst), worst_x);

  const float special[] = {std::numeric_limits<float>::quiet_NaN(),
                           std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity(), 0.0f, -0.0f};
  float out[5];
  tanh_loop(special, out, 5);
  EXPECT_TRUE(std::isnan(out[0]));
  EXPECT_EQ(out[1], 1.0f);
  EXPECT_EQ(out[2], -1.0f);
  EXPECT_EQ(out[3], 0.0f);
  EXPECT_TRUE(out[4] == 0.0f && std::signbit(out[4]));
}

TEST(VectorTanh, Generic) { check(tanh_generic); }

TEST(VectorTanh, Avx2) {
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
    GTEST_SKIP() << "no AVX2+FMA on this CPU";
  check(tanh_avx2);
}

TEST(VectorTanh, Avx512) {
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512vl"))
    GTEST_SKIP() << "no AVX-512 on this CPU";
  check(tanh_avx512);
}

}  // namespace
