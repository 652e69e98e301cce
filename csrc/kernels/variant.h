// The choices that hold for a whole call and sit inside the kernels' per-element loops: the
// rule, clipping on or off, η per connection or per row. As template parameters they leave
// those loops branch-free, for the CPU's vectoriser (with them as run-time flags, GCC 12 kept
// the backward's trace loop scalar) and for the CUDA kernels' instruction count alike. Shared by
// the CPU and CUDA kernels, so both instantiate the same set of variants.
#pragma once

#include "kernels/plastic_step.h"
#include "kernels/rules.h"

namespace torchplastic {
namespace kernels {

template <typename R, bool Clip, bool EtaPerConnection>
struct Variant {
  using Rule = R;
  static constexpr bool clip = Clip;
  static constexpr bool eta_per_connection = EtaPerConnection;
};

// Calls f(Variant<R, Clip, ...>{}) with the call's rule and η granularity as types, for a
// call whose clipping (P.has_clip) is Clip. A rule without η gets one variant only. The CPU's
// backward instantiates the variants of each clipping in a translation unit of its own, so that
// a parallel build compiles the halves side by side.
template <bool Clip, typename T, typename F>
void with_variant_of_clip(const ScanParams<T>& P, F&& f) {
  with_rule(P.rule, [&](auto rule) {
    using R = decltype(rule);
    if constexpr (R::uses_eta) {
      if (P.eta_per_connection) return f(Variant<R, Clip, true>{});
    }
    f(Variant<R, Clip, false>{});
  });
}

// Calls f(Variant<...>{}) with the call's rule, clipping and η granularity as types.
template <typename T, typename F>
void with_variant(const ScanParams<T>& P, F&& f) {
  if (P.has_clip) with_variant_of_clip<true>(P, f);
  else with_variant_of_clip<false>(P, f);
}

// η of connection i of a row, given the row's η (eta_row) and its first value: a rule without
// η reads 0, otherwise per connection or one per row, as the variant says.
template <typename V, typename T>
TP_HD T eta_at(const T* eta_row, T eta_first, int64_t i) {
  if (!V::Rule::uses_eta) return T(0);
  return V::eta_per_connection ? eta_row[i] : eta_first;
}

}  // namespace kernels
}  // namespace torchplastic
