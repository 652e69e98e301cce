// One instruction set's build of the CPU time loops. CMake compiles this file three times,
// with TORCHPLASTIC_CPU_ISA = generic (x86-64 baseline), avx2 (-mavx2 -mfma) and avx512.
#include "cpu/plastic_scan_isa.h"

#include <algorithm>

#include "cpu/backward_sequence.h"
#include "cpu/forward.h"
#include "kernels/rules.h"

namespace torchplastic {
namespace cpu {
namespace TORCHPLASTIC_CPU_ISA {

namespace {

// Calls f(Variant<...>{}) with the call's rule, clipping and η granularity as types.
template <typename R, bool Clip, typename T, typename F>
void with_eta(const ScanParams<T>& P, F&& f) {
  if constexpr (R::uses_eta) {
    if (P.eta_per_connection) return f(Variant<R, Clip, true>{});
  }
  f(Variant<R, Clip, false>{});
}

template <typename T, typename F>
void with_variant(const ScanParams<T>& P, F&& f) {
  kernels::with_rule(P.rule, [&](auto rule) {
    using R = decltype(rule);
    if (P.has_clip) with_eta<R, true>(P, f);
    else with_eta<R, false>(P, f);
  });
}

}  // namespace

template <typename T>
void forward_range(const ScanParams<T>& P, int64_t begin, int64_t end, T* m) {
  with_variant(P, [&](auto variant) {
    using V = decltype(variant);
    const bool deferred = deferred_forward_applies(P);
    for (int64_t b = begin; b < end; b += kForwardGroup) {
      const int n = static_cast<int>(end - b < kForwardGroup ? end - b : kForwardGroup);
      if (deferred) forward_group_deferred<V>(P, b, n);
      else forward_group<V>(P, b, n, m);
    }
  });
}

// W: a workspace per sequence of the range for the plastic LSTM (whose sequences go in
// lockstep, up to kLstmBackwardGroup of them), else one, which each sequence takes in turn.
template <typename T>
void backward_range(const ScanParams<T>& P, const ScanGradParams<T>& G, int64_t begin,
                    int64_t end, const BackwardWorkspace<T>* W) {
  with_variant(P, [&](auto variant) {
    using V = decltype(variant);
    if (P.lstm) {
      for (int64_t b = begin; b < end; b += kLstmBackwardGroup) {
        const int n = static_cast<int>(std::min<int64_t>(end - b, kLstmBackwardGroup));
        backward_lstm_group<V>(P, G, b, n, W);
      }
      return;
    }
    for (int64_t b = begin; b < end; ++b) backward_sequence<V>(P, G, b, W[0]);
  });
}

template void forward_range<float>(const ScanParams<float>&, int64_t, int64_t, float*);
template void forward_range<double>(const ScanParams<double>&, int64_t, int64_t, double*);
template void backward_range<float>(const ScanParams<float>&, const ScanGradParams<float>&,
                                    int64_t, int64_t, const BackwardWorkspace<float>*);
template void backward_range<double>(const ScanParams<double>&, const ScanGradParams<double>&,
                                     int64_t, int64_t, const BackwardWorkspace<double>*);

}  // namespace TORCHPLASTIC_CPU_ISA
}  // namespace cpu
}  // namespace torchplastic
