// Public C++ entry of plastic_scan: maps the options to the schema and calls the dispatcher.
// The checks themselves run in every kernel (csrc/ops/scan_common.cpp), so that callers of
// torch.ops.torchplastic.plastic_scan get them too.
#include "torchplastic/ops.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>

#include "ops/scan_common.h"

namespace torchplastic {

std::string to_string(Rule rule) {
  switch (rule) {
    case Rule::Hebb: return "hebb";
    case Rule::Oja: return "oja";
    case Rule::Modulated: return "modulated";
    case Rule::Retroactive: return "retroactive";
  }
  TORCH_CHECK_VALUE(false, "rule: unknown enum value ", static_cast<int>(rule));
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
  return from_string(name, argument, {Rule::Hebb, Rule::Oja, Rule::Modulated, Rule::Retroactive});
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
  return {cut(hidden), cut(trace), cut(eligibility), cut(threshold)};
}

namespace {
c10::optional<at::Tensor> given(const at::Tensor& t) {
  return t.defined() ? c10::optional<at::Tensor>(t) : c10::nullopt;
}
at::Tensor state_or_undefined(const at::Tensor& t) {
  // The op returns unused states as empty [0] tensors.
  return t.dim() == 1 && t.numel() == 0 ? at::Tensor() : t;
}
}  // namespace

std::tuple<at::Tensor, PlasticState> plastic_scan(const at::Tensor& z, const at::Tensor& alpha,
                                                  const at::Tensor& eta, const at::Tensor& trace,
                                                  const ScanOptions& o) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torchplastic::plastic_scan", "")
                       .typed<detail::StateOutputs(
                           const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&,
                           const c10::optional<at::Tensor>&, const c10::optional<at::Tensor>&,
                           const c10::optional<at::Tensor>&, const c10::optional<at::Tensor>&,
                           const c10::optional<at::Tensor>&, const c10::optional<at::Tensor>&,
                           const c10::optional<at::Tensor>&, const c10::optional<at::Tensor>&,
                           const c10::optional<at::Tensor>&, const c10::optional<at::Tensor>&,
                           const c10::optional<at::Tensor>&, c10::string_view, c10::string_view,
                           c10::optional<double>, c10::optional<double>, c10::optional<double>,
                           double, c10::optional<int64_t>)>();
  TORCH_CHECK_VALUE(z.defined(), "plastic_scan: z: expected a tensor [T, B, O], got undefined");
  TORCH_CHECK_VALUE(alpha.defined(), "plastic_scan: alpha: expected a tensor, got undefined");
  // Devices are checked before dispatch: a tensor on another device would otherwise select
  // that device's kernel (or none) and fail with a message that names no argument.
  for (const auto& [name, t] :
       {std::pair<const char*, at::Tensor>{"alpha", alpha}, {"eta", eta}, {"trace", trace},
        {"x", o.x()}, {"weight", o.weight()}, {"hidden", o.hidden()},
        {"eligibility", o.eligibility()}, {"threshold", o.threshold()},
        {"modulation", o.modulation()}, {"mod_weight", o.mod_weight()},
        {"mod_bias", o.mod_bias()}, {"mod_fanout_weight", o.mod_fanout_weight()},
        {"mod_fanout_bias", o.mod_fanout_bias()}}) {
    TORCH_CHECK_VALUE(!t.defined() || t.device() == z.device(), "plastic_scan: ", name,
                      ": expected a tensor on ", z.device(), " (the device of z), got ", t.device());
  }
  const std::string rule = to_string(o.rule());
  const std::string activation = to_string(o.activation());
  auto out = op.call(z, alpha, given(eta), given(trace), given(o.x()), given(o.weight()),
                     given(o.hidden()), given(o.eligibility()), given(o.threshold()),
                     given(o.modulation()), given(o.mod_weight()), given(o.mod_bias()),
                     given(o.mod_fanout_weight()), given(o.mod_fanout_bias()), rule, activation,
                     o.clip(), o.synaptic_scaling(), o.adaptive_threshold(), o.target_activity(),
                     o.checkpoint_every());
  PlasticState state{state_or_undefined(std::get<1>(out)), std::get<2>(out),
                     state_or_undefined(std::get<3>(out)), state_or_undefined(std::get<4>(out))};
  return {std::get<0>(out), state};
}

}  // namespace torchplastic
