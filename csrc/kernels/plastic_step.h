// One plastic_scan step around the rule (SPEC §2), shared by the CPU and CUDA kernels: the
// call's parameters, the activation, clipping. The rules are csrc/kernels/rules/.
//
// Torch-free: plain scalars, host and device functions, and a parameter struct of raw
// pointers, so the same lines compile with g++ and nvcc.
//
// One step for sequence b, postsynaptic o, presynaptic i (p = x_t or h_{t-1}):
//   a[o]    = z[o] + Σ_i (α[o,i] H[o,i] + W[o,i]) p[i] − θ[o]
//   y[o]    = φ(a[o])
//   m[o]    = external | s | s·f[o] + g[o],   s = tanh(Σ_o y[o] v[o] + c)
//   C[o,i]  = Rule::candidate (and E' = Rule::eligibility_next)
//   H'[o,i] = clamp(C, −c, c)                        (clipping, optional)
//   H'[o,:] ← H'[o,:] κ / ‖H'[o,:]‖  if ‖H'[o,:]‖ > κ  (synaptic scaling, optional)
//   θ'[o]   = θ[o] + ρ (y[o] − y*)                     (adaptive threshold, optional)
//
// The backward of a step, given G = dL/dH' (after scaling) and dL/dE':
//   scaling (row norm n > κ, s = κ/n):  dL/dH'_clipped = s G − κ (G·H'_clipped) H'_clipped / n³
//   clipping:                           dL/dC = dL/dH'_clipped · [−c ≤ C ≤ c]
//   then Rule::backward, and the activation via φ'(a) written in y.
//
// The plastic LSTM (SPEC §2b, O = I = H) is the same step around gates: a is the cell
// candidate's pre-activation g̃ (W: W_hh's g rows), y = g = tanh(g̃) the rule's postsynaptic
// activity, and p_t = h_{t-1} with
//   i, f, o = σ(z_i + W_i p), σ(z_f + W_f p), σ(z_o + W_o p)
//   c_t = f c_{t-1} + i g,   h_t = o tanh(c_t)
// the internal neuromodulation head reading h_t instead of y_t. Backward, with dL/dh_t and
// dL/dc_t from the later steps:
//   dL/do = dh tanh(c)                 dL/dc += dh o (1 − tanh²c)
//   dL/di = dc g    dL/df = dc c_{t-1}  dL/dg = dc i + (the rule's and θ's shares)
//   dL/dc_{t-1} = dc f,  and every gate's pre-activation through σ' or tanh'.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/math.h"
#include "kernels/rules.h"
#include "torchplastic/options.h"

namespace torchplastic {
namespace kernels {

using ::torchplastic::Rule;
enum class Activation : int { Tanh = 0, Relu = 1, Sigmoid = 2, Identity = 3 };
// Where m_t comes from (rules modulated and retroactive only).
enum class ModSource : int { None = 0, External = 1, Internal = 2, Fanout = 3 };

// Raw view of every tensor of one plastic_scan call. All tensors are contiguous;
// α and η are already broadcast to [O, I]; external modulation to [T, B, O].
template <typename scalar_t>
struct ScanParams {
  int64_t T = 0, B = 0, O = 0, I = 0;
  int64_t checkpoint_every = 1;  // K: the state before step t is saved when t % K == 0
  int device = -1;               // CUDA device index of the tensors (-1: CPU)
  Rule rule = Rule::Hebb;
  Activation activation = Activation::Tanh;
  ModSource mod_source = ModSource::None;
  bool recurrent = false;
  bool has_clip = false, has_scaling = false, has_threshold = false;
  scalar_t clip = 0, scaling = 0, threshold_rate = 0, target_activity = 0;

  // Inputs.
  const scalar_t* z = nullptr;          // [T, B, O]
  const scalar_t* x = nullptr;          // [T, B, I]  feedforward only
  const scalar_t* alpha = nullptr;      // [O, I]
  // η as given: [O, I], [O, 1] or [1, 1] (zeros [1, 1] for rule modulated, which has none).
  const scalar_t* eta = nullptr;
  int64_t eta_row_stride = 0;           // I, 1 or 0
  bool eta_per_connection = false;      // eta[o * eta_row_stride + i] if true, else eta[o * eta_row_stride]
  const scalar_t* weight = nullptr;     // [O, I]     recurrent only
  const scalar_t* hidden0 = nullptr;    // [B, O]     recurrent only
  const scalar_t* trace0 = nullptr;     // [B, O, I]
  const scalar_t* elig0 = nullptr;      // [B, O, I]  retroactive only
  const scalar_t* theta0 = nullptr;     // [B, O]     adaptive threshold only
  const scalar_t* modulation = nullptr; // [T, B, O]  external modulation only
  const scalar_t* mod_weight = nullptr; // [O]        internal / fanout
  const scalar_t* mod_bias = nullptr;   // [1]
  const scalar_t* fanout_weight = nullptr;  // [O]    fanout only
  const scalar_t* fanout_bias = nullptr;    // [O]
  const scalar_t* coefficients = nullptr;   // [4, O, I]  A–D of rule abcd, broadcast
  // [B] steps of each sequence (nullptr: T each). Past its length a sequence's state is held
  // and its outputs (and their gradients) are zero.
  const int64_t* lengths = nullptr;

  // Outputs of the forward.
  scalar_t* y = nullptr;            // [T, B, O]
  scalar_t* trace = nullptr;        // [B, O, I]  H_T
  scalar_t* elig = nullptr;         // [B, O, I]  E_T
  scalar_t* theta = nullptr;        // [B, O]     θ_T
  // Recording (tp.inspect; nullptr when not recording). Past its length a sequence's trace
  // records hold and its modulation records are zero.
  int64_t record_every = 0;                // R
  scalar_t* record_trace = nullptr;        // [T / R, B, O, I]  H after steps R, 2R, ...
  scalar_t* record_norm = nullptr;         // [T, B]  Σ H_t², zeroed by the caller, who takes √
  scalar_t* record_modulation = nullptr;   // [T, B, O]  m_t, zeroed by the caller
  // Checkpoints: H (and E) before steps K, 2K, ...; before step 0 they are trace0 and elig0,
  // inputs the caller keeps anyway. nullptr: not saved.
  scalar_t* trace_ckpt = nullptr;   // [num_checkpoints(), B, O, I]
  scalar_t* elig_ckpt = nullptr;    // [num_checkpoints(), B, O, I]

  // The plastic LSTM (SPEC §2b; O = I = H). z holds the four gates [T, B, 4H]; `weight` is
  // the g rows of weight_hh; y holds the cell candidates g_t (inside `activations`).
  bool lstm = false;
  const scalar_t* weight_hh = nullptr;  // [4H, H]  W_hh, all four gates' rows
  const scalar_t* cell0 = nullptr;      // [B, H]   c_0
  scalar_t* hseq = nullptr;             // [T, B, H] h_t: the op's output
  scalar_t* activations = nullptr;      // [5, T, B, H] i, f, g, o after their activations, c

  TP_HD bool internal_modulation() const {
    return mod_source == ModSource::Internal || mod_source == ModSource::Fanout;
  }
  TP_HD const scalar_t* eta_row(int64_t o) const { return eta + o * eta_row_stride; }
  TP_HD int64_t length(int64_t b) const { return lengths ? lengths[b] : T; }
  // The backward recomputes the steps segment by segment, K steps each (the last one shorter).
  TP_HD int64_t num_segments() const { return (T + checkpoint_every - 1) / checkpoint_every; }
  // Those that sequence b reaches.
  TP_HD int64_t num_segments(int64_t b) const {
    return (length(b) + checkpoint_every - 1) / checkpoint_every;
  }
  TP_HD int64_t num_checkpoints() const { return T > 0 ? num_segments() - 1 : 0; }
  // The state before segment `seg` of sequence b, [O, I].
  TP_HD const scalar_t* segment_trace(int64_t seg, int64_t b) const {
    return seg == 0 ? trace0 + b * O * I : trace_ckpt + ((seg - 1) * B + b) * O * I;
  }
  TP_HD const scalar_t* segment_elig(int64_t seg, int64_t b) const {
    return seg == 0 ? elig0 + b * O * I : elig_ckpt + ((seg - 1) * B + b) * O * I;
  }
  // Where the trace after step t of sequence b is recorded: nullptr unless recording and
  // t + 1 is a multiple of R.
  TP_HD scalar_t* record_slot(int64_t t, int64_t b) const {
    if (!record_trace || (t + 1) % record_every != 0) return nullptr;
    return record_trace + (((t + 1) / record_every - 1) * B + b) * O * I;
  }
  // Where the forward saves the state before step t of sequence b: nullptr unless t starts a
  // segment other than the first and checkpoints are being saved.
  TP_HD scalar_t* checkpoint_slot(scalar_t* ckpt, int64_t t, int64_t b) const {
    if (!ckpt || t == 0 || t % checkpoint_every != 0) return nullptr;
    return ckpt + ((t / checkpoint_every - 1) * B + b) * O * I;
  }
  // Presynaptic activity of step t for sequence b: x_t, h_0 or h_{t-1} (y_{t-1} outside the
  // LSTM).
  TP_HD const scalar_t* presynaptic(int64_t t, int64_t b) const {
    if (!recurrent) return x + (t * B + b) * I;
    if (t == 0) return hidden0 + b * O;
    return (lstm ? hseq : y) + ((t - 1) * B + b) * O;
  }
  // What the internal neuromodulation head reads at step t: y_t, or h_t in the LSTM.
  TP_HD const scalar_t* modulation_input(int64_t t, int64_t b) const {
    return (lstm ? hseq : y) + (t * B + b) * O;
  }
  // z of step t for sequence b: [O], or the LSTM's four gates [4H].
  TP_HD const scalar_t* z_row(int64_t t, int64_t b) const {
    return z + (t * B + b) * (lstm ? 4 * O : O);
  }
  // The LSTM's stored values of step t for sequence b, [H] each.
  enum LstmValue { kGateI = 0, kGateF = 1, kGateG = 2, kGateO = 3, kCell = 4 };
  TP_HD scalar_t* lstm_value(int k, int64_t t, int64_t b) const {
    return activations + ((k * T + t) * B + b) * O;
  }
  // c_{t-1} of sequence b.
  TP_HD const scalar_t* previous_cell(int64_t t, int64_t b) const {
    return t == 0 ? cell0 + b * O : lstm_value(kCell, t - 1, b);
  }
};

// Gradients the backward writes, besides the carried state gradients.
template <typename scalar_t>
struct ScanGradParams {
  const scalar_t* grad_y = nullptr;       // [T, B, O]
  const scalar_t* grad_hidden = nullptr;  // [B, O]     recurrent only
  const scalar_t* grad_trace = nullptr;   // [B, O, I]: sequence b's [O, I] at b · grad_trace_stride
  const scalar_t* grad_elig = nullptr;    // [B, O, I]  retroactive only; likewise
  int64_t grad_trace_stride = 0;          // O·I, or 0 when every sequence's is the same
  int64_t grad_elig_stride = 0;
  const scalar_t* grad_theta = nullptr;   // [B, O]     adaptive threshold only
  const scalar_t* grad_cell = nullptr;    // [B, H]     LSTM only

  scalar_t* grad_z = nullptr;        // [T, B, O]  = dL/da_t ([T, B, 4H]: the LSTM's gates); also
                                     //            feeds the GEMMs for W and z's inputs
  scalar_t* grad_x = nullptr;        // [T, B, I]  feedforward only
  scalar_t* grad_mod = nullptr;      // [T, B, O]  dL/dm_t (modulated rules)
  scalar_t* grad_mod_pre = nullptr;  // [T, B]     dL/d(y·v + c) (internal modulation)
  scalar_t* mod_signal = nullptr;    // [T, B]     s_t (internal modulation), for the fan-out gradients
  scalar_t* grad_hidden0 = nullptr;  // [B, O]
  scalar_t* grad_trace0 = nullptr;   // [B, O, I]
  scalar_t* grad_elig0 = nullptr;    // [B, O, I]
  scalar_t* grad_theta0 = nullptr;   // [B, O]
  scalar_t* grad_cell0 = nullptr;    // [B, H]     LSTM only
  // dL/dα and dL/dη, one slab per sequence, summed over the batch by the caller; or, where
  // slabs_summed (the CPU's single steps of a batch: csrc/cpu/backward_sequence.h), one slab
  // ([1, ...]) into which the kernels sum the batch themselves.
  scalar_t* grad_alpha = nullptr;    // [B, O, I]
  scalar_t* grad_eta = nullptr;      // [B, O, I] per-connection η, else [B, O, 1]
  scalar_t* grad_coefficients = nullptr;  // [B, 4, O, I] dL/dA–dL/dD (rule abcd), per sequence
  bool slabs_summed = false;

  // Sequence b's dL/dH_T and dL/dE_T, [O, I] (a stride of 0: the same for every sequence).
  TP_HD const scalar_t* final_trace_grad(int64_t b) const {
    return grad_trace + b * grad_trace_stride;
  }
  TP_HD const scalar_t* final_elig_grad(int64_t b) const {
    return grad_elig + b * grad_elig_stride;
  }
};

// tanh and exp in the precision of their argument: on the host a bare tanh(float) resolves to
// glibc's double ::tanh. (The CPU forward's float tanh goes through cpu/vector_math.h.)
TP_HD float precise_tanh(float a) { return tanhf(a); }
TP_HD double precise_tanh(double a) { return tanh(a); }
TP_HD float precise_exp(float a) { return expf(a); }
TP_HD double precise_exp(double a) { return exp(a); }

template <typename T>
TP_HD T activate(Activation act, T a) {
  switch (act) {
    case Activation::Tanh: return precise_tanh(a);
    case Activation::Relu: return a > T(0) ? a : T(0);
    case Activation::Sigmoid: return T(1) / (T(1) + precise_exp(-a));
    case Activation::Identity: return a;
  }
  return a;
}

// φ'(a) written in terms of y = φ(a), so the backward needs no stored pre-activations.
// relu: 0 at a = 0, as autograd's threshold_backward gives.
template <typename T>
TP_HD T activation_grad(Activation act, T y) {
  switch (act) {
    case Activation::Tanh: return T(1) - y * y;
    case Activation::Relu: return y > T(0) ? T(1) : T(0);
    case Activation::Sigmoid: return y * (T(1) - y);
    case Activation::Identity: return T(1);
  }
  return T(1);
}

// The LSTM cell's backward for unit o of a step (the equations above), from what the forward
// stored (i, f, g, o, c_t, c_{t-1}), dL/dh_t and dL/dc_t from the later steps, and the rule's
// and θ's shares of dL/dg_t: the four gates' pre-activation gradients and dL/dc_{t-1}.
// tc: tanh(c_t) as the forward computed it for h_t (the CPU's float path has a vectorisable
// tanh of its own).
template <typename T>
struct LstmCellGrad {
  T i, f, g, o, cell_prev;
};
template <typename T>
TP_HD LstmCellGrad<T> lstm_cell_grad(T i, T f, T g, T o, T tc, T c_prev, T dh, T dc_later,
                                     T dg_rule) {
  const T dc = dc_later + dh * o * (T(1) - tc * tc);
  LstmCellGrad<T> d;
  d.i = dc * g * i * (T(1) - i);
  d.f = dc * c_prev * f * (T(1) - f);
  d.g = (dc * i + dg_rule) * (T(1) - g * g);
  d.o = dh * tc * o * (T(1) - o);
  d.cell_prev = dc * f;
  return d;
}

// What rule R sees of connection oi = o·I + i of a step; its coefficients (A–D) are read here.
template <typename R, typename T>
TP_HD Synapse<T> synapse(const ScanParams<T>& P, int64_t oi, T H, T E, T y, T p, T m, T eta) {
  Synapse<T> s;
  s.H = H;
  s.E = E;
  s.y = y;
  s.p = p;
  s.m = m;
  s.eta = R::uses_eta ? eta : T(0);
  if constexpr (R::coefficients)
    for (int j = 0; j < 4; ++j) s.k[j] = P.coefficients[j * P.O * P.I + oi];
  return s;
}

template <typename T>
TP_HD T clip_value(T v, T c) {
  return v < -c ? -c : (v > c ? c : v);
}

// torch.clamp passes the gradient where −c ≤ v ≤ c, bounds included.
template <typename T>
TP_HD T clip_grad_mask(T v, T c) {
  return (v >= -c && v <= c) ? T(1) : T(0);
}

}  // namespace kernels
}  // namespace torchplastic
