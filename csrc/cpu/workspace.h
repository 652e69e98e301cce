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
  T* gy;      // [O]        dL/dy_t of the step being traced
  T* m;       // [O]        m_t
  T* gm;      // [O]        dL/dm_t
  T* ga;      // [O]        dL/da of the step being finished
  T* gp;      // [I]        dL/dp_t of the step being traced (the rule's share)
  T* gp_done; // [I]        dL/dp of the step being finished (complete after its pass)

  // Each array starts kSkew elements further past a 4 KiB boundary than the one before: with
  // equal offsets, the kernels' streams (H_{t-1}, dL/dH, ...) alias in the store-to-load
  // disambiguation by address bits 0-11, which stalls loads behind unrelated stores (one
  // sequence's backward, N=256: 0.078-0.088 ms/step unskewed, 0.068-0.072 skewed; best of 15).
  static constexpr int64_t kSkew = 80;
  // And every array starts on a 64-byte boundary (the memory given to carve must too, and
  // kSkew keeps it): a vector load that straddles two cache lines costs two, and with
  // malloc's 16-byte alignment every AVX-512 access to these arrays did (one sequence's
  // backward: 34.4-35.3 -> 31.7-32.5 us/step aligned).
  static constexpr int64_t kAlignBytes = 64;
  static constexpr int64_t kAlign = kAlignBytes / static_cast<int64_t>(sizeof(T));
  static constexpr int64_t aligned(int64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
  static_assert(kSkew % kAlign == 0, "BackwardWorkspace: kSkew must keep arrays aligned");

  // Anchors every kAnchorEvery steps: the backward replays at most kAnchorEvery − 1 steps
  // per element and step (1.5 on average); at 4 the anchors of one segment (K = 8)
  // take 256 KiB at N = 256 instead of the 1.75 MiB of every step's trace, which had pushed
  // the backward's working set out of the L2 cache of the benchmark machine.
  static constexpr int64_t kAnchorEvery = 4;
  static int64_t anchor_stride(bool synaptic_scaling) { return synaptic_scaling ? 1 : kAnchorEvery; }
  static int64_t anchor_slots(int64_t K, int64_t every) { return (K - 1) / every; }

  // Elements needed for one worker (from a 64-byte aligned base).
  static int64_t size(int64_t K, int64_t O, int64_t I, bool retro, bool synaptic_scaling) {
    int64_t total = 0;
    carve(nullptr, K, O, I, retro, synaptic_scaling, &total);
    return total;
  }
  // The arrays, laid out from base, which must be 64-byte aligned (nullptr: only count them,
  // into *total).
  static BackwardWorkspace carve(T* base, int64_t K, int64_t O, int64_t I, bool retro,
                                 bool synaptic_scaling, int64_t* total = nullptr) {
    BackwardWorkspace w{};
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
