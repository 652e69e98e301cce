// The CPU backward time loop, built for one instruction set and one value type, as
// forward_isa.cpp is.
#include <algorithm>

#include "cpu/backward_sequence.h"
#include "cpu/plastic_scan_isa.h"

namespace torchplastic {
namespace cpu {
namespace TORCHPLASTIC_CPU_ISA {

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

// Rows o0 .. o1 − 1 of a batch of single steps whose slabs the kernels sum (G.slabs_summed).
template <typename T>
void batch_single_step_range(const ScanParams<T>& P, const ScanGradParams<T>& G, int64_t o0,
                             int64_t o1, const BackwardWorkspace<T>& W, T* grad_p) {
  with_variant(P, [&](auto variant) {
    batch_single_step_rows<decltype(variant)>(P, G, o0, o1, W, grad_p);
  });
}

template void batch_single_step_range<TORCHPLASTIC_CPU_SCALAR>(
    const ScanParams<TORCHPLASTIC_CPU_SCALAR>&, const ScanGradParams<TORCHPLASTIC_CPU_SCALAR>&,
    int64_t, int64_t, const BackwardWorkspace<TORCHPLASTIC_CPU_SCALAR>&,
    TORCHPLASTIC_CPU_SCALAR*);

template void backward_range<TORCHPLASTIC_CPU_SCALAR>(
    const ScanParams<TORCHPLASTIC_CPU_SCALAR>&, const ScanGradParams<TORCHPLASTIC_CPU_SCALAR>&,
    int64_t, int64_t, const BackwardWorkspace<TORCHPLASTIC_CPU_SCALAR>*);

}  // namespace TORCHPLASTIC_CPU_ISA
}  // namespace cpu
}  // namespace torchplastic
