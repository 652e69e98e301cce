// One instruction set's build of the CPU time loops. CMake compiles this file three times,
// with TORCHPLASTIC_CPU_ISA = generic (x86-64 baseline), avx2 (-mavx2 -mfma) and avx512.
#include "cpu/plastic_scan_isa.h"
#include "cpu/plastic_scan_kernel.h"

namespace torchplastic {
namespace cpu {
namespace TORCHPLASTIC_CPU_ISA {

template <typename T>
void forward_range(const ScanParams<T>& P, int64_t begin, int64_t end, T* m) {
  for (int64_t b = begin; b < end; ++b) {
    switch (P.rule) {
      case Rule::Hebb: forward_sequence<Rule::Hebb>(P, b, m); break;
      case Rule::Oja: forward_sequence<Rule::Oja>(P, b, m); break;
      case Rule::Modulated: forward_sequence<Rule::Modulated>(P, b, m); break;
      case Rule::Retroactive: forward_sequence<Rule::Retroactive>(P, b, m); break;
    }
  }
}

template <typename T>
void backward_range(const ScanParams<T>& P, const ScanGradParams<T>& G, int64_t begin,
                    int64_t end, const BackwardWorkspace<T>& W) {
  for (int64_t b = begin; b < end; ++b) {
    switch (P.rule) {
      case Rule::Hebb: backward_sequence<Rule::Hebb>(P, G, b, W); break;
      case Rule::Oja: backward_sequence<Rule::Oja>(P, G, b, W); break;
      case Rule::Modulated: backward_sequence<Rule::Modulated>(P, G, b, W); break;
      case Rule::Retroactive: backward_sequence<Rule::Retroactive>(P, G, b, W); break;
    }
  }
}

template void forward_range<float>(const ScanParams<float>&, int64_t, int64_t, float*);
template void forward_range<double>(const ScanParams<double>&, int64_t, int64_t, double*);
template void backward_range<float>(const ScanParams<float>&, const ScanGradParams<float>&,
                                    int64_t, int64_t, const BackwardWorkspace<float>&);
template void backward_range<double>(const ScanParams<double>&, const ScanGradParams<double>&,
                                     int64_t, int64_t, const BackwardWorkspace<double>&);

}  // namespace TORCHPLASTIC_CPU_ISA
}  // namespace cpu
}  // namespace torchplastic
