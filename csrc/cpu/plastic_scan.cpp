// CPU registration of plastic_scan: sequences in parallel, the time loop of each inside
// (csrc/cpu/plastic_scan_kernel.h), everything else shared with CUDA (csrc/ops/scan_common.h).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "cpu/plastic_scan_kernel.h"
#include "ops/scan_common.h"

namespace torchplastic {
namespace cpu {
namespace {

// Calls f with the rule as a compile-time constant, so the inner loops carry no branch on it.
template <typename F>
void with_rule(Rule rule, F&& f) {
  switch (rule) {
    case Rule::Hebb: return f(std::integral_constant<Rule, Rule::Hebb>{});
    case Rule::Oja: return f(std::integral_constant<Rule, Rule::Oja>{});
    case Rule::Modulated: return f(std::integral_constant<Rule, Rule::Modulated>{});
    case Rule::Retroactive: return f(std::integral_constant<Rule, Rule::Retroactive>{});
  }
}

template <typename T>
void forward(const ScanParams<T>& P) {
  with_rule(P.rule, [&](auto rule) {
    at::parallel_for(0, P.B, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> m(P.O);
      for (int64_t b = begin; b < end; ++b) forward_sequence<decltype(rule)::value>(P, b, m);
    });
  });
}

template <typename T>
void backward(const ScanParams<T>& P, const ScanGradParams<T>& G) {
  with_rule(P.rule, [&](auto rule) {
    at::parallel_for(0, P.B, 1, [&](int64_t begin, int64_t end) {
      BackwardScratch<T> scratch(P.checkpoint_every, P.O, P.I, P.rule == Rule::Retroactive);
      for (int64_t b = begin; b < end; ++b)
        backward_sequence<decltype(rule)::value>(P, G, b, scratch);
    });
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
