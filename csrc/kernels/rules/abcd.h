// Rule abcd, the generalized Hebbian rule of Najarro & Risi 2020, here learned by
// backpropagation (SPEC §2 step 5). As in their code, B weighs the presynaptic activity and C
// the postsynaptic:
//   H_t[o,i] = H_{t-1}[o,i] + η (A y_t[o] p_t[i] + B p_t[i] + C y_t[o] + D)
// with A–D per connection, per postsynaptic neuron or scalar (the input `abcd`, [4, O|1, I|1]).
// Backward, with u = dL/dC and Δ = A y p + B p + C y + D:  dL/dH_{t-1} = u,  dL/dη = u Δ,
//   dL/dA = u η y p,  dL/dB = u η p,  dL/dC = u η y,  dL/dD = u η,
//   dL/dy[o] = Σ_i u η (A p + C),  dL/dp[i] = Σ_o u η (A y + B).
#pragma once

#include "kernels/rules/synapse.h"
#include "torchplastic/options.h"

namespace torchplastic {
namespace kernels {
namespace rules {

struct Abcd {
  static constexpr Rule id = Rule::Abcd;
  // No row form: A–D may be per connection, and the CPU kernel takes the per-connection
  // backward for this rule whatever their granularity.
  static constexpr bool uses_eta = true, modulated = false, eligibility = false,
                        coefficients = true, row_form = false;
  static constexpr double default_clip = 1.0;

  template <typename T>
  TP_HD static T candidate(const Synapse<T>& s) {
    const T pre = mul_add(s.k[0], s.y, s.k[1]);   // A y + B: the factor of p
    const T post = mul_add(s.k[2], s.y, s.k[3]);  // C y + D
    return mul_add(s.eta, mul_add(pre, s.p, post), s.H);
  }

  template <typename T>
  TP_HD static T backward(T gC, T /*gE_next*/, const Synapse<T>& s, SynapseGrad<T>& g,
                          T& /*gE_prev*/) {
    const T pre = mul_add(s.k[0], s.y, s.k[1]);
    const T post = mul_add(s.k[2], s.y, s.k[3]);
    const T u = gC * s.eta;
    g.eta += gC * mul_add(pre, s.p, post);
    g.k[0] += u * s.y * s.p;
    g.k[1] += u * s.p;
    g.k[2] += u * s.y;
    g.k[3] += u;
    g.y += u * mul_add(s.k[0], s.p, s.k[2]);
    g.p += u * pre;
    return gC;
  }
};

}  // namespace rules
}  // namespace kernels
}  // namespace torchplastic
