// The rules as types: Rule (torchplastic/options.h lists them) → the struct of its header.
//
// A rule is a struct with
//   id, uses_eta, modulated, eligibility, coefficients, row_form, default_clip   its traits
//   candidate(Synapse)              the trace before clipping and scaling, C[o, i]
//   eligibility_next(Synapse)       E_t[o, i] (rules with an eligibility trace)
//   backward(gC, gE_next, Synapse, SynapseGrad&, gE_prev&)   dL/dH_{t-1}, and the shares of
//                                   the other gradients (csrc/kernels/rules/synapse.h)
//   RowBackward<T>                  the same by row sums (rules with row_form)
// all templated on the value type. Kernels are templates over the rule and reach them through
// with_rule, which instantiates every kernel for every rule of the list: a rule the kernels
// cannot handle fails to compile.
#pragma once

#include "kernels/rules/abcd.h"
#include "kernels/rules/hebb.h"
#include "kernels/rules/modulated.h"
#include "kernels/rules/oja.h"
#include "kernels/rules/retroactive.h"
#include "torchplastic/options.h"

namespace torchplastic {
namespace kernels {

// f(rules::Hebb{}) for Rule::Hebb, and so on for every rule of TORCHPLASTIC_RULES.
template <typename F>
decltype(auto) with_rule(Rule rule, F&& f) {
  switch (rule) {
#define TORCHPLASTIC_RULE_CASE_(value, name) \
  case Rule::value:                          \
    return f(rules::value{});
    TORCHPLASTIC_RULES(TORCHPLASTIC_RULE_CASE_)
#undef TORCHPLASTIC_RULE_CASE_
  }
  __builtin_unreachable();  // the switch covers every Rule
}

// The traits of a rule, as values.
inline RuleInfo traits(Rule rule) {
  return with_rule(rule, [](auto r) {
    using R = decltype(r);
    return RuleInfo{R::uses_eta, R::modulated, R::eligibility, R::coefficients, R::default_clip};
  });
}

}  // namespace kernels
}  // namespace torchplastic
