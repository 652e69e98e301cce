// C++ modules: PlasticLinear, PlasticRNN, PlasticRNNCell, PlasticLSTM, PlasticLSTMCell
// (SPEC §4, §5).
//
// The same keywords, parameter names and initialisation as the Python modules
// (python/torchplastic/nn.py); parameters and state only, every step of the math in the op.
//
//   torchplastic::PlasticRNN rnn(torchplastic::PlasticRNNOptions(10, 64)
//                                    .rule(torchplastic::Rule::Retroactive));
//   auto [out, state] = rnn->forward(u);          // u [T, B, 10] → out [T, B, 64]
//   std::tie(out, state) = rnn->forward(u2, state);
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <array>
#include <ostream>
#include <tuple>

#include "torchplastic/ops.h"
#include "torchplastic/options.h"

namespace torchplastic {

// A, B, C, D of Rule::Abcd.
using AbcdCoefficients = std::array<double, 4>;

// The keywords every plastic module takes, after its two sizes.
//   clip: unset is "auto" (the rule's default: 1.0 for modulated, retroactive and abcd, none
//   otherwise); infinity means none.
#define TORCHPLASTIC_MODULE_ARGS()                                                        \
  TORCH_ARG(bool, bias) = true;                                                           \
  TORCH_ARG(Rule, rule) = Rule::Hebb;                                                     \
  TORCH_ARG(Granularity, alpha) = Granularity::Connection;                                \
  TORCH_ARG(Granularity, eta) = Granularity::Scalar;                                      \
  TORCH_ARG(Activation, activation) = Activation::Tanh;                                   \
  TORCH_ARG(c10::optional<double>, clip) = c10::nullopt;                                  \
  TORCH_ARG(Modulation, modulation) = Modulation::Internal;                               \
  TORCH_ARG(c10::optional<double>, synaptic_scaling) = c10::nullopt;                      \
  TORCH_ARG(c10::optional<double>, adaptive_threshold) = c10::nullopt;                    \
  TORCH_ARG(double, target_activity) = 0.0;                                               \
  TORCH_ARG(double, alpha_init) = 0.01;                                                   \
  TORCH_ARG(double, eta_init) = 0.01;                                                     \
  TORCH_ARG(Granularity, abcd) = Granularity::Connection;                                 \
  TORCH_ARG(AbcdCoefficients, abcd_init) = AbcdCoefficients{1.0, 0.0, 0.0, 0.0};          \
  TORCH_ARG(c10::optional<int64_t>, checkpoint_every) = c10::nullopt;                     \
  TORCH_ARG(bool, batch_first) = false

struct PlasticLinearOptions {
  PlasticLinearOptions(int64_t in_features, int64_t out_features)
      : in_features_(in_features), out_features_(out_features) {}
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, out_features);
  TORCHPLASTIC_MODULE_ARGS();
};

struct PlasticRNNOptions {
  PlasticRNNOptions(int64_t input_size, int64_t hidden_size)
      : input_size_(input_size), hidden_size_(hidden_size) {}
  TORCH_ARG(int64_t, input_size);
  TORCH_ARG(int64_t, hidden_size);
  TORCHPLASTIC_MODULE_ARGS();
};
using PlasticRNNCellOptions = PlasticRNNOptions;
using PlasticLSTMOptions = PlasticRNNOptions;
using PlasticLSTMCellOptions = PlasticRNNOptions;

namespace detail {

// What the three modules share: options resolved to the op's, α, η and the modulation head.
class PlasticCore {
 public:
  // A size of the module, with the name its options give it (in_features, hidden_size, ...).
  struct Size {
    const char* name;
    int64_t value;
  };
  // The op a module runs: plastic_scan feedforward or recurrent, or plastic_lstm_scan.
  enum class Kind { Feedforward, Recurrent, Lstm };
  // Registers alpha, eta and the modulation head on `module` and initialises them.
  void build(torch::nn::Module& module, const char* owner, Size in, Size out,
             int64_t presynaptic, Kind kind, const PlasticLinearOptions& options);
  void reset_parameters();
  // Runs the op over z [T, B, O] ([T, B, 4H]: the LSTM); x [T, B, I] in feedforward mode.
  std::tuple<at::Tensor, PlasticState> scan(const at::Tensor& z, const at::Tensor& x,
                                            const at::Tensor& weight_hh, PlasticState state,
                                            at::Tensor modulation, bool unbatched,
                                            at::Tensor lengths = {}) const;
  void print(std::ostream& stream) const;

  std::string owner;
  PlasticLinearOptions options{1, 1};
  c10::optional<double> clip;  // resolved from "auto"
  Kind kind = Kind::Feedforward;
  at::Tensor alpha, eta, abcd, mod_weight, mod_bias, mod_fanout_weight, mod_fanout_bias;
};

PlasticLinearOptions as_linear_options(const PlasticRNNOptions& options);

}  // namespace detail

// y_t = φ(x_t Wᵀ + b + (α ⊙ H_{t-1}) x_t), the trace H updated by the rule after each step.
// x [T, B, I] ([B, T, I] if batch_first, or unbatched [T, I]) → y [T, B, O] and the state.
class PlasticLinearImpl : public torch::nn::Cloneable<PlasticLinearImpl> {
 public:
  PlasticLinearImpl(int64_t in_features, int64_t out_features)
      : PlasticLinearImpl(PlasticLinearOptions(in_features, out_features)) {}
  explicit PlasticLinearImpl(PlasticLinearOptions options);

  void reset() override;
  // W and b as torch::nn::Linear; α ~ alpha_init · U(0, 1); η = eta_init.
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;

  // lengths [B]: sequence b runs its first lengths[b] steps (undefined: all of them).
  std::tuple<at::Tensor, PlasticState> forward(const at::Tensor& x, const PlasticState& state = {},
                                               const at::Tensor& modulation = {},
                                               const at::Tensor& lengths = {});

  PlasticLinearOptions options;
  at::Tensor weight, bias;
  detail::PlasticCore core;
};
TORCH_MODULE(PlasticLinear);

// h_t = φ(u_t W_ihᵀ + b + (W_hh + α ⊙ H_{t-1}) h_{t-1}).
// u [T, B, input_size] → out [T, B, hidden_size] and the state (hidden [B, H], trace [B, H, H]).
class PlasticRNNImpl : public torch::nn::Cloneable<PlasticRNNImpl> {
 public:
  PlasticRNNImpl(int64_t input_size, int64_t hidden_size)
      : PlasticRNNImpl(PlasticRNNOptions(input_size, hidden_size)) {}
  explicit PlasticRNNImpl(PlasticRNNOptions options);

  void reset() override;
  // W_ih, W_hh and b ~ U(−1/√H, 1/√H), as torch::nn::RNN; α and η as PlasticLinear.
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;

  // lengths [B]: sequence b runs its first lengths[b] steps (undefined: all of them).
  std::tuple<at::Tensor, PlasticState> forward(const at::Tensor& u, const PlasticState& state = {},
                                               const at::Tensor& modulation = {},
                                               const at::Tensor& lengths = {});

  PlasticRNNOptions options;
  at::Tensor weight_ih, weight_hh, bias;
  detail::PlasticCore core;
};
TORCH_MODULE(PlasticRNN);

// One step of PlasticRNN: u_t [B, input_size] (or [input_size]) → h [B, hidden_size].
class PlasticRNNCellImpl : public torch::nn::Cloneable<PlasticRNNCellImpl> {
 public:
  PlasticRNNCellImpl(int64_t input_size, int64_t hidden_size)
      : PlasticRNNCellImpl(PlasticRNNCellOptions(input_size, hidden_size)) {}
  explicit PlasticRNNCellImpl(PlasticRNNCellOptions options);

  void reset() override;
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;

  // lengths [B], 0 or 1: the sequences with 0 skip the step, holding their state (zero output).
  std::tuple<at::Tensor, PlasticState> forward(const at::Tensor& u, const PlasticState& state = {},
                                               const at::Tensor& modulation = {},
                                               const at::Tensor& lengths = {});

  PlasticRNNCellOptions options;
  at::Tensor weight_ih, weight_hh, bias;
  detail::PlasticCore core;
};
TORCH_MODULE(PlasticRNNCell);

// Backpropamine's plastic LSTM (SPEC §2b): torch::nn::LSTM with plastic h → g connections,
// g̃_t = z_g + (W_hg + α ⊙ H_{t-1}) h_{t-1}. weight_ih [4H, input_size], weight_hh [4H, H] and
// bias [4H] in the LSTM's gate order (i, f, g, o); α, η, ... on the h → g connections [H, H].
// u [T, B, input_size] → out [T, B, hidden_size] and the state (hidden, cell [B, H], trace).
// options.activation must stay tanh.
class PlasticLSTMImpl : public torch::nn::Cloneable<PlasticLSTMImpl> {
 public:
  PlasticLSTMImpl(int64_t input_size, int64_t hidden_size)
      : PlasticLSTMImpl(PlasticLSTMOptions(input_size, hidden_size)) {}
  explicit PlasticLSTMImpl(PlasticLSTMOptions options);

  void reset() override;
  // W_ih, W_hh and b ~ U(−1/√H, 1/√H), as torch::nn::LSTM; α and η as PlasticLinear.
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;

  // lengths [B]: sequence b runs its first lengths[b] steps (undefined: all of them).
  std::tuple<at::Tensor, PlasticState> forward(const at::Tensor& u, const PlasticState& state = {},
                                               const at::Tensor& modulation = {},
                                               const at::Tensor& lengths = {});

  PlasticLSTMOptions options;
  at::Tensor weight_ih, weight_hh, bias;
  detail::PlasticCore core;
};
TORCH_MODULE(PlasticLSTM);

// One step of PlasticLSTM: u_t [B, input_size] (or [input_size]) → h [B, hidden_size].
class PlasticLSTMCellImpl : public torch::nn::Cloneable<PlasticLSTMCellImpl> {
 public:
  PlasticLSTMCellImpl(int64_t input_size, int64_t hidden_size)
      : PlasticLSTMCellImpl(PlasticLSTMCellOptions(input_size, hidden_size)) {}
  explicit PlasticLSTMCellImpl(PlasticLSTMCellOptions options);

  void reset() override;
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;

  // lengths [B], 0 or 1: the sequences with 0 skip the step, holding their state (zero output).
  std::tuple<at::Tensor, PlasticState> forward(const at::Tensor& u, const PlasticState& state = {},
                                               const at::Tensor& modulation = {},
                                               const at::Tensor& lengths = {});

  PlasticLSTMCellOptions options;
  at::Tensor weight_ih, weight_hh, bias;
  detail::PlasticCore core;
};
TORCH_MODULE(PlasticLSTMCell);

}  // namespace torchplastic
