// Bad input through the C++ API fails with a c10::Error naming the argument, the expected and
// the received value: one test per class of bad input.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <limits>

#include "torchplastic/torchplastic.h"

using namespace torchplastic;

namespace {

// Runs f, which must throw c10::Error whose message holds every fragment.
void expect_error(const std::function<void()>& f, std::vector<std::string> fragments) {
  try {
    f();
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    for (const auto& frag : fragments) EXPECT_NE(msg.find(frag), std::string::npos) << msg;
    EXPECT_NE(msg.find("expected"), std::string::npos) << msg;
    EXPECT_NE(msg.find("got"), std::string::npos) << msg;
    return;
  }
  ADD_FAILURE() << "no c10::Error thrown";
}

struct Inputs {
  at::Tensor z = torch::randn({5, 3, 4}, torch::kFloat64);
  at::Tensor alpha = torch::randn({4, 4}, torch::kFloat64);
  at::Tensor eta = torch::full({1, 1}, 0.1, torch::kFloat64);
  at::Tensor W = torch::randn({4, 4}, torch::kFloat64);
  ScanOptions options() const { return ScanOptions().weight(W); }
};

}  // namespace

TEST(Errors, Shapes) {
  Inputs in;
  expect_error([&] { plastic_scan(torch::randn({5, 3}, torch::kFloat64), in.alpha, in.eta, {}, in.options()); },
               {"z", "3-D"});
  expect_error([&] { plastic_scan(in.z, torch::randn({3, 4}, torch::kFloat64), in.eta, {}, in.options()); },
               {"alpha", "[4, 4]", "[3, 4]"});
  expect_error([&] { plastic_scan(in.z, in.alpha, in.eta, torch::zeros({2, 4, 4}, torch::kFloat64), in.options()); },
               {"trace", "[3, 4, 4]", "[2, 4, 4]"});
  expect_error([&] { plastic_scan(in.z, in.alpha, in.eta, {}, in.options().hidden(torch::zeros({2, 4}, torch::kFloat64))); },
               {"hidden", "[3, 4]"});
  expect_error([&] { plastic_scan(in.z, in.alpha, in.eta, {}, ScanOptions()); }, {"weight", "recurrent"});
}

TEST(Errors, Dtypes) {
  Inputs in;
  expect_error([&] { plastic_scan(in.z.to(torch::kLong), in.alpha, in.eta, {}, in.options()); }, {"z", "dtype"});
  expect_error([&] { plastic_scan(in.z, in.alpha.to(torch::kFloat), in.eta, {}, in.options()); }, {"alpha", "dtype"});
}

TEST(Errors, Devices) {
  Inputs in;
  auto meta = torch::TensorOptions().dtype(torch::kFloat64).device(torch::kMeta);
  expect_error([&] { plastic_scan(in.z, torch::empty({4, 4}, meta), in.eta, {}, in.options()); },
               {"alpha", "device of z", "meta"});
  expect_error([&] { plastic_scan(in.z, in.alpha, in.eta, {}, ScanOptions().weight(torch::empty({4, 4}, meta))); },
               {"weight", "meta"});
}

TEST(Errors, OptionValuesAndRanges) {
  Inputs in;
  expect_error([&] { plastic_scan(in.z, in.alpha, in.eta, {}, in.options().clip(-1.0)); }, {"clip", "> 0"});
  expect_error([&] { plastic_scan(in.z, in.alpha, in.eta, {}, in.options().synaptic_scaling(0.0)); },
               {"synaptic_scaling"});
  expect_error([&] {
    plastic_scan(in.z, in.alpha, in.eta, {},
                 in.options().adaptive_threshold(std::numeric_limits<double>::quiet_NaN()));
  }, {"adaptive_threshold"});
  expect_error([&] { plastic_scan(in.z, in.alpha, in.eta, {}, in.options().checkpoint_every(0)); },
               {"checkpoint_every", ">= 1"});
  expect_error([&] { rule_from_string("stdp"); }, {"rule", "'stdp'"});
}

TEST(Errors, Modulation) {
  Inputs in;
  auto mod = torch::randn({5, 3}, torch::kFloat64);
  expect_error([&] { plastic_scan(in.z, in.alpha, in.eta, {}, in.options().modulation(mod)); },
               {"modulation", "hebb"});
  expect_error([&] { plastic_scan(in.z, in.alpha, {}, {}, in.options().rule(Rule::Modulated)); },
               {"modulation", "needs neuromodulation"});
  expect_error([&] {
    plastic_scan(in.z, in.alpha, {}, {},
                 in.options().rule(Rule::Modulated).modulation(torch::randn({5, 2}, torch::kFloat64)));
  }, {"modulation", "[5, 3]"});
}

TEST(Errors, Modules) {
  PlasticRNN rnn(5, 4);
  expect_error([&] { rnn->forward(torch::randn({3, 2, 7})); }, {"input", "last dimension 5"});
  auto [y, state] = rnn->forward(torch::randn({3, 2, 5}));
  expect_error([&] { rnn->forward(torch::randn({3, 6, 5}), state); }, {"state", "batch size 6"});
  expect_error([&] { PlasticRNN(PlasticRNNOptions(5, 4).clip(-2.0)); }, {"clip"});
  PlasticRNN external(PlasticRNNOptions(5, 4).rule(Rule::Modulated).modulation(Modulation::External));
  expect_error([&] { external->forward(torch::randn({3, 2, 5})); }, {"modulation"});
}

TEST(Errors, ModuleInputDtype) {
  // As torch.nn.RNN: named in the module's own check, not deep in a matrix product.
  const auto doubles = torch::randn({3, 2, 5}, torch::kFloat64);
  expect_error([&] { PlasticRNN(5, 4)->forward(doubles); }, {"PlasticRNN: input", "dtype Float", "Double"});
  expect_error([&] { PlasticLSTM(5, 4)->forward(doubles); }, {"PlasticLSTM: input", "dtype Float"});
  expect_error([&] { PlasticLinear(5, 4)->forward(doubles); }, {"PlasticLinear: x", "dtype Float"});
  expect_error([&] { PlasticRNNCell(5, 4)->forward(doubles[0]); }, {"PlasticRNNCell: input", "dtype Float"});
  expect_error([&] { PlasticLSTMCell(5, 4)->forward(doubles[0]); }, {"PlasticLSTMCell: input", "dtype Float"});
  PlasticRNN rnn(5, 4);
  rnn->to(torch::kFloat64);
  EXPECT_EQ(std::get<0>(rnn->forward(doubles)).scalar_type(), torch::kFloat64);
}

TEST(Errors, ModuleRefusesStateFieldsItDoesNotUse) {
  // Each was dropped without a word (hidden of a feedforward layer, cell outside the LSTM) or
  // refused by the op under its own name (eligibility, threshold).
  const auto u = torch::randn({3, 2, 5});
  auto with = [](at::Tensor PlasticState::*field, at::Tensor value) {
    PlasticState s;
    s.*field = value;
    return s;
  };
  PlasticLinear linear(5, 4);
  expect_error([&] { linear->forward(u, with(&PlasticState::hidden, torch::zeros({2, 4}))); },
               {"PlasticLinear: state: expected hidden None (a feedforward layer has no hidden state), got a tensor"});
  PlasticRNN rnn(5, 4);
  expect_error([&] { rnn->forward(u, with(&PlasticState::eligibility, torch::zeros({2, 4, 4}))); },
               {"PlasticRNN: state: expected eligibility None (rule='hebb' has no eligibility trace), got a tensor"});
  expect_error([&] { rnn->forward(u, with(&PlasticState::threshold, torch::zeros({2, 4}))); },
               {"PlasticRNN: state: expected threshold None (the module has no adaptive threshold), got a tensor"});
  PlasticRNNCell cell(5, 4);
  expect_error([&] { cell->forward(u[0], with(&PlasticState::cell, torch::zeros({2, 4}))); },
               {"PlasticRNNCell: state: expected cell None (only the plastic LSTM has a cell state), got a tensor"});
  // Where the module uses them, they are taken.
  PlasticLSTM lstm(PlasticLSTMOptions(5, 4).rule(Rule::Retroactive).adaptive_threshold(0.1));
  const auto state = std::get<1>(lstm->forward(u));
  EXPECT_TRUE(state.cell.defined() && state.eligibility.defined() && state.threshold.defined());
  EXPECT_EQ(std::get<0>(lstm->forward(u, state)).sizes(), at::IntArrayRef({3, 2, 4}));
}

TEST(Errors, ModuleModulationAndLengthsInTheCallersLayout) {
  // Checked as the caller passed them, under the module's name, before the module moves the
  // batch and time dimensions (the op named neither).
  auto external = [](auto options) { return options.rule(Rule::Modulated).modulation(Modulation::External); };
  PlasticRNN rnn(external(PlasticRNNOptions(5, 4)));
  const auto u = torch::randn({3, 2, 5});
  expect_error([&] { rnn->forward(u, {}, torch::randn({3, 3})); },
               {"PlasticRNN: modulation: expected shape [3, 2] or [3, 2, 4] ([T, B] or [T, B, H]), got [3, 3]"});
  expect_error([&] { rnn->forward(u); }, {"PlasticRNN: modulation: expected a tensor [T, B] or [T, B, H]"});
  expect_error([&] { rnn->forward(u[0], {}, torch::randn({2, 1})); },
               {"([T] or [T, H], unbatched), got [2, 1]"});
  expect_error([&] { rnn->forward(u, {}, torch::ones({3, 2}), torch::tensor({1, 4})); },
               {"PlasticRNN: lengths: expected values in [0, 3] (T, the input's steps), got values from 1 to 4"});
  expect_error([&] { rnn->forward(u, {}, torch::ones({3, 2}), torch::tensor({1.0, 2.0})); },
               {"PlasticRNN: lengths: expected an integer tensor", "Float"});
  PlasticRNN batch_first(external(PlasticRNNOptions(5, 4)).batch_first(true));
  expect_error([&] { batch_first->forward(u.transpose(0, 1), {}, torch::ones({3, 2})); },
               {"expected shape [2, 3] or [2, 3, 4] ([B, T] or [B, T, H], batch_first=true), got [3, 2]"});
  EXPECT_EQ(std::get<0>(batch_first->forward(u.transpose(0, 1), {}, torch::ones({2, 3}))).sizes(),
            at::IntArrayRef({2, 3, 4}));
  PlasticLinear linear(PlasticLinearOptions(5, 4).rule(Rule::Modulated).modulation(Modulation::External));
  expect_error([&] { linear->forward(u, {}, torch::randn({3, 2, 5})); }, {"([T, B] or [T, B, O]), got [3, 2, 5]"});
  PlasticLSTMCell cell(external(PlasticLSTMOptions(5, 4)));
  expect_error([&] { cell->forward(u[0], {}, torch::randn({3})); },
               {"PlasticLSTMCell: modulation: expected shape [2] or [2, 4] ([B] or [B, H]), got [3]"});
  expect_error([&] { cell->forward(u[0][0], {}, torch::randn({2})); }, {"([] or [H], unbatched), got [2]"});
  expect_error([&] { cell->forward(u[0], {}, torch::ones({2}), torch::tensor({0, 2})); },
               {"PlasticLSTMCell: lengths: expected values in [0, 1] (0 skips the step, 1 takes it)"});
  expect_error([&] { rnn->forward(u, {}, torch::ones({3, 2}, torch::kFloat64)); },
               {"PlasticRNN: modulation: expected dtype Float (the module's parameters), got Double"});
  PlasticState doubles;
  doubles.trace = torch::zeros({2, 4, 4}, torch::kFloat64);
  expect_error([&] { rnn->forward(u, doubles, torch::ones({3, 2})); },
               {"PlasticRNN: state: expected trace of dtype Float (the module's parameters), got Double"});
  doubles.trace = torch::zeros({2, 4, 5});
  expect_error([&] { rnn->forward(u, doubles, torch::ones({3, 2})); },
               {"PlasticRNN: state: expected trace of shape [2, 4, 4] for batch size 2 (from the input), got shape [2, 4, 5]"});
  expect_error([&] { PlasticRNN(5, 4)->forward(u, {}, torch::ones({3, 2})); },
               {"PlasticRNN: modulation: expected undefined (rule hebb takes no neuromodulation)"});
}
