// The C++ modules: parameters, the op underneath, state, the cell against the sequence module.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "aten_reference.h"

using namespace torchplastic;

TEST(Modules, ParameterNamesAndShapes) {
  PlasticRNN rnn(PlasticRNNOptions(5, 4).rule(Rule::Retroactive).modulation(Modulation::Fanout)
                     .alpha(Granularity::Neuron));
  std::vector<std::string> names;
  for (const auto& p : rnn->named_parameters()) names.push_back(p.key());
  EXPECT_EQ(names, (std::vector<std::string>{"alpha", "eta", "mod_weight", "mod_bias",
                                             "mod_fanout_weight", "mod_fanout_bias", "weight_ih",
                                             "weight_hh", "bias"}));
  EXPECT_EQ(rnn->core.alpha.sizes(), at::IntArrayRef({4, 1}));
  EXPECT_EQ(rnn->core.clip, c10::optional<double>(1.0));  // clip "auto" for the modulated rules
  PlasticRNN modulated(PlasticRNNOptions(5, 4).rule(Rule::Modulated).modulation(Modulation::External));
  EXPECT_FALSE(modulated->core.eta.defined());  // rule modulated has no η
}

TEST(Modules, RNNMatchesTheAtenLoopAndTrains) {
  torch::manual_seed(0);
  PlasticRNN rnn(PlasticRNNOptions(5, 8).rule(Rule::Hebb));
  auto u = torch::randn({6, 3, 5});
  auto [y, state] = rnn->forward(u);
  auto z = torch::nn::functional::linear(u, rnn->weight_ih, rnn->bias);
  auto [y_ref, state_ref] = test_reference::reference_scan(
      z, rnn->core.alpha, rnn->core.eta, at::Tensor(), ScanOptions().weight(rnn->weight_hh));
  EXPECT_TRUE(torch::allclose(y, y_ref, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(state.trace, state_ref.trace, 1e-5, 1e-6));

  torch::optim::Adam opt(rnn->parameters(), 1e-2);
  const double before = y.square().mean().item<double>();
  for (int i = 0; i < 20; ++i) {
    opt.zero_grad();
    auto [out, s] = rnn->forward(u);
    out.square().mean().backward();
    opt.step();
  }
  EXPECT_LT(std::get<0>(rnn->forward(u)).square().mean().item<double>(), before);
}

TEST(Modules, CellEqualsOneStepOfTheSequenceModule) {
  torch::manual_seed(0);
  auto opts = PlasticRNNOptions(5, 4).rule(Rule::Modulated).modulation(Modulation::Internal);
  PlasticRNN rnn(opts);
  PlasticRNNCell cell(opts);
  {
    torch::NoGradGuard g;
    auto src = rnn->named_parameters();
    for (auto& p : cell->named_parameters()) p.value().copy_(src[p.key()]);
  }
  auto u = torch::randn({5, 2, 5});
  auto [y, state] = rnn->forward(u);
  PlasticState s;
  for (int64_t t = 0; t < 5; ++t) {
    at::Tensor h;
    std::tie(h, s) = cell->forward(u[t], s);
    EXPECT_TRUE(torch::allclose(h, y[t], 1e-5, 1e-6)) << "step " << t;
  }
}

TEST(Modules, LengthsEqualRunningEachSequenceAlone) {
  torch::manual_seed(0);
  PlasticRNN rnn(PlasticRNNOptions(3, 4).rule(Rule::Retroactive));
  rnn->to(torch::kFloat64);
  const auto u = torch::randn({6, 3, 3}, torch::kFloat64);
  const std::vector<int64_t> lengths{6, 0, 4};
  auto [out, state] = rnn->forward(u, {}, {}, torch::tensor(lengths));
  for (int64_t b = 0; b < 3; ++b) {
    const int64_t L = lengths[b];
    auto [out_b, state_b] = rnn->forward(u.slice(0, 0, L).select(1, b));  // unbatched
    EXPECT_TRUE(torch::allclose(out.slice(0, 0, L).select(1, b), out_b)) << "b=" << b;
    EXPECT_TRUE(torch::all(out.slice(0, L).select(1, b) == 0).item<bool>()) << "b=" << b;
    EXPECT_TRUE(torch::allclose(state.trace[b], state_b.trace)) << "b=" << b;
  }
}

TEST(Modules, BadInputNamesTheArgument) {
  PlasticRNN rnn(5, 4);
  try {
    rnn->forward(torch::randn({3, 2, 7}));
    FAIL() << "expected c10::Error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("input: expected last dimension 5"), std::string::npos) << e.what();
  }
}

// ------------------------------------------------------------------ the plastic LSTM

TEST(LSTMModules, ParameterNamesAndShapes) {
  PlasticLSTM lstm(PlasticLSTMOptions(5, 4).rule(Rule::Retroactive).modulation(Modulation::Fanout));
  std::vector<std::string> names;
  for (const auto& p : lstm->named_parameters()) names.push_back(p.key());
  EXPECT_EQ(names, (std::vector<std::string>{"alpha", "eta", "mod_weight", "mod_bias",
                                             "mod_fanout_weight", "mod_fanout_bias", "weight_ih",
                                             "weight_hh", "bias"}));
  EXPECT_EQ(lstm->weight_ih.sizes(), at::IntArrayRef({16, 5}));
  EXPECT_EQ(lstm->weight_hh.sizes(), at::IntArrayRef({16, 4}));
  EXPECT_EQ(lstm->bias.sizes(), at::IntArrayRef({16}));
  EXPECT_EQ(lstm->core.alpha.sizes(), at::IntArrayRef({4, 4}));
}

TEST(LSTMModules, AlphaZeroIsTorchLSTM) {
  torch::manual_seed(0);
  torch::nn::LSTM ref(torch::nn::LSTMOptions(5, 6));
  PlasticLSTM lstm(PlasticLSTMOptions(5, 6).rule(Rule::Retroactive).alpha_init(0.0));
  {
    torch::NoGradGuard g;
    lstm->weight_ih.copy_(ref->named_parameters()["weight_ih_l0"]);
    lstm->weight_hh.copy_(ref->named_parameters()["weight_hh_l0"]);
    lstm->bias.copy_(ref->named_parameters()["bias_ih_l0"] + ref->named_parameters()["bias_hh_l0"]);
  }
  const auto u = torch::randn({7, 3, 5});
  auto [out, state] = lstm->forward(u);
  auto [out_ref, hc] = ref->forward(u);
  EXPECT_TRUE(torch::allclose(out, out_ref, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(state.hidden, std::get<0>(hc)[0], 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(state.cell, std::get<1>(hc)[0], 1e-5, 1e-6));
}

TEST(LSTMModules, CellEqualsOneStepOfTheSequenceModuleAndTrains) {
  torch::manual_seed(0);
  auto opts = PlasticLSTMOptions(5, 4).rule(Rule::Modulated).modulation(Modulation::Internal);
  PlasticLSTM lstm(opts);
  PlasticLSTMCell cell(opts);
  {
    torch::NoGradGuard g;
    auto src = lstm->named_parameters();
    for (auto& p : cell->named_parameters()) p.value().copy_(src[p.key()]);
  }
  auto u = torch::randn({5, 2, 5});
  auto [y, state] = lstm->forward(u);
  PlasticState s;
  for (int64_t t = 0; t < 5; ++t) {
    at::Tensor h;
    std::tie(h, s) = cell->forward(u[t], s);
    EXPECT_TRUE(torch::allclose(h, y[t], 1e-5, 1e-6)) << "step " << t;
  }
  EXPECT_TRUE(torch::allclose(s.cell, state.cell, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(s.trace, state.trace, 1e-5, 1e-6));

  torch::optim::Adam opt(lstm->parameters(), 1e-2);
  const double before = y.square().mean().item<double>();
  for (int i = 0; i < 20; ++i) {
    opt.zero_grad();
    auto [out, st] = lstm->forward(u);
    out.square().mean().backward();
    opt.step();
  }
  EXPECT_LT(std::get<0>(lstm->forward(u)).square().mean().item<double>(), before);
}

TEST(LSTMModules, BadOptionsAndInputsNameTheArgument) {
  auto message = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const c10::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message([] { PlasticLSTM(PlasticLSTMOptions(5, 4).activation(Activation::Relu)); })
                .find("PlasticLSTM: activation: expected tanh"),
            std::string::npos);
  PlasticLSTM lstm(5, 4);
  EXPECT_NE(message([&] { lstm->forward(torch::randn({3, 2, 7})); })
                .find("PlasticLSTM: input: expected last dimension 5"),
            std::string::npos);
  PlasticState bad;
  bad.cell = torch::zeros({3, 4});
  EXPECT_NE(message([&] { lstm->forward(torch::randn({3, 2, 5}), bad); })
                .find("PlasticLSTM: state: expected cell of shape [2, 4] for batch size 2"),
            std::string::npos);
}
