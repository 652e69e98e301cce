// Autograd of plastic_scan and plastic_lstm_scan in C++, so LibTorch programs get gradients
// too.
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
//
// Derivatives the fused kernels do not compute go through aten_scan (csrc/autograd/
// aten_scan.h), the same steps as ATen operations, at the memory of T traces:
//   - double backward: a backward asked to build a graph (create_graph=True, grad mode on in
//     the backward) recomputes the outputs with aten_scan and differentiates them with a graph;
//   - forward-mode AD: a call with a tangent on any input runs aten_scan instead of the kernels;
//   - functorch's reverse-mode transforms (torch.func.grad, vjp, jacrev): the same.
// Inputs, options and gradients go through ScanArgs and ScanGrads (csrc/ops/scan_args.h), by
// name.
#include <ATen/FuncTorchTLS.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

#include "autograd/aten_scan.h"
#include "ops/scan.h"

namespace torchplastic {
namespace {

using detail::ForwardResult;
using detail::ScanArgs;
using detail::ScanGrads;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The ops of one family: plastic_scan* (Lstm false) or plastic_lstm_scan* (true). The LSTM's
// outputs add the cell c_T, and its forward keeps its activations for the backward too.
template <bool Lstm>
struct Family {
  static constexpr const char* kScan = Lstm ? "torchplastic::plastic_lstm_scan"
                                            : "torchplastic::plastic_scan";
  static constexpr const char* kForward = Lstm ? "torchplastic::plastic_lstm_scan_forward"
                                               : "torchplastic::plastic_scan_forward";
  static constexpr const char* kBackward = Lstm ? "torchplastic::plastic_lstm_scan_backward"
                                                : "torchplastic::plastic_scan_backward";
  static constexpr size_t kOutputs = Lstm ? 6 : 5;
  using States = std::conditional_t<Lstm, detail::LstmStateOutputs, detail::StateOutputs>;
  using ForwardOutputs = std::conditional_t<Lstm, detail::LstmForwardOutputs, detail::ForwardOutputs>;

  static States states(const ForwardResult& r) {
    if constexpr (Lstm) return r.lstm_states();
    else return r.states();
  }
  static variable_list list(const ForwardResult& r) {
    variable_list out{r.y, r.hidden, r.trace, r.eligibility, r.threshold};
    if (Lstm) out.push_back(r.cell);
    return out;
  }
  // The forward op's outputs by name.
  static ForwardResult forward(const ScanArgs& args) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow(kForward, "")
                         .typed<ForwardOutputs(TORCHPLASTIC_SCAN_PARAMS)>();
    const auto out = args.apply([&](auto&&... a) { return op.call(a...); });
    ForwardResult r;
    if constexpr (Lstm) {
      std::tie(r.y, r.hidden, r.trace, r.eligibility, r.threshold, r.cell, r.trace_checkpoints,
               r.eligibility_checkpoints, r.activations) = out;
    } else {
      std::tie(r.y, r.hidden, r.trace, r.eligibility, r.threshold, r.trace_checkpoints,
               r.eligibility_checkpoints) = out;
    }
    return r;
  }
  // The public op's outputs below autograd (nothing to differentiate).
  static States scan(const ScanArgs& args) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow(kScan, "")
                         .typed<States(TORCHPLASTIC_SCAN_PARAMS)>();
    return args.apply([&](auto&&... a) { return op.call(a...); });
  }
  // The backward op: `grads` the output gradients, `kept` y, the checkpoints (and the
  // LSTM's activations).
  static std::vector<at::Tensor> backward(const ScanArgs& args, const variable_list& g,
                                          const at::Tensor* kept) {
    using T = const at::Tensor&;
    if constexpr (Lstm) {
      static auto op = c10::Dispatcher::singleton()
                           .findSchemaOrThrow(kBackward, "")
                           .typed<std::vector<at::Tensor>(T, T, T, T, T, T, T, T, T, T,
                                                          TORCHPLASTIC_SCAN_PARAMS)>();
      return args.apply([&](auto&&... a) {
        return op.call(g[0], g[1], g[2], g[3], g[4], g[5], kept[0], kept[1], kept[2], kept[3],
                       a...);
      });
    } else {
      static auto op = c10::Dispatcher::singleton()
                           .findSchemaOrThrow(kBackward, "")
                           .typed<std::vector<at::Tensor>(T, T, T, T, T, T, T, T,
                                                          TORCHPLASTIC_SCAN_PARAMS)>();
      return args.apply([&](auto&&... a) {
        return op.call(g[0], g[1], g[2], g[3], g[4], kept[0], kept[1], kept[2], a...);
      });
    }
  }
};

template <bool Lstm>
class PlasticScanFunction : public torch::autograd::Function<PlasticScanFunction<Lstm>> {
  using F = Family<Lstm>;
  // What the forward keeps besides the arguments: y, the checkpoints (and the activations).
  static constexpr size_t kKept = Lstm ? 4 : 3;

 public:
  static variable_list forward(AutogradContext* ctx, TORCHPLASTIC_SCAN_PARAMS) {
    at::AutoDispatchBelowADInplaceOrView guard;
    const ScanArgs args = ScanArgs::from(Lstm, TORCHPLASTIC_SCAN_ARGS);
    const ForwardResult r = F::forward(args);
    // Saved: the tensor arguments in table order, then what the backward op takes.
    std::vector<at::Tensor> saved;
    for (const auto& t : args.tensors()) saved.push_back(t.tensor);
    saved.insert(saved.end(), {r.y, r.trace_checkpoints, r.eligibility_checkpoints});
    if (Lstm) saved.push_back(r.activations);
    ctx->save_for_backward(saved);
    for (auto& [name, value] : args.options()) ctx->saved_data[name] = value;
    // An output the loss does not reach (the trace, when the loss reads y alone) gets no
    // gradient rather than a materialised [B, O, I] of zeros: the backward op reads it as
    // zeros (csrc/ops/scan.cpp: grad_or_zeros, state_grad).
    ctx->set_materialize_grads(false);
    return F::list(r);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    ScanArgs args;
    args.lstm = Lstm;
    args.set_tensors(saved);
    for (const auto& [name, value] : args.options()) args.set_option(name, ctx->saved_data[name]);
    if (at::GradMode::is_enabled()) return differentiable_backward(args, grads);
    // The backward op's gradients are tensors in its schema: one that did not flow goes as an
    // empty one, which the op reads as zeros.
    for (size_t j = 0; j < grads.size(); ++j)
      if (!grads[j].defined()) grads[j] = at::empty({0}, args.z.options());
    // Nothing here is differentiated (grad mode is off): straight to the backend's kernel, as
    // the forward goes, rather than through the autograd fallback, which boxes every argument.
    at::AutoDispatchBelowADInplaceOrView guard;
    auto list = F::backward(args, grads, &*(saved.end() - kKept));
    // The backward op returns an empty tensor for each input that was not given, and for
    // lengths, which has no gradient; autograd wants none there.
    const auto inputs = args.tensors();
    for (size_t k = 0; k < inputs.size(); ++k)
      if (!inputs[k].tensor.defined() || inputs[k].role == detail::scan_arg::Role::index)
        list[k] = at::Tensor();
    return ScanGrads::from_list(list).per_argument();
  }

 private:
  // The backward of create_graph=True: gradients that are themselves differentiable, through
  // the outputs recomputed by aten_scan. Each input enters the recomputation through a view
  // of its own: asked for the gradient at that view, autograd counts only the input's uses
  // in this op, where at the input itself it would also count the paths through the other
  // inputs that depend on it (z computed from x, say), which reach it through other nodes.
  static variable_list differentiable_backward(ScanArgs args, const variable_list& grads) {
    std::vector<at::Tensor> wrt;
    std::vector<size_t> position;
    size_t k = 0;
    args.for_each_tensor([&](auto& member, detail::scan_arg::Role) {
      const at::Tensor t = detail::scan_arg::as_tensor(member);
      if (t.defined() && t.requires_grad()) {
        const at::Tensor own = t.view_as(t);
        detail::scan_arg::from_tensor(member, own);
        wrt.push_back(own);
        position.push_back(k);
      }
      ++k;
    });
    const variable_list recomputed = F::list(detail::aten_scan(args));
    std::vector<at::Tensor> outputs, grad_outputs;
    for (size_t j = 0; j < F::kOutputs; ++j) {
      const at::Tensor& out = recomputed[j];
      if (grads[j].defined() && out.numel() > 0 && out.requires_grad()) {
        outputs.push_back(out);
        grad_outputs.push_back(grads[j]);
      }
    }
    std::vector<at::Tensor> list(detail::kNumScanTensorArgs);
    if (!outputs.empty() && !wrt.empty()) {
      const auto g = torch::autograd::grad(outputs, wrt, grad_outputs, /*retain_graph=*/true,
                                           /*create_graph=*/true, /*allow_unused=*/true);
      for (size_t j = 0; j < g.size(); ++j) list[position[j]] = g[j];
    }
    return ScanGrads::from_list(list).per_argument();
  }
};

// False inside a functorch transform that refuses a C++ autograd::Function (the test is
// torch's own, which Function::apply would make).
bool autograd_function_allowed() {
  const auto& functorch = at::functorch::functorchTLSAccessor();
  if (!functorch) return true;
  try {
    functorch->checkSupportsCppAutogradFunction();
    return true;
  } catch (const c10::Error&) {
    return false;
  }
}

template <bool Lstm>
typename Family<Lstm>::States scan_autograd(TORCHPLASTIC_SCAN_PARAMS) {
  using F = Family<Lstm>;
  const ScanArgs args = ScanArgs::from(Lstm, TORCHPLASTIC_SCAN_ARGS);
  bool any_requires_grad = false, any_tangent = false;
  for (const auto& t : args.tensors()) {
    any_requires_grad |= t.tensor.defined() && t.tensor.requires_grad();
    any_tangent |= torch::autograd::isFwGradDefined(t.tensor);
  }
  // The kernels have no forward derivative; ATen operations carry the tangents (and reverse
  // mode too).
  if (any_tangent) return F::states(detail::aten_scan(args));
  const bool differentiable = at::GradMode::is_enabled() && any_requires_grad;
  // functorch's reverse-mode transforms (torch.func.grad, vjp, jacrev, hessian) refuse a C++
  // autograd::Function, and transform ATen operations as any other.
  if (differentiable && !autograd_function_allowed()) return F::states(detail::aten_scan(args));
  if (!differentiable) {
    // Nothing to differentiate: skip the checkpoints.
    at::AutoDispatchBelowADInplaceOrView guard;
    return F::scan(args);
  }
  const auto out = PlasticScanFunction<Lstm>::apply(TORCHPLASTIC_SCAN_ARGS);
  ForwardResult r;
  r.y = out[0];
  r.hidden = out[1];
  r.trace = out[2];
  r.eligibility = out[3];
  r.threshold = out[4];
  if (Lstm) r.cell = out[5];
  return F::states(r);
}

}  // namespace
}  // namespace torchplastic

TORCH_LIBRARY_IMPL(torchplastic, Autograd, m) {
  m.impl("plastic_scan", &torchplastic::scan_autograd<false>);
  m.impl("plastic_lstm_scan", &torchplastic::scan_autograd<true>);
}
