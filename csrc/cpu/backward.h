// The CPU backward of plastic_scan (equations: csrc/kernels/plastic_step.h and the rules).
//
// The backward walks segments of K steps in reverse. From the segment's checkpoint it computes
// anchors, the traces before every 4th step (every step under synaptic scaling), row by row
// from the stored outputs y_t (no matrix-vector product is repeated); then it sweeps the
// segment backward in one pass over the rows per step, each pass finishing one step and
// tracing the step before (backward_row), with each element of H_{t-1} stepped forward from
// its anchor in registers inside that pass: keeping every step's trace instead would push the
// working set out of L2. Gradients of the loop-invariant weights (W, z's producers) are left
// to GEMMs over the stored per-step vectors after the loop.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "cpu/rule_loops.h"
#include "cpu/simd.h"
#include "cpu/workspace.h"

namespace torchplastic {
namespace cpu {
namespace TORCHPLASTIC_CPU_ISA {

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

// One sequence's slabs of the gradients that sum over the sequences: dL/dα [O, I], dL/dη
// ([O, I] for η per connection, else [O]; null for a rule without η) and dL/dA–dL/dD
// ([4, O, I]; rules with coefficients).
template <typename T>
struct SequenceGrads {
  T* alpha = nullptr;
  T* eta = nullptr;
  T* coefficients = nullptr;

  // Sequence b's slabs in the gradients' buffers, which hold one slab per sequence.
  template <typename V>
  static SequenceGrads of_sequence(const ScanGradParams<T>& G, int64_t b, int64_t O, int64_t I) {
    const int64_t OI = O * I;
    SequenceGrads sg;
    sg.alpha = G.grad_alpha + b * OI;
    sg.eta = G.grad_eta ? G.grad_eta + b * (V::eta_per_connection ? OI : O) : nullptr;
    sg.coefficients = G.grad_coefficients ? G.grad_coefficients + b * 4 * OI : nullptr;
    return sg;
  }

  // Zeroes rows o .. o + rows − 1 of every slab: the whole sequence's at once (rows = O), or a
  // row just before its passes add to it (a single step).
  template <typename V>
  void zero_rows(int64_t O, int64_t I, int64_t o, int64_t rows) const {
    std::fill_n(alpha + o * I, rows * I, T(0));
    if (eta) {
      if (V::eta_per_connection) std::fill_n(eta + o * I, rows * I, T(0));
      else std::fill_n(eta + o, rows, T(0));
    }
    if (coefficients)
      for (int j = 0; j < 4; ++j) std::fill_n(coefficients + j * O * I + o * I, rows * I, T(0));
  }
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
// Rows rows from o per call (2 in the fused passes where fused_pairs says so, and in a single
// step's halves where its rows are short, see single_step_rows; else 1): element
// i of both rows in one loop iteration, so p_t, p_{t+1} and the replayed steps' p are loaded,
// and dL/dp_t and dL/dp_{t+1} loaded and stored, once for the two (four rows per call run out
// of registers). The rows' order in the sums over rows (dL/dp) is the same as one at a time,
// so pairs and single rows give the same results, bit for bit.
// Ht, Et: row o of H_{t-1}, E_{t-1}. With Replay > 0 (fused passes only), row o of tr's anchor,
// Replay steps before them: each element is stepped forward through those steps in registers
// first.
template <typename V, bool Finish, bool Trace, int Replay, int Rows, typename T>
void backward_row(const ScanParams<T>& P, const BackwardWorkspace<T>& S, const StepView<T>& fin,
                  const StepView<T>& tr, const T* Ht, const T* Et, const SequenceGrads<T>& sg,
                  int64_t o) {
  static_assert(Replay == 0 || (Finish && Trace), "backward_row: replays in fused passes only");
  // Pairs outside the fused passes: a single step's halves (single_step_rows), which replay
  // nothing and never run under synaptic scaling (its row norm below is one row's).
  static_assert(Rows == 1 || (Finish && Trace) || Replay == 0,
                "backward_row: replayed row pairs in fused passes only");
  static_assert(Replay <= 3, "backward_row: replays of up to 3 steps (written out below)");
  using R = typename V::Rule;
  constexpr bool retro = R::eligibility;
  constexpr int L = kLanes<T>;
  const int64_t I = P.I, row0 = o * I;
  // Row r of the call is at offset r·I in every [O, I] array below.
  T* gH = S.gH + row0;
  T* gE = retro ? S.gE + row0 : nullptr;
  // dL/dH_t (dL/dE_t) as the trace half reads it: in place, or from S.gH_in (S.gE_in) into gH.
  const bool apart = Trace && !Finish && S.gH_in;
  const T* gH_src = apart ? S.gH_in + row0 : gH;
  const T* gE_src = retro ? (apart ? S.gE_in + row0 : gE) : nullptr;

  // finish(t+1): H_t (the candidate of trace(t) when fused), p_{t+1}, dL/da_{t+1}.
  const T* alpha = P.alpha + row0;
  const T* Hf = Finish && !Trace ? fin.H_anchor + row0 : nullptr;
  const T* W = P.recurrent ? P.weight + row0 : nullptr;
  T* gar = sg.alpha + row0;
  const T* pf = fin.p;
  T ga[Rows];
  for (int r = 0; r < Rows; ++r) ga[r] = Finish ? S.ga[o + r] : T(0);

  // trace(t): H_{t-1} (E_{t-1}), y_t, m_t, η, p_t, and synaptic scaling's factors, which need
  // ‖H'‖ and G·H' of the whole row before any element's gradient.
  const T* pt = tr.p;
  // η per connection implies a rule with η, whose dL/dη slab always exists.
  T* geta_conn = V::eta_per_connection ? sg.eta + row0 : nullptr;
  T* gk = R::coefficients ? sg.coefficients + row0 : nullptr;
  const int64_t OI = P.O * I;
  const T clip = P.clip;  // read once: see next_trace
  const T* eta = P.eta_row(o);
  const int64_t eta_stride = P.eta_row_stride;
  T eta_o[Rows], yo[Rows], mo[Rows];
  for (int r = 0; r < Rows; ++r) {
    eta_o[r] = P.eta_row(o + r)[0];
    yo[r] = Trace ? tr.y[o + r] : T(0);
    mo[r] = Trace && R::modulated ? S.m[o + r] : T(0);
  }
  T scale = 1, scale_grad = 0;
  if (Rows == 1 && Trace && P.has_scaling) {
    T sumsq[L] = {}, dot[L] = {};
    for_lanes<T>(I, [&](int64_t i, int l) TP_ALWAYS_INLINE {
      T E = retro ? Et[i] : T(0);
      const T C =
          next_trace<V>(P, clip, row0 + i, Ht[i], E, yo[0], pt[i], mo[0],
                        eta_at<V>(eta, eta_o[0], i));
      sumsq[l] += C * C;
      dot[l] += gH_src[i] * C;
    });
    const T norm = std::sqrt(sum_lanes<T>(sumsq, I));
    if (norm > P.scaling) {
      scale = P.scaling / norm;
      scale_grad = P.scaling * sum_lanes<T>(dot, I) / (norm * norm * norm);
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
      replay_m[d][r] = R::modulated ? tr.replay_m[d * P.O + o + r] : T(0);
    }
    replay_p[d] = P.presynaptic(t, tr.b);
  }

  // With η one per row, and a rule with a row form, the row's sums come from dot products
  // (Rule::RowBackward); otherwise each connection goes through Rule::backward.
  constexpr bool row_sums = R::row_form && !V::eta_per_connection;
  using RowBackward = typename RowBackwardOf<R, T>::type;
  RowBackward k[Rows];
  for (int r = 0; r < Rows; ++r) k[r] = RowBackward(yo[r], mo[r], eta_o[r]);
  T gy[Rows][L] = {}, gm[Rows][L] = {}, geta[Rows][L] = {};  // per connection: the sums
  T up[Rows][L] = {}, ux[Rows][L] = {}, gce[Rows][L] = {};   // row sums: the dot products
  T* gp_done = S.gp_done;
  T* gp = S.gp;
  // Element i of each row. `scaled` and `recurrent` are types (true or false), so that each
  // variant's loop carries only its own terms.
  auto sweep = [&](auto scaled, auto recurrent) {
    for_lanes<T>(I, [&](int64_t i, int l) TP_ALWAYS_INLINE {
      T gp_done_i = Finish ? gp_done[i] : T(0);
      T gp_i = Trace ? gp[i] : T(0);
      // Every load of the element before its first store. A load that follows a store to an
      // address equal to it modulo 4 KiB waits for that store, and the caller's α and W may lie
      // at the offset of a gradient slab or the workspace modulo 4 KiB; loads after the stores
      // through the rows would also be repeated, since those stores may alias them.
      const T pf_i = Finish ? pf[i] : T(0), pt_i = Trace ? pt[i] : T(0);
      T replay_p_i[kReplay];
      for (int d = 0; d < Replay; ++d) replay_p_i[d] = replay_p[d][i];
      T g_in[Rows], eta_in[Rows], H_in[Rows], E_in[Rows], gE_in[Rows];
      T alpha_in[Rows], Hf_in[Rows], gar_in[Rows], W_in[Rows];
      // And η's per-connection slab, which starts at dL/dα's offset modulo 4 KiB, as every
      // gradient buffer the op allocates does. (Rule abcd's slabs of dL/dA–D, read the same way,
      // made its loop slower.)
      T geta_in[Rows];
#pragma GCC unroll 2
      for (int r = 0; r < Rows; ++r) {
        const int64_t ri = r * I + i;
        geta_in[r] = Trace && V::eta_per_connection ? geta_conn[ri] : T(0);
        g_in[r] = gH_src[ri];
        eta_in[r] = Trace ? eta_at<V>(eta + r * eta_stride, eta_o[r], i) : T(0);
        H_in[r] = Trace ? Ht[ri] : T(0);
        E_in[r] = Trace && retro ? Et[ri] : T(0);
        gE_in[r] = Trace && retro ? gE_src[ri] : T(0);
        alpha_in[r] = Finish ? alpha[ri] : T(0);
        Hf_in[r] = Finish && !Trace ? Hf[ri] : T(0);
        gar_in[r] = Finish ? gar[ri] : T(0);
        W_in[r] = Finish && decltype(recurrent)::value ? W[ri] : T(0);
      }
#pragma GCC unroll 2
      for (int r = 0; r < Rows; ++r) {
        const int64_t ri = r * I + i;
        T g = g_in[r];
        const T eta_i = eta_in[r];
        T H = H_in[r], E = E_in[r];
        // The replayed steps written out, not looped: GCC 12 leaves the whole row loop scalar
        // around a loop of one iteration when the rule clips ("control flow in loop").
        auto replay_step = [&](auto d) TP_ALWAYS_INLINE {
          if constexpr (decltype(d)::value < Replay)
            H = next_trace<V>(P, clip, row0 + ri, H, E, replay_y[d][r], replay_p_i[d],
                              replay_m[d][r], eta_i);
        };
        replay_step(std::integral_constant<int, 0>{});
        replay_step(std::integral_constant<int, 1>{});
        replay_step(std::integral_constant<int, 2>{});
        T C = 0;
        if (Trace && (Finish || decltype(scaled)::value || V::clip))
          C = R::candidate(kernels::synapse<R>(P, row0 + ri, H, E, yo[r], pt_i, mo[r], eta_i));
        if (Finish) {
          const T a = alpha_in[r], gap = ga[r] * pf_i;
          const T h = Trace ? (V::clip ? kernels::clip_value(C, clip) : C) : Hf_in[r];
          g += gap * a;
          gar[ri] = gar_in[r] + gap * h;
          gp_done_i += ga[r] * (decltype(recurrent)::value ? a * h + W_in[r] : a * h);
        }
        if (Trace) {
          T gC = g;
          if (decltype(scaled)::value) {
            const T Hc = V::clip ? kernels::clip_value(C, clip) : C;
            gC = scale * gC - scale_grad * Hc;
          }
          if (V::clip) gC *= kernels::clip_grad_mask(C, clip);
          T gE_prev = 0;
          if constexpr (row_sums) {
            g = k[r].element(gC, gE_in[r], H, E, pt_i, gE_prev, gp_i, up[r][l],
                             ux[r][l], gce[r][l]);
          } else {
            kernels::SynapseGrad<T> dg;
            const auto s = kernels::synapse<R>(P, row0 + ri, H, E, yo[r], pt_i, mo[r], eta_i);
            g = R::backward(gC, gE_in[r], s, dg, gE_prev);
            gy[r][l] += dg.y;
            gp_i += dg.p;
            gm[r][l] += dg.m;
            if (V::eta_per_connection) geta_conn[ri] = geta_in[r] + dg.eta;
            else geta[r][l] += dg.eta;
            if constexpr (R::coefficients)
              for (int j = 0; j < 4; ++j) gk[j * OI + ri] += dg.k[j];
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
      if constexpr (row_sums) {
        const auto sums = RowBackward::finish(sum_lanes<T>(up[r], I), sum_lanes<T>(ux[r], I),
                                              sum_lanes<T>(gce[r], I), yo[r], mo[r], eta_o[r]);
        S.gy[o + r] += sums.y;
        S.gm[o + r] = sums.m;
        if (sg.eta) sg.eta[o + r] += sums.eta;
      } else {
        S.gy[o + r] += sum_lanes<T>(gy[r], I);
        S.gm[o + r] = sum_lanes<T>(gm[r], I);
        if (!V::eta_per_connection && sg.eta) sg.eta[o + r] += sum_lanes<T>(geta[r], I);
      }
    }
}

// Row o of H_{t-1} (E_{t-1}) for view v: its anchor's row stepped forward v.replay steps into
// the scratch rows S.row_H (S.row_E), or the anchor's row itself when there is none to replay.
// For the passes that trace without finishing (step T − 1); fused passes replay in their loop.
template <typename V, typename T>
TP_ALWAYS_INLINE inline void replay_row(const ScanParams<T>& P, const BackwardWorkspace<T>& S,
                                        const StepView<T>& v, int64_t o, const T*& H,
                                        const T*& E) {
  constexpr bool retro = V::Rule::eligibility;
  const int64_t r = o * P.I;
  H = v.H_anchor + r;
  E = retro ? v.E_anchor + r : nullptr;
  if (v.replay == 0) return;
  advance_row<V>(P, v.replay, v.b, v.t - v.replay, v.replay_m, o, H, S.row_H, E, S.row_E);
  H = S.row_H;
  E = retro ? S.row_E : nullptr;
}

// Whether the fused passes take rows in pairs for rows of I elements. With 32 vector registers
// (AVX-512) a pair's accumulators and constants fit. With 16 (AVX2, generic) they do not, and
// two of a pair's accumulators live on the stack, each iteration's sum waiting on the store
// of the last: there rows one at a time are faster once a sequence's rows outgrow L2, while
// short rows, whose sequence fits, still gain from pairs' shared loads of p. The bound of 128
// was measured on a Zen 3 with 512 KB of L2 (docs/performance.md, the CPU op).
TP_ALWAYS_INLINE inline bool fused_pairs(int64_t I) {
#if defined(__AVX512F__)
  (void)I;
  return true;
#else
  return I <= 128;
#endif
}

// The fused pass (finish(t+1) and trace(t)) over Rows rows from o, with tr.replay steps
// replayed in the loop; the anchor's rows go in as they are.
template <typename V, int Rows, typename T>
TP_ALWAYS_INLINE inline void fused_rows(const ScanParams<T>& P, const BackwardWorkspace<T>& S,
                                        const StepView<T>& fin, const StepView<T>& tr,
                                        const SequenceGrads<T>& sg, int64_t o) {
  static_assert(BackwardWorkspace<T>::kAnchorEvery <= 4, "fused_rows: replays of up to 3");
  const T* H = tr.H_anchor + o * P.I;
  const T* E = V::Rule::eligibility ? tr.E_anchor + o * P.I : nullptr;
  auto row = [&](auto replay) TP_ALWAYS_INLINE {
    backward_row<V, true, true, decltype(replay)::value, Rows>(P, S, fin, tr, H, E, sg, o);
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
                   bool trace, const StepView<T>& fin, const StepView<T>& tr,
                   const SequenceGrads<T>& sg) {
  if (finish && trace && !P.has_scaling) {
    // Rows in pairs where they pay (the last alone when O is odd), replays inside the loop.
    int64_t o = 0;
    if (fused_pairs(P.I))
      for (; o + 2 <= P.O; o += 2) fused_rows<V, 2>(P, S, fin, tr, sg, o);
    for (; o < P.O; ++o) fused_rows<V, 1>(P, S, fin, tr, sg, o);
    return;
  }
  for (int64_t o = 0; o < P.O; ++o) {
    const T *H = nullptr, *E = nullptr;
    if (trace) replay_row<V>(P, S, tr, o, H, E);
    if (finish) backward_row<V, true, false, 0, 1>(P, S, fin, tr, H, E, sg, o);
    if (trace) backward_row<V, false, true, 0, 1>(P, S, fin, tr, H, E, sg, o);
  }
}

// The anchors of a segment: the traces before its steps R, 2R, ... (R = S.anchor_every), from
// its checkpoint, the trace before its step 0, row by row. Under synaptic scaling R is 1 and
// update_row takes each step (with the row's norm); otherwise advance_row goes from one anchor
// to the next in one pass.
template <typename V, typename T>
void compute_anchors(const ScanParams<T>& P, const BackwardWorkspace<T>& S, int64_t b,
                     int64_t t0, int64_t steps, const T* ckpt_H, const T* ckpt_E) {
  constexpr bool retro = V::Rule::eligibility, modulated = V::Rule::modulated;
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

}  // namespace TORCHPLASTIC_CPU_ISA
}  // namespace cpu
}  // namespace torchplastic
