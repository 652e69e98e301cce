// CPU kernels of plastic_scan: forward and backward of a range of sequences.
//
// Equations: csrc/kernels/plastic_step.h. Every sequence is independent, so the caller runs
// sequences in parallel and each one keeps its trace, α and W in cache for all T steps.
// The forward takes sequences four at a time in lockstep (forward_group): per step, rows go in
// blocks of 8, and each block is done for every sequence of the group in turn, so the block's
// rows of α and W stay in L1 for the group. For one sequence, one pass computes the block's
// matrix-vector products (four rows at a time, so the adds form independent chains), one
// vector loop their outputs, then a pass per row (now in L1) their trace updates; only
// internal modulation, whose m_t depends on all of y_t, defers the updates until every row's y
// is known. The loop-invariant choices (rule, clipping, η granularity) are template
// parameters (Variant), so the per-element loops have no branches and vectorise.
//
// The backward walks segments of K steps in reverse. From the segment's checkpoint it computes
// anchors, the traces before every 4th step (every step under synaptic scaling), row by row
// from the stored outputs y_t (no matrix-vector product is repeated); then it sweeps the
// segment backward in one pass over the rows per step, each pass finishing one step and
// tracing the step before (backward_row), with each element of H_{t-1} stepped forward from
// its anchor in registers inside that pass. Keeping every step's trace instead had pushed the
// working set out of L2. Gradients of the loop-invariant weights (W, z's producers) are left to GEMMs
// over the stored per-step vectors after the loop.
//
// This header is compiled once per instruction set (plastic_scan_isa.cpp), inside the
// namespace TORCHPLASTIC_CPU_ISA, and uses no out-of-line template of the standard library, so
// no AVX-512 copy of anything can be linked into the generic path.
#pragma once

#include <cmath>
#include <cstring>
#include <type_traits>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "cpu/plastic_scan_isa.h"
#include "cpu/vector_math.h"
#include "cpu/workspace.h"
#include "kernels/plastic_step.h"

#ifndef TORCHPLASTIC_CPU_ISA
#define TORCHPLASTIC_CPU_ISA generic
#endif

namespace torchplastic {
namespace cpu {
namespace TORCHPLASTIC_CPU_ISA {

using kernels::Activation;
using kernels::ModSource;
using kernels::Rule;
using kernels::ScanGradParams;
using kernels::ScanParams;

#define TP_ALWAYS_INLINE __attribute__((always_inline))

// Sums along a row, kept as one partial sum per vector lane and combined in a tree at the end.
// For an `omp simd reduction` GCC 12 adds the lanes one by one, in order: a chain of 16
// dependent adds per sum and row, which was a fifth of the backward's row pass at N = 256.
// Per-lane arrays indexed by the inner loop's counter stay in vector registers.
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
// registers across chunks.
template <typename T, typename Body>
TP_ALWAYS_INLINE inline void for_lanes(int64_t n, Body&& body) {
  constexpr int L = kLanes<T>;
  int64_t i0 = 0;
  for (; i0 + L <= n; i0 += L) {
#pragma omp simd
    for (int l = 0; l < L; ++l) body(i0 + l, l);
  }
  const int rest = static_cast<int>(n - i0);
#pragma omp simd
  for (int l = 0; l < rest; ++l) body(i0 + l, l);
}

// Σ of the lanes, pairwise.
template <typename T>
TP_ALWAYS_INLINE inline T sum_lanes(T (&acc)[kLanes<T>]) {
#pragma GCC unroll 8
  for (int w = kLanes<T> / 2; w > 0; w /= 2)
#pragma omp simd
    for (int l = 0; l < w; ++l) acc[l] += acc[l + w];
  return acc[0];
}

// The choices that hold for a whole call and sit inside the per-element loops: the rule,
// clipping on or off, η per connection or per row. As template parameters they leave those
// loops branch-free, which is what lets the compiler vectorise them (with them as run-time
// flags, GCC 12 kept the backward's trace loop scalar and the backward was 4x slower).
template <Rule R, bool Clip, bool EtaPerConnection>
struct Variant {
  static constexpr Rule rule = R;
  static constexpr bool clip = Clip;
  static constexpr bool eta_per_connection = EtaPerConnection;
};

// η of connection i of a row, given the row's η (eta_row) and its first value: rule
// modulated has none (0), otherwise per connection or one per row, as the variant says.
template <typename V, typename T>
TP_ALWAYS_INLINE inline T eta_at(const T* eta_row, T eta_first, int64_t i) {
  if (V::rule == Rule::Modulated) return T(0);
  return V::eta_per_connection ? eta_row[i] : eta_first;
}

// m_t for one sequence into m[O] (modulated rules); returns s_t for internal modulation.
template <typename T>
T modulation_of_step(const ScanParams<T>& P, int64_t t, int64_t b, const T* y_t, T* m) {
  const int64_t O = P.O;
  if (P.mod_source == ModSource::External) {
    std::memcpy(m, P.modulation + (t * P.B + b) * O, sizeof(T) * O);
    return T(0);
  }
  T u = P.mod_bias[0];
  for (int64_t o = 0; o < O; ++o) u += y_t[o] * P.mod_weight[o];
  const T s = std::tanh(u);
  for (int64_t o = 0; o < O; ++o)
    m[o] = P.mod_source == ModSource::Fanout ? s * P.fanout_weight[o] + P.fanout_bias[o] : s;
  return s;
}

// a·b + c, rounded once where the instruction set has FMA (twice where it has none). Written
// out because the compiler's own contraction of a·b + c depends on what else the loop computes
// (a product with a second use is not fused), so the same step could round differently in the
// forward and in a replay inside the backward's row pass, and results would depend on K.
template <typename T>
TP_ALWAYS_INLINE inline T mul_add(T a, T b, T c) {
#if defined(__FMA__)
  if constexpr (std::is_same<T, float>::value) return __builtin_fmaf(a, b, c);
  else return __builtin_fma(a, b, c);
#else
  return a * b + c;
#endif
}

// The trace before clipping and scaling (kernels::trace_candidate), with every multiply-add
// written out (mul_add), and E' of rule retroactive (kernels::eligibility_next) likewise.
template <typename V, typename T>
TP_ALWAYS_INLINE inline T candidate(T H, T E, T y, T p, T m, T eta) {
  switch (V::rule) {
    case Rule::Hebb: return mul_add(eta * y, p, (T(1) - eta) * H);
    case Rule::Oja: return mul_add(eta * y, mul_add(-y, H, p), H);
    case Rule::Modulated: return mul_add(m * y, p, H);
    default: return mul_add(m, E, H);
  }
}
template <typename T>
TP_ALWAYS_INLINE inline T eligibility_next(T E, T y, T p, T eta) {
  return mul_add(eta * y, p, (T(1) - eta) * E);
}

// One step of the rule on one element, clipping included (synaptic scaling, a property of
// the whole row, is not): returns H', and E becomes E' (rule retroactive). Every place that
// steps a trace forward goes through this, so the backward's recomputed traces are the
// forward's, bit for bit.
template <typename V, typename T>
TP_ALWAYS_INLINE inline T next_trace(const ScanParams<T>& P, T H, T& E, T y, T p, T m, T eta) {
  const T C = candidate<V>(H, E, y, p, m, eta);
  if (V::rule == Rule::Retroactive) E = eligibility_next(E, y, p, eta);
  return V::clip ? kernels::clip_value(C, P.clip) : C;
}

// trace(t) of one row with η one per row (or none): the row sums the rule needs (dL/dy[o],
// dL/dm[o], dL/dη[o]) are all linear in a few dot products over the row, u·p and u·X, with u
// = dL/dC and X = H (hebb, oja), or u = dL/dE' and X = E (retroactive, which also needs
// dL/dC·E). So the loop accumulates those dot products and the row's scalars (η, y, m) are
// applied once after it (row_sums_finish): for hebb 2 multiply-adds per element instead of
// 5 (kernels::trace_step_backward, which the per-connection η still goes through).
template <typename T>
struct RowConstants {
  T gp_factor = 0;  // dL/dp[i] += u · gp_factor: ηy (hebb, oja, retroactive), my (modulated)
  T decay = 1;      // dL/dH_{t-1} = dL/dC · decay: 1 − η, 1 − ηy², 1
  T elig_decay = 0; // retroactive: dL/dE_{t-1} = dL/dC · m + dL/dE' · (1 − η)
  T m = 0;
};

template <typename V, typename T>
TP_ALWAYS_INLINE inline RowConstants<T> row_constants(T y, T m, T eta) {
  RowConstants<T> k;
  switch (V::rule) {
    case Rule::Hebb: k.gp_factor = eta * y; k.decay = T(1) - eta; break;
    case Rule::Oja: k.gp_factor = eta * y; k.decay = T(1) - eta * y * y; break;
    case Rule::Modulated: k.gp_factor = m * y; break;
    default: k.gp_factor = eta * y; k.elig_decay = T(1) - eta; k.m = m;
  }
  return k;
}

// One element: returns dL/dH_{t-1} through the rule, writes dL/dE_{t-1} (retroactive), adds
// to dL/dp[i] and to the dot products (up: u·p, ux: u·X, gce: dL/dC·E).
template <typename V, typename T>
TP_ALWAYS_INLINE inline T trace_step_backward_row(const RowConstants<T>& k, T gC, T gE_next, T H,
                                                  T E, T p, T& gE_prev, T& gp, T& up, T& ux,
                                                  T& gce) {
  if (V::rule == Rule::Retroactive) {
    gce = mul_add(gC, E, gce);
    up = mul_add(gE_next, p, up);
    ux = mul_add(gE_next, E, ux);
    gp = mul_add(gE_next, k.gp_factor, gp);
    gE_prev = mul_add(gC, k.m, gE_next * k.elig_decay);
    return gC;
  }
  up = mul_add(gC, p, up);
  if (V::rule != Rule::Modulated) ux = mul_add(gC, H, ux);
  gp = mul_add(gC, k.gp_factor, gp);
  return V::rule == Rule::Modulated ? gC : gC * k.decay;
}

// Row o's dL/dy (added), dL/dm and dL/dη (added, where grad_eta exists) from the dot products.
template <typename V, typename T>
TP_ALWAYS_INLINE inline void row_sums_finish(T up, T ux, T gce, T y, T m, T eta, T& gy, T& gm,
                                             T* grad_eta) {
  T geta = 0;
  gm = 0;
  switch (V::rule) {
    case Rule::Hebb:  // Σ u (y p − H) and Σ u η p
      geta = y * up - ux;
      gy += eta * up;
      break;
    case Rule::Oja:  // Σ u y (p − y H) and Σ u η (p − 2 y H)
      geta = y * (up - y * ux);
      gy += eta * (up - T(2) * y * ux);
      break;
    case Rule::Modulated:  // Σ u y p and Σ u m p
      gm = y * up;
      gy += m * up;
      break;
    default:  // Σ dL/dC E; Σ dL/dE' (y p − E) and Σ dL/dE' η p
      gm = gce;
      geta = y * up - ux;
      gy += eta * up;
  }
  if (grad_eta) *grad_eta += geta;
}

// Row o of the trace update: H_src (and E_src) → H_dst (and E_dst); src may equal dst.
template <typename V, typename T>
void update_row(const ScanParams<T>& P, int64_t o, T y, T m, const T* p, const T* H_src,
                T* H_dst, const T* E_src, T* E_dst) {
  const int64_t I = P.I;
  const T* eta = P.eta_row(o);
  constexpr Rule R = V::rule;
  const T eta_o = eta[0];
#pragma omp simd
  for (int64_t i = 0; i < I; ++i) {
    T E = R == Rule::Retroactive ? E_src[i] : T(0);
    H_dst[i] = next_trace<V>(P, H_src[i], E, y, p[i], m, eta_at<V>(eta, eta_o, i));
    if (R == Rule::Retroactive) E_dst[i] = E;
  }
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

// a_t[o] = z_t[o] + Σ_i (α H + W)[o, i] p[i] − θ[o] for Rows consecutive rows from o into a.
// Several rows per pass give the vector unit independent chains of adds to overlap, and read p
// once for all of them: one row alone is a chain of dependent adds and a horizontal sum, whose
// latency, not bandwidth, bounded the forward.
template <int Rows, typename T>
void preactivation_rows(const ScanParams<T>& P, int64_t o, const T* z, const T* H, const T* p,
                        const T* theta, T* a) {
  static_assert(Rows == 1 || Rows == 4, "preactivation_rows: 1 or 4 rows");
  constexpr int L = kLanes<T>;
  const int64_t I = P.I;
  const T* al = P.alpha + o * I;
  const T* h = H + o * I;
  const T* W = P.recurrent ? P.weight + o * I : nullptr;
  T a0[L] = {}, a1[L] = {}, a2[L] = {}, a3[L] = {};
  // Row r's share of element i; `recurrent` is a type (true or false).
  auto term = [&](auto recurrent, int64_t k, T pi) TP_ALWAYS_INLINE {
    return decltype(recurrent)::value ? (al[k] * h[k] + W[k]) * pi : al[k] * h[k] * pi;
  };
  auto sweep = [&](auto recurrent) TP_ALWAYS_INLINE {
    for_lanes<T>(I, [&](int64_t i, int l) TP_ALWAYS_INLINE {
      const T pi = p[i];
      a0[l] += term(recurrent, i, pi);
      if (Rows == 4) {
        a1[l] += term(recurrent, I + i, pi);
        a2[l] += term(recurrent, 2 * I + i, pi);
        a3[l] += term(recurrent, 3 * I + i, pi);
      }
    });
  };
  if (W) sweep(std::true_type{});
  else sweep(std::false_type{});
  const T acc[4] = {sum_lanes<T>(a0), Rows == 4 ? sum_lanes<T>(a1) : T(0),
                    Rows == 4 ? sum_lanes<T>(a2) : T(0), Rows == 4 ? sum_lanes<T>(a3) : T(0)};
  for (int r = 0; r < Rows; ++r) a[r] = z[o + r] + acc[r] - (theta ? theta[o + r] : T(0));
}

// y[r] = φ(a[r]) for n values: float tanh in one vector loop (the benchmark's activation),
// the rest through the shared scalar math.
template <typename T>
void activate_block(Activation act, const T* a, T* y, int n) {
  if constexpr (std::is_same<T, float>::value) {
    if (act == Activation::Tanh) {
#pragma omp simd
      for (int r = 0; r < n; ++r) y[r] = tanh_vectorizable(a[r]);
      return;
    }
  }
  for (int r = 0; r < n; ++r) y[r] = kernels::activate(act, a[r]);
}

// Copies n elements into a checkpoint, which the backward reads long after (all the forward
// later): with non-temporal stores (where the destination is 64-byte aligned) the copy neither
// reads the destination's lines first nor pushes the sequence's working set out of L2.
template <typename T>
void copy_to_checkpoint(T* dst, const T* src, int64_t n) {
#if defined(__AVX512F__)
  const int64_t bytes = n * static_cast<int64_t>(sizeof(T));
  if (reinterpret_cast<uintptr_t>(dst) % 64 == 0 && bytes % 64 == 0) {
    auto* d = reinterpret_cast<__m512i*>(dst);
    const auto* s = reinterpret_cast<const __m512i*>(src);
    for (int64_t k = 0; k < bytes / 64; ++k) _mm512_stream_si512(d + k, _mm512_loadu_si512(s + k));
    _mm_sfence();
    return;
  }
#endif
  std::memcpy(dst, src, sizeof(T) * n);
}

// The forward of sequences b0 .. b0 + n − 1 (n ≤ kForwardGroup), in lockstep: each block of
// rows is done for every sequence of the group in turn, so the block's rows of α and W, read
// from L2 by the first sequence, are in L1 for the others (per sequence and step, the L2
// traffic falls from α, W, H read and H written to H read and written plus a share of α and
// W). Each sequence's arithmetic is the same as alone, so results do not depend on grouping.
template <typename V, typename T>
void forward_group(const ScanParams<T>& P, int64_t b0, int n, T* m) {
  constexpr Rule R = V::rule;
  const int64_t T_ = P.T, B = P.B, O = P.O, I = P.I, OI = O * I, K = P.checkpoint_every;
  const bool modulated = R == Rule::Modulated || R == Rule::Retroactive;
  const bool row_local = !P.internal_modulation();
  T *H[kForwardGroup], *E[kForwardGroup], *theta[kForwardGroup];
  for (int s = 0; s < n; ++s) {
    const int64_t b = b0 + s;
    H[s] = P.trace + b * OI;
    std::memcpy(H[s], P.trace0 + b * OI, sizeof(T) * OI);
    E[s] = nullptr;
    if (R == Rule::Retroactive) {
      E[s] = P.elig + b * OI;
      std::memcpy(E[s], P.elig0 + b * OI, sizeof(T) * OI);
    }
    theta[s] = nullptr;
    if (P.has_threshold) {
      theta[s] = P.theta + b * O;
      std::memcpy(theta[s], P.theta0 + b * O, sizeof(T) * O);
    }
  }

  for (int64_t t = 0; t < T_; ++t) {
    const T *p[kForwardGroup], *z[kForwardGroup], *m_ext[kForwardGroup];
    T* y[kForwardGroup];
    for (int s = 0; s < n; ++s) {
      const int64_t b = b0 + s;
      if (P.trace_ckpt && t % K == 0) {
        const int64_t slot = (t / K) * B + b;
        copy_to_checkpoint(P.trace_ckpt + slot * OI, H[s], OI);
        if (E[s]) copy_to_checkpoint(P.elig_ckpt + slot * OI, E[s], OI);
      }
      p[s] = P.presynaptic(t, b);
      z[s] = P.z + (t * B + b) * O;
      y[s] = P.y + (t * B + b) * O;
      m_ext[s] = P.mod_source == ModSource::External ? P.modulation + (t * B + b) * O : nullptr;
    }
    // Blocks of up to 8 rows, per sequence: their pre-activations four rows at a time (the
    // rest one by one), their outputs in one vector loop, then, unless m_t needs every y_t
    // first, their trace updates while the rows are still in L1.
    constexpr int64_t kBlock = 8;
    for (int64_t o0 = 0; o0 < O; o0 += kBlock) {
      const int64_t o1 = o0 + kBlock < O ? o0 + kBlock : O;
      for (int s = 0; s < n; ++s) {
        T a[kBlock];
        int64_t o = o0;
        for (; o + 4 <= o1; o += 4)
          preactivation_rows<4>(P, o, z[s], H[s], p[s], theta[s], a + (o - o0));
        for (; o < o1; ++o) preactivation_rows<1>(P, o, z[s], H[s], p[s], theta[s], a + (o - o0));
        activate_block(P.activation, a, y[s] + o0, static_cast<int>(o1 - o0));
        if (row_local)
          for (int64_t q = o0; q < o1; ++q) {
            T* E_row = E[s] ? E[s] + q * I : nullptr;
            update_row<V>(P, q, y[s][q], m_ext[s] ? m_ext[s][q] : T(0), p[s], H[s] + q * I,
                          H[s] + q * I, E_row, E_row);
          }
      }
    }
    for (int s = 0; s < n; ++s) {
      if (!row_local) {
        if (modulated) modulation_of_step(P, t, b0 + s, y[s], m);
        for (int64_t o = 0; o < O; ++o) {
          T* E_row = E[s] ? E[s] + o * I : nullptr;
          update_row<V>(P, o, y[s][o], modulated ? m[o] : T(0), p[s], H[s] + o * I,
                        H[s] + o * I, E_row, E_row);
        }
      }
      if (theta[s])
        for (int64_t o = 0; o < O; ++o)
          theta[s][o] += P.threshold_rate * (y[s][o] - P.target_activity);
    }
  }
}

// One step t of sequence b, as the backward's row passes see it. H_{t-1} (E_{t-1}) is not
// stored for every step: `anchor` holds the trace `replay` steps earlier, before step
// t − replay, and the pass steps it forward through steps t − replay .. t − 1 (in registers
// in the fused passes, through a scratch row in the others: replay_row), reading only those
// steps' stored outputs and inputs.
template <typename T>
struct StepView {
  int64_t t = 0, b = 0;
  const T* y = nullptr;         // [O]     y_t
  const T* p = nullptr;         // [I]     presynaptic activity of step t
  const T* H_anchor = nullptr;  // [O, I]  H_{t-1-replay}
  const T* E_anchor = nullptr;  // [O, I]  E_{t-1-replay} (retroactive)
  int replay = 0;
  const T* replay_m = nullptr;  // [replay, O] m of the replayed steps (modulated rules)
};

// The backward of one step splits in two halves:
//   trace(t):  dL/dH_t → dL/dH_{t-1} through the rule (dL/dE too), with the rule's shares of
//              dL/dy_t[o] (whose row sum completes dL/da_t), dL/dp_t, dL/dm_t and dL/dη;
//   finish(t): once dL/da_t is known, its part through α, H_{t-1} and W: into dL/dH_{t-1},
//              dL/dα and dL/dp_t.
// finish(t+1) and trace(t) touch the same elements of dL/dH (the first completes dL/dH_t, the
// second consumes it), so one pass over row o does both: dL/dH is loaded and stored once per
// step instead of twice, and finish(t+1) takes H_t from the candidate trace(t) computes anyway
// instead of reading it. finish reads S.ga, S.gp_done; trace adds to S.gy, S.gp, writes S.gm.
// Synaptic scaling needs all of dL/dH_t before trace(t), so with it the caller runs the two
// halves as separate passes (and every step's trace is stored: fin and tr replay nothing).
// finish alone reads H_t from fin's anchor, which is then H_t itself (replay 0).
//
// Rows rows from o per call (2 in the fused passes, else 1): element i of both rows in one loop
// iteration, so p_t, p_{t+1} and the replayed steps' p are loaded, and dL/dp_t and dL/dp_{t+1}
// loaded and stored, once for the two (one sequence's backward: 8% faster than one row per
// call; four rows per call ran out of registers and was slower). The rows' order in the sums
// over rows (dL/dp) is the same as one at a time.
// Ht, Et: row o of H_{t-1}, E_{t-1}. With Replay > 0 (fused passes only), row o of tr's anchor,
// Replay steps before them: each element is stepped forward through those steps in registers
// first.
template <typename V, bool Finish, bool Trace, int Replay, int Rows, typename T>
void backward_row(const ScanParams<T>& P, const BackwardWorkspace<T>& S, const StepView<T>& fin,
                  const StepView<T>& tr, const T* Ht, const T* Et, T* grad_alpha, T* grad_eta,
                  int64_t o) {
  static_assert(Replay == 0 || (Finish && Trace), "backward_row: replays in fused passes only");
  static_assert(Rows == 1 || (Finish && Trace), "backward_row: row pairs in fused passes only");
  constexpr Rule R = V::rule;
  constexpr bool retro = R == Rule::Retroactive;
  constexpr int L = kLanes<T>;
  const int64_t I = P.I, row0 = o * I;
  // Row r of the call is at offset r·I in every [O, I] array below.
  T* gH = S.gH + row0;
  T* gE = retro ? S.gE + row0 : nullptr;

  // finish(t+1): H_t (the candidate of trace(t) when fused), p_{t+1}, dL/da_{t+1}.
  const T* alpha = P.alpha + row0;
  const T* Hf = Finish && !Trace ? fin.H_anchor + row0 : nullptr;
  const T* W = P.recurrent ? P.weight + row0 : nullptr;
  T* gar = grad_alpha + row0;
  const T* pf = fin.p;
  T ga[Rows];
  for (int r = 0; r < Rows; ++r) ga[r] = Finish ? S.ga[o + r] : T(0);

  // trace(t): H_{t-1} (E_{t-1}), y_t, m_t, η, p_t, and synaptic scaling's factors, which need
  // ‖H'‖ and G·H' of the whole row before any element's gradient.
  const T* pt = tr.p;
  // η per connection implies a rule with η, whose grad_eta slab always exists.
  T* geta_conn = V::eta_per_connection ? grad_eta + row0 : nullptr;
  const T* eta = P.eta_row(o);
  const int64_t eta_stride = P.eta_row_stride;
  T eta_o[Rows], yo[Rows], mo[Rows];
  for (int r = 0; r < Rows; ++r) {
    eta_o[r] = P.eta_row(o + r)[0];
    yo[r] = Trace ? tr.y[o + r] : T(0);
    mo[r] = Trace && (R == Rule::Modulated || retro) ? S.m[o + r] : T(0);
  }
  T scale = 1, scale_grad = 0;
  if (Rows == 1 && Trace && P.has_scaling) {
    T sumsq[L] = {}, dot[L] = {};
    for_lanes<T>(I, [&](int64_t i, int l) TP_ALWAYS_INLINE {
      T E = retro ? Et[i] : T(0);
      const T C = next_trace<V>(P, Ht[i], E, yo[0], pt[i], mo[0], eta_at<V>(eta, eta_o[0], i));
      sumsq[l] += C * C;
      dot[l] += gH[i] * C;
    });
    const T norm = std::sqrt(sum_lanes<T>(sumsq));
    if (norm > P.scaling) {
      scale = P.scaling / norm;
      scale_grad = P.scaling * sum_lanes<T>(dot) / (norm * norm * norm);
    }
  }

  // The replayed steps t − Replay .. t − 1: y and m of the rows, and p.
  constexpr int kReplay = Replay > 0 ? Replay : 1;
  T replay_y[kReplay][Rows], replay_m[kReplay][Rows];
  const T* replay_p[kReplay];
  for (int d = 0; d < Replay; ++d) {
    const int64_t t = tr.t - Replay + d;
    for (int r = 0; r < Rows; ++r) {
      replay_y[d][r] = P.y[(t * P.B + tr.b) * P.O + o + r];
      replay_m[d][r] = R == Rule::Modulated || retro ? tr.replay_m[d * P.O + o + r] : T(0);
    }
    replay_p[d] = P.presynaptic(t, tr.b);
  }

  // η one per row: the row's sums through dot products (trace_step_backward_row).
  constexpr bool row_eta = !V::eta_per_connection;
  RowConstants<T> k[Rows];
  for (int r = 0; r < Rows; ++r) k[r] = row_constants<V>(yo[r], mo[r], eta_o[r]);
  T gy[Rows][L] = {}, gm[Rows][L] = {};                     // per connection: the sums
  T up[Rows][L] = {}, ux[Rows][L] = {}, gce[Rows][L] = {};  // per row: the dot products
  T* gp_done = S.gp_done;
  T* gp = S.gp;
  // Element i of each row. `scaled` and `recurrent` are types (true or false), so that each
  // variant's loop carries only its own terms.
  auto sweep = [&](auto scaled, auto recurrent) {
    for_lanes<T>(I, [&](int64_t i, int l) TP_ALWAYS_INLINE {
      T gp_done_i = Finish ? gp_done[i] : T(0);
      T gp_i = Trace ? gp[i] : T(0);
#pragma GCC unroll 2
      for (int r = 0; r < Rows; ++r) {
        const int64_t ri = r * I + i;
        T g = gH[ri];
        const T eta_i = Trace ? eta_at<V>(eta + r * eta_stride, eta_o[r], i) : T(0);
        T H = Trace ? Ht[ri] : T(0), E = Trace && retro ? Et[ri] : T(0);
#pragma GCC unroll 4
        for (int d = 0; d < Replay; ++d)
          H = next_trace<V>(P, H, E, replay_y[d][r], replay_p[d][i], replay_m[d][r], eta_i);
        T C = 0;
        if (Trace && (Finish || decltype(scaled)::value || V::clip))
          C = candidate<V>(H, E, yo[r], pt[i], mo[r], eta_i);
        if (Finish) {
          const T a = alpha[ri], gap = ga[r] * pf[i];
          const T h = Trace ? (V::clip ? kernels::clip_value(C, P.clip) : C) : Hf[ri];
          g += gap * a;
          gar[ri] += gap * h;
          gp_done_i += ga[r] * (decltype(recurrent)::value ? a * h + W[ri] : a * h);
        }
        if (Trace) {
          T gC = g;
          if (decltype(scaled)::value) {
            const T Hc = V::clip ? kernels::clip_value(C, P.clip) : C;
            gC = scale * gC - scale_grad * Hc;
          }
          if (V::clip) gC *= kernels::clip_grad_mask(C, P.clip);
          T gE_prev = 0;
          if (row_eta) {
            g = trace_step_backward_row<V>(k[r], gC, retro ? gE[ri] : T(0), H, E, pt[i], gE_prev,
                                           gp_i, up[r][l], ux[r][l], gce[r][l]);
          } else {
            T geta = 0;
            g = kernels::trace_step_backward(R, gC, retro ? gE[ri] : T(0), H, E, yo[r], pt[i],
                                             mo[r], eta_i, gE_prev, gy[r][l], gp_i, gm[r][l],
                                             geta);
            geta_conn[ri] += geta;
          }
          if (retro) gE[ri] = gE_prev;
        }
        gH[ri] = g;
      }
      if (Finish) gp_done[i] = gp_done_i;
      if (Trace) gp[i] = gp_i;
    });
  };
  // Only the copies of the loop a call can need (each costs compile time three times over):
  // `recurrent` matters to finish (W), `scaled` to trace alone (backward_pass never fuses the
  // halves under synaptic scaling).
  if constexpr (Finish) {
    if (P.recurrent) sweep(std::false_type{}, std::true_type{});
    else sweep(std::false_type{}, std::false_type{});
  } else {
    if (P.has_scaling) sweep(std::true_type{}, std::false_type{});
    else sweep(std::false_type{}, std::false_type{});
  }

  if (Trace)
    for (int r = 0; r < Rows; ++r) {
      if (row_eta) {
        const T sum_ux = R == Rule::Modulated ? T(0) : sum_lanes<T>(ux[r]);
        const T sum_gce = retro ? sum_lanes<T>(gce[r]) : T(0);
        row_sums_finish<V>(sum_lanes<T>(up[r]), sum_ux, sum_gce, yo[r], mo[r], eta_o[r],
                           S.gy[o + r], S.gm[o + r], grad_eta ? grad_eta + o + r : nullptr);
      } else {
        S.gy[o + r] += sum_lanes<T>(gy[r]);
        S.gm[o + r] = sum_lanes<T>(gm[r]);
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
  constexpr bool retro = V::rule == Rule::Retroactive;
  constexpr bool modulated = V::rule == Rule::Modulated || retro;
  T y[D], mo[D];
  const T* p[D];
  for (int d = 0; d < D; ++d) {
    const int64_t t = t_first + d;
    y[d] = P.y[(t * P.B + b) * P.O + o];
    mo[d] = modulated ? m[d * P.O + o] : T(0);
    p[d] = P.presynaptic(t, b);
  }
  const T* eta = P.eta_row(o);
  const T eta_o = eta[0];
  for_lanes<T>(P.I, [&](int64_t i, int) TP_ALWAYS_INLINE {
    const T eta_i = eta_at<V>(eta, eta_o, i);
    T H = H_src[i], E = retro ? E_src[i] : T(0);
#pragma GCC unroll 8
    for (int d = 0; d < D; ++d) H = next_trace<V>(P, H, E, y[d], p[d][i], mo[d], eta_i);
    H_dst[i] = H;
    if (retro) E_dst[i] = E;
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

// Row o of H_{t-1} (E_{t-1}) for view v: its anchor's row stepped forward v.replay steps into
// the scratch rows S.row_H (S.row_E), or the anchor's row itself when there is none to replay.
// For the passes that trace without finishing (step T − 1); fused passes replay in their loop.
template <typename V, typename T>
TP_ALWAYS_INLINE inline void replay_row(const ScanParams<T>& P, const BackwardWorkspace<T>& S,
                                        const StepView<T>& v, int64_t o, const T*& H,
                                        const T*& E) {
  constexpr bool retro = V::rule == Rule::Retroactive;
  const int64_t r = o * P.I;
  H = v.H_anchor + r;
  E = retro ? v.E_anchor + r : nullptr;
  if (v.replay == 0) return;
  advance_row<V>(P, v.replay, v.b, v.t - v.replay, v.replay_m, o, H, S.row_H, E, S.row_E);
  H = S.row_H;
  E = retro ? S.row_E : nullptr;
}

// The fused pass (finish(t+1) and trace(t)) over Rows rows from o, with tr.replay steps
// replayed in the loop; the anchor's rows go in as they are.
template <typename V, int Rows, typename T>
TP_ALWAYS_INLINE inline void fused_rows(const ScanParams<T>& P, const BackwardWorkspace<T>& S,
                                        const StepView<T>& fin, const StepView<T>& tr,
                                        T* grad_alpha, T* grad_eta, int64_t o) {
  static_assert(BackwardWorkspace<T>::kAnchorEvery <= 4, "fused_rows: replays of up to 3");
  const T* H = tr.H_anchor + o * P.I;
  const T* E = V::rule == Rule::Retroactive ? tr.E_anchor + o * P.I : nullptr;
  auto row = [&](auto replay) TP_ALWAYS_INLINE {
    backward_row<V, true, true, decltype(replay)::value, Rows>(P, S, fin, tr, H, E, grad_alpha,
                                                              grad_eta, o);
  };
  switch (tr.replay) {
    case 0: return row(std::integral_constant<int, 0>{});
    case 1: return row(std::integral_constant<int, 1>{});
    case 2: return row(std::integral_constant<int, 2>{});
    default: return row(std::integral_constant<int, 3>{});
  }
}

// One pass over all rows: finish(t+1) and trace(t) as `finish` and `trace` say; with synaptic
// scaling, both as two passes per row.
template <typename V, typename T>
void backward_pass(const ScanParams<T>& P, const BackwardWorkspace<T>& S, bool finish,
                   bool trace, const StepView<T>& fin, const StepView<T>& tr, T* grad_alpha,
                   T* grad_eta) {
  if (finish && trace && !P.has_scaling) {
    // Rows in pairs (the last alone when O is odd), replays inside the loop.
    int64_t o = 0;
    for (; o + 2 <= P.O; o += 2) fused_rows<V, 2>(P, S, fin, tr, grad_alpha, grad_eta, o);
    if (o < P.O) fused_rows<V, 1>(P, S, fin, tr, grad_alpha, grad_eta, o);
    return;
  }
  for (int64_t o = 0; o < P.O; ++o) {
    const T *H = nullptr, *E = nullptr;
    if (trace) replay_row<V>(P, S, tr, o, H, E);
    if (finish) backward_row<V, true, false, 0, 1>(P, S, fin, tr, H, E, grad_alpha, grad_eta, o);
    if (trace) backward_row<V, false, true, 0, 1>(P, S, fin, tr, H, E, grad_alpha, grad_eta, o);
  }
}

// The anchors of a segment: the traces before its steps R, 2R, ... (R = S.anchor_every), from
// its checkpoint, the trace before its step 0, row by row. Under synaptic scaling R is 1 and
// update_row takes each step (with the row's norm); otherwise advance_row goes from one anchor
// to the next in one pass.
template <typename V, typename T>
void compute_anchors(const ScanParams<T>& P, const BackwardWorkspace<T>& S, int64_t b,
                     int64_t t0, int64_t steps, const T* ckpt_H, const T* ckpt_E) {
  constexpr bool retro = V::rule == Rule::Retroactive;
  constexpr bool modulated = V::rule == Rule::Modulated || retro;
  const int64_t O = P.O, I = P.I, every = S.anchor_every;
  for (int64_t o = 0; o < O; ++o) {
    const int64_t r = o * I;
    const T* H = ckpt_H + r;
    const T* E = retro ? ckpt_E + r : nullptr;
    for (int64_t j = 0; j < steps; j += every) {
      const int64_t q = j / every + 1;  // the anchor before step j + every
      T* H_dst = S.seg_H + (q - 1) * S.seg_stride + r;
      T* E_dst = retro ? S.seg_E + (q - 1) * S.seg_stride + r : nullptr;
      const int64_t t = t0 + j;
      if (P.has_scaling) {
        const T m = modulated ? S.m_seg[j * O + o] : T(0);
        update_row<V>(P, o, P.y[(t * P.B + b) * O + o], m, P.presynaptic(t, b), H, H_dst, E,
                      E_dst);
      } else {
        advance_row<V>(P, static_cast<int>(every), b, t, S.m_seg + j * O, o, H, H_dst, E, E_dst);
      }
      H = H_dst;
      E = E_dst;
    }
  }
}

template <typename V, typename T>
void backward_sequence(const ScanParams<T>& P, const ScanGradParams<T>& G, int64_t b,
                       const BackwardWorkspace<T>& S) {
  constexpr Rule R = V::rule;
  const int64_t T_ = P.T, B = P.B, O = P.O, I = P.I, OI = O * I, K = P.checkpoint_every;
  const bool retro = R == Rule::Retroactive;
  const bool modulated = R == Rule::Modulated || retro;
  const bool row_local = !P.internal_modulation();
  constexpr bool eta_per_connection = V::eta_per_connection;
  // This sequence's dL/dα and dL/dη slabs, which the caller leaves uninitialised: zeroed here,
  // just before the passes add to them (a separate pass over all the slabs first had cost a
  // trip through memory).
  T* grad_alpha = G.grad_alpha + b * OI;
  T* grad_eta = G.grad_eta ? G.grad_eta + b * (eta_per_connection ? OI : O) : nullptr;
  std::memset(grad_alpha, 0, sizeof(T) * OI);
  if (grad_eta) std::memset(grad_eta, 0, sizeof(T) * (eta_per_connection ? OI : O));

  // Loop invariant, between steps: S.gH = dL/dH_t, S.gE = dL/dE_t, S.gtheta = dL/dθ_t, and
  // S.gh = dL/dy_t from the later steps, for the last step t not yet traced.
  std::memcpy(S.gH, G.grad_trace + b * OI, sizeof(T) * OI);
  if (retro) std::memcpy(S.gE, G.grad_elig + b * OI, sizeof(T) * OI);
  if (P.has_threshold) std::memcpy(S.gtheta, G.grad_theta + b * O, sizeof(T) * O);
  if (P.recurrent) std::memcpy(S.gh, G.grad_hidden + b * O, sizeof(T) * O);

  // dL/dp of the finished step t: dL/dh_{t-1} (recurrent) or dL/dx_t (feedforward).
  auto deliver_grad_p = [&](int64_t t) {
    if (P.recurrent) std::memcpy(S.gh, S.gp_done, sizeof(T) * O);
    else std::memcpy(G.grad_x + (t * B + b) * I, S.gp_done, sizeof(T) * I);
  };

  StepView<T> pending;  // the traced step whose finish is still due
  const int64_t num_segments = P.num_checkpoints();
  for (int64_t seg = num_segments - 1; seg >= 0; --seg) {
    const int64_t t0 = seg * K, len = T_ - t0 < K ? T_ - t0 : K;

    // m_t of the segment's steps (the replays need them), then its anchors.
    const T* ckpt_H = P.trace_ckpt + (seg * B + b) * OI;
    const T* ckpt_E = retro ? P.elig_ckpt + (seg * B + b) * OI : nullptr;
    if (modulated)
      for (int64_t j = 0; j < len; ++j) {
        const int64_t t = t0 + j;
        modulation_of_step(P, t, b, P.y + (t * B + b) * O, S.m_seg + j * O);
      }
    const int64_t every = S.anchor_every;
    compute_anchors<V>(P, S, b, t0, (len - 1) / every * every, ckpt_H, ckpt_E);

    // Sweep the segment backward: the pass of step t traces t and finishes t + 1 (step T − 1
    // has nothing to finish; step 0 is finished alone at the end). Every step is handled the
    // same way whatever K, so results do not depend on K, bit for bit.
    for (int64_t j = len - 1; j >= 0; --j) {
      const int64_t t = t0 + j;
      const bool finish = t + 1 < T_;
      StepView<T> step;
      step.t = t;
      step.b = b;
      step.y = P.y + (t * B + b) * O;
      step.p = P.presynaptic(t, b);
      const int64_t q = j / every;  // anchor
      step.H_anchor = q == 0 ? ckpt_H : S.seg_H + (q - 1) * S.seg_stride;
      step.E_anchor = !retro ? nullptr : q == 0 ? ckpt_E : S.seg_E + (q - 1) * S.seg_stride;
      step.replay = static_cast<int>(j - q * every);
      step.replay_m = S.m_seg + q * every * O;
      T s = 0;
      if (modulated) s = modulation_of_step(P, t, b, step.y, S.m);

      // dL/dy_t so far; the share through p_{t+1} (recurrent) is added once finish(t + 1) has
      // completed it.
      const T* grad_y = G.grad_y + (t * B + b) * O;
      for (int64_t o = 0; o < O; ++o) {
        T g = grad_y[o];
        if (P.has_threshold) g += P.threshold_rate * S.gtheta[o];
        S.gy[o] = g;
      }
      if (finish) std::memcpy(S.gp_done, S.gp, sizeof(T) * I);  // trace(t + 1)'s share
      for (int64_t i = 0; i < I; ++i) S.gp[i] = 0;

      backward_pass<V>(P, S, finish, true, pending, step, grad_alpha, grad_eta);

      if (finish) deliver_grad_p(t + 1);
      if (P.recurrent)
        for (int64_t o = 0; o < O; ++o) S.gy[o] += S.gh[o];
      if (modulated) std::memcpy(G.grad_mod + (t * B + b) * O, S.gm, sizeof(T) * O);
      if (!row_local) {
        // m = s (· f + g) with s = tanh(y·v + c): dL/ds, then back into every y[o].
        T gs = 0;
        for (int64_t o = 0; o < O; ++o)
          gs += P.mod_source == ModSource::Fanout ? S.gm[o] * P.fanout_weight[o] : S.gm[o];
        const T gpre = gs * (T(1) - s * s);
        G.grad_mod_pre[t * B + b] = gpre;
        G.mod_signal[t * B + b] = s;
        for (int64_t o = 0; o < O; ++o) S.gy[o] += gpre * P.mod_weight[o];
      }
      // dL/da_t, now complete: its per-row part here, the rest in finish(t).
      T* grad_z = G.grad_z + (t * B + b) * O;
      for (int64_t o = 0; o < O; ++o) {
        const T ga = S.gy[o] * kernels::activation_grad(P.activation, step.y[o]);
        S.ga[o] = ga;
        grad_z[o] = ga;
        if (P.has_threshold) S.gtheta[o] -= ga;
      }
      pending = step;
    }
    // finish(t0) runs in the next segment's first pass, after the anchors are overwritten: it
    // takes H_{t0} from trace(t0 − 1) (or, alone, from the checkpoint pending points to).
  }
  if (T_ > 0) {
    std::memcpy(S.gp_done, S.gp, sizeof(T) * I);
    backward_pass<V>(P, S, true, false, pending, pending, grad_alpha, grad_eta);
    deliver_grad_p(0);
  }

  std::memcpy(G.grad_trace0 + b * OI, S.gH, sizeof(T) * OI);
  if (retro) std::memcpy(G.grad_elig0 + b * OI, S.gE, sizeof(T) * OI);
  if (P.has_threshold) std::memcpy(G.grad_theta0 + b * O, S.gtheta, sizeof(T) * O);
  if (P.recurrent) std::memcpy(G.grad_hidden0 + b * O, S.gh, sizeof(T) * O);
}

}  // namespace TORCHPLASTIC_CPU_ISA
}  // namespace cpu
}  // namespace torchplastic
