// Rule modulated, simple neuromodulation (Backpropamine, Miconi et al. 2019; SPEC §2 step 5):
//   H_t = H_{t-1} + m_t ⊙ (y_t p_tᵀ)        (m broadcast over i; no η)
// Backward, with u = dL/dC:  dL/dH_{t-1} = u,  dL/dm[o] = Σ_i u y p,
//   dL/dy[o] = Σ_i u m p,  dL/dp[i] = Σ_o u m y.
#pragma once

#include "kernels/rules/synapse.h"
#include "torchplastic/options.h"

namespace torchplastic {
namespace kernels {
namespace rules {

struct Modulated {
  static constexpr Rule id = Rule::Modulated;
  static constexpr bool uses_eta = false, modulated = true, eligibility = false,
                        coefficients = false, row_form = true;
  static constexpr double default_clip = 1.0;

  template <typename T>
  TP_HD static T candidate(const Synapse<T>& s) {
    return mul_add(s.m * s.y, s.p, s.H);
  }

  template <typename T>
  TP_HD static T backward(T gC, T /*gE_next*/, const Synapse<T>& s, SynapseGrad<T>& g,
                          T& /*gE_prev*/) {
    g.m += gC * s.y * s.p;
    g.y += gC * s.m * s.p;
    g.p += gC * s.m * s.y;
    return gC;
  }

  // u = dL/dC: dL/dm[o] = y·up, dL/dy[o] = m·up.
  template <typename T>
  struct RowBackward {
    RowBackward() = default;
    T gp_factor = 0;
    TP_HD RowBackward(T y, T m, T /*eta*/) : gp_factor(m * y) {}
    TP_HD T element(T gC, T /*gE_next*/, T /*H*/, T /*E*/, T p, T& /*gE_prev*/, T& gp, T& up,
                    T& /*ux*/, T& /*gce*/) const {
      up = mul_add(gC, p, up);
      gp = mul_add(gC, gp_factor, gp);
      return gC;
    }
    TP_HD static RowSums<T> finish(T up, T /*ux*/, T /*gce*/, T y, T m, T /*eta*/) {
      RowSums<T> r;
      r.y = m * up;
      r.m = y * up;
      return r;
    }
  };
};

}  // namespace rules
}  // namespace kernels
}  // namespace torchplastic
