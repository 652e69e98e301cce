#include "autograd/aten_scan.h"

#include <ATen/ATen.h>

#include <utility>
#include <vector>

#include "kernels/rules.h"
#include "ops/checks.h"

namespace torchplastic {
namespace detail {
namespace {

using kernels::Activation;
using kernels::ModSource;

// The value type a rule is written against (csrc/kernels/rules/synapse.h), over whole
// tensors: a tensor, or a constant where a rule writes T(0) or T(1). Broadcasting lines the
// operands up: H and E are [B, O, I], y and m [B, O, 1], p [B, 1, I], η and A–D [O|1, I|1].
struct Value {
  at::Tensor t;  // undefined: the constant c
  double c = 0;
  Value() = default;
  Value(int v) : c(v) {}  // NOLINT(google-explicit-constructor): Synapse's `T H = 0`
  Value(double v) : c(v) {}  // NOLINT(google-explicit-constructor)
  Value(at::Tensor v) : t(std::move(v)) {}  // NOLINT(google-explicit-constructor)
  bool tensor() const { return t.defined(); }
};

Value operator*(const Value& a, const Value& b) {
  if (a.tensor() && b.tensor()) return a.t * b.t;
  if (a.tensor()) return a.t * b.c;
  if (b.tensor()) return b.t * a.c;
  return a.c * b.c;
}
Value operator+(const Value& a, const Value& b) {
  if (a.tensor() && b.tensor()) return a.t + b.t;
  if (a.tensor()) return a.t + b.c;
  if (b.tensor()) return b.t + a.c;
  return a.c + b.c;
}
Value operator-(const Value& a) { return a.tensor() ? Value(-a.t) : Value(-a.c); }
Value operator-(const Value& a, const Value& b) { return a + (-b); }
// Found by argument-dependent lookup where a rule calls mul_add, ahead of the scalar template.
Value mul_add(const Value& a, const Value& b, const Value& c) { return a * b + c; }

at::Tensor activate(Activation activation, const at::Tensor& a) {
  switch (activation) {
    case Activation::Tanh: return at::tanh(a);
    case Activation::Relu: return at::relu(a);
    case Activation::Sigmoid: return at::sigmoid(a);
    case Activation::Identity: return a;
  }
  __builtin_unreachable();
}

}  // namespace

ForwardResult aten_scan(const ScanArgs& a) {
  const ScanConfig c = check_scan_args(a);
  const int64_t T = c.T, B = c.B, O = c.O, I = c.I;
  const auto opts = a.z.options().dtype(c.compute_dtype);
  auto compute = [&](const at::Tensor& t) { return t.to(c.compute_dtype); };
  auto given_or_zeros = [&](const c10::optional<at::Tensor>& t, at::IntArrayRef shape) {
    return t ? compute(*t) : at::zeros(shape, opts);
  };
  const at::Tensor z = compute(a.z), alpha = compute(a.alpha);
  const at::Tensor x = c.recurrent ? at::Tensor() : compute(*a.x);
  const at::Tensor weight = c.recurrent ? compute(*a.weight) : at::Tensor();
  const at::Tensor h0 = c.recurrent ? given_or_zeros(a.hidden, {B, O}) : at::Tensor();
  at::Tensor H = given_or_zeros(a.trace, {B, O, I});
  at::Tensor E = c.traits.eligibility ? given_or_zeros(a.eligibility, {B, O, I}) : at::Tensor();
  at::Tensor theta = a.adaptive_threshold ? given_or_zeros(a.threshold, {B, O}) : at::Tensor();
  const at::Tensor modulation = a.modulation ? compute(*a.modulation) : at::Tensor();
  const at::Tensor coefficients = c.traits.coefficients ? compute(*a.abcd) : at::Tensor();
  const at::Tensor lengths = a.lengths ? a.lengths->to(a.z.device(), at::kLong) : at::Tensor();
  at::Tensor cell = a.lstm ? given_or_zeros(a.cell, {B, O}) : at::Tensor();

  std::vector<at::Tensor> ys;
  ys.reserve(T);
  at::Tensor h = h0;
  kernels::with_rule(c.rule, [&](auto rule) {
    using R = decltype(rule);
    for (int64_t t = 0; t < T; ++t) {
      const at::Tensor p = c.recurrent ? h : x[t];  // [B, I]
      const at::Tensor plastic = (alpha * H).matmul(p.unsqueeze(-1)).squeeze(-1);
      at::Tensor pre, y, out, cell_next;  // y: the rule's postsynaptic activity; out: h_t
      if (a.lstm) {
        // SPEC §2b: the gates (i, f, g, o), plasticity on g.
        const auto gates = (z[t] + p.matmul(weight.t())).chunk(4, -1);
        pre = gates[2] + plastic;
        if (theta.defined()) pre = pre - theta;
        y = at::tanh(pre);
        cell_next = at::sigmoid(gates[1]) * cell + at::sigmoid(gates[0]) * y;
        out = at::sigmoid(gates[3]) * at::tanh(cell_next);
      } else {
        pre = z[t] + plastic;
        if (c.recurrent) pre = pre + p.matmul(weight.t());
        if (theta.defined()) pre = pre - theta;
        y = activate(c.activation, pre);  // [B, O]
        out = y;
      }

      at::Tensor m;  // [B, O] or [B, 1]
      if (c.mod_source == ModSource::External) {
        m = modulation[t];
        if (m.dim() == 1) m = m.unsqueeze(-1);
      } else if (c.mod_source != ModSource::None) {
        const at::Tensor s = at::tanh(out.matmul(compute(*a.mod_weight)) + compute(*a.mod_bias));
        m = s.unsqueeze(-1);
        if (c.mod_source == ModSource::Fanout)
          m = m * compute(*a.mod_fanout_weight) + compute(*a.mod_fanout_bias);
      }

      kernels::Synapse<Value> syn;
      syn.H = H;
      if constexpr (R::eligibility) syn.E = E;
      syn.y = y.unsqueeze(-1);
      syn.p = p.unsqueeze(-2);
      if constexpr (R::modulated) syn.m = m.unsqueeze(-1);
      if constexpr (R::uses_eta) syn.eta = compute(*a.eta);
      if constexpr (R::coefficients)
        for (int j = 0; j < 4; ++j) syn.k[j] = coefficients[j];
      at::Tensor H_next = R::candidate(syn).t, E_next = E, theta_next = theta;
      if constexpr (R::eligibility) E_next = R::eligibility_next(syn).t;

      if (a.clip) H_next = at::clamp(H_next, -*a.clip, *a.clip);
      if (a.synaptic_scaling) {
        // Rows at or under κ are untouched, with no gradient through the scale (SPEC §2). The
        // norm is taken only where it is over κ: at a row of zeros (a zero initial state's first
        // step) its second derivative is 0/0, which made second-order gradients NaN.
        const double kappa = *a.synaptic_scaling;
        const at::Tensor sumsq = (H_next * H_next).sum(-1, /*keepdim=*/true);
        const at::Tensor norm =
            at::where(sumsq.sqrt() > kappa, sumsq, at::full_like(sumsq, kappa * kappa)).sqrt();
        H_next = H_next * (kappa / norm);
      }
      if (theta.defined()) theta_next = theta + *a.adaptive_threshold * (y - a.target_activity);

      if (!lengths.defined()) {
        ys.push_back(out);
        H = H_next;
        E = E_next;
        theta = theta_next;
        if (c.recurrent) h = out;
        if (a.lstm) cell = cell_next;
        continue;
      }
      // Past its length a sequence holds its state and outputs zeros.
      const at::Tensor running = (lengths > t).view({B, 1});
      const at::Tensor running3 = running.view({B, 1, 1});
      ys.push_back(at::where(running, out, at::zeros_like(out)));
      H = at::where(running3, H_next, H);
      if (E.defined()) E = at::where(running3, E_next, E);
      if (theta.defined()) theta = at::where(running, theta_next, theta);
      if (c.recurrent) h = at::where(running, out, h);
      if (a.lstm) cell = at::where(running, cell_next, cell);
    }
  });

  // New tensors, as the op's schema promises: with T = 0 the states would otherwise be the
  // inputs themselves.
  auto state_output = [&](const at::Tensor& state) {
    if (!state.defined()) return at::empty({0}, opts);
    return T > 0 ? state : state.clone();
  };
  ForwardResult r;
  r.y = T > 0 ? at::stack(ys).to(a.z.scalar_type()) : at::zeros({0, B, O}, a.z.options());
  // h_T: with lengths, each sequence's h after its last step, held since.
  r.hidden = c.recurrent ? state_output(h).to(a.z.scalar_type()) : at::empty({0}, a.z.options());
  r.trace = state_output(H);
  r.eligibility = state_output(E);
  r.threshold = state_output(theta);
  r.cell = a.lstm ? state_output(cell).to(a.z.scalar_type()) : at::empty({0}, opts);
  return r;
}

}  // namespace detail
}  // namespace torchplastic
