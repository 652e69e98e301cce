// Rule retroactive, neuromodulated eligibility traces (Backpropamine, Miconi et al. 2019;
// SPEC §2 step 5). The trace takes the eligibility of the previous step, before it absorbs
// the current outer product:
//   H_t = H_{t-1} + m_t ⊙ E_{t-1},   E_t = (1 − η) E_{t-1} + η y_t p_tᵀ
// Backward, with u = dL/dC and v = dL/dE_t:  dL/dH_{t-1} = u,  dL/dE_{t-1} = u m + v (1 − η),
//   dL/dm[o] = Σ_i u E,  dL/dη = v (y p − E),  dL/dy[o] = Σ_i v η p,  dL/dp[i] = Σ_o v η y.
#pragma once

#include "kernels/rules/synapse.h"
#include "torchplastic/options.h"

namespace torchplastic {
namespace kernels {
namespace rules {

struct Retroactive {
  static constexpr Rule id = Rule::Retroactive;
  static constexpr bool uses_eta = true, modulated = true, eligibility = true,
                        coefficients = false, row_form = true;
  static constexpr double default_clip = 1.0;

  template <typename T>
  TP_HD static T candidate(const Synapse<T>& s) {
    return mul_add(s.m, s.E, s.H);
  }
  template <typename T>
  TP_HD static T eligibility_next(const Synapse<T>& s) {
    return mul_add(s.eta * s.y, s.p, (T(1) - s.eta) * s.E);
  }

  template <typename T>
  TP_HD static T backward(T gC, T gE_next, const Synapse<T>& s, SynapseGrad<T>& g, T& gE_prev) {
    g.m += gC * s.E;
    gE_prev = gC * s.m + (T(1) - s.eta) * gE_next;
    g.eta += gE_next * (s.y * s.p - s.E);
    g.y += gE_next * s.eta * s.p;
    g.p += gE_next * s.eta * s.y;
    return gC;
  }

  // u = dL/dE_t, X = E, and gce = Σ dL/dC·E: dL/dm[o] = gce, dL/dη[o] = y·up − ux,
  // dL/dy[o] = η·up.
  template <typename T>
  struct RowBackward {
    RowBackward() = default;
    T gp_factor = 0, elig_decay = 1, m = 0;
    TP_HD RowBackward(T y, T m_, T eta) : gp_factor(eta * y), elig_decay(T(1) - eta), m(m_) {}
    TP_HD T element(T gC, T gE_next, T /*H*/, T E, T p, T& gE_prev, T& gp, T& up, T& ux,
                    T& gce) const {
      gce = mul_add(gC, E, gce);
      up = mul_add(gE_next, p, up);
      ux = mul_add(gE_next, E, ux);
      gp = mul_add(gE_next, gp_factor, gp);
      gE_prev = mul_add(gC, m, gE_next * elig_decay);
      return gC;
    }
    TP_HD static RowSums<T> finish(T up, T ux, T gce, T y, T /*m*/, T eta) {
      RowSums<T> r;
      r.y = eta * up;
      r.m = gce;
      r.eta = y * up - ux;
      return r;
    }
  };
};

}  // namespace rules
}  // namespace kernels
}  // namespace torchplastic
