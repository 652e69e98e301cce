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
