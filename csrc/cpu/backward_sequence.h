// The CPU backward of one sequence (backward_sequence): its segments in reverse, each from its
// checkpoint through the row passes of csrc/cpu/backward.h; and the single step of a cell
// (backward_single_step), whose rows are each traced and finished in one visit, or of a whole
// batch in blocks of rows (batch_single_step_rows).
#pragma once

#include <cstring>
#include <vector>

#include "cpu/backward.h"
#include "cpu/lstm.h"

namespace torchplastic {
namespace cpu {
namespace TORCHPLASTIC_CPU_ISA {

// A one-step sequence's trace gradients, in place: S's trace passes read dL/dH_1 (dL/dE_1)
// where the caller's gradient is and write dL/dH_0 (dL/dE_0) where it is returned, which the
// finish passes then update in place; no copy of either.
template <typename T>
void trace_grads_in_output(const ScanGradParams<T>& G, int64_t b, int64_t OI, bool retro,
                           BackwardWorkspace<T>& S) {
  S.gH = G.grad_trace0 + b * OI;
  S.gH_in = G.final_trace_grad(b);
  if (retro) {
    S.gE = G.grad_elig0 + b * OI;
    S.gE_in = G.final_elig_grad(b);
  }
}

// Rows o0 .. o1 − 1 of sequence b's backward when it has a single step (T_ = 1, a cell's step)
// and its modulation, if any, is row-local (external): each row is traced, then finished while
// its rows of H_0 and dL/dH are still in L1, instead of a pass over all rows for each half. Row
// o's dL/da_0 is complete once its trace half is, as nothing of the other rows reaches dL/dy_0
// (internal modulation would, through m_0, which reads all of y_0). A row's trace half reads
// dL/dH_1 (dL/dE_1) where the caller's gradient is and writes dL/dH_0 (dL/dE_0) into the
// output, which its finish half then updates in place; the row's slab rows are zeroed if
// `zero_slabs`, just before its passes, so that these land in L1 for them instead of taking a
// pass over the whole trace first. The rows' share of dL/dp_0 goes to grad_p [I] (O:
// recurrent). With next ≥ 0 and short rows (kShortRow), each row's H_0 (E_0) and dL/dH_1
// (dL/dE_1) of sequence `next` are asked for while the row is computed here: a batch's row
// block takes its sequences in turn, and each one's kept trace, written by the forward long
// before, comes from memory; without the hint its trace half waited on those loads
// (docs/performance.md, "Single steps and rollouts").
template <typename V, typename T>
void single_step_rows(const ScanParams<T>& P, const ScanGradParams<T>& G, int64_t b, int64_t o0,
                      int64_t o1, const BackwardWorkspace<T>& workspace,
                      const SequenceGrads<T>& sg, bool zero_slabs, T* grad_p,
                      int64_t next = -1) {
  constexpr bool retro = V::Rule::eligibility, modulated = V::Rule::modulated;
  const int64_t O = P.O, I = P.I, OI = O * I;
  BackwardWorkspace<T> S = workspace;
  trace_grads_in_output(G, b, OI, retro, S);
  StepView<T> step;
  step.t = 0;
  step.b = b;
  step.y = P.y + b * O;
  step.p = P.presynaptic(0, b);
  step.H_anchor = P.segment_trace(0, b);  // H_0, the initial trace; nothing to replay
  step.E_anchor = retro ? P.segment_elig(0, b) : nullptr;
  if (modulated) modulation_of_step(P, 0, b, S.m);
  const T* grad_y = G.grad_y + b * O;
  const T* grad_theta = P.has_threshold ? G.grad_theta + b * O : nullptr;
  const T* grad_hidden = P.recurrent ? G.grad_hidden + b * O : nullptr;
  T* grad_z = G.grad_z + b * O;
  const int64_t Ip = P.recurrent ? O : I;
  std::fill_n(S.gp, Ip, T(0));       // dL/dp_0: the trace halves' share
  std::fill_n(S.gp_done, Ip, T(0));  // and the finish halves'
  // Rows rows from o: traced, then finished. In pairs where rows are short (kShortRow, and
  // where the fused passes take pairs at all: fused_pairs), where a call's setting up and its
  // sums across lanes are a large share of a row's time; each row's arithmetic is as alone, so
  // the results are the same (docs/performance.md, "Single steps and rollouts").
  auto rows = [&](auto count, int64_t o) TP_ALWAYS_INLINE {
    constexpr int Rows = decltype(count)::value;
    const int64_t row = o * I;
    if (zero_slabs) sg.template zero_rows<V>(O, I, o, Rows);
    const T* H = step.H_anchor + row;
    const T* E = retro ? step.E_anchor + row : nullptr;
    if (next >= 0 && I < kShortRow) {
      prefetch_lines(P.segment_trace(0, next) + row, Rows * I);
      if (retro) prefetch_lines(P.segment_elig(0, next) + row, Rows * I);
      // A gradient the same for every sequence (stride 0) is in cache already.
      if (G.grad_trace_stride)
        prefetch_lines(G.final_trace_grad(next) + row, Rows * I);
      if (retro && G.grad_elig_stride)
        prefetch_lines(G.final_elig_grad(next) + row, Rows * I);
    }
    for (int64_t q = o; q < o + Rows; ++q)
      S.gy[q] = grad_y[q] + (grad_theta ? P.threshold_rate * grad_theta[q] : T(0));
    backward_row<V, false, true, 0, Rows>(P, S, step, step, H, E, sg, o);
    for (int64_t q = o; q < o + Rows; ++q) {
      const T gy = S.gy[q] + (grad_hidden ? grad_hidden[q] : T(0));
      S.ga[q] = grad_z[q] = gy * kernels::activation_grad(P.activation, step.y[q]);
    }
    backward_row<V, true, false, 0, Rows>(P, S, step, step, H, E, sg, o);
    for (int64_t q = o; q < o + Rows; ++q) {
      if (modulated) G.grad_mod[b * O + q] = S.gm[q];
      if (grad_theta) G.grad_theta0[b * O + q] = grad_theta[q] - S.ga[q];
    }
  };
  int64_t o = o0;
  if (I < kShortRow && fused_pairs(I))
    for (; o + 2 <= o1; o += 2) rows(std::integral_constant<int, 2>{}, o);
  for (; o < o1; ++o) rows(std::integral_constant<int, 1>{}, o);
  for (int64_t i = 0; i < Ip; ++i) grad_p[i] = S.gp_done[i] + S.gp[i];
}

// The backward of sequence b when it has a single step (see single_step_rows): all its rows,
// into its own slabs.
template <typename V, typename T>
void backward_single_step(const ScanParams<T>& P, const ScanGradParams<T>& G, int64_t b,
                          const BackwardWorkspace<T>& S, const SequenceGrads<T>& sg) {
  single_step_rows<V>(P, G, b, 0, P.O, S, sg, true,
                      P.recurrent ? G.grad_hidden0 + b * P.O : G.grad_x + b * P.I);
}

// Rows o0 .. o1 − 1 of a batch's single step (every sequence one step long, modulation
// row-local, G.slabs_summed): the batch's sequences in order, each row block's dL/dα (dL/dη,
// dL/dA–D) summed over them in that order into the one slab G holds, where it stays in cache
// from one sequence to the next; a slab per sequence would be written out and read back to
// be summed. Each sequence's share of dL/dp_0 from these rows goes to grad_p [B, I] (O:
// recurrent), which the caller sums over the row blocks in order, so the results depend on
// the blocks (fixed by O) but not on the threads.
template <typename V, typename T>
void batch_single_step_rows(const ScanParams<T>& P, const ScanGradParams<T>& G, int64_t o0,
                            int64_t o1, const BackwardWorkspace<T>& S, T* grad_p) {
  const SequenceGrads<T> sg = SequenceGrads<T>::template of_sequence<V>(G, 0, P.O, P.I);
  sg.template zero_rows<V>(P.O, P.I, o0, o1 - o0);
  const int64_t Ip = P.recurrent ? P.O : P.I;
  for (int64_t b = 0; b < P.B; ++b)
    single_step_rows<V>(P, G, b, o0, o1, S, sg, false, grad_p + b * Ip,
                        b + 1 < P.B ? b + 1 : -1);
}

// The backward of one sequence, in the steps a caller interleaves with other sequences': begin,
// then per segment from the last (segment) its steps from the last (step), then end. Between
// them, in the plastic LSTM, the caller adds the gates i, f, o's share of dL/dp_t
// (lstm_ifo_product over grad_z(t) into gp()), which backward_lstm_group does for several
// sequences at once. backward_sequence runs one sequence alone.
template <typename V, typename T>
class SequenceBackward {
  static constexpr bool retro = V::Rule::eligibility, modulated = V::Rule::modulated;

 public:
  SequenceBackward(const ScanParams<T>& P, const ScanGradParams<T>& G, int64_t b,
                   const BackwardWorkspace<T>& workspace)
      : P(P), G(G), b(b), T_(P.length(b)), B(P.B), O(P.O), I(P.I), OI(O * I),
        K(P.checkpoint_every), Z(P.lstm ? 4 * O : O), row_local(!P.internal_modulation()),
        // This sequence's dL/dα and dL/dη slabs, which the caller leaves uninitialised: zeroed
        // in begin, just before the passes add to them (a separate pass over all the slabs
        // first had cost a trip through memory), and by a single step row by row.
        sg(SequenceGrads<T>::template of_sequence<V>(G, b, O, I)), S(workspace) {
    // Loop invariant, between steps: S.gH = dL/dH_t, S.gE = dL/dE_t, S.gtheta = dL/dθ_t, and
    // S.gh = dL/dy_t from the later steps, for the last step t not yet traced. A single step
    // updates dL/dH (dL/dE) where it is returned, its trace pass reading dL/dH_1 (dL/dE_1)
    // where the caller's gradient is (S.gH_in): no copy of it at all; longer sequences keep it
    // in the workspace, whose arrays are laid out not to alias the anchors.
    if (grads_in_output()) trace_grads_in_output(G, b, OI, retro, S);
  }

  int64_t segments() const { return P.num_segments(b); }
  // Whether backward_single_step takes the sequence (after begin): a single step whose
  // modulation, if any, is row-local (external).
  bool single_step() const { return T_ == 1 && row_local && !P.lstm && !P.has_scaling; }
  // The gates' pre-activation gradients of step t [Z], and dL/dp of the step being traced.
  T* grad_z(int64_t t) const { return G.grad_z + (t * B + b) * Z; }
  T* gp() const { return S.gp; }
  // Step j of the current segment.
  int64_t time(int64_t j) const { return t0 + j; }

  void begin() const {
    // Past this sequence's steps its outputs, held state and gradients are zero.
    for (int64_t t = T_; t < P.T; ++t) {
      std::fill_n(grad_z(t), Z, T(0));
      if (!P.recurrent) std::fill_n(G.grad_x + (t * B + b) * I, I, T(0));
      if (modulated) std::fill_n(G.grad_mod + (t * B + b) * O, O, T(0));
      if (!row_local) G.grad_mod_pre[t * B + b] = G.mod_signal[t * B + b] = T(0);
    }
    if (single_step()) return;  // backward_single_step zeroes the slabs row by row
    sg.template zero_rows<V>(O, I, 0, O);
    if (!grads_in_output()) {
      std::memcpy(S.gH, G.final_trace_grad(b), sizeof(T) * OI);
      if (retro) std::memcpy(S.gE, G.final_elig_grad(b), sizeof(T) * OI);
    }
    if (P.has_threshold) std::memcpy(S.gtheta, G.grad_theta + b * O, sizeof(T) * O);
    if (P.recurrent) std::memcpy(S.gh, G.grad_hidden + b * O, sizeof(T) * O);
    if (P.lstm) std::memcpy(S.gc, G.grad_cell + b * O, sizeof(T) * O);
  }

  // Segment seg's m_t (the replays need them) and anchors; returns its number of steps.
  int64_t segment(int64_t seg) {
    t0 = seg * K;
    const int64_t len = T_ - t0 < K ? T_ - t0 : K;
    ckpt_H = P.segment_trace(seg, b);
    ckpt_E = retro ? P.segment_elig(seg, b) : nullptr;
    if (modulated)
      for (int64_t j = 0; j < len; ++j) modulation_of_step(P, t0 + j, b, S.m_seg + j * O);
    const int64_t every = S.anchor_every;
    compute_anchors<V>(P, S, b, t0, (len - 1) / every * every, ckpt_H, ckpt_E);
    return len;
  }

  // Step j of the segment: the pass that traces it and finishes the step after (step T − 1
  // has nothing to finish; step 0 is finished alone in end). Every step is handled the same
  // way whatever K, so results do not depend on K, bit for bit.
  void step(int64_t j) {
    const int64_t t = t0 + j;
    const bool finish = t + 1 < T_;
    const int64_t every = S.anchor_every;
    StepView<T> view;
    view.t = t;
    view.b = b;
    view.y = P.y + (t * B + b) * O;
    view.p = P.presynaptic(t, b);
    const int64_t q = j / every;  // anchor
    view.H_anchor = q == 0 ? ckpt_H : S.seg_H + (q - 1) * S.seg_stride;
    view.E_anchor = !retro ? nullptr : q == 0 ? ckpt_E : S.seg_E + (q - 1) * S.seg_stride;
    view.replay = static_cast<int>(j - q * every);
    view.replay_m = S.m_seg + q * every * O;
    T s = 0;
    if (modulated) s = modulation_of_step(P, t, b, S.m);

    // dL/dy_t so far; the share through p_{t+1} (recurrent) is added once finish(t + 1) has
    // completed it.
    // (In the LSTM, y is g, whose output is h: grad_y joins dL/dh_t below.)
    const T* grad_y = G.grad_y + (t * B + b) * O;
    for (int64_t o = 0; o < O; ++o) {
      T g = P.lstm ? T(0) : grad_y[o];
      if (P.has_threshold) g += P.threshold_rate * S.gtheta[o];
      S.gy[o] = g;
    }
    if (finish) std::memcpy(S.gp_done, S.gp, sizeof(T) * I);  // trace(t + 1)'s share
    for (int64_t i = 0; i < I; ++i) S.gp[i] = 0;

    backward_pass<V>(P, S, finish, true, pending, view, sg);

    if (finish) deliver_grad_p(t + 1);
    // dL/dh_t so far: in the LSTM, into S.gh with the output's gradient; otherwise h_t is y_t.
    T* grad_post = P.lstm ? S.gh : S.gy;
    if (P.lstm)
      for (int64_t o = 0; o < O; ++o) S.gh[o] += grad_y[o];
    else if (P.recurrent)
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
      for (int64_t o = 0; o < O; ++o) grad_post[o] += gpre * P.mod_weight[o];
    }
    // dL/da_t, now complete: its per-row part here, the rest in finish(t).
    T* gz = grad_z(t);
    if (P.lstm) {
      lstm_cell_grads(P, S, t, b, gz);
    } else {
      for (int64_t o = 0; o < O; ++o) {
        const T ga = S.gy[o] * kernels::activation_grad(P.activation, view.y[o]);
        S.ga[o] = ga;
        gz[o] = ga;
      }
    }
    if (P.has_threshold)
      for (int64_t o = 0; o < O; ++o) S.gtheta[o] -= S.ga[o];
    // finish(t) runs in the next step's pass; for t = t0, in the next segment's first pass,
    // after the anchors are overwritten: it takes H_{t0} from trace(t0 − 1) (or, alone, from
    // the checkpoint `pending` points to).
    pending = view;
  }

  void end() {
    if (T_ > 0) {
      std::memcpy(S.gp_done, S.gp, sizeof(T) * I);
      backward_pass<V>(P, S, true, false, pending, pending, sg);
      deliver_grad_p(0);
    }
    if (!grads_in_output()) {
      std::memcpy(G.grad_trace0 + b * OI, S.gH, sizeof(T) * OI);
      if (retro) std::memcpy(G.grad_elig0 + b * OI, S.gE, sizeof(T) * OI);
    }
    if (P.has_threshold) std::memcpy(G.grad_theta0 + b * O, S.gtheta, sizeof(T) * O);
    if (P.recurrent) std::memcpy(G.grad_hidden0 + b * O, S.gh, sizeof(T) * O);
    if (P.lstm) std::memcpy(G.grad_cell0 + b * O, S.gc, sizeof(T) * O);
  }

  void single_step_backward() const { backward_single_step<V>(P, G, b, S, sg); }

 private:
  bool grads_in_output() const { return T_ == 1; }

  // dL/dp of the finished step t: dL/dh_{t-1} (recurrent) or dL/dx_t (feedforward).
  void deliver_grad_p(int64_t t) const {
    if (P.recurrent) std::memcpy(S.gh, S.gp_done, sizeof(T) * O);
    else std::memcpy(G.grad_x + (t * B + b) * I, S.gp_done, sizeof(T) * I);
  }

  const ScanParams<T>& P;
  const ScanGradParams<T>& G;
  const int64_t b, T_, B, O, I, OI, K, Z;  // T_: this sequence's steps
  const bool row_local;
  const SequenceGrads<T> sg;
  BackwardWorkspace<T> S;
  // The segment being swept: its first step and checkpoint.
  int64_t t0 = 0;
  const T *ckpt_H = nullptr, *ckpt_E = nullptr;
  StepView<T> pending;  // the traced step whose finish is still due
};

template <typename V, typename T>
void backward_sequence(const ScanParams<T>& P, const ScanGradParams<T>& G, int64_t b,
                       const BackwardWorkspace<T>& workspace) {
  SequenceBackward<V, T> sequence(P, G, b, workspace);
  sequence.begin();
  if (sequence.single_step()) return sequence.single_step_backward();
  for (int64_t seg = sequence.segments() - 1; seg >= 0; --seg)
    for (int64_t j = sequence.segment(seg) - 1; j >= 0; --j) {
      sequence.step(j);
      if (P.lstm) lstm_ifo_product(P, sequence.grad_z(sequence.time(j)), sequence.gp());
    }
  sequence.end();
}

// The plastic LSTM's backward of sequences b0 .. b0 + n − 1 (n ≤ kLstmBackwardGroup, W: a
// workspace each), in lockstep step by step, so that one read of W_ifo serves the whole
// group's share of dL/dh (lstm_ifo_products); each sequence's arithmetic is the same as alone,
// so the results do not depend on grouping. Sequences of different lengths go one at a time.
// (Interleaving the group's passes row by row as well, so that each row of α and W served all
// of them, was slower: docs/performance.md, the plastic LSTM.)
template <typename V, typename T>
void backward_lstm_group(const ScanParams<T>& P, const ScanGradParams<T>& G, int64_t b0, int n,
                         const BackwardWorkspace<T>* W) {
  constexpr int kMax = kLstmBackwardGroup;
  bool equal = n <= kMax;
  for (int s = 1; s < n && equal; ++s) equal = P.length(b0 + s) == P.length(b0);
  if (!equal || n == 1) {
    for (int s = 0; s < n; ++s) backward_sequence<V>(P, G, b0 + s, W[0]);
    return;
  }
  std::vector<SequenceBackward<V, T>> group;
  group.reserve(n);
  for (int s = 0; s < n; ++s) group.emplace_back(P, G, b0 + s, W[s]);
  const T* grad_z[kMax];
  T* gp[kMax];
  for (auto& sequence : group) sequence.begin();
  for (int64_t seg = group[0].segments() - 1; seg >= 0; --seg) {
    int64_t len = 0;
    for (auto& sequence : group) len = sequence.segment(seg);
    for (int64_t j = len - 1; j >= 0; --j) {
      for (int s = 0; s < n; ++s) {
        group[s].step(j);
        grad_z[s] = group[s].grad_z(group[s].time(j));
        gp[s] = group[s].gp();
      }
      lstm_ifo_products(P, n, grad_z, gp);
    }
  }
  for (auto& sequence : group) sequence.end();
}

}  // namespace TORCHPLASTIC_CPU_ISA
}  // namespace cpu
}  // namespace torchplastic
