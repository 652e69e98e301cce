// The choices that hold for a whole call and sit inside the kernels' per-element loops: the
// rule, clipping on or off, η per connection or per row. As template parameters they leave
// those loops branch-free, for the CPU's vectoriser (with them as run-time flags, GCC 12 kept
// the backward's trace loop scalar) and for the CUDA kernels' instruction count alike. Shared by
// the CPU and CUDA kernels, so both instantiate the same set of variants.
#pragma once

#include <type_traits>

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

// Calls f(Variant<...>{}) with the call's rule, clipping and η granularity as types. A rule
// without η gets one variant per clipping only.
template <typename T, typename F>
void with_variant(const ScanParams<T>& P, F&& f) {
  with_rule(P.rule, [&](auto rule) {
    using R = decltype(rule);
    auto with_eta = [&](auto clip) {
      if constexpr (R::uses_eta) {
        if (P.eta_per_connection) return f(Variant<R, decltype(clip)::value, true>{});
      }
      f(Variant<R, decltype(clip)::value, false>{});
    };
    if (P.has_clip) with_eta(std::true_type{});
    else with_eta(std::false_type{});
  });
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
