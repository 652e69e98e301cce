// The CPU forward of plastic_scan (equations: csrc/kernels/plastic_step.h).
//
// Every sequence is independent, so the caller runs sequences in parallel and each one keeps
// its trace, α and W in cache for all T steps. The forward takes sequences up to four at a time
// in lockstep (as many as fit in L2: forward_group, csrc/cpu/plastic_scan.cpp): per step, rows
// go in blocks of 8, and each block is done for every sequence of the group in turn, so the
// block's rows of α and W stay in L1 for the group. Two ways to step:
// - forward_group_deferred, for sequences of several steps (no synaptic scaling, not
//   recording): the pass of step t first steps each row of the trace through the update of
//   step t − 1, then uses it, still in registers, for its pre-activation (two rows at a time,
//   one with an eligibility trace); a row is read and written once per step, and internal
//   modulation is row-local too.
// - forward_group, for single steps, scaling and recording: per block, one pass computes the
//   matrix-vector products (four rows at a time, so the adds form independent chains), one
//   vector loop their outputs, then a pass per row (now in L1) their trace updates; internal
//   modulation, whose m_t depends on all of y_t, defers the updates until every row's y is
//   known.
// The plastic LSTM is the same passes over its cell candidate's rows, with its other gates, c_t
// and h_t computed beside them (csrc/cpu/lstm.h).
// Both step each element through next_trace and sum each row in the same order, so they give
// the same results, bit for bit.
#pragma once

#include <algorithm>
#include <type_traits>
#include <vector>

#include "cpu/lstm.h"
#include "cpu/plastic_scan_isa.h"
#include "cpu/rule_loops.h"
#include "cpu/simd.h"
#include "cpu/vector_math.h"

namespace torchplastic {
namespace cpu {
namespace TORCHPLASTIC_CPU_ISA {

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
  const T acc[4] = {sum_lanes<T>(a0, I), Rows == 4 ? sum_lanes<T>(a1, I) : T(0),
                    Rows == 4 ? sum_lanes<T>(a2, I) : T(0), Rows == 4 ? sum_lanes<T>(a3, I) : T(0)};
  for (int r = 0; r < Rows; ++r) a[r] = z[o + r] + acc[r] - (theta ? theta[o + r] : T(0));
}

// preactivation_rows of step t with the trace update of step t − 1 folded in: each element of
// H_{t-1} (E_{t-1}) is stepped to H_t (E_t) with y_{t-1}, p_{t-1} and m_{t-1}, stored, and
// used for a_t from the register, so that a row is read once per step rather than once for its
// pre-activation and again for its update (forward_group_deferred). Row r's update is the
// element loop of update_row and its sum that of preactivation_rows, so the results are
// theirs bit for bit. InPlace (H_dst = H_src, E_dst = E_src: every step but the first) saves
// the destination pointers; two rows per pass, not four as preactivation_rows, and one with an
// eligibility trace, so that the rows' pointers fit the general registers (with four, GCC
// reloaded them from the stack inside the loop).
template <typename V, bool InPlace, int Rows, typename T>
void update_and_preactivate_rows(const ScanParams<T>& P, int64_t o, const T* y_prev,
                                 const T* m_prev, const T* p_prev, const T* H_src, T* H_dst,
                                 const T* E_src, T* E_dst, const T* z, const T* p,
                                 const T* theta, T* a) {
  static_assert(Rows == 1 || Rows == 2, "update_and_preactivate_rows: 1 or 2 rows");
  constexpr int L = kLanes<T>;
  constexpr bool elig = V::Rule::eligibility;
  const int64_t I = P.I;
  const T clip = P.clip;  // read once: see next_trace
  const T* al = P.alpha + o * I;
  const T* W = P.recurrent ? P.weight + o * I : nullptr;
  T* hd = H_dst + o * I;
  const T* hs = InPlace ? hd : H_src + o * I;
  T* ed = elig ? E_dst + o * I : nullptr;
  const T* es = InPlace ? ed : elig ? E_src + o * I : nullptr;
  const T* eta[Rows];
  T eta_first[Rows], yr[Rows], mr[Rows];
  for (int r = 0; r < Rows; ++r) {
    eta[r] = P.eta_row(o + r);
    eta_first[r] = eta[r][0];
    yr[r] = y_prev[o + r];
    mr[r] = V::Rule::modulated ? m_prev[o + r] : T(0);
  }
  T acc[Rows][L] = {};
  auto sweep = [&](auto recurrent) TP_ALWAYS_INLINE {
    for_lanes<T>(I, [&](int64_t i, int l) TP_ALWAYS_INLINE {
      const T pp = p_prev[i], pi = p[i];
      T h_src[Rows], e_src[Rows], a[Rows], w[Rows], eta_i[Rows];
      auto load_trace = [&](int r) TP_ALWAYS_INLINE {
        h_src[r] = hs[r * I + i];
        e_src[r] = elig ? es[r * I + i] : T(0);
        eta_i[r] = eta_at<V>(eta[r], eta_first[r], i);
      };
      auto load_weights = [&](int r) TP_ALWAYS_INLINE {
        a[r] = al[r * I + i];
        w[r] = decltype(recurrent)::value ? W[r * I + i] : T(0);
      };
      // Under AVX-512 every row's loads come before the first store: a load that follows a
      // store to an address equal to it modulo 4 KiB waits for that store, so with α or W at
      // the trace's offset modulo 4 KiB (the caller's tensors may lie there) each element
      // waited. The AVX2 and generic loops keep the order they had, each row's α and W read
      // after its trace is stored: on the Zen 4 the AVX2 kernels lost nothing to the aliasing
      // and were no faster in the new order (docs/performance.md, "4 KiB aliasing").
      constexpr bool kLoadsFirst = kVectorBytes == 64;
      if constexpr (kLoadsFirst) {
#pragma GCC unroll 2
        for (int r = 0; r < Rows; ++r) {
          load_trace(r);
          load_weights(r);
        }
      }
#pragma GCC unroll 2
      for (int r = 0; r < Rows; ++r) {
        const int64_t k = r * I + i;
        if constexpr (!kLoadsFirst) load_trace(r);
        T E = e_src[r];
        const T h = next_trace<V>(P, clip, (o + r) * I + i, h_src[r], E, yr[r], pp, mr[r],
                                  eta_i[r]);
        hd[k] = h;
        if (elig) ed[k] = E;
        if constexpr (!kLoadsFirst) load_weights(r);
        acc[r][l] += decltype(recurrent)::value ? (a[r] * h + w[r]) * pi : a[r] * h * pi;
      }
    });
  };
  if (W) sweep(std::true_type{});
  else sweep(std::false_type{});
  for (int r = 0; r < Rows; ++r)
    a[r] = z[o + r] + sum_lanes<T>(acc[r], I) - (theta ? theta[o + r] : T(0));
}

// The rows of block o0 .. o1 − 1 of one sequence through update_and_preactivate_rows, a_t into a.
template <typename V, bool InPlace, typename T>
void update_and_preactivate_block(const ScanParams<T>& P, int64_t o0, int64_t o1,
                                  const T* y_prev, const T* m_prev, const T* p_prev,
                                  const T* H_src, T* H_dst, const T* E_src, T* E_dst, const T* z,
                                  const T* p, const T* theta, T* a) {
  constexpr int kRows = V::Rule::eligibility ? 1 : 2;
  int64_t o = o0;
  for (; o + kRows <= o1; o += kRows)
    update_and_preactivate_rows<V, InPlace, kRows>(P, o, y_prev, m_prev, p_prev, H_src, H_dst,
                                                   E_src, E_dst, z, p, theta, a + (o - o0));
  for (; o < o1; ++o)
    update_and_preactivate_rows<V, InPlace, 1>(P, o, y_prev, m_prev, p_prev, H_src, H_dst,
                                               E_src, E_dst, z, p, theta, a + (o - o0));
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

// The records of H_t (tp.inspect), when recording: Σ H_t² and, every R steps, H_t itself.
template <typename T>
void record_trace(const ScanParams<T>& P, int64_t t, int64_t b, const T* H) {
  const int64_t OI = P.O * P.I;
  if (P.record_norm) {
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t k = 0; k < OI; ++k) sum += H[k] * H[k];
    P.record_norm[t * P.B + b] = sum;
  }
  if (T* slot = P.record_slot(t, b)) std::memcpy(slot, H, sizeof(T) * OI);
}

// What both forwards of a group set up before their steps: each sequence's length (past it its
// state is held and its outputs are zero) and the group's longest, where each writes its state
// (the outputs P.trace, P.elig, P.theta), the zero outputs past each length, and the final state
// of a sequence never stepped: its initial one.
template <typename T>
struct GroupState {
  T *H[kForwardGroup], *E[kForwardGroup], *theta[kForwardGroup];
  int64_t len[kForwardGroup], steps = 0;

  template <typename V>
  static GroupState begin(const ScanParams<T>& P, int64_t b0, int n) {
    constexpr bool elig = V::Rule::eligibility;
    const int64_t B = P.B, O = P.O, OI = O * P.I;
    GroupState g;
    for (int s = 0; s < n; ++s) {
      const int64_t b = b0 + s;
      g.len[s] = P.length(b);
      g.steps = g.len[s] > g.steps ? g.len[s] : g.steps;
      for (int64_t t = g.len[s]; t < P.T; ++t) {
        std::fill_n(P.y + (t * B + b) * O, O, T(0));
        if (P.lstm) {
          std::fill_n(P.hseq + (t * B + b) * O, O, T(0));
          for (int k = 0; k < 5; ++k) std::fill_n(P.lstm_value(k, t, b), O, T(0));
        }
      }
      g.H[s] = P.trace + b * OI;
      g.E[s] = elig ? P.elig + b * OI : nullptr;
      g.theta[s] = P.has_threshold ? P.theta + b * O : nullptr;
      if (g.len[s] == 0) {
        std::memcpy(g.H[s], P.trace0 + b * OI, sizeof(T) * OI);
        if (elig) std::memcpy(g.E[s], P.elig0 + b * OI, sizeof(T) * OI);
        if (g.theta[s]) std::memcpy(g.theta[s], P.theta0 + b * O, sizeof(T) * O);
      }
    }
    return g;
  }
};

// The forward of sequences b0 .. b0 + n − 1 (n ≤ kForwardGroup), in lockstep: each block of
// rows is done for every sequence of the group in turn, so the block's rows of α and W, read
// from L2 by the first sequence, are in L1 for the others (per sequence and step, the L2
// traffic falls from α, W, H read and H written to H read and written plus a share of α and
// W). Each sequence's arithmetic is the same as alone, so results do not depend on grouping.
template <typename V, typename T>
void forward_group(const ScanParams<T>& P, int64_t b0, int n, T* m) {
  constexpr bool elig = V::Rule::eligibility, modulated = V::Rule::modulated;
  const int64_t T_ = P.T, B = P.B, O = P.O, I = P.I, OI = O * I;
  const bool row_local = !P.internal_modulation();
  auto g = GroupState<T>::template begin<V>(P, b0, n);
  T *const *H = g.H, *const *E = g.E, *const *theta = g.theta;
  const int64_t* len = g.len;
  const int64_t steps = g.steps;

  for (int64_t t = 0; t < steps; ++t) {
    const T *p[kForwardGroup], *z[kForwardGroup], *m_ext[kForwardGroup];
    // The state the step reads: at step 0 the initial state itself, read where the caller
    // keeps it rather than copied into the outputs first (for a single step, as a cell takes,
    // that copy was a whole extra pass over the trace); from step 1 on, the outputs, updated in
    // place.
    const T *H_in[kForwardGroup], *E_in[kForwardGroup], *theta_in[kForwardGroup];
    T* y[kForwardGroup];
    for (int s = 0; s < n; ++s) {
      const int64_t b = b0 + s;
      if (t >= len[s]) continue;
      const bool initial = t == 0;
      H_in[s] = initial ? P.trace0 + b * OI : H[s];
      E_in[s] = elig && initial ? P.elig0 + b * OI : E[s];
      theta_in[s] = theta[s] && initial ? P.theta0 + b * O : theta[s];
      if (T* slot = P.checkpoint_slot(P.trace_ckpt, t, b)) copy_to_checkpoint(slot, H_in[s], OI);
      if (T* slot = P.checkpoint_slot(P.elig_ckpt, t, b)) copy_to_checkpoint(slot, E_in[s], OI);
      p[s] = P.presynaptic(t, b);
      // The LSTM's plastic rows are its cell candidates g, 2H into the gates.
      z[s] = P.z_row(t, b) + (P.lstm ? 2 * O : 0);
      y[s] = P.y + (t * B + b) * O;
      m_ext[s] = P.mod_source == ModSource::External ? P.modulation + (t * B + b) * O : nullptr;
    }
    // Blocks of up to 8 rows, per sequence: their pre-activations four rows at a time (the
    // rest one by one), their outputs in one vector loop, then, unless m_t needs every y_t
    // first, their trace updates while the rows are still in L1.
    bool active[kForwardGroup];
    for (int s = 0; s < n; ++s) active[s] = t < len[s];
    for (int64_t o0 = 0; o0 < O; o0 += kRowBlock) {
      const int64_t o1 = o0 + kRowBlock < O ? o0 + kRowBlock : O;
      T gates[kForwardGroup][3][kRowBlock];
      if (P.lstm) lstm_gate_block(P, o0, o1, n, active, p, gates);
      // Step 0 writes each row of the output trace for the first time, into memory no cache
      // holds (a kept trace of a cell's step): where rows are short (kShortRow) and each
      // block's updates follow it (row-local modulation), the next block's rows are asked for
      // ahead, so that the updates' stores find their lines in L2 (docs/performance.md,
      // "Single steps and rollouts"). From step 1 on the rows are the ones the step before
      // wrote.
      if (t == 0 && row_local && I < kShortRow && o1 < O) {
        const int64_t ahead = (o1 + kRowBlock < O ? kRowBlock : O - o1) * I;  // elements
        for (int s = 0; s < n; ++s) {
          if (!active[s]) continue;
          prefetch_lines(H[s] + o1 * I, ahead);
          if (elig) prefetch_lines(E[s] + o1 * I, ahead);
        }
      }
      for (int s = 0; s < n; ++s) {
        if (!active[s]) continue;
        T a[kRowBlock];
        int64_t o = o0;
        for (; o + 4 <= o1; o += 4)
          preactivation_rows<4>(P, o, z[s], H_in[s], p[s], theta_in[s], a + (o - o0));
        for (; o < o1; ++o)
          preactivation_rows<1>(P, o, z[s], H_in[s], p[s], theta_in[s], a + (o - o0));
        activate_block(P.activation, a, y[s] + o0, static_cast<int>(o1 - o0));
        if (P.lstm) lstm_rows(P, t, b0 + s, o0, o1, gates[s]);
        if (row_local)
          for (int64_t q = o0; q < o1; ++q)
            update_row<V>(P, q, y[s][q], m_ext[s] ? m_ext[s][q] : T(0), p[s], H_in[s] + q * I,
                          H[s] + q * I, E[s] ? E_in[s] + q * I : nullptr,
                          E[s] ? E[s] + q * I : nullptr);
      }
    }
    for (int s = 0; s < n; ++s) {
      if (t >= len[s]) continue;
      if (!row_local) {
        if (modulated) modulation_of_step(P, t, b0 + s, m);
        for (int64_t o = 0; o < O; ++o)
          update_row<V>(P, o, y[s][o], modulated ? m[o] : T(0), p[s], H_in[s] + o * I,
                        H[s] + o * I, E[s] ? E_in[s] + o * I : nullptr,
                        E[s] ? E[s] + o * I : nullptr);
      }
      if (theta[s])
        for (int64_t o = 0; o < O; ++o)
          theta[s][o] = theta_in[s][o] + P.threshold_rate * (y[s][o] - P.target_activity);
      if (P.record_modulation && modulated)
        std::memcpy(P.record_modulation + (t * B + b0 + s) * O, row_local ? m_ext[s] : m,
                    sizeof(T) * O);
      record_trace(P, t, b0 + s, H[s]);
    }
  }
  // Past its length a sequence's trace records hold.
  for (int s = 0; s < n; ++s)
    for (int64_t t = len[s]; t < T_; ++t) record_trace(P, t, b0 + s, H[s]);
}

// Whether forward_group_deferred takes the call: sequences of several steps, without synaptic
// scaling (whose row norm needs the whole updated row before any of it is read) or recording.
// A single step gains nothing: its rows are read for the pre-activation and the update alike,
// and forward_group reads them once.
template <typename T>
bool deferred_forward_applies(const ScanParams<T>& P) {
  return P.T >= 2 && !P.has_scaling && !P.record_norm && !P.record_trace && !P.record_modulation;
}

// forward_group with each step's trace update deferred into the next step's pass
// (update_and_preactivate_rows): the pass of step t steps every row of H_{t-1} to H_t and
// computes a_t from it, so a row is loaded once per step and the update of step t − 1 needs no
// pass of its own; a last pass (t = the sequence's length) updates alone. Internal modulation,
// whose m_{t-1} needs all of y_{t-1}, is then row-local too: m_{t-1} is known when step t's
// pass begins. Same arithmetic as forward_group, element by element, so the same results.
template <typename V, typename T>
void forward_group_deferred(const ScanParams<T>& P, int64_t b0, int n) {
  constexpr bool elig = V::Rule::eligibility, modulated = V::Rule::modulated;
  const int64_t B = P.B, O = P.O, I = P.I, OI = O * I;
  auto g = GroupState<T>::template begin<V>(P, b0, n);
  T *const *H = g.H, *const *E = g.E, *const *theta = g.theta;
  const int64_t* len = g.len;
  const int64_t steps = g.steps;
  // m_{t-1} of each sequence under internal modulation.
  std::vector<T> m_internal(modulated && P.internal_modulation() ? n * O : 0);

  for (int64_t t = 0; t <= steps; ++t) {
    // Per sequence: whether the pass computes step t (pre) and updates the trace of step t − 1
    // (update); the state step t reads (H_{t-1} before its update: the initial state at t ≤ 1).
    bool pre[kForwardGroup], update[kForwardGroup];
    const T *p[kForwardGroup], *z[kForwardGroup], *theta_in[kForwardGroup];
    const T *H_src[kForwardGroup], *E_src[kForwardGroup];
    const T *y_prev[kForwardGroup], *p_prev[kForwardGroup], *m_prev[kForwardGroup];
    T *y[kForwardGroup], *ckpt_H[kForwardGroup], *ckpt_E[kForwardGroup];
    for (int s = 0; s < n; ++s) {
      const int64_t b = b0 + s;
      pre[s] = t < len[s];
      update[s] = t >= 1 && t <= len[s];
      const bool initial = t <= 1;
      H_src[s] = initial ? P.trace0 + b * OI : H[s];
      E_src[s] = elig ? (initial ? P.elig0 + b * OI : E[s]) : nullptr;
      ckpt_H[s] = pre[s] ? P.checkpoint_slot(P.trace_ckpt, t, b) : nullptr;
      ckpt_E[s] = pre[s] ? P.checkpoint_slot(P.elig_ckpt, t, b) : nullptr;
      if (pre[s]) {
        theta_in[s] = theta[s] && t == 0 ? P.theta0 + b * O : theta[s];
        p[s] = P.presynaptic(t, b);
        z[s] = P.z_row(t, b) + (P.lstm ? 2 * O : 0);  // the LSTM's plastic rows: g
        y[s] = P.y + (t * B + b) * O;
      }
      if (update[s]) {
        y_prev[s] = P.y + ((t - 1) * B + b) * O;
        p_prev[s] = P.presynaptic(t - 1, b);
        m_prev[s] = nullptr;
        if (modulated) {
          if (P.mod_source == ModSource::External) {
            m_prev[s] = P.modulation + ((t - 1) * B + b) * O;
          } else {
            m_prev[s] = m_internal.data() + s * O;
            modulation_of_step(P, t - 1, b, m_internal.data() + s * O);
          }
        }
      }
    }
    for (int64_t o0 = 0; o0 < O; o0 += kRowBlock) {
      const int64_t o1 = o0 + kRowBlock < O ? o0 + kRowBlock : O;
      T gates[kForwardGroup][3][kRowBlock];
      if (P.lstm) lstm_gate_block(P, o0, o1, n, pre, p, gates);
      // z_t of the next block's rows (the LSTM's four gates), asked for a block ahead: each
      // row adds its z at the end of its sums, and z, written by the input projection before
      // the call, is no longer in L2 by then; loaded only when needed, it stalled the pass.
      if (o1 < O)
        for (int s = 0; s < n; ++s)
          if (pre[s]) {
            if (P.lstm)
              for (int gate = -2; gate <= 1; ++gate) __builtin_prefetch(z[s] + gate * O + o1);
            else
              __builtin_prefetch(z[s] + o1);
          }
      for (int s = 0; s < n; ++s) {
        if (!pre[s] && !update[s]) continue;
        if (!pre[s]) {  // the sequence's last update
          for (int64_t q = o0; q < o1; ++q)
            update_row<V>(P, q, y_prev[s][q], m_prev[s] ? m_prev[s][q] : T(0), p_prev[s],
                          H_src[s] + q * I, H[s] + q * I, elig ? E_src[s] + q * I : nullptr,
                          elig ? E[s] + q * I : nullptr);
          continue;
        }
        // Outside the LSTM, a_t goes where y_t will be and is activated for the whole step at
        // once after the blocks: a block's eight activations were a chain of latencies ending
        // each block.
        T a_block[kRowBlock];
        T* a = P.lstm ? a_block : y[s] + o0;
        if (update[s]) {
          if (t >= 2)  // the state is the output, updated in place
            update_and_preactivate_block<V, true>(P, o0, o1, y_prev[s], m_prev[s], p_prev[s],
                                                  H[s], H[s], E[s], E[s], z[s], p[s],
                                                  theta_in[s], a);
          else  // step 1 reads the initial state
            update_and_preactivate_block<V, false>(P, o0, o1, y_prev[s], m_prev[s], p_prev[s],
                                                   H_src[s], H[s], E_src[s], E[s], z[s], p[s],
                                                   theta_in[s], a);
          // H_t (E_t), the state before step t, where a checkpoint keeps it.
          if (ckpt_H[s]) copy_to_checkpoint(ckpt_H[s] + o0 * I, H[s] + o0 * I, (o1 - o0) * I);
          if (ckpt_E[s]) copy_to_checkpoint(ckpt_E[s] + o0 * I, E[s] + o0 * I, (o1 - o0) * I);
        } else {  // step 0 reads the initial state, updated in the next pass
          int64_t o = o0;
          for (; o + 4 <= o1; o += 4)
            preactivation_rows<4>(P, o, z[s], H_src[s], p[s], theta_in[s], a + (o - o0));
          for (; o < o1; ++o)
            preactivation_rows<1>(P, o, z[s], H_src[s], p[s], theta_in[s], a + (o - o0));
        }
        if (P.lstm) {
          activate_block(P.activation, a, y[s] + o0, static_cast<int>(o1 - o0));
          lstm_rows(P, t, b0 + s, o0, o1, gates[s]);
        }
      }
    }
    if (!P.lstm)
      for (int s = 0; s < n; ++s)
        if (pre[s]) activate_block(P.activation, y[s], y[s], static_cast<int>(O));
    for (int s = 0; s < n; ++s)
      if (pre[s] && theta[s])
        for (int64_t o = 0; o < O; ++o)
          theta[s][o] = theta_in[s][o] + P.threshold_rate * (y[s][o] - P.target_activity);
  }
}

}  // namespace TORCHPLASTIC_CPU_ISA
}  // namespace cpu
}  // namespace torchplastic
