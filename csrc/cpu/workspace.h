// Scratch of one CPU worker for the backward: plain pointers into memory the caller owns, so
// the per-instruction-set kernels allocate nothing themselves.
#pragma once

#include <cstdint>

namespace torchplastic {
namespace cpu {

template <typename T>
struct BackwardWorkspace {
  T* seg_H;   // (K − 1) × [O, I], seg_stride apart: traces before the segment's steps 1..K−1
  T* seg_E;   // (K − 1) × [O, I], seg_stride apart: eligibility traces (rule retroactive)
  int64_t seg_stride;  // O·I + kSkew
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

  // Floats needed for one worker.
  static int64_t size(int64_t K, int64_t O, int64_t I, bool retro) {
    return (retro ? 2 : 1) * K * (O * I + kSkew) + 6 * O + 2 * I + 14 * kSkew;
  }
  static BackwardWorkspace carve(T* base, int64_t K, int64_t O, int64_t I, bool retro) {
    BackwardWorkspace w{};
    T* at = base;
    auto take = [&](int64_t n) { T* p = at; at += n + kSkew; return p; };
    w.seg_stride = O * I + kSkew;
    w.seg_H = take((K - 1) * w.seg_stride);
    w.gH = take(O * I);
    if (retro) {
      w.seg_E = take((K - 1) * w.seg_stride);
      w.gE = take(O * I);
    }
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
