// Autograd of plastic_scan in C++, so LibTorch programs get gradients too.
//
// The forward runs plastic_scan_forward, which also returns the trace checkpoints (SPEC §3:
// the traces before steps K, 2K, ...; the one before step 0 is the initial trace, an input
// kept anyway); the backward op recomputes each segment from its checkpoint. What this node
// keeps for the backward: the inputs, y, and ceil(T/K) − 1 traces (twice that with an
// eligibility trace), so a single step, as a cell takes, keeps no trace copy at all.
//
// T is never read here, so nothing specialises it: under torch.compile the fake kernel sizes
// the checkpoints with an expression in T (functional._checkpoint_count), and one graph serves
// every sequence length.
// Inputs, options and gradients go through ScanArgs and ScanGrads (csrc/ops/scan_args.h), by
// name.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

#include "ops/scan.h"

namespace torchplastic {
namespace {

using detail::ForwardOutputs;
using detail::ScanArgs;
using detail::ScanGrads;
using detail::StateOutputs;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class PlasticScanFunction : public torch::autograd::Function<PlasticScanFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, TORCHPLASTIC_SCAN_PARAMS) {
    at::AutoDispatchBelowADInplaceOrView guard;
    const ScanArgs args = ScanArgs::from(TORCHPLASTIC_SCAN_ARGS);
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("torchplastic::plastic_scan_forward", "")
                         .typed<ForwardOutputs(TORCHPLASTIC_SCAN_PARAMS)>();
    auto [y, h, H, E, theta, trace_ckpt, elig_ckpt] =
        args.apply([&](auto&&... a) { return op.call(a...); });

    // Saved: the tensor arguments in table order, then y and the checkpoints.
    std::vector<at::Tensor> saved;
    for (const auto& t : args.tensors()) saved.push_back(t.tensor);
    saved.insert(saved.end(), {y, trace_ckpt, elig_ckpt});
    ctx->save_for_backward(saved);
    for (auto& [name, value] : args.options()) ctx->saved_data[name] = value;
    return {y, h, H, E, theta};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    // With create_graph=True the engine runs this with grad mode on and expects a backward it
    // can differentiate; the backward op has no derivative of its own, so refuse rather than
    // hand out gradients whose own gradients would silently be zero.
    TORCH_CHECK(!at::GradMode::is_enabled(),
                "plastic_scan: double backward (a backward with create_graph=True through the "
                "op, as a gradient penalty or MAML needs) is not supported yet; "
                "torchplastic.reference.plastic_scan computes the same function in plain "
                "PyTorch and supports it");
    const auto saved = ctx->get_saved_variables();
    ScanArgs args;
    args.set_tensors(saved);
    for (const auto& [name, value] : args.options()) args.set_option(name, ctx->saved_data[name]);
    const auto kept = saved.end() - 3;  // y, trace checkpoints, eligibility checkpoints
    static auto op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("torchplastic::plastic_scan_backward", "")
            .typed<std::vector<at::Tensor>(
                const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                TORCHPLASTIC_SCAN_PARAMS)>();
    auto list = args.apply([&](auto&&... a) {
      return op.call(grads[0], grads[1], grads[2], grads[3], grads[4], kept[0], kept[1],
                     kept[2], a...);
    });
    // The backward op returns an empty tensor for each input that was not given; autograd
    // wants none there.
    const auto inputs = args.tensors();
    for (size_t k = 0; k < inputs.size(); ++k)
      if (!inputs[k].tensor.defined()) list[k] = at::Tensor();
    return ScanGrads::from_list(list).per_argument();
  }
};

StateOutputs plastic_scan_autograd(TORCHPLASTIC_SCAN_PARAMS) {
  const ScanArgs args = ScanArgs::from(TORCHPLASTIC_SCAN_ARGS);
  bool any_requires_grad = false;
  for (const auto& t : args.tensors()) {
    any_requires_grad |= t.tensor.defined() && t.tensor.requires_grad();
    // The op has no forward derivative: a tangent on any input would be dropped.
    TORCH_CHECK(!torch::autograd::isFwGradDefined(t.tensor), "plastic_scan: ", t.name,
                ": forward-mode AD (torch.func.jvp, torch.autograd.forward_ad) is not supported "
                "yet; use reverse mode (torch.autograd.grad, torch.func.vjp), or "
                "torchplastic.reference.plastic_scan");
  }
  if (!at::GradMode::is_enabled() || !any_requires_grad) {
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
