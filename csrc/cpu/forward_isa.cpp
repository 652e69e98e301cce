// The CPU forward time loop, built for one instruction set and one value type: CMake compiles
// this file once per TORCHPLASTIC_CPU_ISA (generic: the x86-64 baseline, avx2, avx512) and
// TORCHPLASTIC_CPU_SCALAR (float, double), so that the builds, each of which instantiates every
// rule variant, run in parallel. csrc/cpu/plastic_scan.cpp picks the instruction set at run time.
#include "cpu/forward.h"
#include "cpu/plastic_scan_isa.h"

namespace torchplastic {
namespace cpu {
namespace TORCHPLASTIC_CPU_ISA {

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

template void forward_range<TORCHPLASTIC_CPU_SCALAR>(const ScanParams<TORCHPLASTIC_CPU_SCALAR>&,
                                                     int64_t, int64_t, TORCHPLASTIC_CPU_SCALAR*);

}  // namespace TORCHPLASTIC_CPU_ISA
}  // namespace cpu
}  // namespace torchplastic
