// Autograd of plastic_scan in C++, so LibTorch programs get gradients too.
//
// The forward runs plastic_scan_forward, which also returns the trace checkpoints (every K
// steps, SPEC §3); the backward op recomputes each segment from its checkpoint. What this node
// keeps for the backward: the inputs, y, and ceil(T/K) traces (two with rule retroactive).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "ops/scan_common.h"

namespace torchplastic {
namespace {

using detail::ForwardOutputs;
using detail::StateOutputs;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int kNumTensorInputs = 14;  // z ... mod_fanout_bias, in schema order
constexpr int kNumInputs = 21;        // every argument of the schema

class PlasticScanFunction : public torch::autograd::Function<PlasticScanFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, TORCHPLASTIC_SCAN_PARAMS) {
    at::AutoDispatchBelowADInplaceOrView guard;
    // Under torch.compile the tensors may carry symbolic sizes: read T through sym_size (a
    // guard specialises it) and leave every other check to the kernels, which see real tensors.
    TORCH_CHECK_VALUE(z.dim() == 3, "plastic_scan: z: expected a 3-D tensor [T, B, O], got ",
                      z.dim(), " dimensions");
    const int64_t T = z.sym_size(0).guard_int(__FILE__, __LINE__);
    const int64_t K = checkpoint_every ? std::min<int64_t>(*checkpoint_every, std::max<int64_t>(T, 1))
                                       : detail::default_checkpoint_every(T);
    TORCH_CHECK_VALUE(K >= 1, "plastic_scan: checkpoint_every: expected an integer >= 1, got ", K);
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("torchplastic::plastic_scan_forward", "")
                         .typed<ForwardOutputs(TORCHPLASTIC_SCAN_PARAMS)>();
    auto [y, h, H, E, theta, trace_ckpt, elig_ckpt] =
        op.call(z, alpha, eta, trace, x, weight, hidden, eligibility, threshold, modulation,
                mod_weight, mod_bias, mod_fanout_weight, mod_fanout_bias, rule, activation, clip,
                synaptic_scaling, adaptive_threshold, target_activity, K);
    auto value = [](const c10::optional<at::Tensor>& t) { return t ? *t : at::Tensor(); };
    ctx->save_for_backward({z, alpha, value(eta), value(trace), value(x), value(weight),
                            value(hidden), value(eligibility), value(threshold), value(modulation),
                            value(mod_weight), value(mod_bias), value(mod_fanout_weight),
                            value(mod_fanout_bias), y, trace_ckpt, elig_ckpt});
    ctx->saved_data["rule"] = std::string(rule);
    ctx->saved_data["activation"] = std::string(activation);
    ctx->saved_data["clip"] = clip;
    ctx->saved_data["synaptic_scaling"] = synaptic_scaling;
    ctx->saved_data["adaptive_threshold"] = adaptive_threshold;
    ctx->saved_data["target_activity"] = target_activity;
    ctx->saved_data["checkpoint_every"] = K;
    return {y, h, H, E, theta};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto opt = [&](int i) {
      return saved[i].defined() ? c10::optional<at::Tensor>(saved[i]) : c10::nullopt;
    };
    auto opt_double = [&](const char* key) {
      const auto& v = ctx->saved_data[key];
      return v.isNone() ? c10::optional<double>() : c10::optional<double>(v.toDouble());
    };
    static auto op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("torchplastic::plastic_scan_backward", "")
            .typed<std::vector<at::Tensor>(
                const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                TORCHPLASTIC_SCAN_PARAMS)>();
    const std::string rule = ctx->saved_data["rule"].toStringRef();
    const std::string activation = ctx->saved_data["activation"].toStringRef();
    auto g = op.call(grads[0], grads[1], grads[2], grads[3], grads[4], saved[14], saved[15],
                     saved[16], saved[0], saved[1], opt(2), opt(3), opt(4), opt(5), opt(6), opt(7),
                     opt(8), opt(9), opt(10), opt(11), opt(12), opt(13), rule, activation,
                     opt_double("clip"), opt_double("synaptic_scaling"),
                     opt_double("adaptive_threshold"), ctx->saved_data["target_activity"].toDouble(),
                     ctx->saved_data["checkpoint_every"].toInt());
    variable_list out(kNumInputs);
    for (int i = 0; i < kNumTensorInputs; ++i)
      if (saved[i].defined()) out[i] = g[i];  // autograd drops what no input needs
    return out;
  }
};

bool any_requires_grad(TORCHPLASTIC_SCAN_PARAMS) {
  auto req = [](const c10::optional<at::Tensor>& t) { return t && t->requires_grad(); };
  return z.requires_grad() || alpha.requires_grad() || req(eta) || req(trace) || req(x) ||
         req(weight) || req(hidden) || req(eligibility) || req(threshold) || req(modulation) ||
         req(mod_weight) || req(mod_bias) || req(mod_fanout_weight) || req(mod_fanout_bias);
}

StateOutputs plastic_scan_autograd(TORCHPLASTIC_SCAN_PARAMS) {
  if (!at::GradMode::is_enabled() || !any_requires_grad(TORCHPLASTIC_SCAN_ARGS)) {
    // Nothing to differentiate: skip the checkpoints.
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("torchplastic::plastic_scan", "")
                         .typed<StateOutputs(TORCHPLASTIC_SCAN_PARAMS)>();
    return op.call(TORCHPLASTIC_SCAN_ARGS);
  }
  auto out = PlasticScanFunction::apply(TORCHPLASTIC_SCAN_ARGS);
  return {out[0], out[1], out[2], out[3], out[4]};
}

}  // namespace
}  // namespace torchplastic

TORCH_LIBRARY_IMPL(torchplastic, Autograd, m) {
  m.impl("plastic_scan", &torchplastic::plastic_scan_autograd);
}
