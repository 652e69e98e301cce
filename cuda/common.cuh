// What the CUDA kernels of plastic_scan share (forward.cu, backward.cu, plan.cu): the launch
// shape, device helpers, the shared-memory layouts, and the launch itself.
//
// One persistent kernel runs all T steps. Sequences are independent, so each one gets a thread
// block cluster of C blocks (1 ≤ C ≤ 8: cuda/plan_policy.h chooses C);
// block `rank` of the cluster owns the postsynaptic rows [rank·R, rank·R + R). Per step every
// warp takes rows, its lanes take columns: the row's matrix-vector product is a warp
// reduction, and the trace update of the row follows while it is in registers / L1. Where they
// fit, the block's slices of H, E, α and W stay in shared memory for all T steps; otherwise the
// same code reads them from global memory (the streaming fallback). Plan (plastic_scan_cuda.h)
// says which.
#pragma once

#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <mutex>
#include <stdexcept>
#include <string>

#include "cuda/plastic_scan_cuda.h"
#include "kernels/plastic_step.h"
#include "kernels/variant.h"

// Thread block clusters, in the device code for sm_90 and in the kernels' CPU emulation
// (tests/cuda_emulation, whose headers define the hooks below for itself).
#ifndef TORCHPLASTIC_CLUSTERS
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define TORCHPLASTIC_CLUSTERS 1
#else
#define TORCHPLASTIC_CLUSTERS 0
#endif
#endif
// The block's dynamic shared memory, as a kernel's first statement.
#ifndef TORCHPLASTIC_DYNAMIC_SMEM
#define TORCHPLASTIC_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

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
using kernels::Variant;
using kernels::eta_at;
using kernels::with_variant;

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxCluster = 8;

inline void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("plastic_scan (CUDA): ") + what + ": " +
                             cudaGetErrorString(err));
}

// ------------------------------------------------------------------ device helpers

__device__ __forceinline__ int cluster_rank(int C) {
#if TORCHPLASTIC_CLUSTERS
  if (C > 1) return static_cast<int>(cg::this_cluster().block_rank());
#endif
  return 0;
}

// Barrier over the sequence's blocks (a plain block barrier when the cluster is one block).
// It orders shared and distributed-shared memory accesses before it against those after it.
__device__ __forceinline__ void cluster_barrier(int C) {
#if TORCHPLASTIC_CLUSTERS
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
#if TORCHPLASTIC_CLUSTERS
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

// Sum over a block of Threads threads; every thread gets it. `red` holds Threads / 32 values.
template <int Threads = kThreads, typename T>
__device__ T block_sum(T v, T* red) {
  v = warp_sum(v);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  T total = 0;
#pragma unroll
  for (int w = 0; w < Threads / 32; ++w) total += red[w];
  return total;
}

// s_t = tanh(y_t · v + c) over all O outputs (internal modulation), computed by every block.
template <int Threads = kThreads, typename T>
__device__ T modulation_signal(const ScanParams<T>& P, const T* y, T* red) {
  T part = 0;
  for (int64_t o = threadIdx.x; o < P.O; o += Threads) part += y[o] * P.mod_weight[o];
  return tanh(block_sum<Threads>(part, red) + P.mod_bias[0]);
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

// The share of a sequence that a block works on: block `rank` of its cluster owns the rows
// [r0, r1) of sequence b, whose length is `steps` (P.length(b)), n elements of a [O, I] matrix.
// Every kernel starts from it.
struct BlockSlice {
  int rank, lane, warp;
  int64_t b, steps, r0, r1, n;
  template <typename T>
  __device__ BlockSlice(const ScanParams<T>& P, const Plan& L)
      : rank(cluster_rank(L.cluster)),
        lane(threadIdx.x & 31),
        warp(threadIdx.x >> 5),
        b(blockIdx.x / L.cluster),
        steps(P.length(b)),
        r0(min(P.O, static_cast<int64_t>(rank) * L.rows)),
        r1(min(P.O, r0 + L.rows)),
        n((r1 - r0) * P.I) {}
};

// The forwards' per-step inputs of a block's rows, z (from column z_offset of z's rows: the
// LSTM's g rows) and external m, staged in shared memory (zbuf, mbuf) a step ahead, so that no
// warp waits on a global load in the middle of its row. Where each thread has at most one row
// (`ahead`), a step loads the next step's values of its thread's row into registers at its start
// (load_ahead) and stores them after its cluster barrier (store_ahead), so that their latency
// passes during the step; staged after the barrier (store_ahead otherwise), every warp waited
// for them at the block barrier that follows. It reads the block's rows and length from the
// kernel's BlockSlice, which outlives it.
template <int Threads, typename T>
struct StagedInputs {
  const ScanParams<T>& P;
  const BlockSlice& s;
  T *zbuf, *mbuf;
  int64_t z_offset, my_row;
  bool external, ahead;
  T z_next = 0, m_next = 0;

  __device__ StagedInputs(const ScanParams<T>& P, const BlockSlice& s, T* zbuf, T* mbuf,
                          int64_t z_offset, bool ahead)
      : P(P),
        s(s),
        zbuf(zbuf),
        mbuf(mbuf),
        z_offset(z_offset),
        my_row(s.r0 + threadIdx.x),
        external(P.mod_source == ModSource::External),
        ahead(ahead) {}
  __device__ T z_at(int64_t t, int64_t o) const { return P.z_row(t, s.b)[z_offset + o]; }
  __device__ T m_at(int64_t t, int64_t o) const {
    return P.modulation[(t * P.B + s.b) * P.O + o];
  }
  // Step t's inputs of every row of the block, now.
  __device__ void stage(int64_t t) {
    if (t >= s.steps) return;
    for (int64_t o = s.r0 + threadIdx.x; o < s.r1; o += Threads) {
      zbuf[o] = z_at(t, o);
      if (external) mbuf[o] = m_at(t, o);
    }
  }
  __device__ void load_ahead(int64_t t) {
    if (!ahead || t >= s.steps || my_row >= s.r1) return;
    z_next = z_at(t, my_row);
    if (external) m_next = m_at(t, my_row);
  }
  // Step t's inputs into shared memory, once the step before has read them all.
  __device__ void store_ahead(int64_t t) {
    if (!ahead) {
      stage(t);
      return;
    }
    if (t >= s.steps || my_row >= s.r1) return;
    zbuf[my_row] = z_next;
    if (external) mbuf[my_row] = m_next;
  }
};

// Past its length a sequence's outputs are zero (its state was held by stopping there): y, and
// the plastic LSTM's h and stored gates and cell, of the block's rows.
template <int Threads, typename T>
__device__ void zero_outputs_past_length(const ScanParams<T>& P, const BlockSlice& s) {
  for (int64_t t = s.steps; t < P.T; ++t) {
    for (int64_t o = s.r0 + threadIdx.x; o < s.r1; o += Threads) {
      P.y[(t * P.B + s.b) * P.O + o] = T(0);
      if (P.lstm) {
        P.hseq[(t * P.B + s.b) * P.O + o] = T(0);
        for (int k = 0; k < 5; ++k) P.lstm_value(k, t, s.b)[o] = T(0);
      }
    }
  }
}

// Tells the compiler that p points into shared memory, where the caller knows it does, so its
// loads and stores are shared-memory instructions (LDS, STS) rather than generic ones, which
// must first find out which memory they address.
template <typename T>
__device__ __forceinline__ void assume_shared(const T* p) {
  __builtin_assume(__isShared(p));
}

// Asks for the line holding p (global memory) to be brought into L1 (into L2 only, where
// `to_l2`), without a register to wait on: a hint, which the loads that follow find done or in
// flight. The CPU emulation, which has no caches, reads the byte at p instead, so that a
// prefetch outside the arrays is a memory error there (under AddressSanitizer: make test-asan).
__device__ __forceinline__ void prefetch_line(const void* p, bool to_l2) {
#if defined(__CUDA_ARCH__)
  if (to_l2)
    asm volatile("prefetch.global.L2 [%0];" ::"l"(__cvta_generic_to_global(p)));
  else
    asm volatile("prefetch.global.L1 [%0];" ::"l"(__cvta_generic_to_global(p)));
#else
  (void)*static_cast<const volatile unsigned char*>(p);
  (void)to_l2;
#endif
}

// Every line of a row of I elements in global memory into L1 (L2), each lane its elements' (the
// lanes of one instruction cover consecutive elements, so each instruction asks for one or two
// lines). The backward's row loops store as they go, and the compiler cannot move a load above
// a store through a pointer that may alias it: without this, each of a row's global loads waits
// out its whole latency in turn (seen in their SASS). Holding the loads' values in registers
// instead (row_chunks) pushed the backward kernels, at the register cap, into spilling.
template <typename T>
__device__ __forceinline__ void prefetch_row(const T* row, int I, int lane, bool to_l2) {
  for (int i = lane; i < I; i += 32) prefetch_line(row + i, to_l2);
}

// Elements per lane that a row loop loads before it computes (row_chunks): in double, whose
// values take two registers each, half as many.
template <typename T>
constexpr int kChunk = sizeof(T) == 4 ? 4 : 2;

// A warp's pass over a row of I elements, element i on lane i mod 32, U elements per lane at a
// time: load(u, i) for each of the chunk's elements, then body(u, i) for each, which stores.
// A loop that loads, computes and stores one element at a time waits out each load's latency in
// turn: the compiler cannot move a load above a store through a pointer that may alias it (in
// the SASS of the forward's trace update, the loads of p came after the last element's store).
// A chunk's loads go out together. U = 1 is that plain loop (Plan::plain_loops, and the
// backward, which prefetches instead: prefetch_row); the order in which a lane's elements are
// summed is the same for every U.
template <int U, typename Load, typename Body>
__device__ __forceinline__ void row_chunks(int I, int lane, Load&& load, Body&& body) {
  int i0 = lane;
  for (; i0 + 32 * (U - 1) < I; i0 += 32 * U) {
#pragma unroll
    for (int u = 0; u < U; ++u) load(u, i0 + 32 * u);
#pragma unroll
    for (int u = 0; u < U; ++u) body(u, i0 + 32 * u);
  }
  for (; i0 < I; i0 += 32) {  // the row's last elements, fewer than a chunk
    load(0, i0);
    body(0, i0);
  }
}

// One element of a row's trace update, at index `at` of a [O, I] matrix, from its trace h and
// eligibility e of step t-1: returns the new trace, clipped where V clips, and sets e to the new
// eligibility (rules with one). update_row_warp and the register forward's
// update_row_registers (forward_registers.cu) run it on each of their elements.
template <typename V, typename T>
__device__ __forceinline__ T update_element(const ScanParams<T>& P, int64_t at, T h, T& e, T y,
                                            T p, T m, T eta) {
  using R = typename V::Rule;
  const Synapse<T> s = kernels::synapse<R>(P, at, h, R::eligibility ? e : T(0), y, p, m, eta);
  T C = R::candidate(s);
  if constexpr (R::eligibility) e = R::eligibility_next(s);
  if constexpr (V::clip) C = kernels::clip_value(C, P.clip);
  return C;
}

// Synaptic scaling of a row whose new trace's squares sum to sumsq over the warp (each lane its
// share): whether its norm exceeds P.scaling, and then the factor that brings it down to it.
template <typename T>
__device__ __forceinline__ bool scaling_factor(const ScanParams<T>& P, T sumsq, T& scale) {
  const T norm = sqrt(warp_sum(sumsq));
  if (!(norm > P.scaling)) return false;
  scale = P.scaling / norm;
  return true;
}

// Row o of the trace update by one warp: H_src (E_src) → H_dst (E_dst); src may equal dst
// (each element is read and written by the same lane). V: the rule, clipping and η's
// granularity as types (kernels/variant.h), so the element loop carries only its own terms;
// Shared: p and the rows are in shared memory; U: elements per lane loaded at once
// (row_chunks).
// Indices within a row are 32-bit: a row's length fits, and 64-bit index arithmetic takes
// more integer instructions per element.
template <typename V, bool Shared = false, int U = 1, typename T>
__device__ void update_row_warp(const ScanParams<T>& P, int64_t o, T y, T m, const T* p,
                                const T* H_src, T* H_dst, const T* E_src, T* E_dst, int lane) {
  using R = typename V::Rule;
  if constexpr (Shared) {
    assume_shared(p);
    assume_shared(H_src);
    assume_shared(H_dst);
    if constexpr (R::eligibility) {
      assume_shared(E_src);
      assume_shared(E_dst);
    }
  }
  const int I = static_cast<int>(P.I);
  const int64_t row = o * P.I;
  const T* eta = P.eta_row(o);
  const T eta_o = eta[0];
  const bool scaling = P.has_scaling;
  T sumsq = 0;
  T h[U], e[U] = {}, pv[U], et[U];  // e: read only by rules with an eligibility trace
  row_chunks<U>(
      I, lane,
      [&](int u, int i) {
        h[u] = H_src[i];
        if constexpr (R::eligibility) e[u] = E_src[i];
        pv[u] = p[i];
        et[u] = eta_at<V>(eta, eta_o, i);
      },
      [&](int u, int i) {
        const T C = update_element<V>(P, row + i, h[u], e[u], y, pv[u], m, et[u]);
        if constexpr (R::eligibility) E_dst[i] = e[u];
        H_dst[i] = C;
        if (scaling) sumsq += C * C;
      });
  T scale;
  if (scaling && scaling_factor(P, sumsq, scale))
    for (int i = lane; i < I; i += 32) H_dst[i] *= scale;
}

// Shared memory of a block, in elements of T, carved in this order. The [rows, I] slices' rows
// are `row_stride` apart: I, or in the register forward 32 · kRegisterColumns, so that the
// offset of each of a lane's elements from its warp's first row is a constant of the code.
template <typename T>
struct ForwardSmem {
  T *ybuf, *pbuf, *zbuf, *mbuf, *theta, *red, *H, *E, *alpha, *weight;
  int64_t row_stride, total;
  __host__ __device__ ForwardSmem(T* base, const ScanParams<T>& P, const Plan& L) {
    row_stride = L.registers ? 32 * kRegisterColumns : P.I;
    const int64_t O = P.O, I = P.I, mat = static_cast<int64_t>(L.rows) * row_stride;
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
  T *gy, *gm, *gh, *gc, *gtheta, *ybuf, *pbuf, *red, *gp_part, *gs_part, *partials, *gH, *gE,
      *galpha, *alpha, *weight;
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
    gc = take(O, P.lstm);  // dL/dc_t (LSTM)
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


// ------------------------------------------------------------------ launch

// Threads per block of a plan's kernel.
inline int block_threads(const Plan& L) { return L.registers ? kRegisterThreads : kThreads; }

inline cudaLaunchConfig_t launch_config(const Plan& L, int64_t B, cudaStream_t stream,
                                 cudaLaunchAttribute* attr) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(B * L.cluster));
  cfg.blockDim = dim3(static_cast<unsigned>(block_threads(L)));
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

// Held from setting a kernel's limit of dynamic shared memory until the launch (or the
// occupancy query, plan.cu) that relies on it: the limit belongs to the kernel, shared by every
// host thread, and another thread's smaller one set in between would fail the launch.
std::mutex& kernel_attribute_mutex();

template <typename Kernel, typename... Args>
void launch(Kernel kernel, const Plan& L, int64_t B, cudaStream_t stream, const char* what,
            Args... args) {
  std::lock_guard<std::mutex> lock(kernel_attribute_mutex());
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(L.smem_bytes)),
             "cudaFuncSetAttribute");
  cudaLaunchAttribute attr[1];
  cudaLaunchConfig_t cfg = launch_config(L, B, stream, attr);
  check_cuda(cudaLaunchKernelEx(&cfg, kernel, args...), what);
}


// The hebb kernels (unclipped, η per row), which stand in for every variant where the planner
// asks the driver about occupancy (variants share block size and shared memory); in the forward,
// the register forward's (forward_registers.cu, float only) or the other's.
template <typename T>
const void* forward_kernel_for_occupancy(bool registers);
template <typename T>
const void* backward_kernel_for_occupancy();

// The register forward (forward_registers.cu), which launch_forward calls for a plan with
// Plan::registers.
const void* forward_registers_kernel_for_occupancy();
void launch_forward_registers(const ScanParams<float>& P, const Plan& L, cudaStream_t stream);

}  // namespace cuda
}  // namespace torchplastic
