// The plastic LSTM's parts of the CPU kernels (equations: csrc/kernels/plastic_step.h): the
// cell around the rule's rows. Forward: the products of W_hh's gates i, f and o with h_{t-1}
// beside each block of plastic g rows (lstm_gate_block), then c_t and h_t (lstm_rows).
// Backward: the cell's backward at a step (lstm_cell_grads), and the product that carries the
// gates i, f and o back to h_{t-1}, dL/dh_{t-1} += W_ifoᵀ dL/d(i, f, o) (lstm_ifo_products).
// W_ifo (3H × H) outgrows L2 at the sizes that matter and both products need all of it per
// sequence and step, so both take several sequences at the same step per read of it.
#pragma once

#include <algorithm>
#include <type_traits>

#include "cpu/plastic_scan_isa.h"
#include "cpu/simd.h"
#include "cpu/vector_math.h"
#include "cpu/workspace.h"
#include "kernels/plastic_step.h"

namespace torchplastic {
namespace cpu {
namespace TORCHPLASTIC_CPU_ISA {

using kernels::Activation;
using kernels::ScanParams;

// Rows of a group of four sequences that lstm_gate_rows takes per call: its three gates × four
// sequences × this many accumulators must leave registers for the loads (32 vector registers
// with AVX-512: 24 accumulators; 16 otherwise: 12).
#if defined(__AVX512F__)
constexpr int kRowsPerFour = 2;
#else
constexpr int kRowsPerFour = 1;
#endif

// Σ_k W[g·H + o + r, k] p_s[k] for the gates g = i, f, o (rows 0, 1, 3 of W_hh's four blocks)
// of Rows consecutive rows from o and N sequences s, into pre[s][gate][at + r]: the 3·Rows·N
// dot products in one pass, independent chains of adds for the vector unit (one row at a time
// was bound by the latency of its chain), each element of W loaded once for the N sequences.
// Each sum runs over the same lanes in the same order whatever Rows and N, so a sequence's
// gates do not depend on its group, bit for bit.
template <int Rows, int N, typename T>
void lstm_gate_rows(const ScanParams<T>& P, int64_t o, const T* const* p,
                    T (*const* pre)[kRowBlock], int at) {
  static_assert(Rows * N <= 4 * kRowsPerFour, "lstm_gate_rows: more accumulators than registers");
  constexpr int L = kLanes<T>;
  constexpr int kGate[3] = {0, 1, 3};  // i, f, o
  const int64_t H = P.O;
  const T* W[3][Rows];
  for (int g = 0; g < 3; ++g)
    for (int r = 0; r < Rows; ++r) W[g][r] = P.weight_hh + (kGate[g] * H + o + r) * H;
  T acc[3][Rows][N][L] = {};
  for_lanes<T>(H, [&](int64_t k, int l) TP_ALWAYS_INLINE {
    T pk[N];
#pragma GCC unroll 4
    for (int s = 0; s < N; ++s) pk[s] = p[s][k];
#pragma GCC unroll 3
    for (int g = 0; g < 3; ++g)
#pragma GCC unroll 4
      for (int r = 0; r < Rows; ++r) {
        const T w = W[g][r][k];
#pragma GCC unroll 4
        for (int s = 0; s < N; ++s) acc[g][r][s][l] += w * pk[s];
      }
  });
  for (int g = 0; g < 3; ++g)
    for (int r = 0; r < Rows; ++r)
      for (int s = 0; s < N; ++s) pre[s][g][at + r] = sum_lanes<T>(acc[g][r][s], H);
}

// The gates i, f, o's products of rows o0 .. o1 − 1 (at most kRowBlock) for the sequences s
// of a group (s < group) whose step is computed here (active[s]; h_{t-1} in p_group[s]), into
// gates[s]: sequences in fours, kRowsPerFour rows at a time (three gates × four sequences ×
// those rows: 12 or 24 chains; with two rows each vector of h_{t-1} serves six multiply-adds),
// so that each row of W_ifo is brought in from L3 once per four sequences rather than once per
// pair; the rest in pairs, two rows at a time; a sequence left over, four rows at a time.
template <typename T>
void lstm_gate_block(const ScanParams<T>& P, int64_t o0, int64_t o1, int group,
                     const bool* active, const T* const* p_group,
                     T (*gates)[3][kRowBlock]) {
  const T* p[kForwardGroup];
  T(*pre[kForwardGroup])[kRowBlock];
  int n = 0;
  for (int s = 0; s < group; ++s)
    if (active[s]) {
      p[n] = p_group[s];
      pre[n++] = gates[s];
    }
  int s = 0;
  for (; s + 4 <= n; s += 4) {
    int64_t o = o0;
    for (; o + kRowsPerFour <= o1; o += kRowsPerFour)
      lstm_gate_rows<kRowsPerFour, 4>(P, o, p + s, pre + s, static_cast<int>(o - o0));
    for (; o < o1; ++o) lstm_gate_rows<1, 4>(P, o, p + s, pre + s, static_cast<int>(o - o0));
  }
  for (; s + 2 <= n; s += 2) {
    int64_t o = o0;
    for (; o + 2 <= o1; o += 2)
      lstm_gate_rows<2, 2>(P, o, p + s, pre + s, static_cast<int>(o - o0));
    for (; o < o1; ++o) lstm_gate_rows<1, 2>(P, o, p + s, pre + s, static_cast<int>(o - o0));
  }
  if (s < n) {
    int64_t o = o0;
    for (; o + 4 <= o1; o += 4)
      lstm_gate_rows<4, 1>(P, o, p + s, pre + s, static_cast<int>(o - o0));
    for (; o < o1; ++o) lstm_gate_rows<1, 1>(P, o, p + s, pre + s, static_cast<int>(o - o0));
  }
}

// σ(x) = (1 + tanh(x/2)) / 2, through the vectorisable tanh for float.
template <typename T>
TP_ALWAYS_INLINE inline T sigmoid_vectorizable(T x) {
  if constexpr (std::is_same<T, float>::value) return 0.5f + 0.5f * tanh_vectorizable(0.5f * x);
  else return kernels::activate(Activation::Sigmoid, x);
}
template <typename T>
TP_ALWAYS_INLINE inline T tanh_of(T x) {
  if constexpr (std::is_same<T, float>::value) return tanh_vectorizable(x);
  else return kernels::precise_tanh(x);
}

// The plastic LSTM around rows o0 .. o1 − 1 (at most kRowBlock) of step t, once their g_t is
// in y and the products of the gates i, f and o in pre (lstm_gate_block): the gates, then c_t
// and h_t, into P.activations and P.hseq.
template <typename T>
void lstm_rows(const ScanParams<T>& P, int64_t t, int64_t b, int64_t o0, int64_t o1,
               const T (*pre)[kRowBlock]) {
  const int64_t H = P.O;
  const T* z = P.z_row(t, b);
  const T* c_prev = P.previous_cell(t, b);
  T* gi = P.lstm_value(ScanParams<T>::kGateI, t, b);
  T* gf = P.lstm_value(ScanParams<T>::kGateF, t, b);
  const T* g = P.lstm_value(ScanParams<T>::kGateG, t, b);
  T* go = P.lstm_value(ScanParams<T>::kGateO, t, b);
  T* c = P.lstm_value(ScanParams<T>::kCell, t, b);
  T* h = P.hseq + (t * P.B + b) * H;
  const int n = static_cast<int>(o1 - o0);
#pragma omp simd
  for (int r = 0; r < n; ++r) {
    const int64_t q = o0 + r;
    const T i_ = sigmoid_vectorizable(z[q] + pre[0][r]);
    const T f_ = sigmoid_vectorizable(z[H + q] + pre[1][r]);
    const T o_ = sigmoid_vectorizable(z[3 * H + q] + pre[2][r]);
    const T c_ = f_ * c_prev[q] + i_ * g[q];
    gi[q] = i_;
    gf[q] = f_;
    go[q] = o_;
    c[q] = c_;
    h[q] = o_ * tanh_of(c_);
  }
}

// The LSTM's cell backward at step t, once S.gh holds dL/dh_t and S.gy the rule's and θ's
// shares of dL/dg_t: the gates' pre-activation gradients into grad_z [4H] (S.ga: the g rows',
// which finish(t) takes through α, H and W) and dL/dc_{t-1} into S.gc. W_hh's i, f, o rows
// add their share of dL/dp_t after it (lstm_ifo_product, lstm_ifo_products); W_g's share is
// finish(t)'s.
template <typename T>
void lstm_cell_grads(const ScanParams<T>& P, const BackwardWorkspace<T>& S, int64_t t,
                     int64_t b, T* grad_z) {
  const int64_t H = P.O;
  const T* gi = P.lstm_value(ScanParams<T>::kGateI, t, b);
  const T* gf = P.lstm_value(ScanParams<T>::kGateF, t, b);
  const T* gg = P.lstm_value(ScanParams<T>::kGateG, t, b);
  const T* go = P.lstm_value(ScanParams<T>::kGateO, t, b);
  const T* c = P.lstm_value(ScanParams<T>::kCell, t, b);
  const T* c_prev = P.previous_cell(t, b);
#pragma omp simd
  for (int64_t o = 0; o < H; ++o) {
    // tanh(c_t) as the forward computed it for h_t (lstm_rows); in one vector loop with the
    // rest, where glibc's tanhf per unit had been a visible share of the backward.
    const auto d = kernels::lstm_cell_grad(gi[o], gf[o], gg[o], go[o], tanh_of(c[o]), c_prev[o],
                                           S.gh[o], S.gc[o], S.gy[o]);
    grad_z[o] = d.i;
    grad_z[H + o] = d.f;
    grad_z[2 * H + o] = S.ga[o] = d.g;
    grad_z[3 * H + o] = d.o;
    S.gc[o] = d.cell_prev;
  }
}

// gp[s][k] += Σ_j W_hh[j, k] grad_z[s][j] over the rows j of the gates i, f, o (in order), for
// N sequences s at one step: a chunk of `Chunk` (a type) columns of each sequence's dL/dp stays
// in registers while every row of W_ifo adds to it, so each row's chunk is loaded once for all
// N. Each element of gp[s] sums the rows in the same order whatever N, so a sequence's result
// does not depend on the others in its group, bit for bit. n ≤ Chunk columns from k0.
template <int N, typename T, typename Chunk>
TP_ALWAYS_INLINE inline void ifo_rows_into(const ScanParams<T>& P,
                                           const T* const* grad_z, T* const* gp, int64_t k0,
                                           Chunk, int64_t n) {
  const int64_t H = P.O;
  T acc[N][Chunk::value];
#pragma GCC unroll 4
  for (int s = 0; s < N; ++s)
#pragma omp simd
    for (int64_t k = 0; k < n; ++k) acc[s][k] = gp[s][k0 + k];
  for (int64_t j = 0; j < 4 * H; ++j) {
    if (j == 2 * H) j = 3 * H;  // W_g's rows: finish(t)'s
    const T* W = P.weight_hh + j * H + k0;
#pragma GCC unroll 4
    for (int s = 0; s < N; ++s) {
      const T d = grad_z[s][j];
#pragma omp simd
      for (int64_t k = 0; k < n; ++k) acc[s][k] += d * W[k];
    }
  }
#pragma GCC unroll 4
  for (int s = 0; s < N; ++s)
#pragma omp simd
    for (int64_t k = 0; k < n; ++k) gp[s][k0 + k] = acc[s][k];
}

// Chunks of `Chunk` columns (a type), then of one vector, then the last columns (fewer than a
// vector) together: one pass over the rows for them, not one per column.
template <int N, typename T, typename Chunk>
void ifo_products(const ScanParams<T>& P, const T* const* grad_z, T* const* gp, Chunk) {
  constexpr int64_t kChunk = Chunk::value, L = kLanes<T>;
  const int64_t H = P.O;
  int64_t k0 = 0;
  for (; k0 + kChunk <= H; k0 += kChunk) ifo_rows_into<N>(P, grad_z, gp, k0, Chunk{}, kChunk);
  using Vector = std::integral_constant<int64_t, L>;
  for (; k0 + L <= H; k0 += L) ifo_rows_into<N>(P, grad_z, gp, k0, Vector{}, L);
  if (k0 < H) ifo_rows_into<N>(P, grad_z, gp, k0, Vector{}, H - k0);
}

// One sequence: chunks of 256 bytes of each row (four vectors of AVX-512, eight of AVX2; eight
// of the generic build's 16 registers at most). W_ifo comes from L3 or beyond once it outgrows
// L2, and wider chunks read each row in fewer, longer runs.
template <typename T>
void lstm_ifo_product(const ScanParams<T>& P, const T* grad_z, T* gp) {
  constexpr int64_t kChunk = std::min<int64_t>(256 / sizeof(T), 8 * kLanes<T>);
  ifo_products<1>(P, &grad_z, &gp, std::integral_constant<int64_t, kChunk>{});
}

// n sequences (1 ≤ n ≤ kLstmBackwardGroup) at the same step, in one read of W_ifo. Chunks of
// two vectors per sequence (four with AVX-512's 32 registers): with four sequences, 8 (16)
// accumulators.
template <typename T>
void lstm_ifo_products(const ScanParams<T>& P, int n, const T* const* grad_z, T* const* gp) {
  static_assert(kLstmBackwardGroup == 4, "lstm_ifo_products: a case per group size");
#if defined(__AVX512F__)
  using Chunk = std::integral_constant<int64_t, 4 * kLanes<T>>;
#else
  using Chunk = std::integral_constant<int64_t, 2 * kLanes<T>>;
#endif
  switch (n) {
    case 1: return lstm_ifo_product(P, grad_z[0], gp[0]);
    case 2: return ifo_products<2>(P, grad_z, gp, Chunk{});
    case 3: return ifo_products<3>(P, grad_z, gp, Chunk{});
    default: return ifo_products<4>(P, grad_z, gp, Chunk{});
  }
}

}  // namespace TORCHPLASTIC_CPU_ISA
}  // namespace cpu
}  // namespace torchplastic
