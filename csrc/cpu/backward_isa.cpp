// The CPU backward time loop, built for one instruction set and one value type, as
// forward_isa.cpp is, and for the calls of one clipping (TORCHPLASTIC_CPU_CLIP, 0 or 1): the
// backward's variants take the longest of all objects to compile, and the two halves compile side
// by side. backward_range (plastic_scan_isa.h) picks the half.
#include <algorithm>

#include "cpu/backward_sequence.h"
#include "cpu/plastic_scan_isa.h"

namespace torchplastic {
namespace cpu {
namespace TORCHPLASTIC_CPU_ISA {

constexpr bool kClip = TORCHPLASTIC_CPU_CLIP;

// W: a workspace per sequence of the range for the plastic LSTM (whose sequences go in
// lockstep, up to kLstmBackwardGroup of them), else one, which each sequence takes in turn.
template <typename T, bool Clip>
void backward_range_of_clip(const ScanParams<T>& P, const ScanGradParams<T>& G, int64_t begin,
                            int64_t end, const BackwardWorkspace<T>* W) {
  kernels::with_variant_of_clip<Clip>(P, [&](auto variant) {
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

// Rows o0 .. o1 − 1 of a batch of single steps whose slabs the kernels sum (G.slabs_summed).
template <typename T, bool Clip>
void batch_single_step_range_of_clip(const ScanParams<T>& P, const ScanGradParams<T>& G,
                                     int64_t o0, int64_t o1, const BackwardWorkspace<T>& W,
                                     T* grad_p) {
  kernels::with_variant_of_clip<Clip>(P, [&](auto variant) {
    batch_single_step_rows<decltype(variant)>(P, G, o0, o1, W, grad_p);
  });
}

template void batch_single_step_range_of_clip<TORCHPLASTIC_CPU_SCALAR, kClip>(
    const ScanParams<TORCHPLASTIC_CPU_SCALAR>&, const ScanGradParams<TORCHPLASTIC_CPU_SCALAR>&,
    int64_t, int64_t, const BackwardWorkspace<TORCHPLASTIC_CPU_SCALAR>&,
    TORCHPLASTIC_CPU_SCALAR*);

template void backward_range_of_clip<TORCHPLASTIC_CPU_SCALAR, kClip>(
    const ScanParams<TORCHPLASTIC_CPU_SCALAR>&, const ScanGradParams<TORCHPLASTIC_CPU_SCALAR>&,
    int64_t, int64_t, const BackwardWorkspace<TORCHPLASTIC_CPU_SCALAR>*);

}  // namespace TORCHPLASTIC_CPU_ISA
}  // namespace cpu
}  // namespace torchplastic
