// plastic_scan written as a plain ATen loop, one step at a time (SPEC §2): what the C++ tests
// compare the op with. Mirrors python/torchplastic/reference.py.
#pragma once

#include <torch/torch.h>

#include "torchplastic/torchplastic.h"

namespace torchplastic {
namespace test_reference {

inline at::Tensor activate(Activation act, const at::Tensor& a) {
  switch (act) {
    case Activation::Tanh: return torch::tanh(a);
    case Activation::Relu: return torch::relu(a);
    case Activation::Sigmoid: return torch::sigmoid(a);
    default: return a;
  }
}

inline std::tuple<at::Tensor, PlasticState> reference_scan(const at::Tensor& z, const at::Tensor& alpha,
                                                           const at::Tensor& eta, at::Tensor H,
                                                           const ScanOptions& o) {
  const int64_t T = z.size(0), B = z.size(1), O = z.size(2);
  const bool recurrent = !o.x().defined();
  const int64_t I = recurrent ? O : o.x().size(2);
  const RuleInfo rule = rule_info(o.rule());
  const bool retro = rule.eligibility;
  if (!H.defined()) H = torch::zeros({B, O, I}, z.options());
  at::Tensor E = retro ? (o.eligibility().defined() ? o.eligibility() : torch::zeros({B, O, I}, z.options()))
                       : at::Tensor();
  at::Tensor theta;
  if (o.adaptive_threshold())
    theta = o.threshold().defined() ? o.threshold() : torch::zeros({B, O}, z.options());
  at::Tensor h = recurrent ? (o.hidden().defined() ? o.hidden() : torch::zeros({B, O}, z.options()))
                           : at::Tensor();
  std::vector<at::Tensor> ys;
  for (int64_t t = 0; t < T; ++t) {
    at::Tensor p = recurrent ? h : o.x()[t];
    at::Tensor a = z[t] + torch::einsum("boi,bi->bo", {alpha * H, p});
    if (recurrent) a = a + p.matmul(o.weight().t());
    if (theta.defined()) a = a - theta;
    at::Tensor y = activate(o.activation(), a);
    ys.push_back(y);
    at::Tensor m;
    if (rule.modulated) {
      if (o.modulation().defined()) {
        m = o.modulation()[t];
        if (m.dim() == 1) m = m.unsqueeze(-1).expand({B, O});
      } else {
        at::Tensor s = torch::tanh(y.matmul(o.mod_weight()) + o.mod_bias());
        m = o.mod_fanout_weight().defined()
                ? s.unsqueeze(-1) * o.mod_fanout_weight() + o.mod_fanout_bias()
                : s.unsqueeze(-1).expand({B, O});
      }
    }
    at::Tensor outer = y.unsqueeze(-1) * p.unsqueeze(-2);
    switch (o.rule()) {
      case Rule::Hebb: H = (1 - eta) * H + eta * outer; break;
      case Rule::Oja: H = H + eta * y.unsqueeze(-1) * (p.unsqueeze(-2) - y.unsqueeze(-1) * H); break;
      case Rule::Modulated: H = H + m.unsqueeze(-1) * outer; break;
      case Rule::Retroactive:
        H = H + m.unsqueeze(-1) * E;
        E = (1 - eta) * E + eta * outer;
        break;
      case Rule::Abcd:  // A y pᵀ + B p + C y + D, as Najarro & Risi 2020
        H = H + eta * (o.abcd()[0] * outer + o.abcd()[1] * p.unsqueeze(-2) +
                       o.abcd()[2] * y.unsqueeze(-1) + o.abcd()[3]);
        break;
    }
    if (o.clip()) H = torch::clamp(H, -*o.clip(), *o.clip());
    if (o.synaptic_scaling()) {
      const double k = *o.synaptic_scaling();
      at::Tensor n = torch::linalg_vector_norm(H, 2, {-1}, true);
      H = H * (k / torch::where(n > k, n, torch::full_like(n, k)));
    }
    if (theta.defined()) theta = theta + *o.adaptive_threshold() * (y - o.target_activity());
    if (recurrent) h = y;
  }
  at::Tensor y_all = ys.empty() ? torch::zeros({0, B, O}, z.options()) : torch::stack(ys);
  return {y_all, PlasticState{h, H, E, theta, at::Tensor()}};
}

}  // namespace test_reference
}  // namespace torchplastic
