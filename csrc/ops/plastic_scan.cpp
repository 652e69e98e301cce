// Public C++ entry of plastic_scan: maps the options to the op's arguments and calls the
// dispatcher. The checks run in every kernel (csrc/ops/checks.cpp), so that callers of
// torch.ops.torchplastic.plastic_scan get them too; only the devices, which choose the
// kernel, are checked here first.
#include "torchplastic/ops.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>

#include "kernels/rules.h"
#include "ops/checks.h"
#include "ops/scan.h"

namespace torchplastic {

std::string to_string(Rule rule) {
  switch (rule) {
#define TORCHPLASTIC_RULE_NAME_(value, name) \
  case Rule::value:                           \
    return name;
    TORCHPLASTIC_RULES(TORCHPLASTIC_RULE_NAME_)
#undef TORCHPLASTIC_RULE_NAME_
  }
  TORCH_CHECK_VALUE(false, "rule: unknown enum value ", static_cast<int>(rule));
}

RuleInfo rule_info(Rule rule) {
  TORCH_CHECK_VALUE(static_cast<int>(rule) >= 0 && static_cast<int>(rule) < kNumRules,
                    "rule: unknown enum value ", static_cast<int>(rule));
  return kernels::traits(rule);
}

std::string to_string(Activation activation) {
  switch (activation) {
    case Activation::Tanh: return "tanh";
    case Activation::Relu: return "relu";
    case Activation::Sigmoid: return "sigmoid";
    case Activation::Identity: return "identity";
  }
  TORCH_CHECK_VALUE(false, "activation: unknown enum value ", static_cast<int>(activation));
}

std::string to_string(Modulation modulation) {
  switch (modulation) {
    case Modulation::Internal: return "internal";
    case Modulation::Fanout: return "fanout";
    case Modulation::External: return "external";
  }
  TORCH_CHECK_VALUE(false, "modulation: unknown enum value ", static_cast<int>(modulation));
}

std::string to_string(Granularity granularity) {
  switch (granularity) {
    case Granularity::Connection: return "connection";
    case Granularity::Neuron: return "neuron";
    case Granularity::Scalar: return "scalar";
  }
  TORCH_CHECK_VALUE(false, "granularity: unknown enum value ", static_cast<int>(granularity));
}

namespace {
template <typename Enum>
Enum from_string(const std::string& name, const char* argument,
                 std::initializer_list<Enum> values) {
  std::string choices;
  for (Enum v : values) {
    if (to_string(v) == name) return v;
    choices += (choices.empty() ? "'" : ", '") + to_string(v) + "'";
  }
  TORCH_CHECK_VALUE(false, argument, ": expected one of ", choices, ", got '", name, "'");
}
}  // namespace

Rule rule_from_string(const std::string& name, const char* argument) {
  return from_string(name, argument, {
#define TORCHPLASTIC_RULE_VALUE_(value, name) Rule::value,
                                          TORCHPLASTIC_RULES(TORCHPLASTIC_RULE_VALUE_)
#undef TORCHPLASTIC_RULE_VALUE_
                                      });
}
Activation activation_from_string(const std::string& name, const char* argument) {
  return from_string(name, argument, {Activation::Tanh, Activation::Relu, Activation::Sigmoid,
                                      Activation::Identity});
}
Modulation modulation_from_string(const std::string& name, const char* argument) {
  return from_string(name, argument,
                     {Modulation::Internal, Modulation::Fanout, Modulation::External});
}
Granularity granularity_from_string(const std::string& name, const char* argument) {
  return from_string(name, argument,
                     {Granularity::Connection, Granularity::Neuron, Granularity::Scalar});
}

PlasticState PlasticState::detach() const {
  auto cut = [](const at::Tensor& t) { return t.defined() ? t.detach() : t; };
  return {cut(hidden), cut(trace), cut(eligibility), cut(threshold), cut(cell)};
}

namespace {
c10::optional<at::Tensor> given(const at::Tensor& t) {
  return t.defined() ? c10::optional<at::Tensor>(t) : c10::nullopt;
}
at::Tensor state_or_undefined(const at::Tensor& t) {
  // The op returns unused states as empty [0] tensors.
  return t.dim() == 1 && t.numel() == 0 ? at::Tensor() : t;
}

// The op's arguments from the C++ signature; the devices checked before dispatch.
detail::ScanArgs scan_args(const at::Tensor& z, const at::Tensor& alpha, const at::Tensor& eta,
                           const at::Tensor& trace, const ScanOptions& o, bool lstm) {
  const char* op = lstm ? "plastic_lstm_scan" : "plastic_scan";
  TORCH_CHECK_VALUE(z.defined(), op, ": z: expected a tensor ", lstm ? "[T, B, 4H]" : "[T, B, O]",
                    ", got undefined");
  TORCH_CHECK_VALUE(alpha.defined(), op, ": alpha: expected a tensor, got undefined");
  detail::ScanArgs a;
  a.lstm = lstm;
  a.z = z;
  a.alpha = alpha;
  a.eta = given(eta);
  a.trace = given(trace);
  a.x = given(o.x());
  a.weight = given(o.weight());
  a.hidden = given(o.hidden());
  a.eligibility = given(o.eligibility());
  a.threshold = given(o.threshold());
  a.modulation = given(o.modulation());
  a.mod_weight = given(o.mod_weight());
  a.mod_bias = given(o.mod_bias());
  a.mod_fanout_weight = given(o.mod_fanout_weight());
  a.mod_fanout_bias = given(o.mod_fanout_bias());
  a.rule = to_string(o.rule());
  a.activation = to_string(o.activation());
  a.clip = o.clip();
  a.synaptic_scaling = o.synaptic_scaling();
  a.adaptive_threshold = o.adaptive_threshold();
  a.target_activity = o.target_activity();
  a.checkpoint_every = o.checkpoint_every();
  a.abcd = given(o.abcd());
  a.lengths = given(o.lengths());
  a.cell = given(o.cell());
  detail::check_devices(a);
  return a;
}

}  // namespace

std::tuple<at::Tensor, PlasticState> plastic_scan(const at::Tensor& z, const at::Tensor& alpha,
                                                  const at::Tensor& eta, const at::Tensor& trace,
                                                  const ScanOptions& o) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torchplastic::plastic_scan", "")
                       .typed<detail::StateOutputs(TORCHPLASTIC_SCAN_PARAMS)>();
  const detail::ScanArgs a = scan_args(z, alpha, eta, trace, o, /*lstm=*/false);
  auto out = a.apply([&](auto&&... args) { return op.call(args...); });
  PlasticState state{state_or_undefined(std::get<1>(out)), std::get<2>(out),
                     state_or_undefined(std::get<3>(out)), state_or_undefined(std::get<4>(out)),
                     at::Tensor()};
  return {std::get<0>(out), state};
}

std::tuple<at::Tensor, PlasticState> plastic_lstm_scan(const at::Tensor& z,
                                                       const at::Tensor& weight_hh,
                                                       const at::Tensor& alpha,
                                                       const at::Tensor& eta,
                                                       const at::Tensor& trace,
                                                       const ScanOptions& o) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torchplastic::plastic_lstm_scan", "")
                       .typed<detail::LstmStateOutputs(TORCHPLASTIC_SCAN_PARAMS)>();
  TORCH_CHECK_VALUE(!o.weight().defined(), "plastic_lstm_scan: weight: expected none in the "
                    "options (W_hh is the argument weight_hh), got a tensor");
  TORCH_CHECK_VALUE(o.activation() == Activation::Tanh, "plastic_lstm_scan: activation: "
                    "expected the default (tanh, the LSTM's cell candidate), got ",
                    to_string(o.activation()));
  TORCH_CHECK_VALUE(weight_hh.defined(), "plastic_lstm_scan: weight_hh: expected a tensor "
                    "[4H, H], got undefined");
  ScanOptions with_weight = o;
  with_weight.weight(weight_hh);
  const detail::ScanArgs a = scan_args(z, alpha, eta, trace, with_weight, /*lstm=*/true);
  auto out = a.apply([&](auto&&... args) { return op.call(args...); });
  PlasticState state{std::get<1>(out), std::get<2>(out), state_or_undefined(std::get<3>(out)),
                     state_or_undefined(std::get<4>(out)), std::get<5>(out)};
  return {std::get<0>(out), state};
}

}  // namespace torchplastic
