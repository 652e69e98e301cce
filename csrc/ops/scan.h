// Orchestration of the plastic_scan kernels, shared by every device: checks, output
// allocation, the device's time loops, and the work after the loop (GEMMs and reductions for
// the gradients of loop-invariant inputs). A device registers its kernels as
// ScanKernels<its ScanBackend> (ScanKernels::register_ops in its TORCH_LIBRARY_IMPL block).
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/library.h>

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
  // Uninitialised large buffers of a call: the traces it returns, their checkpoints and
  // gradients, and the per-sequence dL/dα and dL/dη slabs.
  at::Tensor (*empty_buffer)(at::IntArrayRef, const at::TensorOptions&);
  // Zeros that the kernels only read: the initial state of a call given none, the gradient of
  // an output that did not flow.
  at::Tensor (*read_only_zeros)(at::IntArrayRef, const at::TensorOptions&);
  // Whether the backward zeroes the dL/dα and dL/dη slabs itself (the CPU's, each sequence's
  // just before it starts, so the slab is in cache when its passes add to it); if not, the
  // caller hands them over zeroed.
  bool zeroes_grad_slabs = false;
  // Whether the backward of a batch of single steps (T = 1, no lengths, row-local modulation,
  // outside the LSTM and synaptic scaling) sums the dL/dα and dL/dη slabs over the batch itself,
  // into one slab (ScanGradParams::slabs_summed; the CPU's).
  bool sums_single_step_slabs = false;
};

// y, hidden, trace, eligibility, threshold: plastic_scan's outputs; plastic_lstm_scan's add
// the cell. Outputs the configuration does not use are empty tensors of shape [0].
using StateOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using LstmStateOutputs =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
// The same plus what the backward needs: the traces H and E before steps K, 2K, ...; the
// LSTM's also its activations.
using ForwardOutputs =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using LstmForwardOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                      at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Every output of a forward, by name (empty [0] tensors where unused).
struct ForwardResult {
  at::Tensor y, hidden, trace, eligibility, threshold;
  at::Tensor cell;  // c_T (LSTM)
  at::Tensor trace_checkpoints, eligibility_checkpoints;
  // LSTM: [5, T, B, H], the gates i, f, g, o after their activations, then the cell c_t.
  at::Tensor activations;

  StateOutputs states() const { return {y, hidden, trace, eligibility, threshold}; }
  LstmStateOutputs lstm_states() const { return {y, hidden, trace, eligibility, threshold, cell}; }
};

// The gradients flowing into the backward, and what the forward kept for it.
struct BackwardInputs {
  at::Tensor grad_y, grad_hidden, grad_trace, grad_eligibility, grad_threshold, grad_cell;
  at::Tensor y, trace_checkpoints, eligibility_checkpoints, activations;
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
ForwardResult scan_forward(const ScanArgs& args, const ScanBackend& backend,
                           bool save_checkpoints, Records* records = nullptr);
ScanGrads scan_backward(const BackwardInputs& in, const ScanArgs& args,
                        const ScanBackend& backend);
// What the backward op returns: grads.to_list(), with an empty [0] tensor (z's options) for
// each input that was not given.
std::vector<at::Tensor> backward_op_outputs(const ScanGrads& grads, const at::Tensor& z);

// Every op's schema, defined in m (csrc/ops/schema.cpp): in torchplastic's library, and in the
// one of the CUDA kernels' CPU emulation (tests/cuda_emulation).
void define_scan_ops(torch::Library& m);

// The kernels a device registers, built from its backend: plastic_scan* and
// plastic_lstm_scan* (see csrc/ops/schema.cpp).
template <const ScanBackend& Backend>
struct ScanKernels {
  static StateOutputs plastic_scan(TORCHPLASTIC_SCAN_PARAMS) {
    return scan_forward(ScanArgs::from(false, TORCHPLASTIC_SCAN_ARGS), Backend, false).states();
  }
  static ForwardOutputs plastic_scan_forward(TORCHPLASTIC_SCAN_PARAMS) {
    const auto r = scan_forward(ScanArgs::from(false, TORCHPLASTIC_SCAN_ARGS), Backend, true);
    return {r.y, r.hidden, r.trace, r.eligibility, r.threshold, r.trace_checkpoints,
            r.eligibility_checkpoints};
  }
  static RecordOutputs plastic_scan_record(TORCHPLASTIC_SCAN_PARAMS, int64_t every) {
    return record(ScanArgs::from(false, TORCHPLASTIC_SCAN_ARGS), every);
  }
  // Gradients of the tensor arguments, in the schema's order (ScanGrads::to_list); an empty
  // [0] tensor for each input that was not given.
  static std::vector<at::Tensor> plastic_scan_backward(
      const at::Tensor& grad_y, const at::Tensor& grad_hidden, const at::Tensor& grad_trace,
      const at::Tensor& grad_eligibility, const at::Tensor& grad_threshold, const at::Tensor& y,
      const at::Tensor& trace_checkpoints, const at::Tensor& eligibility_checkpoints,
      TORCHPLASTIC_SCAN_PARAMS) {
    const BackwardInputs in{grad_y, grad_hidden, grad_trace, grad_eligibility, grad_threshold,
                            at::Tensor(), y, trace_checkpoints, eligibility_checkpoints,
                            at::Tensor()};
    return backward_op_outputs(
        scan_backward(in, ScanArgs::from(false, TORCHPLASTIC_SCAN_ARGS), Backend), z);
  }

  static LstmStateOutputs plastic_lstm_scan(TORCHPLASTIC_SCAN_PARAMS) {
    return scan_forward(ScanArgs::from(true, TORCHPLASTIC_SCAN_ARGS), Backend, false)
        .lstm_states();
  }
  static LstmForwardOutputs plastic_lstm_scan_forward(TORCHPLASTIC_SCAN_PARAMS) {
    const auto r = scan_forward(ScanArgs::from(true, TORCHPLASTIC_SCAN_ARGS), Backend, true);
    return {r.y,    r.hidden,           r.trace,
            r.eligibility, r.threshold, r.cell,
            r.trace_checkpoints, r.eligibility_checkpoints, r.activations};
  }
  static RecordOutputs plastic_lstm_scan_record(TORCHPLASTIC_SCAN_PARAMS, int64_t every) {
    return record(ScanArgs::from(true, TORCHPLASTIC_SCAN_ARGS), every);
  }
  static std::vector<at::Tensor> plastic_lstm_scan_backward(
      const at::Tensor& grad_y, const at::Tensor& grad_hidden, const at::Tensor& grad_trace,
      const at::Tensor& grad_eligibility, const at::Tensor& grad_threshold,
      const at::Tensor& grad_cell, const at::Tensor& y, const at::Tensor& trace_checkpoints,
      const at::Tensor& eligibility_checkpoints, const at::Tensor& activations,
      TORCHPLASTIC_SCAN_PARAMS) {
    const BackwardInputs in{grad_y, grad_hidden, grad_trace, grad_eligibility, grad_threshold,
                            grad_cell, y, trace_checkpoints, eligibility_checkpoints,
                            activations};
    return backward_op_outputs(
        scan_backward(in, ScanArgs::from(true, TORCHPLASTIC_SCAN_ARGS), Backend), z);
  }

  // Every op above as the device's implementation: its TORCH_LIBRARY_IMPL block's body.
  static void register_ops(torch::Library& m) {
    m.impl("plastic_scan", &plastic_scan);
    m.impl("plastic_scan_forward", &plastic_scan_forward);
    m.impl("plastic_scan_record", &plastic_scan_record);
    m.impl("plastic_scan_backward", &plastic_scan_backward);
    m.impl("plastic_lstm_scan", &plastic_lstm_scan);
    m.impl("plastic_lstm_scan_forward", &plastic_lstm_scan_forward);
    m.impl("plastic_lstm_scan_record", &plastic_lstm_scan_record);
    m.impl("plastic_lstm_scan_backward", &plastic_lstm_scan_backward);
  }

 private:
  static RecordOutputs record(const ScanArgs& args, int64_t every) {
    TORCH_CHECK_VALUE(every >= 1, args.op_name(), "_record: every: expected an integer >= 1, got ",
                      every);
    Records records;
    records.every = every;
    scan_forward(args, Backend, false, &records);
    return {records.trace, records.trace_norm, records.modulation};
  }
};

}  // namespace detail
}  // namespace torchplastic
