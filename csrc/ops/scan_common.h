// Device-independent half of the plastic_scan kernels: argument checks, tensor preparation,
// output allocation, and the work after the loop (GEMMs and reductions for the gradients of
// loop-invariant inputs). The CPU and CUDA registrations differ only in the ScanBackend that
// runs the time loop.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>
#include <c10/util/string_view.h>

#include <string>
#include <tuple>
#include <vector>

#include "kernels/plastic_step.h"

namespace torchplastic {
namespace detail {

// The arguments of every plastic_scan op, in schema order (csrc/ops/schema.cpp). A macro
// because the dispatcher needs flat signatures and five kernels share this list.
#define TORCHPLASTIC_SCAN_PARAMS                                                              \
  const at::Tensor &z, const at::Tensor &alpha, const c10::optional<at::Tensor>&eta,          \
      const c10::optional<at::Tensor>&trace, const c10::optional<at::Tensor>&x,               \
      const c10::optional<at::Tensor>&weight, const c10::optional<at::Tensor>&hidden,         \
      const c10::optional<at::Tensor>&eligibility, const c10::optional<at::Tensor>&threshold, \
      const c10::optional<at::Tensor>&modulation, const c10::optional<at::Tensor>&mod_weight, \
      const c10::optional<at::Tensor>&mod_bias,                                               \
      const c10::optional<at::Tensor>&mod_fanout_weight,                                      \
      const c10::optional<at::Tensor>&mod_fanout_bias, c10::string_view rule,                 \
      c10::string_view activation, c10::optional<double> clip,                                \
      c10::optional<double> synaptic_scaling, c10::optional<double> adaptive_threshold,       \
      double target_activity, c10::optional<int64_t> checkpoint_every
#define TORCHPLASTIC_SCAN_ARGS                                                                \
  z, alpha, eta, trace, x, weight, hidden, eligibility, threshold, modulation, mod_weight,    \
      mod_bias, mod_fanout_weight, mod_fanout_bias, rule, activation, clip, synaptic_scaling, \
      adaptive_threshold, target_activity, checkpoint_every

struct ScanArgs {
  at::Tensor z, alpha;
  c10::optional<at::Tensor> eta, trace, x, weight, hidden, eligibility, threshold, modulation,
      mod_weight, mod_bias, mod_fanout_weight, mod_fanout_bias;
  std::string rule, activation;
  c10::optional<double> clip, synaptic_scaling, adaptive_threshold;
  double target_activity = 0.0;
  c10::optional<int64_t> checkpoint_every;
};

ScanArgs make_scan_args(TORCHPLASTIC_SCAN_PARAMS);

// What the checks established about a call.
struct ScanConfig {
  kernels::Rule rule;
  kernels::Activation activation;
  kernels::ModSource mod_source;
  bool recurrent;
  int64_t T, B, O, I, K;
  at::ScalarType compute_dtype;  // float or double: the traces and all accumulation
};

// Checks every argument (SPEC §6) and fails with a message naming it, the expected and the
// received value. Called by every kernel, so raw torch.ops calls are checked too.
ScanConfig check_scan_args(const ScanArgs& args);

// Default K of SPEC §3: about √T, at least 1.
int64_t default_checkpoint_every(int64_t T);

// The time loops of one device.
struct ScanBackend {
  void (*forward_f32)(const kernels::ScanParams<float>&);
  void (*forward_f64)(const kernels::ScanParams<double>&);
  void (*backward_f32)(const kernels::ScanParams<float>&, const kernels::ScanGradParams<float>&);
  void (*backward_f64)(const kernels::ScanParams<double>&,
                       const kernels::ScanGradParams<double>&);
  // Whether the backward zeroes the dL/dα and dL/dη slabs itself (the CPU's, each sequence's
  // just before it starts, so the slab is in cache when its passes add to it); if not, the
  // caller hands them over zeroed.
  bool zeroes_grad_slabs = false;
};

// y, hidden, trace, eligibility, threshold, trace checkpoints, eligibility checkpoints.
// Outputs the configuration does not use are empty tensors of shape [0].
using ForwardOutputs =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using StateOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

ForwardOutputs scan_forward(const ScanArgs& args, const ScanBackend& backend,
                            bool save_checkpoints);

// Gradients in schema order of the 14 tensor inputs (z, alpha, eta, trace, x, weight, hidden,
// eligibility, threshold, modulation, mod_weight, mod_bias, mod_fanout_weight,
// mod_fanout_bias); empty tensors for inputs that were not given.
std::vector<at::Tensor> scan_backward(const at::Tensor& grad_y, const at::Tensor& grad_hidden,
                                      const at::Tensor& grad_trace,
                                      const at::Tensor& grad_eligibility,
                                      const at::Tensor& grad_threshold, const at::Tensor& y,
                                      const at::Tensor& trace_checkpoints,
                                      const at::Tensor& eligibility_checkpoints,
                                      const ScanArgs& args, const ScanBackend& backend);

// The three kernels a device registers, built from its backend.
template <const ScanBackend& Backend>
struct ScanKernels {
  static StateOutputs plastic_scan(TORCHPLASTIC_SCAN_PARAMS) {
    auto out = scan_forward(make_scan_args(TORCHPLASTIC_SCAN_ARGS), Backend, false);
    return {std::get<0>(out), std::get<1>(out), std::get<2>(out), std::get<3>(out),
            std::get<4>(out)};
  }
  static ForwardOutputs plastic_scan_forward(TORCHPLASTIC_SCAN_PARAMS) {
    return scan_forward(make_scan_args(TORCHPLASTIC_SCAN_ARGS), Backend, true);
  }
  static std::vector<at::Tensor> plastic_scan_backward(
      const at::Tensor& grad_y, const at::Tensor& grad_hidden, const at::Tensor& grad_trace,
      const at::Tensor& grad_eligibility, const at::Tensor& grad_threshold, const at::Tensor& y,
      const at::Tensor& trace_checkpoints, const at::Tensor& eligibility_checkpoints,
      TORCHPLASTIC_SCAN_PARAMS) {
    return scan_backward(grad_y, grad_hidden, grad_trace, grad_eligibility, grad_threshold, y,
                         trace_checkpoints, eligibility_checkpoints,
                         make_scan_args(TORCHPLASTIC_SCAN_ARGS), Backend);
  }
};

}  // namespace detail
}  // namespace torchplastic
