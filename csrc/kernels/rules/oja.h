// Rule oja, Oja's rule with a learned rate (Miconi et al. 2018; SPEC §2 step 5):
//   H_t[o,i] = H_{t-1}[o,i] + η y_t[o] (p_t[i] − y_t[o] H_{t-1}[o,i])
// Backward, with u = dL/dC:  dL/dH_{t-1} = u (1 − η y²),  dL/dη = u y (p − y H),
//   dL/dy[o] = Σ_i u η (p − 2 y H),  dL/dp[i] = Σ_o u η y.
#pragma once

#include "kernels/rules/synapse.h"
#include "torchplastic/options.h"

namespace torchplastic {
namespace kernels {
namespace rules {

struct Oja {
  static constexpr Rule id = Rule::Oja;
  static constexpr bool uses_eta = true, modulated = false, eligibility = false,
                        coefficients = false, row_form = true;
  static constexpr double default_clip = 0;  // none

  template <typename T>
  TP_HD static T candidate(const Synapse<T>& s) {
    return mul_add(s.eta * s.y, mul_add(-s.y, s.H, s.p), s.H);
  }

  template <typename T>
  TP_HD static T backward(T gC, T /*gE_next*/, const Synapse<T>& s, SynapseGrad<T>& g,
                          T& /*gE_prev*/) {
    g.eta += gC * s.y * (s.p - s.y * s.H);
    g.y += gC * s.eta * (s.p - T(2) * s.y * s.H);
    g.p += gC * s.eta * s.y;
    return gC * (T(1) - s.eta * s.y * s.y);
  }

  // u = dL/dC, X = H: dL/dη[o] = y (up − y ux), dL/dy[o] = η (up − 2 y ux).
  template <typename T>
  struct RowBackward {
    RowBackward() = default;
    T gp_factor = 0, decay = 1;
    TP_HD RowBackward(T y, T /*m*/, T eta) : gp_factor(eta * y), decay(T(1) - eta * y * y) {}
    TP_HD T element(T gC, T /*gE_next*/, T H, T /*E*/, T p, T& /*gE_prev*/, T& gp, T& up, T& ux,
                    T& /*gce*/) const {
      up = mul_add(gC, p, up);
      ux = mul_add(gC, H, ux);
      gp = mul_add(gC, gp_factor, gp);
      return gC * decay;
    }
    TP_HD static RowSums<T> finish(T up, T ux, T /*gce*/, T y, T /*m*/, T eta) {
      RowSums<T> r;
      r.y = eta * (up - T(2) * y * ux);
      r.eta = y * (up - y * ux);
      return r;
    }
  };
};

}  // namespace rules
}  // namespace kernels
}  // namespace torchplastic
