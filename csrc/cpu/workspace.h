// Scratch of one CPU worker for the backward: plain pointers into memory the caller owns, so
// the per-instruction-set kernels allocate nothing themselves.
#pragma once

#include <cstdint>

namespace torchplastic {
namespace cpu {

template <typename T>
struct BackwardWorkspace {
  // A segment's anchors: the traces before its steps R, 2R, ... (R = anchor_every) up to
  // K − 1, seg_stride apart; the backward steps them forward in registers to the trace it
  // needs. R is 1 under synaptic scaling (which needs whole rows), kAnchorEvery otherwise.
  T* seg_H;   // anchor_slots(K, R) × [O, I]
  T* seg_E;   // anchor_slots(K, R) × [O, I]: eligibility traces (rule retroactive)
  int64_t seg_stride;    // O·I + kSkew
  int64_t anchor_every;  // R
  T* m_seg;   // [K, O]     m_t of the segment's steps (modulated rules)
  T* row_H;   // [I]        scratch row: a trace row stepped forward from an anchor
  T* row_E;   // [I]        the same for the eligibility trace
  T* gH;      // [O, I]     dL/dH_t, carried backward
  T* gE;      // [O, I]     dL/dE_t
  T* gtheta;  // [O]        dL/dθ_t
  T* gh;      // [O]        dL/dh_t
  T* gy;      // [O]        dL/dy_t of the step being traced
  T* m;       // [O]        m_t
  T* gm;      // [O]        dL/dm_t
  T* ga;      // [O]        dL/da of the step being finished
  T* gp;      // [I]        dL/dp_t of the step being traced (the rule's share)
  T* gp_done; // [I]        dL/dp of the step being finished (complete after its pass)

  // Each array starts kSkew floats further past a 4 KiB boundary than the one before: with
  // equal offsets, the kernels' streams (H_{t-1}, dL/dH, ...) alias in the store-to-load
  // disambiguation by address bits 0-11, which stalls loads behind unrelated stores (one
  // sequence's backward, N=256: 0.078-0.088 ms/step unskewed, 0.068-0.072 skewed; best of 15).
  static constexpr int64_t kSkew = 80;

  // Anchors every kAnchorEvery steps: the backward replays at most kAnchorEvery − 1 steps
  // per element and step (1.5 on average); at 4 the anchors of one segment (K = 8)
  // take 256 KiB at N = 256 instead of the 1.75 MiB of every step's trace, which had pushed
  // the backward's working set out of the L2 cache of the benchmark machine.
  static constexpr int64_t kAnchorEvery = 4;
  static int64_t anchor_stride(bool synaptic_scaling) { return synaptic_scaling ? 1 : kAnchorEvery; }
  static int64_t anchor_slots(int64_t K, int64_t every) { return (K - 1) / every; }

  // Floats needed for one worker.
  static int64_t size(int64_t K, int64_t O, int64_t I, bool retro, bool synaptic_scaling) {
    const int64_t slots = anchor_slots(K, anchor_stride(synaptic_scaling));
    return (retro ? 2 : 1) * (slots * (O * I + kSkew) + O * I) + K * O + 6 * O + 4 * I +
           18 * kSkew;
  }
  static BackwardWorkspace carve(T* base, int64_t K, int64_t O, int64_t I, bool retro,
                                 bool synaptic_scaling) {
    BackwardWorkspace w{};
    T* at = base;
    auto take = [&](int64_t n) { T* p = at; at += n + kSkew; return p; };
    w.seg_stride = O * I + kSkew;
    w.anchor_every = anchor_stride(synaptic_scaling);
    const int64_t slots = anchor_slots(K, w.anchor_every);
    w.seg_H = take(slots * w.seg_stride);
    w.gH = take(O * I);
    if (retro) {
      w.seg_E = take(slots * w.seg_stride);
      w.gE = take(O * I);
    }
    w.m_seg = take(K * O);
    w.row_H = take(I);
    w.row_E = take(I);
    w.gtheta = take(O);
    w.gh = take(O);
    w.gy = take(O);
    w.m = take(O);
    w.gm = take(O);
    w.ga = take(O);
    w.gp = take(I);
    w.gp_done = take(I);
    return w;
  }
};

}  // namespace cpu
}  // namespace torchplastic
