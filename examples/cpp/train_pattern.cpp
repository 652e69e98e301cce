// Pattern memorization (Miconi, Clune & Stanley 2018) with torchplastic::PlasticRNN in C++.
//
// Each episode shows 5 random ±1 patterns of 100 bits (half of each +1), each for 6 steps with
// 4 zero steps between, the whole sequence twice in a new order; then one of the 5 with half
// its bits zeroed, for 6 steps. The input (×20) is added to the pre-activation; the network
// must complete the pattern: loss = squared error at the last step, metric = the fraction of
// bits of the wrong sign (about 0.25 for a network that only repeats the cue).
//
//   train_pattern [--steps N] [--batch B] [--lr LR] [--seed S]
#include <torchplastic/torchplastic.h>
#include <torch/torch.h>

#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <string>

namespace {

constexpr int64_t kBits = 100, kPatterns = 5, kShow = 6, kGap = 4, kRepeats = 2;
constexpr double kInputScale = 20.0;

struct Episode {
  torch::Tensor inputs;  // [T, B, kBits]
  torch::Tensor target;  // [B, kBits]
};

Episode make_episode(int64_t B) {
  const int64_t T = kRepeats * kPatterns * (kShow + kGap) + kShow;
  auto inputs = torch::zeros({T, B, kBits});
  auto target = torch::empty({B, kBits});
  for (int64_t b = 0; b < B; ++b) {
    // Patterns with exactly half their bits +1: a shuffled half/half vector each.
    auto half = torch::cat({torch::ones({kBits / 2}), -torch::ones({kBits - kBits / 2})});
    std::vector<torch::Tensor> patterns;
    for (int64_t k = 0; k < kPatterns; ++k) patterns.push_back(half.index_select(0, torch::randperm(kBits)));
    int64_t t = 0;
    for (int64_t r = 0; r < kRepeats; ++r) {
      auto order = torch::randperm(kPatterns);
      for (int64_t k = 0; k < kPatterns; ++k) {
        inputs.slice(0, t, t + kShow).select(1, b).copy_(patterns[order[k].item<int64_t>()].expand({kShow, kBits}));
        t += kShow + kGap;
      }
    }
    const int64_t probe = torch::randint(kPatterns, {1}).item<int64_t>();
    auto cue = patterns[probe].clone();
    cue.index_fill_(0, torch::randperm(kBits).slice(0, 0, kBits / 2), 0.0);  // half the bits zeroed
    inputs.slice(0, t, t + kShow).select(1, b).copy_(cue.expand({kShow, kBits}));
    target[b] = patterns[probe];
  }
  return {inputs, target};
}

int64_t arg_int(int argc, char** argv, const std::string& name, int64_t fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (argv[i] == name) return std::atoll(argv[i + 1]);
  return fallback;
}
double arg_double(int argc, char** argv, const std::string& name, double fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (argv[i] == name) return std::atof(argv[i + 1]);
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
      std::cout << "usage: train_pattern [--steps N=2000] [--batch B=32] [--lr LR=3e-3] [--seed S=0]\n"
                   "Trains a PlasticRNN (rule hebb) on pattern memorization; prints the error.\n";
      return 0;
    }
  }
  const int64_t steps = arg_int(argc, argv, "--steps", 2000);
  const int64_t batch = arg_int(argc, argv, "--batch", 32);
  const double lr = arg_double(argc, argv, "--lr", 3e-3);
  torch::manual_seed(arg_int(argc, argv, "--seed", 0));

  torchplastic::PlasticRNN rnn(torchplastic::PlasticRNNOptions(kBits, kBits)
                                   .bias(false)
                                   .rule(torchplastic::Rule::Hebb)
                                   .alpha(torchplastic::Granularity::Connection)
                                   .eta(torchplastic::Granularity::Scalar));
  {
    // The input is added to the pre-activation, scaled: a fixed W_ih = 20·I.
    torch::NoGradGuard no_grad;
    rnn->weight_ih.copy_(kInputScale * torch::eye(kBits));
  }
  rnn->weight_ih.set_requires_grad(false);
  std::vector<torch::Tensor> trained;
  for (auto& p : rnn->named_parameters())
    if (p.key() != "weight_ih") trained.push_back(p.value());
  torch::optim::Adam optimizer(trained, torch::optim::AdamOptions(lr));

  double running = 0.25;
  for (int64_t step = 1; step <= steps; ++step) {
    const Episode ep = make_episode(batch);
    auto [out, state] = rnn->forward(ep.inputs);
    const torch::Tensor last = out[-1];
    const torch::Tensor loss = (last - ep.target).square().mean();
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
    const double error = (last.sign() != ep.target).to(torch::kFloat).mean().item<double>();
    running = 0.95 * running + 0.05 * error;
    if (step % 20 == 0 || step == steps)
      std::cout << "step " << std::setw(5) << step << "  loss " << std::fixed << std::setprecision(4)
                << loss.item<double>() << "  sign error " << running << std::endl;
  }
  std::cout << "pattern memorization (C++): error " << std::fixed << std::setprecision(3) << running
            << " after " << steps << " episodes of " << batch << std::endl;
  return 0;
}
