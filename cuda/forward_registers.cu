// The CUDA forward of plastic_scan with the trace in registers (Plan::registers; the planner
// takes it where its shape holds a block's rows: cuda/plan.cu). The launch is forward.cu's (a
// cluster of blocks per sequence, block `rank` owning rows [r0, r1), y_t exchanged through
// distributed shared memory, one cluster barrier per step), with blocks of kRegisterThreads
// threads, warp w taking the rows r0 + w, r0 + w + Warps, ..., and each lane holding its
// elements of its warp's rows of H (and E) in registers for all T steps: elements lane,
// lane + 32, ... of each row, as forward.cu's row loops take them. A step then reads only α and
// W from shared memory, and its trace update neither loads nor stores H, where forward.cu's
// loads H for the pre-activation and loads and stores it again in the update. Each row's sums
// run over the same elements in the same order, and each element goes through the same rule
// code (csrc/kernels/rules), so the results are forward.cu's bit for bit (test_cuda.py,
// test_cuda_emulated.py).
//
// Not here (forward.cu takes those calls): double (two registers per value), the plastic LSTM,
// and recording (tp.inspect).
#include "cuda/common.cuh"

namespace torchplastic {
namespace cuda {

// Row o's trace update in registers: h (e) hold a lane's elements lane + 32·k of the row, pv
// the presynaptic values of the same elements; each element as update_row_warp's (common.cuh).
template <typename V, int Cols, typename T>
__device__ __forceinline__ void update_row_registers(const ScanParams<T>& P, int64_t o, T y, T m,
                                                     const T (&pv)[Cols], T (&h)[Cols],
                                                     T (&e)[Cols], int lane, int I) {
  const int64_t row = o * P.I;
  const T* eta = P.eta_row(o);
  const T eta_o = eta[0];
  const bool scaling = P.has_scaling;
  T sumsq = 0;
#pragma unroll
  for (int k = 0; k < Cols; ++k) {
    const int i = lane + 32 * k;
    if (i < I) {
      // Squared from C, not from h[k]: written that way the compiler branched around each
      // element where it now predicates (more instructions in the step loop's SASS).
      const T C = update_element<V>(P, row + i, h[k], e[k], y, pv[k], m, eta_at<V>(eta, eta_o, i));
      h[k] = C;
      if (scaling) sumsq += C * C;
    }
  }
  T scale;
  if (scaling && scaling_factor(P, sumsq, scale)) {
#pragma unroll
    for (int k = 0; k < Cols; ++k)
      if (lane + 32 * k < I) h[k] *= scale;
  }
}

template <typename V>
__global__ void __launch_bounds__(kRegisterThreads)
    plastic_scan_forward_registers_kernel(const ScanParams<float> P, const Plan L) {
  using T = float;
  using R = typename V::Rule;
  constexpr bool retro = R::eligibility, modulated = R::modulated;
  constexpr int Rows = register_rows_per_warp(retro), Cols = kRegisterColumns;
  constexpr int Threads = kRegisterThreads, Warps = Threads / 32;
  TORCHPLASTIC_DYNAMIC_SMEM(smem_raw);
  ForwardSmem<T> S(reinterpret_cast<T*>(smem_raw), P, L);
  const BlockSlice slice(P, L);
  const int C = L.cluster, lane = slice.lane, warp = slice.warp;
  const int64_t b = slice.b, T_ = slice.steps, r0 = slice.r0, r1 = slice.r1, n = slice.n;
  const int64_t B = P.B, O = P.O, I = P.I;
  const int I32 = static_cast<int>(I);
  const bool row_local = !P.internal_modulation();
  // This warp's rows: o[r] = r0 + warp + r·Warps for r < rows (the planner keeps rows ≤ Rows).
  const int rows = r0 + warp < r1 ? static_cast<int>((r1 - r0 - warp + Warps - 1) / Warps) : 0;
  auto row_of = [&](int r) { return r0 + warp + static_cast<int64_t>(r) * Warps; };

  // α and W (recurrent) in shared memory, their rows Stride apart (ForwardSmem).
  constexpr int Stride = 32 * Cols;
  for (int64_t k = threadIdx.x; k < n; k += Threads) {
    const int64_t at = k / I * Stride + k % I;
    S.alpha[at] = P.alpha[r0 * I + k];
    if (P.recurrent) S.weight[at] = P.weight[r0 * I + k];
  }
  T h[Rows][Cols], e[Rows][Cols];
#pragma unroll
  for (int r = 0; r < Rows; ++r) {
#pragma unroll
    for (int k = 0; k < Cols; ++k) {
      const int i = lane + 32 * k;
      const bool mine = r < rows && i < I32;
      const int64_t at = (b * O + row_of(r)) * I + i;
      h[r][k] = mine ? P.trace0[at] : T(0);
      e[r][k] = retro && mine ? P.elig0[at] : T(0);
    }
  }
  // Stores this warp's rows of H (E) into [O, I] matrices of sequence b (checkpoints, the final
  // state).
  auto store_rows = [&](T* trace, T* elig) {
#pragma unroll
    for (int r = 0; r < Rows; ++r) {
#pragma unroll
      for (int k = 0; k < Cols; ++k) {
        const int i = lane + 32 * k;
        if (r < rows && i < I32) {
          const int64_t at = row_of(r) * I + i;
          trace[at] = h[r][k];
          if (retro) elig[at] = e[r][k];
        }
      }
    }
  };

  // Per-step inputs of this block's rows (z, external m), staged as forward.cu stages them
  // (StagedInputs): a block has at most register_rows_per_block ≤ Threads rows.
  StagedInputs<Threads, T> inputs(P, slice, S.zbuf, S.mbuf, 0, true);
  inputs.stage(0);
  for (int64_t o = r0 + threadIdx.x; o < r1; o += Threads)
    S.theta[o] = P.has_threshold ? P.theta0[b * O + o] : T(0);
  if (P.recurrent)
    for (int64_t o = threadIdx.x; o < O; o += Threads) S.ybuf[2 * O + o] = P.hidden0[b * O + o];
  // Over the cluster: the first step writes y_0 into the peers' shared memory.
  cluster_barrier(C);

  int64_t next_segment = P.checkpoint_every;  // see forward.cu
  for (int64_t t = 0; t < T_; ++t) {
    inputs.load_ahead(t + 1);
    if (t == next_segment) {
      next_segment += P.checkpoint_every;
      if (T* slot = P.checkpoint_slot(P.trace_ckpt, t, b))
        store_rows(slot, P.checkpoint_slot(P.elig_ckpt, t, b));
    }
    const T* p;
    if (P.recurrent) {
      p = S.ybuf + ((t + 2) % 3) * O;
    } else {
      const T* x = P.x + (t * B + b) * I;
      for (int64_t i = threadIdx.x; i < I; i += Threads) S.pbuf[i] = x[i];
      __syncthreads();
      p = S.pbuf;
    }
    T* y_now = S.ybuf + (t % 3) * O;
    T pv[Cols];
#pragma unroll
    for (int k = 0; k < Cols; ++k) pv[k] = lane + 32 * k < I32 ? p[lane + 32 * k] : T(0);

    // The rows' pre-activations, each summed over its elements in order as forward.cu's
    // `dot` sums them (then the same warp reduction).
    T acc[Rows];
#pragma unroll
    for (int r = 0; r < Rows; ++r) acc[r] = 0;
    if (rows > 0) {  // a warp without rows has no address in the slices
      // Element k of row r of this warp is at A_lane[r · Warps · Stride + 32 · k]: a constant
      // offset from one address per lane.
      const T* A_lane = S.alpha + warp * Stride + lane;
      const T* W_lane = P.recurrent ? S.weight + warp * Stride + lane : nullptr;
      assume_shared(A_lane);
      if (P.recurrent) assume_shared(W_lane);
#pragma unroll
      for (int k = 0; k < Cols; ++k) {
        if (lane + 32 * k >= I32) break;
#pragma unroll
        for (int r = 0; r < Rows; ++r) {
          if (r >= rows) break;
          const int offset = r * Warps * Stride + 32 * k;
          if (P.recurrent)
            acc[r] += (A_lane[offset] * h[r][k] + W_lane[offset]) * pv[k];
          else
            acc[r] += A_lane[offset] * h[r][k] * pv[k];
        }
      }
    }
    // Each row's sum over the warp (every lane gets it); lane j keeps row j's. The rows'
    // outputs, exchange and modulation then run once per lane instead of once per row in
    // unrolled code, which nearly doubled the code every warp runs through each step
    // (docs/performance.md); only the dot above and the updates below need the rows unrolled
    // (the registers of a row are named by constants).
    T sum_mine = 0;
#pragma unroll
    for (int r = 0; r < Rows; ++r) {
      if (r >= rows) break;
      const T total = warp_sum(acc[r]);
      if (lane == r) sum_mine = total;
    }
    const bool has_row = lane < rows;
    const int64_t o_mine = row_of(lane);  // lane j's row (where has_row)
    T y_mine = 0, m_mine = 0;
    if (has_row) {
      y_mine = kernels::activate(P.activation, S.zbuf[o_mine] + sum_mine - S.theta[o_mine]);
      P.y[(t * B + b) * O + o_mine] = y_mine;
      for (int c = 0; c < C; ++c) peer(y_now, c, C)[o_mine] = y_mine;
      if (row_local && modulated) m_mine = S.mbuf[o_mine];
    }
    cluster_barrier(C);  // every block now holds all of y_t

    if (!row_local) {
      const T s = modulated ? modulation_signal<Threads>(P, y_now, S.red) : T(0);
      if (has_row && modulated) m_mine = modulation_of_row(P, t, b, o_mine, s);
    }
    if (modulated && P.record_modulation && has_row)
      P.record_modulation[(t * B + b) * O + o_mine] = m_mine;
    // The trace updates, row r's y_t and m_t from lane r.
#pragma unroll
    for (int r = 0; r < Rows; ++r) {
      if (r >= rows) break;
      const T y = __shfl_sync(0xffffffffu, y_mine, r);
      const T m = __shfl_sync(0xffffffffu, m_mine, r);
      update_row_registers<V>(P, row_of(r), y, m, pv, h[r], e[r], lane, I32);
    }
    if (P.has_threshold)
      for (int64_t o = r0 + threadIdx.x; o < r1; o += Threads)
        S.theta[o] += P.threshold_rate * (y_now[o] - P.target_activity);
    inputs.store_ahead(t + 1);  // this step's reads of zbuf and mbuf all came before the barrier
    __syncthreads();
  }
  zero_outputs_past_length<Threads>(P, slice);
  if (P.has_threshold)
    for (int64_t o = r0 + threadIdx.x; o < r1; o += Threads) P.theta[b * O + o] = S.theta[o];
  store_rows(P.trace + b * O * I, retro ? P.elig + b * O * I : nullptr);
  cluster_barrier(C);  // no block leaves while a peer may still write into its shared memory
}

const void* forward_registers_kernel_for_occupancy() {
  return reinterpret_cast<const void*>(
      plastic_scan_forward_registers_kernel<Variant<kernels::rules::Hebb, false, false>>);
}

void launch_forward_registers(const ScanParams<float>& P, const Plan& L, cudaStream_t stream) {
  with_variant(P, [&](auto variant) {
    launch(plastic_scan_forward_registers_kernel<decltype(variant)>, L, P.B, stream, "forward",
           P, L);
  });
}

}  // namespace cuda
}  // namespace torchplastic
