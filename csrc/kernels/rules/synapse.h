// What a rule sees of one connection (o, i) at step t, and the gradients it hands back. Every
// rule (csrc/kernels/rules/<rule>.h) is written against these, templated on the value type:
// the CPU kernels instantiate it with float and double per instruction set, the CUDA kernels
// in registers.
#pragma once

#include "kernels/math.h"

namespace torchplastic {
namespace kernels {

template <typename T>
struct Synapse {
  T H = 0;    // H_{t-1}[o, i]
  T E = 0;    // E_{t-1}[o, i]     (rules with an eligibility trace)
  T y = 0;    // y_t[o]            postsynaptic activity
  T p = 0;    // p_t[i]            presynaptic activity
  T m = 0;    // m_t[o]            neuromodulation (modulated rules)
  T eta = 0;  // η[o, i]           (rules that use η)
  T k[4] = {0, 0, 0, 0};  // A, B, C, D [o, i] (rules with coefficients)
};

// Shares of one connection's backward, added by Rule::backward.
template <typename T>
struct SynapseGrad {
  T y = 0;    // dL/dy_t[o]
  T p = 0;    // dL/dp_t[i]
  T m = 0;    // dL/dm_t[o]
  T eta = 0;  // dL/dη[o, i]
  T k[4] = {0, 0, 0, 0};  // dL/dA .. dL/dD [o, i]
};

// The row form of a rule's backward, for rules whose per-connection inputs are all one per
// row (η, and A–D) except H, E and p: then the row's sums dL/dy[o], dL/dm[o] and dL/dη[o] are
// linear in three dot products over the row, which the CPU kernel accumulates per vector lane
// (Rule::RowBackward::element) and turns into the sums once per row (finish):
//   up = Σ_i u p[i],  ux = Σ_i u X[i],  gce = Σ_i dL/dC · E[i]
// with u and X as each rule says. That is 2–3 multiply-adds per element instead of 5.
template <typename T>
struct RowSums {
  T y = 0, m = 0, eta = 0;  // dL/dy[o] share, dL/dm[o], dL/dη[o]
};

}  // namespace kernels
}  // namespace torchplastic
