#include "ops/checks.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "torchplastic/options.h"

namespace torchplastic {
namespace detail {

using kernels::Activation;
using kernels::ModSource;
using kernels::Rule;

namespace {

// The public enum (options.h) lists the activations in the kernels' order.
static_assert(static_cast<int>(torchplastic::Activation::Identity) == static_cast<int>(Activation::Identity),
              "options.h and kernels/plastic_step.h must list the activations in one order");

// The names of the rules with a trait, quoted: "'retroactive'".
std::string rules_with(bool RuleInfo::*trait) {
  std::string names;
#define TORCHPLASTIC_RULE_WITH_(value, name) \
  if (rule_info(torchplastic::Rule::value).*trait) names += (names.empty() ? "'" : ", '") + std::string(name) + "'";
  TORCHPLASTIC_RULES(TORCHPLASTIC_RULE_WITH_)
#undef TORCHPLASTIC_RULE_WITH_
  return names;
}

void check_shape(const char* op, const at::Tensor& t, const char* name, at::IntArrayRef expected,
                 const char* meaning) {
  TORCH_CHECK_VALUE(t.sizes() == expected, op, ": ", name, ": expected shape ", expected,
                    " ", meaning, ", got ", t.sizes());
}

void check_positive(const char* owner, const c10::optional<double>& v, const char* name) {
  if (!v) return;
  TORCH_CHECK_VALUE(std::isfinite(*v) && *v > 0, owner, ": ", name,
                    ": expected a finite value > 0 or None, got ", *v);
}

// α and η: per connection [O, I], per postsynaptic neuron [O, 1], or one scalar [1, 1].
void check_granularity(const char* op, const at::Tensor& t, const char* name, int64_t O,
                       int64_t I) {
  const bool ok = t.dim() == 2 && ((t.size(0) == O && t.size(1) == I) ||
                                   (t.size(0) == O && t.size(1) == 1) ||
                                   (t.size(0) == 1 && t.size(1) == 1));
  TORCH_CHECK_VALUE(ok, op, ": ", name, ": expected shape [", O, ", ", I,
                    "] (per connection), [", O, ", 1] (per neuron) or [1, 1] (scalar), got ",
                    t.sizes());
}

}  // namespace
int64_t checkpoint_interval(int64_t T, const c10::optional<int64_t>& requested) {
  if (requested) {
    TORCH_CHECK_VALUE(*requested >= 1, "plastic_scan: checkpoint_every: expected an integer >= 1, got ",
                      *requested);
    return std::min<int64_t>(*requested, std::max<int64_t>(T, 1));
  }
  return std::max<int64_t>(1, static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(T)))));
}

void check_scan_options(const char* owner, const std::string& activation,
                        const c10::optional<double>& clip,
                        const c10::optional<double>& synaptic_scaling,
                        const c10::optional<double>& adaptive_threshold,
                        const c10::optional<int64_t>& checkpoint_every) {
  torchplastic::activation_from_string(activation, (std::string(owner) + ": activation").c_str());
  check_positive(owner, clip, "clip");
  check_positive(owner, synaptic_scaling, "synaptic_scaling");
  check_positive(owner, adaptive_threshold, "adaptive_threshold");
  TORCH_CHECK_VALUE(!checkpoint_every || *checkpoint_every >= 1, owner,
                    ": checkpoint_every: expected an integer >= 1 or None, got ",
                    checkpoint_every.value_or(0));
}

void check_devices(const ScanArgs& args) {
  const char* op = args.op_name();
  TORCH_CHECK_VALUE(args.z.defined(), op, ": z: expected a tensor ",
                    args.lstm ? "[T, B, 4H]" : "[T, B, O]", ", got None");
  for (const auto& t : args.tensors()) {
    // lengths may stay on the CPU, where torch.nn.utils.rnn keeps them.
    const bool cpu_lengths = t.role == scan_arg::Role::index && t.tensor.defined() && t.tensor.is_cpu();
    TORCH_CHECK_VALUE(!t.tensor.defined() || cpu_lengths || t.tensor.device() == args.z.device(),
                      op, ": ", t.name, ": expected a tensor on ", args.z.device(),
                      " (the device of z)", args.z.is_cpu() ? "" : " or the CPU", ", got ",
                      t.tensor.device());
  }
}


ScanConfig check_scan_args(const ScanArgs& a) {
  const char* op = a.op_name();
  ScanConfig c{};
  c.rule = torchplastic::rule_from_string(a.rule, (std::string(op) + ": rule").c_str());
  c.traits = kernels::traits(c.rule);
  c.activation = static_cast<Activation>(
      torchplastic::activation_from_string(a.activation, (std::string(op) + ": activation").c_str()));

  const char* z_shape = a.lstm ? "[T, B, 4H]" : "[T, B, O]";
  TORCH_CHECK_VALUE(a.z.defined(), op, ": z: expected a tensor ", z_shape, ", got None");
  TORCH_CHECK_VALUE(a.z.dim() == 3, op, ": z: expected a 3-D tensor ", z_shape, ", got shape ",
                    a.z.sizes());
  c.T = a.z.size(0);
  c.B = a.z.size(1);
  c.O = a.z.size(2);
  c.recurrent = !a.x.has_value();
  if (a.lstm) {
    // O is the hidden size H; z holds the four gates.
    TORCH_CHECK_VALUE(c.O % 4 == 0, op, ": z: expected a 3-D tensor [T, B, 4H] (the gates i, f, "
                      "g, o), got shape ", a.z.sizes(), ", whose last size is not a multiple of 4");
    c.O /= 4;
    TORCH_CHECK_VALUE(c.recurrent, op, ": x: expected None (the plastic LSTM is recurrent), got a "
                      "tensor of shape ", a.x->sizes());
    TORCH_CHECK_VALUE(c.activation == Activation::Tanh, op, ": activation: expected 'tanh' (the "
                      "LSTM's cell candidate), got '", a.activation, "'");
  } else {
    TORCH_CHECK_VALUE(!a.cell, op, ": cell: expected None (a cell state belongs to "
                      "plastic_lstm_scan), got a tensor of shape ", a.cell->sizes());
  }
  // As torch.nn.RNN's and the modules' sizes: an empty trace has no rows to plasticise (and
  // α's and η's granularities could not be told apart by their shapes).
  TORCH_CHECK_VALUE(c.O >= 1, op, ": z: expected a 3-D tensor ", z_shape, " with ",
                    a.lstm ? "H" : "O", " >= 1, got shape ", a.z.sizes());

  // Dtypes and devices: every tensor on z's device; inputs in z's dtype; the state traces in
  // the compute dtype (float32 for float16/bfloat16 inputs, whose traces accumulate in float32).
  const auto dtype = a.z.scalar_type();
  const bool cuda = a.z.is_cuda();
  const bool supported =
      dtype == at::kFloat || dtype == at::kDouble ||
      (cuda && (dtype == at::kHalf || dtype == at::kBFloat16));
  TORCH_CHECK_VALUE(supported, op, ": z: expected dtype ",
                    cuda ? "float32, float64, float16 or bfloat16 (CUDA)"
                         : "float32 or float64 (CPU)",
                    ", got ", dtype);
  c.compute_dtype = dtype == at::kDouble ? at::kDouble : at::kFloat;
  check_devices(a);
  for (const auto& t : a.tensors()) {
    if (!t.tensor.defined() || t.role == scan_arg::Role::index) continue;
    const auto want = t.role == scan_arg::Role::state ? c.compute_dtype : dtype;
    const bool ok = t.tensor.scalar_type() == want || t.tensor.scalar_type() == dtype;
    TORCH_CHECK_VALUE(ok, op, ": ", t.name, ": expected dtype ", want,
                      " (matching z), got ", t.tensor.scalar_type());
  }

  // Mode: feedforward when x is given, recurrent otherwise.
  if (c.recurrent) {
    c.I = c.O;
    TORCH_CHECK_VALUE(a.weight.has_value(), op, ": weight: expected a tensor [",
                      a.lstm ? 4 * c.O : c.O, ", ", c.O, "]",
                      a.lstm ? " (W_hh)" : " in recurrent mode (x is None)", ", got None");
    if (a.lstm) {
      // H comes from z's gate size, so a z and a W_hh that disagree are named together.
      const std::string meaning = "[4H, H] (W_hh; H = " + std::to_string(c.O) +
                                  " from z's gate size " + std::to_string(4 * c.O) + ")";
      check_shape(op, *a.weight, "weight", {4 * c.O, c.O}, meaning.c_str());
      if (a.hidden) check_shape(op, *a.hidden, "hidden", {c.B, c.O}, "[B, H]");
      if (a.cell) check_shape(op, *a.cell, "cell", {c.B, c.O}, "[B, H]");
    } else {
      check_shape(op, *a.weight, "weight", {c.O, c.O}, "[O, O]");
      if (a.hidden) check_shape(op, *a.hidden, "hidden", {c.B, c.O}, "[B, O]");
    }
  } else {
    TORCH_CHECK_VALUE(a.x->dim() == 3 && a.x->size(0) == c.T && a.x->size(1) == c.B,
                      op, ": x: expected a 3-D tensor [T, B, I] with T = ", c.T,
                      " and B = ", c.B, " (from z), got shape ", a.x->sizes());
    c.I = a.x->size(2);
    TORCH_CHECK_VALUE(c.I >= 1, op, ": x: expected a 3-D tensor [T, B, I] with I >= 1, got shape ",
                      a.x->sizes());
    TORCH_CHECK_VALUE(!a.weight, op, ": weight: expected None in feedforward mode "
                      "(x is given), got a tensor of shape ", a.weight->sizes());
    TORCH_CHECK_VALUE(!a.hidden, op, ": hidden: expected None in feedforward mode "
                      "(x is given), got a tensor of shape ", a.hidden->sizes());
  }
  const int64_t B = c.B, O = c.O, I = c.I, T = c.T;

  TORCH_CHECK_VALUE(a.alpha.defined(), op, ": alpha: expected a tensor, got None");
  check_granularity(op, a.alpha, "alpha", O, I);
  if (!c.traits.uses_eta) {
    if (a.eta) check_granularity(op, *a.eta, "eta", O, I);
  } else {
    TORCH_CHECK_VALUE(a.eta.has_value(), op, ": eta: expected a tensor for rule '",
                      a.rule, "', got None");
    check_granularity(op, *a.eta, "eta", O, I);
  }
  if (c.traits.coefficients) {
    TORCH_CHECK_VALUE(a.abcd.has_value(), op, ": abcd: expected a tensor [4, ", O, ", ",
                      I, "], [4, ", O, ", 1] or [4, 1, 1] for rule '", a.rule, "', got None");
    const auto& k = *a.abcd;
    const bool ok = k.dim() == 3 && k.size(0) == 4 &&
                    ((k.size(1) == O && k.size(2) == I) || (k.size(1) == O && k.size(2) == 1) ||
                     (k.size(1) == 1 && k.size(2) == 1));
    TORCH_CHECK_VALUE(ok, op, ": abcd: expected shape [4, ", O, ", ", I,
                      "] (per connection), [4, ", O, ", 1] (per neuron) or [4, 1, 1] (scalar), got ",
                      k.sizes());
  } else {
    TORCH_CHECK_VALUE(!a.abcd, op, ": abcd: expected None for rule '", a.rule, "' (only ",
                      rules_with(&RuleInfo::coefficients), " take coefficients), got a tensor");
  }
  if (a.trace) check_shape(op, *a.trace, "trace", {B, O, I}, "[B, O, I]");
  if (c.traits.eligibility) {
    if (a.eligibility) check_shape(op, *a.eligibility, "eligibility", {B, O, I}, "[B, O, I]");
  } else {
    TORCH_CHECK_VALUE(!a.eligibility, op, ": eligibility: expected None for rule '",
                      a.rule, "' (only ", rules_with(&RuleInfo::eligibility), " have an eligibility trace), got a tensor");
  }

  // Neuromodulation: exactly one source for the modulated rules, none for the others.
  const bool needs_mod = c.traits.modulated;
  const bool external = a.modulation.has_value();
  const bool internal = a.mod_weight.has_value() || a.mod_bias.has_value();
  const bool fanout = a.mod_fanout_weight.has_value() || a.mod_fanout_bias.has_value();
  if (!needs_mod) {
    TORCH_CHECK_VALUE(!external && !internal && !fanout, op, ": modulation: expected none "
                      "for rule '", a.rule, "', which takes no neuromodulation, got ",
                      external ? "modulation" : (internal ? "mod_weight/mod_bias"
                                                          : "mod_fanout_weight/mod_fanout_bias"));
    c.mod_source = ModSource::None;
  } else if (external) {
    TORCH_CHECK_VALUE(!internal && !fanout, op, ": modulation: expected either an "
                      "external modulation tensor or mod_weight/mod_bias, got both");
    const auto& m = *a.modulation;
    const bool ok = (m.dim() == 2 && m.size(0) == T && m.size(1) == B) ||
                    (m.dim() == 3 && m.size(0) == T && m.size(1) == B && m.size(2) == O);
    TORCH_CHECK_VALUE(ok, op, ": modulation: expected shape [", T, ", ", B, "] or [", T,
                      ", ", B, ", ", O, "] ([T, B] or [T, B, O]), got ", m.sizes());
    c.mod_source = ModSource::External;
  } else {
    TORCH_CHECK_VALUE(a.mod_weight && a.mod_bias, op, ": modulation: rule '", a.rule,
                      "' needs neuromodulation: expected a modulation tensor [T, B] or [T, B, O], "
                      "or mod_weight [O] and mod_bias [1], got ",
                      internal ? (a.mod_weight ? "mod_weight without mod_bias"
                                               : "mod_bias without mod_weight")
                               : "none");
    check_shape(op, *a.mod_weight, "mod_weight", {O}, "[O]");
    check_shape(op, *a.mod_bias, "mod_bias", {1}, "[1]");
    if (fanout) {
      TORCH_CHECK_VALUE(a.mod_fanout_weight && a.mod_fanout_bias,
                        op, ": mod_fanout_weight/mod_fanout_bias: expected both or "
                        "neither, got only ",
                        a.mod_fanout_weight ? "mod_fanout_weight" : "mod_fanout_bias");
      check_shape(op, *a.mod_fanout_weight, "mod_fanout_weight", {O}, "[O]");
      check_shape(op, *a.mod_fanout_bias, "mod_fanout_bias", {O}, "[O]");
      c.mod_source = ModSource::Fanout;
    } else {
      c.mod_source = ModSource::Internal;
    }
  }

  check_scan_options(op, a.activation, a.clip, a.synaptic_scaling,
                     a.adaptive_threshold, a.checkpoint_every);
  TORCH_CHECK_VALUE(std::isfinite(a.target_activity),
                    op, ": target_activity: expected a finite value, got ",
                    a.target_activity);
  if (a.adaptive_threshold) {
    if (a.threshold) check_shape(op, *a.threshold, "threshold", {B, O}, "[B, O]");
  } else {
    TORCH_CHECK_VALUE(!a.threshold, op, ": threshold: expected None without "
                      "adaptive_threshold, got a tensor");
  }
  if (a.lengths) {
    const at::Tensor& L = *a.lengths;
    TORCH_CHECK_VALUE(L.scalar_type() == at::kLong || L.scalar_type() == at::kInt,
                      op, ": lengths: expected an integer tensor (int64 or int32), got ",
                      L.scalar_type());
    check_shape(op, L, "lengths", {B}, "[B]");
    if (B > 0) {
      // On CUDA this reads the lengths back: pass them on the CPU to avoid the wait.
      const auto [lo, hi] = at::aminmax(L);
      const int64_t min = lo.item<int64_t>(), max = hi.item<int64_t>();
      TORCH_CHECK_VALUE(min >= 0 && max <= T, op, ": lengths: expected values in [0, ",
                        T, "] (T, from z), got values from ", min, " to ", max);
    }
  }
  c.K = checkpoint_interval(T, a.checkpoint_every);
  return c;
}

}  // namespace detail
}  // namespace torchplastic
