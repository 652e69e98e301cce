// CUDA kernels of plastic_scan, forward and backward (equations: csrc/kernels/plastic_step.h
// and the rules, csrc/kernels/rules/, whose structs the kernels are templated on).
//
// One persistent kernel runs all T steps. Sequences are independent, so each one gets a thread
// block cluster of C blocks (C = 1, 2, 4 or 8); block `rank` of the cluster owns the
// postsynaptic rows [rank·R, rank·R + R). Per step every warp takes rows, its lanes take
// columns: the row's matrix-vector product is a warp reduction, and the trace update of the
// row follows while it is in registers / L1. The step's outputs y are written into every
// block's shared memory through distributed shared memory (triple-buffered, so one cluster
// barrier per step is enough), which is where the next step reads its presynaptic input.
//
// Where they fit, the block's slices of H, E, α and W stay in shared memory for all T steps and
// H is written to global memory only at checkpoints and at the end; otherwise the same code
// reads them from global memory (the streaming fallback). Plan (plastic_scan_cuda.h) says which.
//
// The backward walks segments of K steps in reverse: each block recomputes its rows' traces of
// the segment from the checkpoint into global scratch, then sweeps the segment backward with
// dL/dH, dL/dα (and α, W) on chip where they fit. dL/dp sums over all rows: per-warp partials,
// then per-block partials exchanged through distributed shared memory.
#include "cuda/plastic_scan_cuda.h"

#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>

namespace torchplastic {
namespace cuda {

namespace cg = cooperative_groups;
using kernels::Activation;
using kernels::ModSource;
using kernels::Rule;
using kernels::ScanGradParams;
using kernels::ScanParams;
using kernels::Synapse;
using kernels::SynapseGrad;

namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxCluster = 8;

void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("plastic_scan (CUDA): ") + what + ": " +
                             cudaGetErrorString(err));
}

// ------------------------------------------------------------------ device helpers

__device__ __forceinline__ int cluster_rank(int C) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (C > 1) return static_cast<int>(cg::this_cluster().block_rank());
#endif
  return 0;
}

// Barrier over the sequence's blocks (a plain block barrier when the cluster is one block).
// It orders shared and distributed-shared memory accesses before it against those after it.
__device__ __forceinline__ void cluster_barrier(int C) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (C > 1) {
    cg::this_cluster().sync();
    return;
  }
#endif
  __syncthreads();
}

// The same shared-memory variable in block `rank` of the cluster.
template <typename T>
__device__ __forceinline__ T* peer(T* p, int rank, int C) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (C > 1) return cg::this_cluster().map_shared_rank(p, rank);
#endif
  return p;
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Sum over the block; every thread gets it. `red` holds kWarps values.
template <typename T>
__device__ T block_sum(T v, T* red) {
  v = warp_sum(v);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  T total = 0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) total += red[w];
  return total;
}

// s_t = tanh(y_t · v + c) over all O outputs (internal modulation), computed by every block.
template <typename T>
__device__ T modulation_signal(const ScanParams<T>& P, const T* y, T* red) {
  T part = 0;
  for (int64_t o = threadIdx.x; o < P.O; o += kThreads) part += y[o] * P.mod_weight[o];
  return tanh(block_sum(part, red) + P.mod_bias[0]);
}

template <typename T>
__device__ __forceinline__ T modulation_of_row(const ScanParams<T>& P, int64_t t, int64_t b,
                                               int64_t o, T s) {
  switch (P.mod_source) {
    case ModSource::External: return P.modulation[(t * P.B + b) * P.O + o];
    case ModSource::Internal: return s;
    case ModSource::Fanout: return s * P.fanout_weight[o] + P.fanout_bias[o];
    default: return T(0);
  }
}

// What rule R sees of connection oi = o·I + i; its coefficients (A–D) are read here.
template <typename R, typename T>
__device__ __forceinline__ Synapse<T> synapse(const ScanParams<T>& P, int64_t oi, T H, T E, T y,
                                              T p, T m, T eta) {
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

// Row o of the trace update by one warp: H_src (E_src) → H_dst (E_dst); src may equal dst
// (each element is read and written by the same lane).
template <typename R, typename T>
__device__ void update_row_warp(const ScanParams<T>& P, int64_t o, T y, T m, const T* p,
                                const T* H_src, T* H_dst, const T* E_src, T* E_dst, int lane) {
  const int64_t I = P.I;
  const T* eta = P.eta_row(o);
  const T eta_o = eta[0];
  T sumsq = 0;
  for (int64_t i = lane; i < I; i += 32) {
    const T E = R::eligibility ? E_src[i] : T(0);
    const T eta_i = P.eta_per_connection ? eta[i] : eta_o;
    const Synapse<T> s = synapse<R>(P, o * I + i, H_src[i], E, y, p[i], m, eta_i);
    T C = R::candidate(s);
    if constexpr (R::eligibility) E_dst[i] = R::eligibility_next(s);
    if (P.has_clip) C = kernels::clip_value(C, P.clip);
    H_dst[i] = C;
    sumsq += C * C;
  }
  if (P.has_scaling) {
    const T norm = sqrt(warp_sum(sumsq));
    if (norm > P.scaling) {
      const T scale = P.scaling / norm;
      for (int64_t i = lane; i < I; i += 32) H_dst[i] *= scale;
    }
  }
}

// Shared memory of a block, in elements of T, carved in this order.
template <typename T>
struct ForwardSmem {
  T *ybuf, *pbuf, *zbuf, *mbuf, *theta, *red, *H, *E, *alpha, *weight;
  int64_t total;
  __host__ __device__ ForwardSmem(T* base, const ScanParams<T>& P, const Plan& L) {
    const int64_t O = P.O, I = P.I, mat = static_cast<int64_t>(L.rows) * I;
    T* at = base;
    auto take = [&](int64_t n, bool keep) {
      T* q = keep ? at : nullptr;
      if (keep) at += n;
      return q;
    };
    ybuf = take(3 * O, true);  // y of steps t-1, t, t+1 (triple buffer)
    pbuf = take(I, true);      // x_t (feedforward)
    zbuf = take(O, true);      // z_t, staged once per step (this block's rows)
    mbuf = take(O, true);      // external m_t, likewise
    theta = take(O, true);     // θ of this block's rows, for all T steps
    red = take(32, true);
    H = take(mat, L.trace);
    E = take(mat, L.elig);
    alpha = take(mat, L.alpha);
    weight = take(mat, L.weight);
    total = at - base;
  }
};

template <typename T>
struct BackwardSmem {
  T *gy, *gm, *gh, *gtheta, *ybuf, *pbuf, *red, *gp_part, *gs_part, *partials, *gH, *gE, *galpha,
      *alpha, *weight;
  int64_t total;
  __host__ __device__ BackwardSmem(T* base, const ScanParams<T>& P, const Plan& L) {
    const int64_t O = P.O, I = P.I, mat = static_cast<int64_t>(L.rows) * I;
    T* at = base;
    auto take = [&](int64_t n, bool keep) {
      T* q = keep ? at : nullptr;
      if (keep) at += n;
      return q;
    };
    gy = take(O, true);
    gm = take(O, true);
    gh = take(O, true);
    gtheta = take(O, true);
    ybuf = take(O, true);  // y_t, staged once per step
    pbuf = take(I, true);  // p_t
    red = take(32, true);
    gp_part = take(2 * I, true);          // this block's dL/dp, double-buffered by step parity
    gs_part = take(2 * kMaxCluster, true);  // dL/ds partials of the cluster's blocks
    partials = take(static_cast<int64_t>(kWarps) * I, L.partials);
    gH = take(mat, L.grad_trace);
    gE = take(mat, L.grad_elig);
    galpha = take(mat, L.grad_alpha);
    alpha = take(mat, L.alpha);
    weight = take(mat, L.weight);
    total = at - base;
  }
};

// ------------------------------------------------------------------ forward

template <typename T, typename R>
__global__ void __launch_bounds__(kThreads)
    plastic_scan_forward_kernel(const ScanParams<T> P, const Plan L) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  ForwardSmem<T> S(reinterpret_cast<T*>(smem_raw), P, L);
  const int C = L.cluster;
  const int rank = cluster_rank(C);
  const int64_t b = blockIdx.x / C;
  const int64_t T_ = P.T, B = P.B, O = P.O, I = P.I, K = P.checkpoint_every;
  const int64_t r0 = min(O, static_cast<int64_t>(rank) * L.rows);
  const int64_t r1 = min(O, r0 + L.rows);
  const int64_t n = (r1 - r0) * I;  // elements of this block's slice of a [O, I] matrix
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  constexpr bool retro = R::eligibility, modulated = R::modulated;
  const bool row_local = !P.internal_modulation();

  // Row slices: on chip, or in place in the outputs / inputs.
  T* H = L.trace ? S.H : P.trace + (b * O + r0) * I;
  T* E = retro ? (L.elig ? S.E : P.elig + (b * O + r0) * I) : nullptr;
  const T* A = L.alpha ? S.alpha : P.alpha + r0 * I;
  const T* W = P.recurrent ? (L.weight ? S.weight : P.weight + r0 * I) : nullptr;

  for (int64_t k = threadIdx.x; k < n; k += kThreads) {
    H[k] = P.trace0[(b * O + r0) * I + k];
    if (retro) E[k] = P.elig0[(b * O + r0) * I + k];
    if (L.alpha) S.alpha[k] = P.alpha[r0 * I + k];
    if (P.recurrent && L.weight) S.weight[k] = P.weight[r0 * I + k];
  }
  // Per-step inputs of this block's rows are staged in shared memory one step ahead, so no
  // warp waits on a global load in the middle of its row.
  auto stage = [&](int64_t t) {
    if (t >= T_) return;
    for (int64_t o = r0 + threadIdx.x; o < r1; o += kThreads) {
      S.zbuf[o] = P.z[(t * B + b) * O + o];
      if (P.mod_source == ModSource::External) S.mbuf[o] = P.modulation[(t * B + b) * O + o];
    }
  };
  stage(0);
  for (int64_t o = r0 + threadIdx.x; o < r1; o += kThreads)
    S.theta[o] = P.has_threshold ? P.theta0[b * O + o] : T(0);
  if (P.recurrent)
    for (int64_t o = threadIdx.x; o < O; o += kThreads) S.ybuf[2 * O + o] = P.hidden0[b * O + o];
  __syncthreads();

  for (int64_t t = 0; t < T_; ++t) {
    if (P.trace_ckpt && t % K == 0) {
      const int64_t slot = ((t / K) * B + b) * O * I + r0 * I;
      for (int64_t k = threadIdx.x; k < n; k += kThreads) {
        P.trace_ckpt[slot + k] = H[k];
        if (retro) P.elig_ckpt[slot + k] = E[k];
      }
    }
    const T* p;
    if (P.recurrent) {
      p = S.ybuf + ((t + 2) % 3) * O;
    } else {
      const T* x = P.x + (t * B + b) * I;
      for (int64_t i = threadIdx.x; i < I; i += kThreads) S.pbuf[i] = x[i];
      __syncthreads();
      p = S.pbuf;
    }
    T* y_now = S.ybuf + (t % 3) * O;

    for (int64_t o = r0 + warp; o < r1; o += kWarps) {
      T* H_row = H + (o - r0) * I;
      const T* A_row = A + (o - r0) * I;
      T acc = 0;
      if (P.recurrent) {
        const T* W_row = W + (o - r0) * I;
        for (int64_t i = lane; i < I; i += 32) acc += (A_row[i] * H_row[i] + W_row[i]) * p[i];
      } else {
        for (int64_t i = lane; i < I; i += 32) acc += A_row[i] * H_row[i] * p[i];
      }
      acc = warp_sum(acc);
      const T y = kernels::activate(P.activation, S.zbuf[o] + acc - S.theta[o]);
      if (lane == 0) P.y[(t * B + b) * O + o] = y;
      if (lane < C) peer(y_now, lane, C)[o] = y;
      if (row_local) {
        const T m = modulated ? S.mbuf[o] : T(0);
        T* E_row = retro ? E + (o - r0) * I : nullptr;
        update_row_warp<R>(P, o, y, m, p, H_row, H_row, E_row, E_row, lane);
      }
    }
    cluster_barrier(C);  // every block now holds all of y_t

    if (!row_local) {
      const T s = modulated ? modulation_signal(P, y_now, S.red) : T(0);
      for (int64_t o = r0 + warp; o < r1; o += kWarps) {
        const T m = modulated ? modulation_of_row(P, t, b, o, s) : T(0);
        T* H_row = H + (o - r0) * I;
        T* E_row = retro ? E + (o - r0) * I : nullptr;
        update_row_warp<R>(P, o, y_now[o], m, p, H_row, H_row, E_row, E_row, lane);
      }
    }
    if (P.has_threshold)
      for (int64_t o = r0 + threadIdx.x; o < r1; o += kThreads)
        S.theta[o] += P.threshold_rate * (y_now[o] - P.target_activity);
    stage(t + 1);  // this step's reads of zbuf and mbuf all came before the cluster barrier
    __syncthreads();
  }
  if (P.has_threshold)
    for (int64_t o = r0 + threadIdx.x; o < r1; o += kThreads) P.theta[b * O + o] = S.theta[o];

  if (L.trace || (retro && L.elig)) {
    for (int64_t k = threadIdx.x; k < n; k += kThreads) {
      if (L.trace) P.trace[(b * O + r0) * I + k] = H[k];
      if (retro && L.elig) P.elig[(b * O + r0) * I + k] = E[k];
    }
  }
  cluster_barrier(C);  // no block leaves while a peer may still write into its shared memory
}

// ------------------------------------------------------------------ backward

template <typename T, typename R>
__global__ void __launch_bounds__(kThreads)
    plastic_scan_backward_kernel(const ScanParams<T> P, const ScanGradParams<T> G, const Plan L,
                                 T* scratch) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  BackwardSmem<T> S(reinterpret_cast<T*>(smem_raw), P, L);
  const int C = L.cluster;
  const int rank = cluster_rank(C);
  const int64_t b = blockIdx.x / C;
  const int64_t T_ = P.T, B = P.B, O = P.O, I = P.I, K = P.checkpoint_every, OI = O * I;
  const int64_t r0 = min(O, static_cast<int64_t>(rank) * L.rows);
  const int64_t r1 = min(O, r0 + L.rows);
  const int64_t n = (r1 - r0) * I;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  constexpr bool retro = R::eligibility, modulated = R::modulated;
  const bool row_local = !P.internal_modulation();
  const bool eta_pc = P.eta_per_connection;

  // Global scratch: [B, K, O, I] recomputed traces (and eligibilities), then what is off chip.
  T* seg_H = scratch + b * K * OI;
  T* seg_E = retro ? scratch + B * K * OI + b * K * OI : nullptr;
  T* rest = scratch + (retro ? 2 : 1) * B * K * OI;
  T* partials = L.partials ? S.partials : rest + static_cast<int64_t>(blockIdx.x) * kWarps * I;
  rest += L.partials ? 0 : static_cast<int64_t>(gridDim.x) * kWarps * I;
  T* gH = L.grad_trace ? S.gH : rest + (b * O + r0) * I;
  rest += L.grad_trace ? 0 : B * OI;
  T* gE = retro ? (L.grad_elig ? S.gE : rest + (b * O + r0) * I) : nullptr;
  T* gA = L.grad_alpha ? S.galpha : G.grad_alpha + (b * O + r0) * I;
  const T* A = L.alpha ? S.alpha : P.alpha + r0 * I;
  const T* W = P.recurrent ? (L.weight ? S.weight : P.weight + r0 * I) : nullptr;
  T* my_partials = partials + static_cast<int64_t>(warp) * I;

  for (int64_t k = threadIdx.x; k < n; k += kThreads) {
    gH[k] = G.grad_trace[(b * O + r0) * I + k];
    if (retro) gE[k] = G.grad_elig[(b * O + r0) * I + k];
    if (L.grad_alpha) S.galpha[k] = T(0);
    if (L.alpha) S.alpha[k] = P.alpha[r0 * I + k];
    if (P.recurrent && L.weight) S.weight[k] = P.weight[r0 * I + k];
  }
  for (int64_t o = r0 + threadIdx.x; o < r1; o += kThreads) {
    S.gtheta[o] = P.has_threshold ? G.grad_theta[b * O + o] : T(0);
    S.gh[o] = P.recurrent ? G.grad_hidden[b * O + o] : T(0);
  }
  __syncthreads();

  // y_t and p_t of a step into shared memory, read there by every row.
  auto stage_step = [&](int64_t t) {
    const T* p_src = P.presynaptic(t, b);
    const T* y_src = P.y + (t * B + b) * O;
    for (int64_t i = threadIdx.x; i < I; i += kThreads) S.pbuf[i] = p_src[i];
    for (int64_t o = threadIdx.x; o < O; o += kThreads) S.ybuf[o] = y_src[o];
  };

  int parity = 0;
  for (int64_t seg = P.num_checkpoints() - 1; seg >= 0; --seg) {
    const int64_t t0 = seg * K, len = min(K, T_ - t0);

    // Recompute this block's rows of H_{t-1} (E_{t-1}) for every step of the segment.
    for (int64_t k = threadIdx.x; k < n; k += kThreads) {
      seg_H[r0 * I + k] = P.trace_ckpt[(seg * B + b) * OI + r0 * I + k];
      if (retro) seg_E[r0 * I + k] = P.elig_ckpt[(seg * B + b) * OI + r0 * I + k];
    }
    __syncthreads();
    for (int64_t j = 0; j + 1 < len; ++j) {
      const int64_t t = t0 + j;
      stage_step(t);
      __syncthreads();
      const T* p = S.pbuf;
      const T* y = S.ybuf;
      const T s = P.internal_modulation() ? modulation_signal(P, y, S.red) : T(0);
      for (int64_t o = r0 + warp; o < r1; o += kWarps) {
        const T m = modulated ? modulation_of_row(P, t, b, o, s) : T(0);
        const int64_t row = o * I;
        update_row_warp<R>(P, o, y[o], m, p, seg_H + j * OI + row, seg_H + (j + 1) * OI + row,
                           retro ? seg_E + j * OI + row : nullptr,
                           retro ? seg_E + (j + 1) * OI + row : nullptr, lane);
      }
      __syncthreads();  // before the next step's staging overwrites y and p
    }

    // Sweep the segment backward.
    for (int64_t j = len - 1; j >= 0; --j, parity ^= 1) {
      const int64_t t = t0 + j;
      stage_step(t);
      const T* p = S.pbuf;
      const T* y = S.ybuf;
      const T* H_prev = seg_H + j * OI;
      const T* E_prev = retro ? seg_E + j * OI : nullptr;

      for (int64_t o = r0 + threadIdx.x; o < r1; o += kThreads) {
        T g = G.grad_y[(t * B + b) * O + o];
        if (P.recurrent) g += S.gh[o];
        if (P.has_threshold) g += P.threshold_rate * S.gtheta[o];
        S.gy[o] = g;
      }
      for (int64_t i = lane; i < I; i += 32) my_partials[i] = T(0);
      __syncthreads();
      const T s = P.internal_modulation() ? modulation_signal(P, y, S.red) : T(0);

      // dL/da of row o, then its α, H_{t-1} and p terms.
      auto finish_row = [&](int64_t o, T gy_total) {
        const T ga = gy_total * kernels::activation_grad(P.activation, y[o]);
        if (lane == 0) {
          G.grad_z[(t * B + b) * O + o] = ga;
          if (P.has_threshold) S.gtheta[o] -= ga;
        }
        const T* A_row = A + (o - r0) * I;
        const T* H_row = H_prev + o * I;
        T* gH_row = gH + (o - r0) * I;
        T* gA_row = gA + (o - r0) * I;
        const T* W_row = P.recurrent ? W + (o - r0) * I : nullptr;
        for (int64_t i = lane; i < I; i += 32) {
          const T a = A_row[i], h = H_row[i];
          gH_row[i] += ga * a * p[i];
          gA_row[i] += ga * h * p[i];
          my_partials[i] += ga * (a * h + (P.recurrent ? W_row[i] : T(0)));
        }
      };

      for (int64_t o = r0 + warp; o < r1; o += kWarps) {
        const T yo = y[o];
        const T mo = modulated ? modulation_of_row(P, t, b, o, s) : T(0);
        const T* eta = P.eta_row(o);
        const T eta_o = eta[0];
        const T* H_row = H_prev + o * I;
        const T* E_row = retro ? E_prev + o * I : nullptr;
        T* gH_row = gH + (o - r0) * I;
        T* gE_row = retro ? gE + (o - r0) * I : nullptr;

        T scale = 1, scale_grad = 0;
        if (P.has_scaling) {
          T sumsq = 0, dot = 0;
          for (int64_t i = lane; i < I; i += 32) {
            const T eta_i = eta_pc ? eta[i] : eta_o;
            T Cv = R::candidate(
                synapse<R>(P, o * I + i, H_row[i], retro ? E_row[i] : T(0), yo, p[i], mo, eta_i));
            if (P.has_clip) Cv = kernels::clip_value(Cv, P.clip);
            sumsq += Cv * Cv;
            dot += gH_row[i] * Cv;
          }
          sumsq = warp_sum(sumsq);
          dot = warp_sum(dot);
          const T norm = sqrt(sumsq);
          if (norm > P.scaling) {
            scale = P.scaling / norm;
            scale_grad = P.scaling * dot / (norm * norm * norm);
          }
        }
        T gy_row = 0, gm_row = 0, geta_row = 0;
        T* geta_conn = (G.grad_eta && eta_pc) ? G.grad_eta + (b * O + o) * I : nullptr;
        for (int64_t i = lane; i < I; i += 32) {
          const T eta_i = eta_pc ? eta[i] : eta_o;
          const Synapse<T> syn =
              synapse<R>(P, o * I + i, H_row[i], retro ? E_row[i] : T(0), yo, p[i], mo, eta_i);
          const T Cv = R::candidate(syn);
          const T Hc = P.has_clip ? kernels::clip_value(Cv, P.clip) : Cv;
          T gC = scale * gH_row[i] - scale_grad * Hc;
          if (P.has_clip) gC *= kernels::clip_grad_mask(Cv, P.clip);
          T gE_prev = 0;
          SynapseGrad<T> sg;
          gH_row[i] = R::backward(gC, retro ? gE_row[i] : T(0), syn, sg, gE_prev);
          if (retro) gE_row[i] = gE_prev;
          if (geta_conn) geta_conn[i] += sg.eta;
          if constexpr (R::coefficients)
            for (int j = 0; j < 4; ++j) G.grad_coefficients[(b * 4 + j) * OI + o * I + i] += sg.k[j];
          gy_row += sg.y;
          gm_row += sg.m;
          geta_row += sg.eta;
          my_partials[i] += sg.p;
        }
        gy_row = warp_sum(gy_row);
        gm_row = warp_sum(gm_row);
        geta_row = warp_sum(geta_row);
        const T gy_total = S.gy[o] + gy_row;
        __syncwarp();
        if (lane == 0) {
          if (G.grad_eta && !eta_pc) G.grad_eta[b * O + o] += geta_row;
          if (modulated) G.grad_mod[(t * B + b) * O + o] = gm_row;
          S.gm[o] = gm_row;
          S.gy[o] = gy_total;
        }
        if (row_local) finish_row(o, gy_total);
      }

      if (!row_local) {
        // m = s (· f + g), s = tanh(y·v + c): dL/ds sums over every row of every block.
        __syncthreads();
        T part = 0;
        for (int64_t o = r0 + threadIdx.x; o < r1; o += kThreads)
          part += P.mod_source == ModSource::Fanout ? S.gm[o] * P.fanout_weight[o] : S.gm[o];
        part = block_sum(part, S.red);
        if (threadIdx.x < C) peer(S.gs_part + parity * kMaxCluster, threadIdx.x, C)[rank] = part;
        cluster_barrier(C);
        T gs = 0;
        for (int r = 0; r < C; ++r) gs += S.gs_part[parity * kMaxCluster + r];
        const T gpre = gs * (T(1) - s * s);
        if (rank == 0 && threadIdx.x == 0) {
          G.grad_mod_pre[t * B + b] = gpre;
          G.mod_signal[t * B + b] = s;
        }
        for (int64_t o = r0 + threadIdx.x; o < r1; o += kThreads) S.gy[o] += gpre * P.mod_weight[o];
        __syncthreads();
        for (int64_t o = r0 + warp; o < r1; o += kWarps) finish_row(o, S.gy[o]);
      }

      // dL/dp_t = Σ over warps, then over the cluster's blocks.
      __syncthreads();
      T* gp_part = S.gp_part + parity * I;
      for (int64_t i = threadIdx.x; i < I; i += kThreads) {
        T acc = 0;
        for (int w = 0; w < kWarps; ++w) acc += partials[static_cast<int64_t>(w) * I + i];
        gp_part[i] = acc;
      }
      cluster_barrier(C);
      if (P.recurrent) {
        for (int64_t o = r0 + threadIdx.x; o < r1; o += kThreads) {
          T acc = 0;
          for (int r = 0; r < C; ++r) acc += peer(gp_part, r, C)[o];
          S.gh[o] = acc;
        }
      } else {
        const int64_t share = (I + C - 1) / C;
        const int64_t i0 = min(I, rank * share), i1 = min(I, i0 + share);
        for (int64_t i = i0 + threadIdx.x; i < i1; i += kThreads) {
          T acc = 0;
          for (int r = 0; r < C; ++r) acc += peer(gp_part, r, C)[i];
          G.grad_x[(t * B + b) * I + i] = acc;
        }
      }
      __syncthreads();
    }
  }

  for (int64_t k = threadIdx.x; k < n; k += kThreads) {
    G.grad_trace0[(b * O + r0) * I + k] = gH[k];
    if (retro) G.grad_elig0[(b * O + r0) * I + k] = gE[k];
    if (L.grad_alpha) G.grad_alpha[(b * O + r0) * I + k] = S.galpha[k];
  }
  for (int64_t o = r0 + threadIdx.x; o < r1; o += kThreads) {
    if (P.has_threshold) G.grad_theta0[b * O + o] = S.gtheta[o];
    if (P.recurrent) G.grad_hidden0[b * O + o] = S.gh[o];
  }
  cluster_barrier(C);  // no block leaves while a peer may still read its shared memory
}

// ------------------------------------------------------------------ planning

cudaLaunchConfig_t launch_config(const Plan& L, int64_t B, cudaStream_t stream,
                                 cudaLaunchAttribute* attr) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(B * L.cluster));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = L.smem_bytes;
  cfg.stream = stream;
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = static_cast<unsigned>(L.cluster);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = L.cluster > 1 ? 1 : 0;
  return cfg;
}

// Whether at least one cluster of this plan can be resident at once (the driver refuses a
// launch otherwise). Rules share block size and shared memory, so the hebb kernel stands in.
template <typename T>
bool plan_runs(const Plan& L, bool backward) {
  if (L.cluster <= 1) return true;
  const void* kernel = backward ? reinterpret_cast<const void*>(plastic_scan_backward_kernel<T, kernels::rules::Hebb>)
                                : reinterpret_cast<const void*>(plastic_scan_forward_kernel<T, kernels::rules::Hebb>);
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(L.smem_bytes)) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  cudaLaunchAttribute attr[1];
  cudaLaunchConfig_t cfg = launch_config(L, L.cluster, nullptr, attr);
  int clusters = 0;
  if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &cfg) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return clusters > 0;
}

struct Device {
  int sms = 1, major = 0;
  size_t smem_optin = 48 << 10;
};

Device query_device(int device) {
  Device d;
  int v = 0;
  check_cuda(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, device), "device query");
  check_cuda(cudaDeviceGetAttribute(&d.major, cudaDevAttrComputeCapabilityMajor, device), "device query");
  check_cuda(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, device), "device query");
  d.smem_optin = static_cast<size_t>(v);
  return d;
}

// Device attributes, queried once per device.
Device device_info(int device) {
  static std::mutex mutex;
  static std::map<int, Device> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(device);
  if (it == cache.end()) it = cache.emplace(device, query_device(device)).first;
  return it->second;
}

// Test hooks: TORCHPLASTIC_CUDA_CLUSTER=1|2|4|8 forces the cluster size, and
// TORCHPLASTIC_CUDA_OFF_CHIP=1 keeps every matrix in global memory (the streaming fallback).
int forced_cluster() {
  const char* v = std::getenv("TORCHPLASTIC_CUDA_CLUSTER");
  return v ? std::atoi(v) : 0;
}
bool forced_off_chip() {
  const char* v = std::getenv("TORCHPLASTIC_CUDA_OFF_CHIP");
  return v && std::atoi(v) != 0;
}

// Puts the optional buffers on chip in priority order while they fit.
template <typename T>
size_t place(Plan& L, const ScanParams<T>& P, bool backward, size_t budget) {
  auto smem_of = [&](Plan& q) {
    return backward ? BackwardSmem<T>(nullptr, P, q).total * sizeof(T)
                    : ForwardSmem<T>(nullptr, P, q).total * sizeof(T);
  };
  const bool retro = kernels::traits(P.rule).eligibility;
  bool* order_fwd[] = {&L.trace, &L.alpha, &L.elig, &L.weight};
  bool* order_bwd[] = {&L.partials, &L.grad_trace, &L.grad_alpha, &L.alpha, &L.grad_elig, &L.weight};
  auto wanted = [&](bool* flag) {
    if (flag == &L.elig || flag == &L.grad_elig) return retro;
    if (flag == &L.weight) return P.recurrent;
    return true;
  };
  auto try_flag = [&](bool* flag) {
    if (!wanted(flag)) return;
    *flag = true;
    if (smem_of(L) > budget) *flag = false;
  };
  if (backward)
    for (bool* f : order_bwd) try_flag(f);
  else
    for (bool* f : order_fwd) try_flag(f);
  return smem_of(L);
}

template <typename T>
bool all_on_chip(const Plan& L, const ScanParams<T>& P, bool backward) {
  const bool retro = kernels::traits(P.rule).eligibility;
  if (backward)
    return L.partials && L.grad_trace && L.grad_alpha && L.alpha && (!retro || L.grad_elig) &&
           (!P.recurrent || L.weight);
  return L.trace && L.alpha && (!retro || L.elig) && (!P.recurrent || L.weight);
}

template <typename T>
Plan make_plan(const ScanParams<T>& P, int device, bool backward) {
  const Device d = device_info(device);
  const size_t budget = d.smem_optin;
  const int max_cluster = d.major >= 9 ? kMaxCluster : 1;
  const size_t needed = backward ? BackwardSmem<T>(nullptr, P, Plan{}).total * sizeof(T)
                                 : ForwardSmem<T>(nullptr, P, Plan{}).total * sizeof(T);
  if (needed > budget) {
    std::ostringstream msg;
    msg << "plastic_scan (CUDA): sizes O=" << P.O << ", I=" << P.I << " need " << needed
        << " bytes of shared memory per block for their vectors; this device allows " << budget;
    throw std::runtime_error(msg.str());
  }
  const bool off_chip = forced_off_chip();
  auto plan_for = [&](int C) {
    Plan L;
    L.cluster = C;
    L.rows = static_cast<int>((P.O + C - 1) / C);
    L.smem_bytes = place(L, P, backward, off_chip ? 0 : budget);  // budget 0: nothing fits
    return L;
  };
  const int forced = forced_cluster();
  if (forced == 1 || (forced > 1 && forced <= max_cluster && (forced & (forced - 1)) == 0))
    return plan_for(forced);
  // The smallest cluster that holds everything on chip; then no more blocks than SMs (a second
  // wave would double the time), or more blocks while SMs are idle.
  Plan best = plan_for(1);
  for (int C = 1; C <= max_cluster && C <= std::max<int64_t>(P.O, 1); C *= 2) {
    best = plan_for(C);
    if (all_on_chip(best, P, backward)) break;
  }
  while (best.cluster > 1 && P.B * best.cluster > d.sms) best = plan_for(best.cluster / 2);
  while (best.cluster < max_cluster && P.B * best.cluster * 2 <= d.sms &&
         best.cluster * 2 <= P.O)
    best = plan_for(best.cluster * 2);
  while (best.cluster > 1 && !plan_runs<T>(best, backward)) best = plan_for(best.cluster / 2);
  return best;
}

template <typename Kernel, typename... Args>
void launch(Kernel kernel, const Plan& L, int64_t B, cudaStream_t stream, const char* what,
            Args... args) {
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(L.smem_bytes)),
             "cudaFuncSetAttribute");
  cudaLaunchAttribute attr[1];
  cudaLaunchConfig_t cfg = launch_config(L, B, stream, attr);
  check_cuda(cudaLaunchKernelEx(&cfg, kernel, args...), what);
}

}  // namespace

template <typename T>
Plan plan_forward(const ScanParams<T>& P, int device) {
  return make_plan(P, device, false);
}
template <typename T>
Plan plan_backward(const ScanParams<T>& P, int device) {
  return make_plan(P, device, true);
}

template <typename T>
int64_t backward_scratch_elems(const ScanParams<T>& P, const Plan& L) {
  const bool retro = kernels::traits(P.rule).eligibility;
  const int64_t OI = P.O * P.I;
  int64_t n = (retro ? 2 : 1) * P.B * P.checkpoint_every * OI;
  if (!L.partials) n += P.B * L.cluster * static_cast<int64_t>(kWarps) * P.I;
  if (!L.grad_trace) n += P.B * OI;
  if (retro && !L.grad_elig) n += P.B * OI;
  return n;
}

template <typename T>
void launch_forward(const ScanParams<T>& P, const Plan& L, cudaStream_t stream) {
  if (P.B == 0 || P.O == 0) return;
  kernels::with_rule(P.rule, [&](auto rule) {
    launch(plastic_scan_forward_kernel<T, decltype(rule)>, L, P.B, stream, "forward", P, L);
  });
}

template <typename T>
void launch_backward(const ScanParams<T>& P, const ScanGradParams<T>& G, const Plan& L,
                     T* scratch, cudaStream_t stream) {
  if (P.B == 0 || P.O == 0) return;
  kernels::with_rule(P.rule, [&](auto rule) {
    launch(plastic_scan_backward_kernel<T, decltype(rule)>, L, P.B, stream, "backward", P, G, L,
           scratch);
  });
}

#define TORCHPLASTIC_INSTANTIATE(T)                                                            \
  template Plan plan_forward<T>(const ScanParams<T>&, int);                                    \
  template Plan plan_backward<T>(const ScanParams<T>&, int);                                   \
  template int64_t backward_scratch_elems<T>(const ScanParams<T>&, const Plan&);               \
  template void launch_forward<T>(const ScanParams<T>&, const Plan&, cudaStream_t);            \
  template void launch_backward<T>(const ScanParams<T>&, const ScanGradParams<T>&, const Plan&, \
                                   T*, cudaStream_t);
TORCHPLASTIC_INSTANTIATE(float)
TORCHPLASTIC_INSTANTIATE(double)

}  // namespace cuda
}  // namespace torchplastic
