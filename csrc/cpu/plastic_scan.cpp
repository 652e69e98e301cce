// CPU registration of plastic_scan: sequences in parallel, the time loop of each inside
// (csrc/cpu/plastic_scan_kernel.h, built per instruction set and chosen here at run time),
// everything else shared with CUDA (csrc/ops/scan_common.h).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "cpu/plastic_scan_isa.h"
#include "ops/scan_common.h"

namespace torchplastic {
namespace cpu {
namespace {

using kernels::ScanGradParams;
using kernels::ScanParams;

enum class Isa { Generic, Avx2, Avx512 };

// The widest instruction set this CPU runs; TORCHPLASTIC_CPU_ISA=generic|avx2|avx512 caps it.
Isa detect_isa() {
  __builtin_cpu_init();
  Isa best = Isa::Generic;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::Avx2;
  if (best == Isa::Avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl"))
    best = Isa::Avx512;
  if (const char* cap = std::getenv("TORCHPLASTIC_CPU_ISA")) {
    if (std::strcmp(cap, "generic") == 0) best = Isa::Generic;
    else if (std::strcmp(cap, "avx2") == 0 && best == Isa::Avx512) best = Isa::Avx2;
  }
  return best;
}

Isa cpu_isa() {
  static const Isa isa = detect_isa();
  return isa;
}

template <typename T>
void forward(const ScanParams<T>& P) {
  at::parallel_for(0, P.B, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> m(P.O);
    switch (cpu_isa()) {
      case Isa::Avx512: return avx512::forward_range(P, begin, end, m.data());
      case Isa::Avx2: return avx2::forward_range(P, begin, end, m.data());
      default: return generic::forward_range(P, begin, end, m.data());
    }
  });
}

template <typename T>
void backward(const ScanParams<T>& P, const ScanGradParams<T>& G) {
  const bool retro = P.rule == kernels::Rule::Retroactive;
  at::parallel_for(0, P.B, 1, [&](int64_t begin, int64_t end) {
    using Workspace = BackwardWorkspace<T>;
    const int64_t K = P.checkpoint_every;
    std::vector<T> memory(Workspace::size(K, P.O, P.I, retro, P.has_scaling));
    const auto W = Workspace::carve(memory.data(), K, P.O, P.I, retro, P.has_scaling);
    switch (cpu_isa()) {
      case Isa::Avx512: return avx512::backward_range(P, G, begin, end, W);
      case Isa::Avx2: return avx2::backward_range(P, G, begin, end, W);
      default: return generic::backward_range(P, G, begin, end, W);
    }
  });
}

}  // namespace

const detail::ScanBackend backend{&forward<float>, &forward<double>, &backward<float>,
                                  &backward<double>};

}  // namespace cpu
}  // namespace torchplastic

TORCH_LIBRARY_IMPL(torchplastic, CPU, m) {
  using Kernels = torchplastic::detail::ScanKernels<torchplastic::cpu::backend>;
  m.impl("plastic_scan", &Kernels::plastic_scan);
  m.impl("plastic_scan_forward", &Kernels::plastic_scan_forward);
  m.impl("plastic_scan_backward", &Kernels::plastic_scan_backward);
}
