// The CPU kernels' steps of a trace row through a rule (csrc/kernels/rules/): one element, a
// row, a row through several steps. Forward, replays in the backward and anchors all step
// traces through next_trace, so the backward's recomputed traces are the forward's, bit for
// bit, whatever the checkpoint interval.
#pragma once

#include <cmath>
#include <cstring>
#include <type_traits>

#include "cpu/simd.h"
#include "cpu/workspace.h"
#include "kernels/plastic_step.h"
#include "kernels/variant.h"

namespace torchplastic {
namespace cpu {
namespace TORCHPLASTIC_CPU_ISA {

using kernels::Activation;
using kernels::ModSource;
using kernels::ScanGradParams;
using kernels::ScanParams;
using kernels::Synapse;
using kernels::Variant;
using kernels::eta_at;
using kernels::with_variant;

// The rule's row-sum backward (Rule::RowBackward) where it has one; a stand-in that is never
// called where it has none.
template <typename R, typename T, bool = R::row_form>
struct RowBackwardOf {
  struct type {
    type() = default;
    TP_HD type(T, T, T) {}
  };
};
template <typename R, typename T>
struct RowBackwardOf<R, T, true> {
  using type = typename R::template RowBackward<T>;
};

// One step of the rule on one element, clipping included (synaptic scaling, a property of
// the whole row, is not): returns H', and E becomes E' (rules with an eligibility trace).
// `clip` is P.clip, read by the caller before its loop: the loop's stores of T may alias
// ScanParams' T members, so a P.clip read inside it is a load (and broadcast) per iteration.
template <typename V, typename T>
TP_ALWAYS_INLINE inline T next_trace(const ScanParams<T>& P, T clip, int64_t oi, T H, T& E, T y,
                                     T p, T m, T eta) {
  using R = typename V::Rule;
  const Synapse<T> s = kernels::synapse<R>(P, oi, H, E, y, p, m, eta);
  const T C = R::candidate(s);
  if constexpr (R::eligibility) E = R::eligibility_next(s);
  return V::clip ? kernels::clip_value(C, clip) : C;
}

// m_t for one sequence into m[O] (modulated rules); returns s_t for internal modulation, whose
// head reads y_t (h_t in the LSTM), which must be known.
template <typename T>
T modulation_of_step(const ScanParams<T>& P, int64_t t, int64_t b, T* m) {
  const int64_t O = P.O;
  if (P.mod_source == ModSource::External) {
    std::memcpy(m, P.modulation + (t * P.B + b) * O, sizeof(T) * O);
    return T(0);
  }
  const T* read = P.modulation_input(t, b);
  T u = P.mod_bias[0];
  for (int64_t o = 0; o < O; ++o) u += read[o] * P.mod_weight[o];
  const T s = std::tanh(u);
  for (int64_t o = 0; o < O; ++o)
    m[o] = P.mod_source == ModSource::Fanout ? s * P.fanout_weight[o] + P.fanout_bias[o] : s;
  return s;
}

// Row o of the trace update: H_src (and E_src) → H_dst (and E_dst); src may equal dst.
template <typename V, typename T>
void update_row(const ScanParams<T>& P, int64_t o, T y, T m, const T* p, const T* H_src,
                T* H_dst, const T* E_src, T* E_dst) {
  constexpr bool elig = V::Rule::eligibility;
  const int64_t I = P.I;
  const T* eta = P.eta_row(o);
  const T eta_o = eta[0], clip = P.clip;
  for_lanes<T>(I, [&](int64_t i, int) TP_ALWAYS_INLINE {
    T E = elig ? E_src[i] : T(0);
    H_dst[i] =
        next_trace<V>(P, clip, o * I + i, H_src[i], E, y, p[i], m, eta_at<V>(eta, eta_o, i));
    if (elig) E_dst[i] = E;
  });
  if (P.has_scaling) {
    T sumsq = 0;
#pragma omp simd reduction(+ : sumsq)
    for (int64_t i = 0; i < I; ++i) sumsq += H_dst[i] * H_dst[i];
    const T norm = std::sqrt(sumsq);
    if (norm > P.scaling) {
      const T scale = P.scaling / norm;
#pragma omp simd
      for (int64_t i = 0; i < I; ++i) H_dst[i] *= scale;
    }
  }
}

// Row o of the trace (and eligibility trace) of sequence b stepped forward through steps
// t_first .. t_first + D − 1, src → dst, each element through all D steps in registers: one
// pass over the row instead of D. m: [D, O], those steps' m_t (modulated rules). Not under
// synaptic scaling, whose row norm needs every step's whole row.
template <typename V, int D, typename T>
void advance_row(const ScanParams<T>& P, int64_t b, int64_t t_first, const T* m, int64_t o,
                 const T* H_src, T* H_dst, const T* E_src, T* E_dst) {
  constexpr bool elig = V::Rule::eligibility;
  T y[D], mo[D];
  const T* p[D];
  for (int d = 0; d < D; ++d) {
    const int64_t t = t_first + d;
    y[d] = P.y[(t * P.B + b) * P.O + o];
    mo[d] = V::Rule::modulated ? m[d * P.O + o] : T(0);
    p[d] = P.presynaptic(t, b);
  }
  const T* eta = P.eta_row(o);
  const T eta_o = eta[0], clip = P.clip;
  for_lanes<T>(P.I, [&](int64_t i, int) TP_ALWAYS_INLINE {
    const T eta_i = eta_at<V>(eta, eta_o, i);
    T H = H_src[i], E = elig ? E_src[i] : T(0);
#pragma GCC unroll 8
    for (int d = 0; d < D; ++d)
      H = next_trace<V>(P, clip, o * P.I + i, H, E, y[d], p[d][i], mo[d], eta_i);
    H_dst[i] = H;
    if (elig) E_dst[i] = E;
  });
}

// advance_row through `count` steps, 1 ≤ count ≤ 4 (kAnchorEvery).
template <typename V, typename T>
void advance_row(const ScanParams<T>& P, int count, int64_t b, int64_t t_first, const T* m,
                 int64_t o, const T* H_src, T* H_dst, const T* E_src, T* E_dst) {
  static_assert(BackwardWorkspace<T>::kAnchorEvery <= 4, "advance_row: up to 4 steps");
  switch (count) {
    case 1: return advance_row<V, 1>(P, b, t_first, m, o, H_src, H_dst, E_src, E_dst);
    case 2: return advance_row<V, 2>(P, b, t_first, m, o, H_src, H_dst, E_src, E_dst);
    case 3: return advance_row<V, 3>(P, b, t_first, m, o, H_src, H_dst, E_src, E_dst);
    default: return advance_row<V, 4>(P, b, t_first, m, o, H_src, H_dst, E_src, E_dst);
  }
}

}  // namespace TORCHPLASTIC_CPU_ISA
}  // namespace cpu
}  // namespace torchplastic
