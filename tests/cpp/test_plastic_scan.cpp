// plastic_scan through the public C++ API against the ATen loop of aten_reference.h, in values
// and in gradients through C++ autograd.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "aten_reference.h"

using namespace torchplastic;

namespace {

struct Case {
  Rule rule;
  bool recurrent;
  Modulation source;
};

// Inputs of one configuration, every differentiable one a leaf that requires grad.
struct Inputs {
  at::Tensor z, alpha, eta, trace;
  ScanOptions options;
  std::vector<at::Tensor> leaves;
};

Inputs make_inputs(const Case& c, int64_t T = 5, int64_t B = 3, int64_t O = 4, int64_t I = 6) {
  torch::manual_seed(0);
  auto opts = torch::TensorOptions().dtype(torch::kFloat64);
  if (c.recurrent) I = O;
  auto leaf = [&](at::Tensor t, Inputs& in) {
    t.requires_grad_(true);
    in.leaves.push_back(t);
    return t;
  };
  Inputs in;
  in.z = leaf(torch::randn({T, B, O}, opts), in);
  in.alpha = leaf(0.5 * torch::randn({O, I}, opts), in);
  const RuleInfo rule = rule_info(c.rule);
  if (rule.uses_eta) in.eta = leaf(0.1 + 0.3 * torch::rand({O, 1}, opts), in);
  in.trace = leaf(0.3 * torch::randn({B, O, I}, opts), in);
  in.options.rule(c.rule);
  if (c.recurrent) {
    in.options.weight(leaf(0.4 * torch::randn({O, O}, opts), in));
    in.options.hidden(leaf(0.5 * torch::randn({B, O}, opts), in));
  } else {
    in.options.x(leaf(torch::randn({T, B, I}, opts), in));
  }
  if (rule.coefficients) {
    in.options.abcd(leaf(0.5 * torch::randn({4, O, I}, opts), in));
    in.options.clip(1.0);
  }
  if (rule.modulated) {
    if (c.source == Modulation::External) {
      in.options.modulation(leaf(torch::randn({T, B}, opts), in));
    } else {
      in.options.mod_weight(leaf(torch::randn({O}, opts), in));
      in.options.mod_bias(leaf(torch::randn({1}, opts), in));
      if (c.source == Modulation::Fanout) {
        in.options.mod_fanout_weight(leaf(torch::randn({O}, opts), in));
        in.options.mod_fanout_bias(leaf(torch::randn({O}, opts), in));
      }
    }
    in.options.clip(1.0);
  }
  if (rule.eligibility) in.options.eligibility(leaf(0.2 * torch::randn({B, O, I}, opts), in));
  return in;
}

// A scalar loss touching every output, with fixed random weights.
at::Tensor loss_of(const at::Tensor& y, const PlasticState& s) {
  torch::manual_seed(1);
  at::Tensor loss = (y * torch::randn_like(y)).sum() + (s.trace * torch::randn_like(s.trace)).sum();
  if (s.hidden.defined()) loss = loss + (s.hidden * torch::randn_like(s.hidden)).sum();
  if (s.eligibility.defined()) loss = loss + (s.eligibility * torch::randn_like(s.eligibility)).sum();
  return loss;
}

std::vector<at::Tensor> grads_of(const at::Tensor& loss, const std::vector<at::Tensor>& leaves) {
  return torch::autograd::grad({loss}, leaves);
}

void PrintTo(const Case& c, std::ostream* os) {
  *os << to_string(c.rule) << (c.recurrent ? "/recurrent/" : "/feedforward/") << to_string(c.source);
}

class PlasticScanTest : public ::testing::TestWithParam<Case> {};

// Values and gradients of plastic_scan against the ATen loop.
void expect_matches_aten_loop(const Inputs& in) {
  auto [y, state] = plastic_scan(in.z, in.alpha, in.eta, in.trace, in.options);
  auto [y_ref, state_ref] = test_reference::reference_scan(in.z, in.alpha, in.eta, in.trace, in.options);
  EXPECT_TRUE(torch::allclose(y, y_ref, 1e-10, 1e-12));
  EXPECT_TRUE(torch::allclose(state.trace, state_ref.trace, 1e-10, 1e-12));
  if (state_ref.hidden.defined()) {
    EXPECT_TRUE(torch::allclose(state.hidden, state_ref.hidden, 1e-10, 1e-12));
  }
  if (state_ref.eligibility.defined()) {
    EXPECT_TRUE(torch::allclose(state.eligibility, state_ref.eligibility, 1e-10, 1e-12));
  }

  auto grads = grads_of(loss_of(y, state), in.leaves);
  auto grads_ref = grads_of(loss_of(y_ref, state_ref), in.leaves);
  ASSERT_EQ(grads.size(), grads_ref.size());
  for (size_t i = 0; i < grads.size(); ++i)
    EXPECT_TRUE(torch::allclose(grads[i], grads_ref[i], 1e-9, 1e-11)) << "gradient of leaf " << i;
}

TEST_P(PlasticScanTest, MatchesAtenLoopInValuesAndGradients) {
  expect_matches_aten_loop(make_inputs(GetParam()));
}

// A batch of single steps: with row-local modulation (or none) the CPU backward sums dL/dα over
// the batch in blocks of rows (csrc/cpu/plastic_scan.cpp, batch_single_step), here four of
// 33, 33, 33 and 31 rows; under the sanitizers too.
TEST_P(PlasticScanTest, SingleStepsInRowBlocksMatchAtenLoop) {
  expect_matches_aten_loop(make_inputs(GetParam(), /*T=*/1, /*B=*/3, /*O=*/130, /*I=*/70));
}

// create_graph=True: the op's gradients are differentiable, here through a penalty on them.
TEST_P(PlasticScanTest, DoubleBackwardMatchesAtenLoop) {
  Inputs in = make_inputs(GetParam(), /*T=*/4);
  auto penalty_grads = [&](const at::Tensor& y, const PlasticState& state) {
    auto first = torch::autograd::grad({loss_of(y, state)}, in.leaves, {}, true, /*create_graph=*/true);
    at::Tensor penalty = torch::zeros({}, y.options());
    for (const auto& g : first) penalty = penalty + g.square().sum();
    return torch::autograd::grad({penalty}, in.leaves, {}, false, false, /*allow_unused=*/true);
  };
  auto [y, state] = plastic_scan(in.z, in.alpha, in.eta, in.trace, in.options);
  auto [y_ref, state_ref] = test_reference::reference_scan(in.z, in.alpha, in.eta, in.trace, in.options);
  auto grads = penalty_grads(y, state);
  auto grads_ref = penalty_grads(y_ref, state_ref);
  for (size_t i = 0; i < grads.size(); ++i) {
    ASSERT_EQ(grads[i].defined(), grads_ref[i].defined()) << "leaf " << i;
    if (grads[i].defined()) {
      EXPECT_TRUE(torch::allclose(grads[i], grads_ref[i], 1e-9, 1e-11)) << "leaf " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    RulesAndModes, PlasticScanTest,
    ::testing::Values(Case{Rule::Hebb, false, Modulation::Internal},
                      Case{Rule::Hebb, true, Modulation::Internal},
                      Case{Rule::Oja, true, Modulation::Internal},
                      Case{Rule::Modulated, true, Modulation::Internal},
                      Case{Rule::Modulated, false, Modulation::External},
                      Case{Rule::Retroactive, true, Modulation::Fanout},
                      Case{Rule::Retroactive, false, Modulation::External},
                      Case{Rule::Abcd, false, Modulation::Internal},
                      Case{Rule::Abcd, true, Modulation::Internal}));

TEST(PlasticScan, ZeroStepsReturnTheStateUnchanged) {
  Inputs in = make_inputs({Rule::Hebb, true, Modulation::Internal}, /*T=*/0);
  auto [y, state] = plastic_scan(in.z, in.alpha, in.eta, in.trace, in.options);
  EXPECT_EQ(y.sizes(), at::IntArrayRef({0, 3, 4}));
  EXPECT_TRUE(torch::equal(state.trace, in.trace));
  EXPECT_TRUE(torch::equal(state.hidden, in.options.hidden()));
}

TEST(PlasticScan, CheckpointIntervalDoesNotChangeGradients) {
  Case c{Rule::Hebb, true, Modulation::Internal};
  std::vector<at::Tensor> first;
  for (int64_t K : {1, 2, 3, 7}) {
    Inputs in = make_inputs(c, /*T=*/7);
    in.options.checkpoint_every(K);
    auto [y, state] = plastic_scan(in.z, in.alpha, in.eta, in.trace, in.options);
    auto grads = grads_of(loss_of(y, state), in.leaves);
    if (first.empty()) first = grads;
    for (size_t i = 0; i < grads.size(); ++i) EXPECT_TRUE(torch::equal(grads[i], first[i])) << "K=" << K;
  }
}

TEST(PlasticScan, BadArgumentsNameTheArgument) {
  Inputs in = make_inputs({Rule::Hebb, true, Modulation::Internal});
  auto bad_alpha = torch::zeros({3, 3}, torch::kFloat64);
  try {
    plastic_scan(in.z, bad_alpha, in.eta, in.trace, in.options);
    FAIL() << "expected c10::Error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("alpha"), std::string::npos) << e.what();
  }
}

}  // namespace
