// Vector-friendly loops of the CPU kernels. Compiled once per instruction set (like every
// header the kernels include): kLanes follows the vector width the build targets.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#define TP_ALWAYS_INLINE __attribute__((always_inline))

#ifndef TORCHPLASTIC_CPU_ISA
#define TORCHPLASTIC_CPU_ISA generic
#endif

namespace torchplastic {
namespace cpu {
namespace TORCHPLASTIC_CPU_ISA {

// Sums along a row are kept as one partial sum per vector lane and combined in a tree at the
// end: for an `omp simd reduction` GCC 12 adds the lanes one by one, in order, a chain of
// dependent adds per sum and row that showed up in the backward's profile. Per-lane arrays
// indexed by the inner loop's counter stay in vector registers.
#if defined(__AVX512F__)
constexpr int kVectorBytes = 64;
#elif defined(__AVX2__)
constexpr int kVectorBytes = 32;
#else
constexpr int kVectorBytes = 16;
#endif
template <typename T>
constexpr int kLanes = kVectorBytes / static_cast<int>(sizeof(T));

// body(i, lane) for i = 0 .. n−1, lane = i mod kLanes<T>: one `omp simd` loop of kLanes<T>
// iterations per chunk of the row (one vector), so arrays indexed by the lane stay in
// registers across chunks. Then the last n mod kLanes elements. GCC 12 vectorises a loop of
// fewer iterations than a vector at half width at best and runs what is left scalar, each
// iteration reading and writing the lane arrays in memory: under AVX-512 up to 7 floats per
// row and pass (a row of 100: 4). There the rest goes in chunks of half and a quarter of a
// vector, then one by one. Under AVX2 the same split left some of the backward's row loops
// without any full-width arithmetic (test_backward_row_loops_are_vectorised_in_every_build),
// so there the rest stays GCC's. Lanes and their order are the same either way, so the sums
// are too, bit for bit (test_every_row_remainder_matches_reference takes every chunk).
template <typename T, typename Body>
TP_ALWAYS_INLINE inline void for_lanes(int64_t n, Body&& body) {
  constexpr int L = kLanes<T>;
  int64_t i0 = 0;
  for (; i0 + L <= n; i0 += L) {
#pragma omp simd
    for (int l = 0; l < L; ++l) body(i0 + l, l);
  }
  const int rest = static_cast<int>(n - i0);
  if constexpr (kVectorBytes == 64) {
    int l0 = 0;
    auto part = [&](auto width) TP_ALWAYS_INLINE {
      constexpr int W = decltype(width)::value;
      if (rest - l0 >= W) {
#pragma omp simd
        for (int l = 0; l < W; ++l) body(i0 + l0 + l, l0 + l);
        l0 += W;
      }
    };
    part(std::integral_constant<int, L / 2>{});
    part(std::integral_constant<int, L / 4>{});
    for (; l0 < rest; ++l0) body(i0 + l0, l0);
  } else {
#pragma omp simd
    for (int l = 0; l < rest; ++l) body(i0 + l, l);
  }
}

// Σ of the lanes, pairwise: acc[l] += acc[l + w] for w = kLanes/2, …, 1, so the sum is the
// same whatever the vector width's code path. Under AVX2 and AVX-512 written with intrinsics
// on one vector: GCC compiled the loop below by storing the accumulator to the stack and
// reading its halves back, a wait on store forwarding at the end of every row
// (docs/performance.md, the CPU op).
#if defined(__AVX512F__)
// Half h (0: lanes 0–3, 1: lanes 4–7) of an AVX-512 vector of doubles. GCC 12's own
// _mm512_extractf64x4_pd and the 512 → 256-bit casts pass _mm256_undefined_pd() as the
// builtin's merge source, which -Wmaybe-uninitialized reports at every inlined use (fixed in
// GCC 13); the masked form with every lane selected takes a defined source instead and
// compiles to the same single vextractf64x4.
template <int h>
TP_ALWAYS_INLINE inline __m256d half_of(__m512d v) {
  return _mm512_mask_extractf64x4_pd(_mm256_setzero_pd(), 0xF, v, h);
}
#endif

#if defined(__AVX2__)
// 128 bits of lane sums (four floats, two doubles): loaded from p, added lane by lane, and their
// lanes summed pairwise (the last steps of sum_lanes).
TP_ALWAYS_INLINE inline __m128 load128(const float* p) { return _mm_loadu_ps(p); }
TP_ALWAYS_INLINE inline __m128d load128(const double* p) { return _mm_loadu_pd(p); }
TP_ALWAYS_INLINE inline __m128 add128(__m128 a, __m128 b) { return _mm_add_ps(a, b); }
TP_ALWAYS_INLINE inline __m128d add128(__m128d a, __m128d b) { return _mm_add_pd(a, b); }
TP_ALWAYS_INLINE inline float sum128(__m128 s4) {
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}
TP_ALWAYS_INLINE inline double sum128(__m128d s2) {
  return _mm_cvtsd_f64(_mm_add_sd(s2, _mm_unpackhi_pd(s2, s2)));
}
#endif

template <typename T>
TP_ALWAYS_INLINE inline T sum_lanes(T (&acc)[kLanes<T>]) {
#if defined(__AVX2__)
  // Each step adds the upper half of the live lanes to the lower, as the loop does.
  if constexpr (std::is_same<T, float>::value) {
#if defined(__AVX512F__)
    // The two halves of eight floats through the double view: extracting them as floats needs
    // AVX512DQ.
    const __m512d v = _mm512_castps_pd(_mm512_loadu_ps(acc));
    const __m256 s8 =
        _mm256_add_ps(_mm256_castpd_ps(half_of<0>(v)), _mm256_castpd_ps(half_of<1>(v)));
#else
    const __m256 s8 = _mm256_loadu_ps(acc);
#endif
    return sum128(_mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1)));
  } else if constexpr (std::is_same<T, double>::value) {
#if defined(__AVX512F__)
    const __m512d v = _mm512_loadu_pd(acc);
    const __m256d s4 = _mm256_add_pd(half_of<0>(v), half_of<1>(v));
#else
    const __m256d s4 = _mm256_loadu_pd(acc);
#endif
    return sum128(_mm_add_pd(_mm256_castpd256_pd128(s4), _mm256_extractf128_pd(s4, 1)));
  }
#endif
#pragma GCC unroll 8
  for (int w = kLanes<T> / 2; w > 0; w /= 2)
#pragma omp simd
    for (int l = 0; l < w; ++l) acc[l] += acc[l + w];
  return acc[0];
}

// Σ of the lanes of acc, added as sum_lanes(acc) adds them, where for_lanes filled them over a
// row of n elements. When n is not a multiple of the vector, the row's last elements went
// through a narrower vector (for_lanes), which leaves acc in memory with its first lanes last
// written by that narrower store: a full-width load of acc waits until the store is done, where
// a load of each 128-bit quarter is served from the store that wrote it. Otherwise acc was last
// stored whole, and loads of its quarters would wait instead (docs/performance.md, "Single
// steps and rollouts").
template <typename T>
TP_ALWAYS_INLINE inline T sum_lanes(T (&acc)[kLanes<T>], int64_t n) {
#if defined(__AVX2__)
  if (n % kLanes<T> != 0) {
    constexpr int Q = 16 / static_cast<int>(sizeof(T));  // lanes per 128 bits
    const auto quarter = [&](int k) TP_ALWAYS_INLINE { return load128(acc + k * Q); };
#if defined(__AVX512F__)
    // (acc[l] + acc[l + 2Q]) + (acc[l + Q] + acc[l + 3Q]): sum_lanes(acc)'s first two halvings.
    return sum128(add128(add128(quarter(0), quarter(2)), add128(quarter(1), quarter(3))));
#else
    return sum128(add128(quarter(0), quarter(1)));  // acc[l] + acc[l + Q]: its first halving
#endif
  }
#else
  (void)n;
#endif
  return sum_lanes(acc);
}

// Asks for the lines of n elements from p to be brought into L2 ahead of their use
// (prefetcht1). A hint only: nothing is read or written, and a prefetch never faults. (A write
// hint would compile to the same instruction: the builds do not assume PREFETCHW.)
template <typename T>
TP_ALWAYS_INLINE inline void prefetch_lines(const T* p, int64_t n) {
  const auto begin = reinterpret_cast<uintptr_t>(p), end = begin + n * sizeof(T);
  for (uintptr_t line = begin & ~uintptr_t(63); line < end; line += 64)
    __builtin_prefetch(reinterpret_cast<const void*>(line), 0, 2);
}

// Copies n elements into a checkpoint, which the backward reads long after (all the forward
// later): with non-temporal stores (AVX2, AVX-512; where the destination is aligned to a vector)
// the copy neither reads the destination's lines first nor pushes the sequences' working set
// out of cache.
template <typename T>
void copy_to_checkpoint(T* dst, const T* src, int64_t n) {
  const int64_t bytes = n * static_cast<int64_t>(sizeof(T));
#if defined(__AVX512F__)
  if (reinterpret_cast<uintptr_t>(dst) % 64 == 0 && bytes % 64 == 0) {
    auto* d = reinterpret_cast<__m512i*>(dst);
    const auto* s = reinterpret_cast<const __m512i*>(src);
    for (int64_t k = 0; k < bytes / 64; ++k) _mm512_stream_si512(d + k, _mm512_loadu_si512(s + k));
    _mm_sfence();
    return;
  }
#elif defined(__AVX2__)
  if (reinterpret_cast<uintptr_t>(dst) % 32 == 0 && bytes % 32 == 0) {
    auto* d = reinterpret_cast<__m256i*>(dst);
    const auto* s = reinterpret_cast<const __m256i*>(src);
    for (int64_t k = 0; k < bytes / 32; ++k)
      _mm256_stream_si256(d + k, _mm256_loadu_si256(s + k));
    _mm_sfence();
    return;
  }
#endif
  std::memcpy(dst, src, bytes);
}

}  // namespace TORCHPLASTIC_CPU_ISA
}  // namespace cpu
}  // namespace torchplastic
