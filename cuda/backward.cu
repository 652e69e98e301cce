// The CUDA backward of plastic_scan (equations: csrc/kernels/plastic_step.h and the rules,
// csrc/kernels/rules/; the launch shape: common.cuh).
//
// The backward walks segments of K steps in reverse: each block recomputes its rows' traces of
// the segment from the checkpoint into global scratch, then sweeps the segment backward with
// dL/dH, dL/dα (and α, W) on chip where they fit. dL/dp sums over all rows: per-warp partials,
// then per-block partials exchanged through distributed shared memory.
//
// The plastic LSTM (P.lstm): y is the cell candidate g, p is h_{t-1}; after the rule's share of
// dL/dg comes the cell's backward (csrc/kernels/plastic_step.h) per row, which also adds the
// share of dL/dh_{t-1} through W_hh's i, f, o rows to the row's dL/dp partials.
#include "cuda/common.cuh"

namespace torchplastic {
namespace cuda {

// The LSTM cell's backward for row o of step t (every lane of the row's warp; the math is
// kernels::lstm_cell_grad, the CPU's too): with S.gh[o] = dL/dh_t, S.gc[o] = dL/dc_t from the
// later steps and dg_rule the rule's and θ's shares of dL/dg_t, writes the gates'
// pre-activation gradients of i, f, o into grad_z, carries dL/dc_{t-1} in S.gc[o], adds the
// row's W_hh i, f, o terms to the warp's dL/dp partials and returns dL/dg̃ (every lane).
// prefetch: ask for those rows of W_hh first (prefetch_row, common.cuh), into L2 if to_l2.
template <typename T>
__device__ T lstm_cell_backward_row(const ScanParams<T>& P, const ScanGradParams<T>& G,
                                    const BackwardSmem<T>& S, int64_t t, int64_t b, int64_t o,
                                    T dg_rule, T* partials, int lane, bool prefetch, bool to_l2) {
  const int64_t H = P.O;
  const T* Wi = P.weight_hh + o * H;
  const T* Wf = P.weight_hh + (H + o) * H;
  const T* Wo = P.weight_hh + (3 * H + o) * H;
  if (prefetch) {
    prefetch_row(Wi, static_cast<int>(H), lane, to_l2);
    prefetch_row(Wf, static_cast<int>(H), lane, to_l2);
    prefetch_row(Wo, static_cast<int>(H), lane, to_l2);
  }
  const auto d = kernels::lstm_cell_grad(
      P.lstm_value(ScanParams<T>::kGateI, t, b)[o], P.lstm_value(ScanParams<T>::kGateF, t, b)[o],
      P.lstm_value(ScanParams<T>::kGateG, t, b)[o], P.lstm_value(ScanParams<T>::kGateO, t, b)[o],
      kernels::precise_tanh(P.lstm_value(ScanParams<T>::kCell, t, b)[o]),  // as the forward's
      P.previous_cell(t, b)[o], S.gh[o], S.gc[o], dg_rule);
  T* grad_z = G.grad_z + (t * P.B + b) * 4 * H;
  __syncwarp();  // every lane has read S.gh[o] and S.gc[o]
  if (lane == 0) {
    grad_z[o] = d.i;
    grad_z[H + o] = d.f;
    grad_z[3 * H + o] = d.o;
    S.gc[o] = d.cell_prev;
  }
  for (int64_t k = lane; k < H; k += 32) partials[k] += d.i * Wi[k] + d.f * Wf[k] + d.o * Wo[k];
  return d.g;
}

template <typename T, typename V>
__global__ void __launch_bounds__(kThreads)
    plastic_scan_backward_kernel(const ScanParams<T> P, const ScanGradParams<T> G, const Plan L,
                                 T* scratch) {
  using R = typename V::Rule;
  TORCHPLASTIC_DYNAMIC_SMEM(smem_raw);
  BackwardSmem<T> S(reinterpret_cast<T*>(smem_raw), P, L);
  const BlockSlice slice(P, L);
  const int C = L.cluster, rank = slice.rank, lane = slice.lane, warp = slice.warp;
  const int64_t b = slice.b, T_ = slice.steps, r0 = slice.r0, r1 = slice.r1, n = slice.n;
  const int64_t B = P.B, O = P.O, I = P.I, K = P.checkpoint_every, OI = O * I;
  const int I32 = static_cast<int>(I);  // indices within a row (see update_row_warp)
  constexpr bool retro = R::eligibility, modulated = R::modulated;
  const bool row_local = !P.internal_modulation();
  const T clip = P.clip;
  // Rows in global memory are asked into L1 (or L2) one row or more ahead (prefetch_row,
  // common.cuh) where the plan says so (Plan::prefetch_rows, prefetch_to_l2, prefetch_ahead).
  const bool prefetch = L.prefetch_rows, to_l2 = L.prefetch_to_l2;
  const int64_t ahead = static_cast<int64_t>(L.prefetch_ahead) * kWarps;  // in rows

  const int64_t Z = P.lstm ? 4 * O : O;  // z's width
  // Past its length a sequence's gradients are zero.
  for (int64_t t = T_; t < P.T; ++t) {
    for (int64_t o = r0 + threadIdx.x; o < r1; o += kThreads) {
      for (int64_t q = o; q < Z; q += O) G.grad_z[(t * B + b) * Z + q] = T(0);
      if (modulated) G.grad_mod[(t * B + b) * O + o] = T(0);
    }
    if (rank == 0) {
      if (!P.recurrent)
        for (int64_t i = threadIdx.x; i < I; i += kThreads) G.grad_x[(t * B + b) * I + i] = T(0);
      if (!row_local && threadIdx.x == 0) G.grad_mod_pre[t * B + b] = G.mod_signal[t * B + b] = T(0);
    }
  }

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
    gH[k] = G.grad_trace[b * G.grad_trace_stride + r0 * I + k];
    if (retro) gE[k] = G.grad_elig[b * G.grad_elig_stride + r0 * I + k];
    if (L.grad_alpha) S.galpha[k] = T(0);
    if (L.alpha) S.alpha[k] = P.alpha[r0 * I + k];
    if (P.recurrent && L.weight) S.weight[k] = P.weight[r0 * I + k];
  }
  for (int64_t o = r0 + threadIdx.x; o < r1; o += kThreads) {
    S.gtheta[o] = P.has_threshold ? G.grad_theta[b * O + o] : T(0);
    S.gh[o] = P.recurrent ? G.grad_hidden[b * O + o] : T(0);
    if (P.lstm) S.gc[o] = G.grad_cell[b * O + o];
  }
  // Over the cluster: the first step may write into a peer's shared memory (the modulation's
  // partial sums), which is only there once every block of the cluster has started.
  cluster_barrier(C);

  // What internal neuromodulation reads at step t: y_t (staged), or the LSTM's h_t.
  auto mod_input = [&](int64_t t) { return P.lstm ? P.modulation_input(t, b) : S.ybuf; };
  // y_t and p_t of a step into shared memory, read there by every row.
  auto stage_step = [&](int64_t t) {
    const T* p_src = P.presynaptic(t, b);
    const T* y_src = P.y + (t * B + b) * O;
    for (int64_t i = threadIdx.x; i < I; i += kThreads) S.pbuf[i] = p_src[i];
    for (int64_t o = threadIdx.x; o < O; o += kThreads) S.ybuf[o] = y_src[o];
  };

  int parity = 0;
  for (int64_t seg = P.num_segments(b) - 1; seg >= 0; --seg) {
    const int64_t t0 = seg * K, len = min(K, T_ - t0);

    // Recompute this block's rows of H_{t-1} (E_{t-1}) for every step of the segment.
    const T* ckpt_H = P.segment_trace(seg, b) + r0 * I;
    const T* ckpt_E = retro ? P.segment_elig(seg, b) + r0 * I : nullptr;
    for (int64_t k = threadIdx.x; k < n; k += kThreads) {
      seg_H[r0 * I + k] = ckpt_H[k];
      if (retro) seg_E[r0 * I + k] = ckpt_E[k];
    }
    __syncthreads();
    for (int64_t j = 0; j + 1 < len; ++j) {
      const int64_t t = t0 + j;
      // Row o of H_{t-1} (E_{t-1}), which step j's recomputation reads.
      auto prefetch_source = [&](int64_t o) {
        if (!prefetch || o >= r1) return;
        prefetch_row(seg_H + j * OI + o * I, I32, lane, to_l2);
        if (retro) prefetch_row(seg_E + j * OI + o * I, I32, lane, to_l2);
      };
      for (int64_t o = r0 + warp; o < r0 + warp + ahead; o += kWarps) prefetch_source(o);
      stage_step(t);
      __syncthreads();
      const T* p = S.pbuf;
      const T* y = S.ybuf;
      const T s = P.internal_modulation() ? modulation_signal(P, mod_input(t), S.red) : T(0);
      for (int64_t o = r0 + warp; o < r1; o += kWarps) {
        prefetch_source(o + ahead);
        const T m = modulated ? modulation_of_row(P, t, b, o, s) : T(0);
        const int64_t row = o * I;
        update_row_warp<V>(P, o, y[o], m, p, seg_H + j * OI + row, seg_H + (j + 1) * OI + row,
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
        // dL/dy_t so far; in the LSTM, dL/dh_t goes to S.gh and dL/dg_t starts from θ's share.
        T g = P.lstm ? T(0) : G.grad_y[(t * B + b) * O + o];
        if (P.lstm) S.gh[o] += G.grad_y[(t * B + b) * O + o];
        else if (P.recurrent) g += S.gh[o];
        if (P.has_threshold) g += P.threshold_rate * S.gtheta[o];
        S.gy[o] = g;
      }
      for (int i = lane; i < I32; i += 32) my_partials[i] = T(0);
      __syncthreads();
      const T s = P.internal_modulation() ? modulation_signal(P, mod_input(t), S.red) : T(0);

      // dL/da of row o (the LSTM: through its cell's backward), then its α, H_{t-1} and p terms.
      auto finish_row = [&](int64_t o, T gy_total) {
        const T ga = P.lstm ? lstm_cell_backward_row(P, G, S, t, b, o, gy_total, my_partials,
                                                     lane, prefetch, to_l2)
                            : gy_total * kernels::activation_grad(P.activation, y[o]);
        if (lane == 0) {
          G.grad_z[(t * B + b) * Z + (P.lstm ? 2 * O : 0) + o] = ga;
          if (P.has_threshold) S.gtheta[o] -= ga;
        }
        const T* A_row = A + (o - r0) * I;
        const T* H_row = H_prev + o * I;
        T* gH_row = gH + (o - r0) * I;
        T* gA_row = gA + (o - r0) * I;
        const T* W_row = P.recurrent ? W + (o - r0) * I : nullptr;
        // p[i] read once and dL/da·p[i] formed once, as the CPU's backward does (the stores
        // through gH_row and gA_row may alias p for all the compiler knows, so it read p twice).
        for (int i = lane; i < I32; i += 32) {
          const T a = A_row[i], h = H_row[i], gap = ga * p[i];
          gH_row[i] += gap * a;
          gA_row[i] += gap * h;
          my_partials[i] += ga * (P.recurrent ? a * h + W_row[i] : a * h);
        }
      };

      // Row o's slices in global memory that the sweep and finish_row read: H_{t-1} (E_{t-1})
      // always, the others where the plan keeps them off chip.
      auto prefetch_row_of_step = [&](int64_t o) {
        if (!prefetch || o >= r1) return;
        const int64_t local = (o - r0) * I;
        prefetch_row(H_prev + o * I, I32, lane, to_l2);
        if (retro) prefetch_row(E_prev + o * I, I32, lane, to_l2);
        if (!L.grad_trace) prefetch_row(gH + local, I32, lane, to_l2);
        if (retro && !L.grad_elig) prefetch_row(gE + local, I32, lane, to_l2);
        if (!L.grad_alpha) prefetch_row(gA + local, I32, lane, to_l2);
        if (!L.alpha) prefetch_row(A + local, I32, lane, to_l2);
        if (P.recurrent && !L.weight) prefetch_row(W + local, I32, lane, to_l2);
      };
      for (int64_t o = r0 + warp; o < r0 + warp + ahead; o += kWarps) prefetch_row_of_step(o);
      for (int64_t o = r0 + warp; o < r1; o += kWarps) {
        prefetch_row_of_step(o + ahead);
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
          for (int i = lane; i < I32; i += 32) {
            T Cv = R::candidate(kernels::synapse<R>(P, o * I + i, H_row[i],
                                                    retro ? E_row[i] : T(0), yo, p[i], mo,
                                                    eta_at<V>(eta, eta_o, i)));
            if constexpr (V::clip) Cv = kernels::clip_value(Cv, clip);
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
        // η per connection implies a rule with η; its gradient exists where η is learned.
        T* geta_conn =
            V::eta_per_connection && G.grad_eta ? G.grad_eta + (b * O + o) * I : nullptr;
        const int64_t row = o * I;
        // `scaled` is a type: without synaptic scaling dL/dC is dL/dH itself, and an unclipped
        // rule's loop then needs no candidate at all.
        auto sweep = [&](auto scaled) {
          for (int i = lane; i < I32; i += 32) {
            const Synapse<T> syn =
                kernels::synapse<R>(P, row + i, H_row[i], retro ? E_row[i] : T(0), yo, p[i], mo,
                                    eta_at<V>(eta, eta_o, i));
            const T Cv = R::candidate(syn);
            T gC = gH_row[i];
            if constexpr (decltype(scaled)::value)
              gC = scale * gC - scale_grad * (V::clip ? kernels::clip_value(Cv, clip) : Cv);
            if constexpr (V::clip) gC *= kernels::clip_grad_mask(Cv, clip);
            T gE_prev = 0;
            SynapseGrad<T> sg;
            gH_row[i] = R::backward(gC, retro ? gE_row[i] : T(0), syn, sg, gE_prev);
            if (retro) gE_row[i] = gE_prev;
            if (V::eta_per_connection && geta_conn) geta_conn[i] += sg.eta;
            if constexpr (R::coefficients)
              for (int j = 0; j < 4; ++j)
                G.grad_coefficients[(b * 4 + j) * OI + row + i] += sg.k[j];
            gy_row += sg.y;
            gm_row += sg.m;
            geta_row += sg.eta;
            my_partials[i] += sg.p;
          }
        };
        if (P.has_scaling) sweep(std::true_type{});
        else sweep(std::false_type{});
        gy_row = warp_sum(gy_row);
        gm_row = warp_sum(gm_row);
        geta_row = warp_sum(geta_row);
        const T gy_total = S.gy[o] + gy_row;
        __syncwarp();
        if (lane == 0) {
          if (G.grad_eta && !V::eta_per_connection) G.grad_eta[b * O + o] += geta_row;
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
        // In the LSTM the head reads h_t: its share joins dL/dh_t.
        T* grad_read = P.lstm ? S.gh : S.gy;
        for (int64_t o = r0 + threadIdx.x; o < r1; o += kThreads) grad_read[o] += gpre * P.mod_weight[o];
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
    if (P.lstm) G.grad_cell0[b * O + o] = S.gc[o];
  }
  cluster_barrier(C);  // no block leaves while a peer may still read its shared memory
}

template <typename T>
const void* backward_kernel_for_occupancy() {
  return reinterpret_cast<const void*>(
      plastic_scan_backward_kernel<T, Variant<kernels::rules::Hebb, false, false>>);
}

template <typename T>
void launch_backward(const ScanParams<T>& P, const ScanGradParams<T>& G, const Plan& L,
                     T* scratch, cudaStream_t stream) {
  if (P.B == 0 || P.O == 0) return;
  with_variant(P, [&](auto variant) {
    launch(plastic_scan_backward_kernel<T, decltype(variant)>, L, P.B, stream, "backward", P, G,
           L, scratch);
  });
}

template const void* backward_kernel_for_occupancy<float>();
template const void* backward_kernel_for_occupancy<double>();
template void launch_backward<float>(const ScanParams<float>&, const ScanGradParams<float>&,
                                     const Plan&, float*, cudaStream_t);
template void launch_backward<double>(const ScanParams<double>&, const ScanGradParams<double>&,
                                      const Plan&, double*, cudaStream_t);

}  // namespace cuda
}  // namespace torchplastic
