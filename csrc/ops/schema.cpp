// The one TORCH_LIBRARY of torchplastic: every operator schema. Kernels are registered per
// dispatch key elsewhere (cpu/, cuda/, autograd/); Python only adds fake implementations.
#include <torch/library.h>

// The inputs shared by the three ops, in this order (shapes for the recurrent mode, I = O):
//   z [T, B, O]            drive computed outside the recurrence (x Wᵀ + b, or u W_ihᵀ + b)
//   alpha [O, I|1] | [1, 1] plasticity coefficients;  eta: same granularities (None: rule modulated)
//   trace [B, O, I]        H_0 (None: zeros)
//   x [T, B, I]            presynaptic input: feedforward mode when given, recurrent mode when None
//   weight [O, O]          fixed recurrent weight (recurrent mode)
//   hidden [B, O]          h_0 (recurrent mode; None: zeros)
//   eligibility [B, O, I]  E_0 (rule retroactive; None: zeros)
//   threshold [B, O]       θ_0 (adaptive threshold; None: zeros)
//   modulation [T, B] | [T, B, O]        external neuromodulation
//   mod_weight [O], mod_bias [1]         internal neuromodulation head
//   mod_fanout_weight [O], mod_fanout_bias [O]   its fan-out
#define TORCHPLASTIC_SCAN_SCHEMA_ARGS                                                        \
  "Tensor z, Tensor alpha, Tensor? eta, Tensor? trace, Tensor? x, Tensor? weight, "          \
  "Tensor? hidden, Tensor? eligibility, Tensor? threshold, Tensor? modulation, "             \
  "Tensor? mod_weight, Tensor? mod_bias, Tensor? mod_fanout_weight, Tensor? mod_fanout_bias, " \
  "str rule, str activation, float? clip, float? synaptic_scaling, "                         \
  "float? adaptive_threshold, float target_activity, int? checkpoint_every"

TORCH_LIBRARY(torchplastic, m) {
  // The public op. Outputs: y [T, B, O], h_T [B, O], H_T [B, O, I], E_T [B, O, I], θ_T [B, O];
  // an unused state is an empty tensor [0]. Differentiable through the Autograd kernel.
  m.def("plastic_scan(" TORCHPLASTIC_SCAN_SCHEMA_ARGS
        ") -> (Tensor y, Tensor hidden, Tensor trace, Tensor eligibility, Tensor threshold)");
  // plastic_scan that also returns what its backward needs: the traces H (and E) before
  // steps 0, K, 2K, ..., as [ceil(T/K), B, O, I] (SPEC §3).
  m.def("plastic_scan_forward(" TORCHPLASTIC_SCAN_SCHEMA_ARGS
        ") -> (Tensor y, Tensor hidden, Tensor trace, Tensor eligibility, Tensor threshold, "
        "Tensor trace_checkpoints, Tensor eligibility_checkpoints)");
  // Gradients of the 14 tensor inputs, in the order above (empty [0] for inputs not given),
  // from the output gradients, the outputs y and the checkpoints.
  m.def("plastic_scan_backward(Tensor grad_y, Tensor grad_hidden, Tensor grad_trace, "
        "Tensor grad_eligibility, Tensor grad_threshold, Tensor y, Tensor trace_checkpoints, "
        "Tensor eligibility_checkpoints, " TORCHPLASTIC_SCAN_SCHEMA_ARGS ") -> Tensor[]");
}
