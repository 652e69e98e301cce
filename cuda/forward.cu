// The CUDA forward of plastic_scan (equations: csrc/kernels/plastic_step.h and the rules,
// csrc/kernels/rules/, whose structs the kernel is templated on; the launch shape: common.cuh).
// Float calls whose block rows fit a lane's registers take forward_registers.cu instead
// (Plan::registers), with the same results bit for bit; this kernel takes every other call.
//
// The step's outputs y are written into every block's shared memory through distributed
// shared memory (triple-buffered, so one cluster barrier per step is enough), which is where
// the next step reads its presynaptic input. H is written to global memory only at
// checkpoints and at the end.
//
// The plastic LSTM (P.lstm) is the same pass over the cell candidate's rows g, with the gates
// i, f, o of the row beside it (their rows of W_hh read from global memory, where they stay in
// L2), c_t and h_t: h_t is what the blocks exchange, the next step's presynaptic activity and
// what internal neuromodulation reads; g_t is the rule's postsynaptic activity.
#include <type_traits>

#include "cuda/common.cuh"

namespace torchplastic {
namespace cuda {

// The records of H_t (tp.inspect), when recording: this block's share of Σ H_t² and, every R
// steps, its rows of H_t (n elements from row r0). Every thread of the block calls it.
template <typename T>
__device__ void record_trace(const ScanParams<T>& P, int64_t t, int64_t b, const T* H,
                             int64_t r0, int64_t n, T* red) {
  if (P.record_norm) {
    T part = 0;
    for (int64_t k = threadIdx.x; k < n; k += kThreads) part += H[k] * H[k];
    part = block_sum(part, red);
    if (threadIdx.x == 0) atomicAdd(P.record_norm + t * P.B + b, part);
  }
  if (T* slot = P.record_slot(t, b))
    for (int64_t k = threadIdx.x; k < n; k += kThreads) slot[r0 * P.I + k] = H[k];
}

// The LSTM around row o of step t, once its g_t = y is known (every lane holds it): the gates
// i, f, o from their rows of W_hh and p = h_{t-1} (a warp's dot products), then c_t and h_t,
// stored by lane 0. Returns h_t[o] (every lane).
template <typename T>
__device__ T lstm_row(const ScanParams<T>& P, int64_t t, int64_t b, int64_t o, T g, const T* p,
                      int lane) {
  const int64_t H = P.O;
  const T* Wi = P.weight_hh + o * H;
  const T* Wf = P.weight_hh + (H + o) * H;
  const T* Wo = P.weight_hh + (3 * H + o) * H;
  T ai = 0, af = 0, ao = 0;
  for (int64_t k = lane; k < H; k += 32) {
    const T pk = p[k];
    ai += Wi[k] * pk;
    af += Wf[k] * pk;
    ao += Wo[k] * pk;
  }
  const T* z = P.z_row(t, b);
  const T i = kernels::activate(Activation::Sigmoid, z[o] + warp_sum(ai));
  const T f = kernels::activate(Activation::Sigmoid, z[H + o] + warp_sum(af));
  const T og = kernels::activate(Activation::Sigmoid, z[3 * H + o] + warp_sum(ao));
  const T c = f * P.previous_cell(t, b)[o] + i * g;
  const T h = og * kernels::precise_tanh(c);
  if (lane == 0) {
    P.lstm_value(ScanParams<T>::kGateI, t, b)[o] = i;
    P.lstm_value(ScanParams<T>::kGateF, t, b)[o] = f;
    P.lstm_value(ScanParams<T>::kGateO, t, b)[o] = og;
    P.lstm_value(ScanParams<T>::kCell, t, b)[o] = c;
    P.hseq[(t * P.B + b) * H + o] = h;
  }
  return h;
}

// The rule's postsynaptic activity of row o at step t, after the step: y_t[o] (in y_now), or
// the LSTM's g_t[o], which y_now does not hold (it holds h_t).
template <typename T>
__device__ T post(const ScanParams<T>& P, int64_t t, int64_t b, int64_t o, const T* y_now) {
  return P.lstm ? P.y[(t * P.B + b) * P.O + o] : y_now[o];
}

template <typename T, typename V>
__global__ void __launch_bounds__(kThreads)
    plastic_scan_forward_kernel(const ScanParams<T> P, const Plan L) {
  using R = typename V::Rule;
  TORCHPLASTIC_DYNAMIC_SMEM(smem_raw);
  ForwardSmem<T> S(reinterpret_cast<T*>(smem_raw), P, L);
  const BlockSlice slice(P, L);
  const int C = L.cluster, lane = slice.lane, warp = slice.warp;
  const int64_t b = slice.b, T_ = slice.steps, r0 = slice.r0, r1 = slice.r1, n = slice.n;
  const int64_t B = P.B, O = P.O, I = P.I;
  const int I32 = static_cast<int>(I);  // indices within a row (see update_row_warp)
  constexpr bool retro = R::eligibility, modulated = R::modulated;
  const bool row_local = !P.internal_modulation();
  // Whether the rows the step reads are in shared memory, where the loops below take copies
  // that load with shared-memory instructions: all of them (the plan's usual case), or all but
  // W (a plan that runs every sequence in one wave may leave W in global memory,
  // plan_policy.h).
  const bool trace_on_chip = !L.plain_loops && L.trace && (!retro || L.elig);
  const bool rows_on_chip = trace_on_chip && L.alpha && (!P.recurrent || L.weight);
  const bool all_but_weight_on_chip = trace_on_chip && L.alpha && P.recurrent && !L.weight;

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
  // Per-step inputs of this block's rows, z (the LSTM's g rows) and external m (StagedInputs,
  // common.cuh): a step ahead in registers where each thread has at most one row, except in the
  // benchmark's baseline (Plan::plain_loops).
  StagedInputs<kThreads, T> inputs(P, slice, S.zbuf, S.mbuf, P.lstm ? 2 * O : 0,
                                   !L.plain_loops && r1 - r0 <= kThreads);
  inputs.stage(0);
  for (int64_t o = r0 + threadIdx.x; o < r1; o += kThreads)
    S.theta[o] = P.has_threshold ? P.theta0[b * O + o] : T(0);
  if (P.recurrent)
    for (int64_t o = threadIdx.x; o < O; o += kThreads) S.ybuf[2 * O + o] = P.hidden0[b * O + o];
  // Over the cluster, not the block only: the first step writes y_0 into the peers' shared
  // memory, which is only there once every block of the cluster has started.
  cluster_barrier(C);

  // The next step that starts a segment, so that a step's test is one comparison: the 64-bit
  // modulo in checkpoint_slot compiles to a division of some twenty instructions (a call to a
  // longer routine for values past 32 bits), which every thread ran at every step.
  int64_t next_segment = P.checkpoint_every;
  for (int64_t t = 0; t < T_; ++t) {
    inputs.load_ahead(t + 1);
    if (t == next_segment) {
      next_segment += P.checkpoint_every;
      if (T* slot = P.checkpoint_slot(P.trace_ckpt, t, b)) {
        T* elig_slot = P.checkpoint_slot(P.elig_ckpt, t, b);
        for (int64_t k = threadIdx.x; k < n; k += kThreads) {
          slot[r0 * I + k] = H[k];
          if (retro) elig_slot[r0 * I + k] = E[k];
        }
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
    // Row o's trace update in place; p is in shared memory (S.ybuf or S.pbuf).
    auto update_row = [&](int64_t o, T post_o, T m, T* H_row, T* E_row) {
      if (trace_on_chip)
        update_row_warp<V, true, kChunk<T>>(P, o, post_o, m, p, H_row, H_row, E_row, E_row, lane);
      else if (L.plain_loops)
        update_row_warp<V, false, 1>(P, o, post_o, m, p, H_row, H_row, E_row, E_row, lane);
      else
        update_row_warp<V, false, kChunk<T>>(P, o, post_o, m, p, H_row, H_row, E_row, E_row,
                                             lane);
    };

    // Rows o, o + kWarps, ... (N of them, 1 or 2) of this warp: their pre-activations in one
    // loop over i, then their warp sums, outputs and (row-local) trace updates. Two rows give
    // the warp two independent chains (the rows' sums and their shuffle reductions) to overlap,
    // where one row at a time left each warp waiting on its own latencies. Each row's arithmetic
    // is as alone.
    auto step_rows = [&](int64_t o_first, auto rows) {
      constexpr int N = decltype(rows)::value;
      int64_t o[N], offset[N];  // offset: the row's in the block's [rows, I] slices
      T acc[N];
#pragma unroll
      for (int r = 0; r < N; ++r) {
        o[r] = o_first + r * kWarps;
        offset[r] = (o[r] - r0) * I;
        acc[r] = 0;
      }
      // The rows are reached from the slices' bases inside, after the assumption, so that the
      // compiler sees them in shared memory: α and H (`shared`), W (`shared_weight`).
      auto dot = [&](auto shared, auto shared_weight, auto recurrent) {
        const T *A_s = A, *H_s = H, *W_s = W;
        if constexpr (decltype(shared)::value) {
          assume_shared(A_s);
          assume_shared(H_s);
        }
        if constexpr (decltype(shared_weight)::value) assume_shared(W_s);
        const T* A_row[N];
        const T* H_row[N];
        const T* W_row[N];
#pragma unroll
        for (int r = 0; r < N; ++r) {
          A_row[r] = A_s + offset[r];
          H_row[r] = H_s + offset[r];
          W_row[r] = decltype(recurrent)::value ? W_s + offset[r] : nullptr;
        }
        for (int i = lane; i < I32; i += 32) {
          const T pi = p[i];
#pragma unroll
          for (int r = 0; r < N; ++r) {
            if constexpr (decltype(recurrent)::value)
              acc[r] += (A_row[r][i] * H_row[r][i] + W_row[r][i]) * pi;
            else
              acc[r] += A_row[r][i] * H_row[r][i] * pi;
          }
        }
      };
      using yes = std::true_type;
      using no = std::false_type;
      if (P.recurrent) {
        if (rows_on_chip) {
          dot(yes{}, yes{}, yes{});
        } else if (sizeof(T) == 4 && all_but_weight_on_chip) {
          // Float only: in double this copy pushed some kernels past the register cap (spills).
          if constexpr (sizeof(T) == 4) dot(yes{}, no{}, yes{});
        } else {
          dot(no{}, no{}, yes{});
        }
      } else {
        if (rows_on_chip) dot(yes{}, no{}, no{});
        else dot(no{}, no{}, no{});
      }
#pragma unroll
      for (int r = 0; r < N; ++r) acc[r] = warp_sum(acc[r]);
#pragma unroll
      for (int r = 0; r < N; ++r) {
        const T y = kernels::activate(P.activation, S.zbuf[o[r]] + acc[r] - S.theta[o[r]]);
        if (lane == 0) P.y[(t * B + b) * O + o[r]] = y;
        // What the blocks exchange: y_t, or the LSTM's h_t.
        const T out = P.lstm ? lstm_row(P, t, b, o[r], y, p, lane) : y;
        if (lane < C) peer(y_now, lane, C)[o[r]] = out;
        if (row_local) {
          const T m = modulated ? S.mbuf[o[r]] : T(0);
          if (modulated && P.record_modulation && lane == 0)
            P.record_modulation[(t * B + b) * O + o[r]] = m;
          T* E_row = retro ? E + offset[r] : nullptr;
          update_row(o[r], y, m, H + offset[r], E_row);
        }
      }
    };
    // Pairs in float; in double they pushed the kernels past the register cap (spills).
    int64_t o = r0 + warp;
    if constexpr (sizeof(T) == 4)
      if (!L.plain_loops)
        for (; o + kWarps < r1; o += 2 * kWarps) step_rows(o, std::integral_constant<int, 2>{});
    for (; o < r1; o += kWarps) step_rows(o, std::integral_constant<int, 1>{});
    cluster_barrier(C);  // every block now holds all of y_t

    if (!row_local) {
      const T s = modulated ? modulation_signal(P, y_now, S.red) : T(0);
      for (int64_t o = r0 + warp; o < r1; o += kWarps) {
        const T m = modulated ? modulation_of_row(P, t, b, o, s) : T(0);
        if (modulated && P.record_modulation && lane == 0) P.record_modulation[(t * B + b) * O + o] = m;
        T* H_row = H + (o - r0) * I;
        T* E_row = retro ? E + (o - r0) * I : nullptr;
        update_row(o, post(P, t, b, o, y_now), m, H_row, E_row);
      }
    }
    if (P.has_threshold)
      for (int64_t o = r0 + threadIdx.x; o < r1; o += kThreads)
        S.theta[o] += P.threshold_rate * (post(P, t, b, o, y_now) - P.target_activity);
    // This step's reads of zbuf and mbuf all came before the cluster barrier.
    inputs.store_ahead(t + 1);
    __syncthreads();
    if (P.record_norm || P.record_trace) {
      record_trace(P, t, b, H, r0, n, S.red);
      __syncthreads();  // before the next step writes H
    }
  }
  zero_outputs_past_length<kThreads>(P, slice);
  // Its state was held by stopping there, and so are its trace records.
  if (P.record_norm || P.record_trace)
    for (int64_t t = T_; t < P.T; ++t) record_trace(P, t, b, H, r0, n, S.red);
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

template <typename T>
const void* forward_kernel_for_occupancy(bool registers) {
  if constexpr (std::is_same_v<T, float>)
    if (registers) return forward_registers_kernel_for_occupancy();
  return reinterpret_cast<const void*>(
      plastic_scan_forward_kernel<T, Variant<kernels::rules::Hebb, false, false>>);
}

template <typename T>
void launch_forward(const ScanParams<T>& P, const Plan& L, cudaStream_t stream) {
  if (P.B == 0 || P.O == 0) return;
  if constexpr (std::is_same_v<T, float>) {
    if (L.registers) {
      launch_forward_registers(P, L, stream);
      return;
    }
  }
  with_variant(P, [&](auto variant) {
    launch(plastic_scan_forward_kernel<T, decltype(variant)>, L, P.B, stream, "forward", P, L);
  });
}

template const void* forward_kernel_for_occupancy<float>(bool);
template const void* forward_kernel_for_occupancy<double>(bool);
template void launch_forward<float>(const ScanParams<float>&, const Plan&, cudaStream_t);
template void launch_forward<double>(const ScanParams<double>&, const Plan&, cudaStream_t);

}  // namespace cuda
}  // namespace torchplastic
