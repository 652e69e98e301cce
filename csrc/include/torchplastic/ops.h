// The plastic_scan op for C++ callers: argument checks, then the dispatcher, so gradients flow
// through the C++ autograd kernel and every backend (CPU, CUDA) is reachable.
#pragma once

#include <torch/arg.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <tuple>

#include "torchplastic/options.h"

namespace torchplastic {

// State carried from one call to the next; undefined tensors for fields a configuration does
// not use (Python: None).
struct PlasticState {
  at::Tensor hidden;       // [B, O]     h_T (recurrent mode)
  at::Tensor trace;        // [B, O, I]  H_T
  at::Tensor eligibility;  // [B, O, I]  E_T (rule retroactive)
  at::Tensor threshold;    // [B, O]     θ_T (adaptive threshold)
  at::Tensor cell;         // [B, H]     c_T (plastic LSTM)

  // The same state cut from the graph, for truncated backpropagation through time.
  PlasticState detach() const;
};

// Keyword arguments of plastic_scan (SPEC §4), builder style:
//   ScanOptions().weight(W).rule(Rule::Retroactive).mod_weight(v).mod_bias(c).clip(1.0)
struct ScanOptions {
  TORCH_ARG(at::Tensor, x);                  // [T, B, I]  feedforward input (recurrent when undefined)
  TORCH_ARG(at::Tensor, weight);             // [O, O]     fixed recurrent weight
  TORCH_ARG(at::Tensor, hidden);             // [B, O]     h_0
  TORCH_ARG(Rule, rule) = Rule::Hebb;
  TORCH_ARG(Activation, activation) = Activation::Tanh;
  TORCH_ARG(c10::optional<double>, clip) = c10::nullopt;
  TORCH_ARG(at::Tensor, modulation);         // [T, B] or [T, B, O] external modulation
  TORCH_ARG(at::Tensor, mod_weight);         // [O]
  TORCH_ARG(at::Tensor, mod_bias);           // [1]
  TORCH_ARG(at::Tensor, mod_fanout_weight);  // [O]
  TORCH_ARG(at::Tensor, mod_fanout_bias);    // [O]
  TORCH_ARG(at::Tensor, eligibility);        // [B, O, I]  E_0
  TORCH_ARG(c10::optional<double>, synaptic_scaling) = c10::nullopt;
  TORCH_ARG(c10::optional<double>, adaptive_threshold) = c10::nullopt;
  TORCH_ARG(double, target_activity) = 0.0;
  TORCH_ARG(at::Tensor, threshold);          // [B, O]     θ_0
  TORCH_ARG(c10::optional<int64_t>, checkpoint_every) = c10::nullopt;
  TORCH_ARG(at::Tensor, abcd);               // [4, O, I|1] | [4, 1, 1]  A–D of Rule::Abcd
  // [B] integers: sequence b runs its first lengths[b] steps, then holds its state and
  // outputs zeros (undefined: T steps each). On the CPU or z's device.
  TORCH_ARG(at::Tensor, lengths);
  TORCH_ARG(at::Tensor, cell);               // [B, H]     c_0 (plastic_lstm_scan only)
};

// Runs T steps of a plastic layer (SPEC §2). z [T, B, O]; alpha and eta [O, I], [O, 1] or
// [1, 1] (eta may be undefined for Rule::Modulated); trace [B, O, I] or undefined for zeros.
// Returns y [T, B, O] and the final state.
std::tuple<at::Tensor, PlasticState> plastic_scan(const at::Tensor& z, const at::Tensor& alpha,
                                                  const at::Tensor& eta, const at::Tensor& trace,
                                                  const ScanOptions& options = {});

// Runs T steps of the plastic LSTM (SPEC §2b). z [T, B, 4H] (u W_ihᵀ + b, gates in
// torch::nn::LSTM's order i, f, g, o); weight_hh [4H, H]; alpha, eta and trace on the h → g
// connections ([H, H] granularities, [B, H, H]). options.x, options.weight and
// options.activation do not apply; options.hidden and options.cell are h_0 and c_0.
// Returns h [T, B, H] and the final state, with state.cell = c_T.
std::tuple<at::Tensor, PlasticState> plastic_lstm_scan(const at::Tensor& z,
                                                       const at::Tensor& weight_hh,
                                                       const at::Tensor& alpha,
                                                       const at::Tensor& eta,
                                                       const at::Tensor& trace,
                                                       const ScanOptions& options = {});

}  // namespace torchplastic
