// main.cpp
#include <torchplastic/torchplastic.h>
#include <torch/torch.h>
#include <iostream>

int main() {
  torchplastic::PlasticRNN rnn(torchplastic::PlasticRNNOptions(10, 64)
                                   .rule(torchplastic::Rule::Retroactive)
                                   .modulation(torchplastic::Modulation::Fanout));
  auto [out, state] = rnn->forward(torch::randn({100, 32, 10}));
  out.square().mean().backward();     // C++ autograd: LibTorch programs get gradients
  std::cout << out.sizes() << " " << state.trace.sizes() << std::endl;
}
