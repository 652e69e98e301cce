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
  int64_t seg_stride;    // O·I rounded up to 64 bytes, + kSkew
  int64_t anchor_every;  // R
  T* m_seg;   // [K, O]     m_t of the segment's steps (modulated rules)
  T* row_H;   // [I]        scratch row: a trace row stepped forward from an anchor
  T* row_E;   // [I]        the same for the eligibility trace
  T* gH;      // [O, I]     dL/dH_t, carried backward
  T* gE;      // [O, I]     dL/dE_t
  T* gtheta;  // [O]        dL/dθ_t
  T* gh;      // [O]        dL/dh_t
  T* gc;      // [O]        dL/dc_t (LSTM)
  T* gy;      // [O]        dL/dy_t of the step being traced
  T* m;       // [O]        m_t
  T* gm;      // [O]        dL/dm_t
  T* ga;      // [O]        dL/da of the step being finished
  T* gp;      // [I]        dL/dp_t of the step being traced (the rule's share)
  T* gp_done; // [I]        dL/dp of the step being finished (complete after its pass)
  // Where a pass that traces without finishing reads dL/dH_t (dL/dE_t) when not from gH (gE):
  // a single step's, straight from the output gradient into gH, with no copy first.
  const T* gH_in = nullptr;  // [O, I]
  const T* gE_in = nullptr;  // [O, I]

  // Each array starts kSkew elements further past a 4 KiB boundary than the one before: with
  // equal offsets, the kernels' streams (H_{t-1}, dL/dH, ...) alias in the store-to-load
  // disambiguation by address bits 0-11, which stalls loads behind unrelated stores.
  static constexpr int64_t kSkew = 80;
  // And every array starts on a 64-byte boundary (carve aligns its base, and kSkew keeps the
  // alignment): a vector load that straddles two cache lines costs two, and with malloc's
  // 16-byte alignment every AVX-512 access to these arrays would.
  static constexpr int64_t kAlignBytes = 64;
  static constexpr int64_t kAlign = kAlignBytes / static_cast<int64_t>(sizeof(T));
  static constexpr int64_t aligned(int64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
  static_assert(kSkew % kAlign == 0, "BackwardWorkspace: kSkew must keep arrays aligned");

  // Anchors every kAnchorEvery steps: the backward replays at most kAnchorEvery − 1 steps
  // per element and step (1.5 on average), and the anchors of a segment take a quarter of the
  // memory every step's trace would, which keeps the backward's working set in L2.
  static constexpr int64_t kAnchorEvery = 4;
  static int64_t anchor_stride(bool synaptic_scaling) { return synaptic_scaling ? 1 : kAnchorEvery; }
  static int64_t anchor_slots(int64_t K, int64_t every) { return (K - 1) / every; }

  // Elements of memory one worker needs, from any base with T's alignment: the arrays plus
  // the slack carve takes to align them.
  static int64_t size(int64_t K, int64_t O, int64_t I, bool retro, bool synaptic_scaling) {
    int64_t total = 0;
    carve(nullptr, K, O, I, retro, synaptic_scaling, &total);
    return total + kAlign;
  }
  // The arrays, laid out from the first 64-byte boundary at or after `memory`, which holds
  // size() elements (nullptr: only count the arrays, into *total).
  static BackwardWorkspace carve(T* memory, int64_t K, int64_t O, int64_t I, bool retro,
                                 bool synaptic_scaling, int64_t* total = nullptr) {
    BackwardWorkspace w{};
    T* base = nullptr;
    if (memory) {
      const auto address = reinterpret_cast<uintptr_t>(memory);
      const uintptr_t align = kAlignBytes;
      base = reinterpret_cast<T*>((address + align - 1) / align * align);
    }
    int64_t at = 0;
    auto take = [&](T*& array, int64_t n) {
      array = base ? base + at : nullptr;
      at += aligned(n) + kSkew;
    };
    w.seg_stride = aligned(O * I) + kSkew;
    w.anchor_every = anchor_stride(synaptic_scaling);
    const int64_t slots = anchor_slots(K, w.anchor_every);
    take(w.seg_H, slots * w.seg_stride);
    take(w.gH, O * I);
    if (retro) {
      take(w.seg_E, slots * w.seg_stride);
      take(w.gE, O * I);
    }
    take(w.m_seg, K * O);
    take(w.row_H, I);
    take(w.row_E, I);
    take(w.gtheta, O);
    take(w.gh, O);
    take(w.gc, O);
    take(w.gy, O);
    take(w.m, O);
    take(w.gm, O);
    take(w.ga, O);
    take(w.gp, I);
    take(w.gp_done, I);
    if (total) *total = at;
    return w;
  }
};

}  // namespace cpu
}  // namespace torchplastic
