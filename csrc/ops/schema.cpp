// The one TORCH_LIBRARY of torchplastic: every operator schema. Kernels are registered per
// dispatch key elsewhere (cpu/, cuda/, autograd/); Python only adds fake implementations.
// The arguments shared by the ops come from their table (csrc/ops/scan_args.h). The CUDA
// kernels' CPU emulation (tests/cuda_emulation) defines the same ops in a library of its own.
#include <torch/library.h>

#include <string>

#include "ops/scan.h"
#include "ops/scan_args.h"

namespace torchplastic {
namespace detail {

void define_scan_ops(torch::Library& m) {
  const std::string args = scan_schema_arguments();
  auto def = [&](const std::string& schema) { m.def(torch::schema(schema.c_str())); };
  // The public op. Outputs: y [T, B, O], h_T [B, O], H_T [B, O, I], E_T [B, O, I], θ_T [B, O];
  // an unused state is an empty tensor [0]. Differentiable through the Autograd kernel.
  def("plastic_scan(" + args +
      ") -> (Tensor y, Tensor hidden, Tensor trace, Tensor eligibility, Tensor threshold)");
  // plastic_scan that also returns what its backward needs: the traces H (and E) before
  // steps K, 2K, ... < T, as [ceil(T/K) - 1, B, O, I] (SPEC §3; before step 0 they are the
  // initial states, which the backward takes from its arguments).
  def("plastic_scan_forward(" + args +
      ") -> (Tensor y, Tensor hidden, Tensor trace, Tensor eligibility, Tensor threshold, "
      "Tensor trace_checkpoints, Tensor eligibility_checkpoints)");
  // tp.inspect: what a call stores, recorded by the forward kernels (csrc/ops/scan.h, Records);
  // no autograd: the records are detached.
  def("plastic_scan_record(" + args +
      ", int every=1) -> (Tensor trace, Tensor trace_norm, Tensor modulation)");
  // Gradients of the tensor arguments, in their order (an empty [0] tensor for each input not
  // given), from the output gradients, the outputs y and the checkpoints.
  def("plastic_scan_backward(Tensor grad_y, Tensor grad_hidden, Tensor grad_trace, "
      "Tensor grad_eligibility, Tensor grad_threshold, Tensor y, Tensor trace_checkpoints, "
      "Tensor eligibility_checkpoints, " + args + ") -> Tensor[]");

  // The plastic LSTM (SPEC §2b), the same four ops with the same arguments: z [T, B, 4H],
  // weight = W_hh [4H, H], cell = c_0 [B, H]. Outputs h [T, B, H] and the state, with c_T.
  def("plastic_lstm_scan(" + args +
      ") -> (Tensor output, Tensor hidden, Tensor trace, Tensor eligibility, Tensor threshold, "
      "Tensor cell)");
  // activations: [5, T, B, H], the gates i, f, g, o after their activations and the cells c_t.
  def("plastic_lstm_scan_forward(" + args +
      ") -> (Tensor output, Tensor hidden, Tensor trace, Tensor eligibility, Tensor threshold, "
      "Tensor cell, Tensor trace_checkpoints, Tensor eligibility_checkpoints, "
      "Tensor activations)");
  def("plastic_lstm_scan_record(" + args +
      ", int every=1) -> (Tensor trace, Tensor trace_norm, Tensor modulation)");
  def("plastic_lstm_scan_backward(Tensor grad_output, Tensor grad_hidden, Tensor grad_trace, "
      "Tensor grad_eligibility, Tensor grad_threshold, Tensor grad_cell, Tensor output, "
      "Tensor trace_checkpoints, Tensor eligibility_checkpoints, Tensor activations, " +
      args + ") -> Tensor[]");
}

}  // namespace detail
}  // namespace torchplastic

TORCH_LIBRARY(torchplastic, m) { torchplastic::detail::define_scan_ops(m); }
