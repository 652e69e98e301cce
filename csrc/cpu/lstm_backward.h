// The plastic LSTM's share of the CPU backward (equations: csrc/kernels/plastic_step.h): the
// cell's backward at a step, and the product that carries the gates i, f and o back to
// h_{t-1}, dL/dh_{t-1} += W_ifoᵀ dL/d(i, f, o). W_ifo (3H × H) outgrows L2 at the sizes that
// matter, and that product needs all of it per sequence and step; lstm_ifo_products takes it
// for several sequences at the same step in one read.
#pragma once

#include <algorithm>
#include <type_traits>

#include "cpu/forward.h"  // tanh_of, the forward's tanh of c_t
#include "cpu/simd.h"
#include "cpu/workspace.h"
#include "kernels/plastic_step.h"

namespace torchplastic {
namespace cpu {
namespace TORCHPLASTIC_CPU_ISA {

// The LSTM's cell backward at step t, once S.gh holds dL/dh_t and S.gy the rule's and θ's
// shares of dL/dg_t: the gates' pre-activation gradients into grad_z [4H] (S.ga: the g rows',
// which finish(t) takes through α, H and W) and dL/dc_{t-1} into S.gc. W_hh's i, f, o rows
// add their share of dL/dp_t after it (lstm_ifo_product, lstm_ifo_products); W_g's share is
// finish(t)'s.
template <typename T>
void lstm_cell_grads(const kernels::ScanParams<T>& P, const BackwardWorkspace<T>& S, int64_t t,
                     int64_t b, T* grad_z) {
  using P_t = kernels::ScanParams<T>;
  const int64_t H = P.O;
  const T* gi = P.lstm_value(P_t::kGateI, t, b);
  const T* gf = P.lstm_value(P_t::kGateF, t, b);
  const T* gg = P.lstm_value(P_t::kGateG, t, b);
  const T* go = P.lstm_value(P_t::kGateO, t, b);
  const T* c = P.lstm_value(P_t::kCell, t, b);
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
TP_ALWAYS_INLINE inline void ifo_rows_into(const kernels::ScanParams<T>& P,
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
void ifo_products(const kernels::ScanParams<T>& P, const T* const* grad_z, T* const* gp, Chunk) {
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
void lstm_ifo_product(const kernels::ScanParams<T>& P, const T* grad_z, T* gp) {
  constexpr int64_t kChunk = std::min<int64_t>(256 / sizeof(T), 8 * kLanes<T>);
  ifo_products<1>(P, &grad_z, &gp, std::integral_constant<int64_t, kChunk>{});
}

// n sequences (1 ≤ n ≤ 4) at the same step, in one read of W_ifo. Chunks of two vectors per
// sequence (four with AVX-512's 32 registers): with four sequences, 8 (16) accumulators.
template <typename T>
void lstm_ifo_products(const kernels::ScanParams<T>& P, int n, const T* const* grad_z,
                       T* const* gp) {
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
