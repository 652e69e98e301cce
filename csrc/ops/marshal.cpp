#include "ops/marshal.h"

#include <ATen/ATen.h>

namespace torchplastic {
namespace detail {

using kernels::ModSource;
using kernels::Rule;

at::Tensor to_compute(const at::Tensor& t, at::ScalarType dtype) {
  return t.to(dtype).contiguous();
}

Prepared prepare(const ScanArgs& a, const ScanConfig& c, ZerosFn zeros) {
  const auto dt = c.compute_dtype;
  const auto opts = a.z.options().dtype(dt);
  const int64_t T = c.T, B = c.B, O = c.O, I = c.I;
  Prepared p;
  p.z = to_compute(a.z, dt);
  if (!c.recurrent) p.x = to_compute(*a.x, dt);
  p.alpha = a.alpha.to(dt).expand({O, I}).contiguous();
  // η keeps its granularity (the kernels read it through a row stride); a rule without η
  // gets zeros rather than a null pointer.
  p.eta = (a.eta && c.traits.uses_eta) ? to_compute(*a.eta, dt) : at::zeros({1, 1}, opts);
  if (c.recurrent) {
    p.weight = to_compute(*a.weight, dt);
    p.hidden0 = a.hidden ? to_compute(*a.hidden, dt) : zeros({B, O}, opts);
  }
  if (a.lstm) p.cell0 = a.cell ? to_compute(*a.cell, dt) : zeros({B, O}, opts);
  p.trace0 = a.trace ? to_compute(*a.trace, dt) : zeros({B, O, I}, opts);
  if (c.traits.coefficients) p.coefficients = a.abcd->to(dt).expand({4, O, I}).contiguous();
  if (c.traits.eligibility)
    p.elig0 = a.eligibility ? to_compute(*a.eligibility, dt) : zeros({B, O, I}, opts);
  if (a.adaptive_threshold)
    p.theta0 = a.threshold ? to_compute(*a.threshold, dt) : zeros({B, O}, opts);
  if (c.mod_source == ModSource::External) {
    auto m = a.modulation->to(dt);
    if (m.dim() == 2) m = m.unsqueeze(-1).expand({T, B, O});
    p.modulation = m.contiguous();
  } else if (c.mod_source != ModSource::None) {
    p.mod_weight = to_compute(*a.mod_weight, dt);
    p.mod_bias = to_compute(*a.mod_bias, dt);
    if (c.mod_source == ModSource::Fanout) {
      p.fanout_weight = to_compute(*a.mod_fanout_weight, dt);
      p.fanout_bias = to_compute(*a.mod_fanout_bias, dt);
    }
  }
  if (a.lengths) p.lengths = a.lengths->to(a.z.device(), at::kLong).contiguous();
  return p;
}

bool eta_per_connection(const at::Tensor& eta, const ScanConfig& c) {
  return eta.size(1) == c.I && c.I > 1;
}

template <typename T>
kernels::ScanParams<T> make_params(const ScanArgs& a, const ScanConfig& c, const Prepared& p) {
  kernels::ScanParams<T> P;
  P.T = c.T;
  P.B = c.B;
  P.O = c.O;
  P.I = c.I;
  P.checkpoint_every = c.K;
  P.device = a.z.is_cuda() ? a.z.device().index() : -1;
  P.rule = c.rule;
  P.activation = c.activation;
  P.mod_source = c.mod_source;
  P.recurrent = c.recurrent;
  P.has_clip = a.clip.has_value();
  P.has_scaling = a.synaptic_scaling.has_value();
  P.has_threshold = a.adaptive_threshold.has_value();
  P.clip = static_cast<T>(a.clip.value_or(0));
  P.scaling = static_cast<T>(a.synaptic_scaling.value_or(0));
  P.threshold_rate = static_cast<T>(a.adaptive_threshold.value_or(0));
  P.target_activity = static_cast<T>(a.target_activity);
  P.z = ptr<T>(p.z);
  P.x = ptr<T>(p.x);
  P.alpha = ptr<T>(p.alpha);
  P.eta = ptr<T>(p.eta);
  P.eta_row_stride = p.eta.size(0) == 1 ? 0 : p.eta.size(1);
  P.eta_per_connection = eta_per_connection(p.eta, c);
  P.weight = ptr<T>(p.weight);
  if (a.lstm) {
    P.lstm = true;
    P.weight_hh = P.weight;
    P.weight = P.weight_hh + 2 * c.O * c.O;  // the g rows
    P.cell0 = ptr<T>(p.cell0);
  }
  P.hidden0 = ptr<T>(p.hidden0);
  P.trace0 = ptr<T>(p.trace0);
  P.elig0 = ptr<T>(p.elig0);
  P.theta0 = ptr<T>(p.theta0);
  P.modulation = ptr<T>(p.modulation);
  P.mod_weight = ptr<T>(p.mod_weight);
  P.mod_bias = ptr<T>(p.mod_bias);
  P.fanout_weight = ptr<T>(p.fanout_weight);
  P.fanout_bias = ptr<T>(p.fanout_bias);
  P.coefficients = ptr<T>(p.coefficients);
  P.lengths = ptr<int64_t>(p.lengths);
  return P;
}

template kernels::ScanParams<float> make_params<float>(const ScanArgs&, const ScanConfig&,
                                                    const Prepared&);
template kernels::ScanParams<double> make_params<double>(const ScanArgs&, const ScanConfig&,
                                                      const Prepared&);

}  // namespace detail
}  // namespace torchplastic
