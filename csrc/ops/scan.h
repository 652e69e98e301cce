// Orchestration of the plastic_scan kernels, shared by every device: checks, output
// allocation, the device's time loops, and the work after the loop (GEMMs and reductions for
// the gradients of loop-invariant inputs). A device registers its kernels as
// ScanKernels<its ScanBackend>.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>
#include <vector>

#include "kernels/plastic_step.h"
#include "ops/scan_args.h"

namespace torchplastic {
namespace detail {

// What a device provides: its time loops and how it allocates the large buffers.
struct ScanBackend {
  void (*forward_f32)(const kernels::ScanParams<float>&);
  void (*forward_f64)(const kernels::ScanParams<double>&);
  void (*backward_f32)(const kernels::ScanParams<float>&, const kernels::ScanGradParams<float>&);
  void (*backward_f64)(const kernels::ScanParams<double>&,
                       const kernels::ScanGradParams<double>&);
  // Uninitialised buffers for the trace checkpoints and for the per-sequence dL/dα and dL/dη
  // slabs.
  at::Tensor (*empty_checkpoints)(at::IntArrayRef, const at::TensorOptions&);
  at::Tensor (*empty_grad_slabs)(at::IntArrayRef, const at::TensorOptions&);
  // Whether the backward zeroes the dL/dα and dL/dη slabs itself (the CPU's, each sequence's
  // just before it starts, so the slab is in cache when its passes add to it); if not, the
  // caller hands them over zeroed.
  bool zeroes_grad_slabs = false;
};

// y, hidden, trace, eligibility, threshold: the op's outputs. Outputs the configuration does
// not use are empty tensors of shape [0].
using StateOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
// The same plus what the backward needs: the traces H and E before steps 0, K, 2K, ...
using ForwardOutputs =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// The gradients flowing into the backward, and what the forward kept for it.
struct BackwardInputs {
  at::Tensor grad_y, grad_hidden, grad_trace, grad_eligibility, grad_threshold;
  at::Tensor y, trace_checkpoints, eligibility_checkpoints;
};

// What plastic_scan_record returns (tp.inspect): the trace after steps R, 2R, ...
// [T / R, B, O, I], its Frobenius norm after every step [T, B], and the neuromodulation m_t
// [T, B, O] of the modulated rules (an empty [0] tensor for the others).
struct Records {
  int64_t every = 1;
  at::Tensor trace, trace_norm, modulation;
};
using RecordOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// `records`, when given, receives the records of the call.
ForwardOutputs scan_forward(const ScanArgs& args, const ScanBackend& backend,
                            bool save_checkpoints, Records* records = nullptr);
ScanGrads scan_backward(const BackwardInputs& in, const ScanArgs& args,
                        const ScanBackend& backend);
// What the backward op returns: grads.to_list(), with an empty [0] tensor (z's options) for
// each input that was not given.
std::vector<at::Tensor> backward_op_outputs(const ScanGrads& grads, const at::Tensor& z);

// The three kernels a device registers, built from its backend.
template <const ScanBackend& Backend>
struct ScanKernels {
  static StateOutputs plastic_scan(TORCHPLASTIC_SCAN_PARAMS) {
    auto out = scan_forward(ScanArgs::from(TORCHPLASTIC_SCAN_ARGS), Backend, false);
    return {std::get<0>(out), std::get<1>(out), std::get<2>(out), std::get<3>(out),
            std::get<4>(out)};
  }
  static ForwardOutputs plastic_scan_forward(TORCHPLASTIC_SCAN_PARAMS) {
    return scan_forward(ScanArgs::from(TORCHPLASTIC_SCAN_ARGS), Backend, true);
  }
  static RecordOutputs plastic_scan_record(TORCHPLASTIC_SCAN_PARAMS, int64_t every) {
    TORCH_CHECK_VALUE(every >= 1, "plastic_scan_record: every: expected an integer >= 1, got ",
                      every);
    Records records;
    records.every = every;
    scan_forward(ScanArgs::from(TORCHPLASTIC_SCAN_ARGS), Backend, false, &records);
    return {records.trace, records.trace_norm, records.modulation};
  }
  // Gradients of the tensor arguments, in the schema's order (ScanGrads::to_list); an empty
  // [0] tensor for each input that was not given.
  static std::vector<at::Tensor> plastic_scan_backward(
      const at::Tensor& grad_y, const at::Tensor& grad_hidden, const at::Tensor& grad_trace,
      const at::Tensor& grad_eligibility, const at::Tensor& grad_threshold, const at::Tensor& y,
      const at::Tensor& trace_checkpoints, const at::Tensor& eligibility_checkpoints,
      TORCHPLASTIC_SCAN_PARAMS) {
    const BackwardInputs in{grad_y, grad_hidden, grad_trace, grad_eligibility, grad_threshold,
                            y,      trace_checkpoints, eligibility_checkpoints};
    return backward_op_outputs(scan_backward(in, ScanArgs::from(TORCHPLASTIC_SCAN_ARGS), Backend),
                               z);
  }
};

}  // namespace detail
}  // namespace torchplastic
