// A model traced and saved in Python (make_torchscript_fixture.py) runs in C++ with the library
// linked, and gives the outputs Python computed.
#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include "torchplastic/torchplastic.h"

TEST(TorchScript, ModelSavedFromPythonRunsInCpp) {
  // Referencing the library keeps it linked: its static initialisers register the ops.
  ASSERT_FALSE(torchplastic::build_info().version.empty());
  torch::jit::Module model = torch::jit::load(std::string(TORCHPLASTIC_FIXTURE_DIR) + "/plastic_rnn_traced.pt");
  const at::Tensor u = model.attr("example_input").toTensor();
  auto out = model.forward({u}).toTuple();
  const at::Tensor y = out->elements()[0].toTensor();
  const at::Tensor trace = out->elements()[1].toTensor();
  EXPECT_TRUE(torch::allclose(y, model.attr("expected_output").toTensor(), 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(trace, model.attr("expected_trace").toTensor(), 1e-5, 1e-6));
  // A different input gives a different output: the graph really runs the op.
  auto other = model.forward({u * 2}).toTuple()->elements()[0].toTensor();
  EXPECT_FALSE(torch::allclose(other, y));
}
