// Runs a plastic network that Python exported and compiled ahead of time with AOTInductor
// (examples/export_model.py): no Python, no TorchScript, only LibTorch and torchplastic.
//
//   deploy MODEL.pt2 INPUT.pt [OUTPUT.pt]
//
// INPUT.pt holds one tensor saved by Python's torch.save (u [T, B, input_size]; T may differ
// from the length the model was exported with). The outputs of the model, flattened (the
// readout, then the four fields of the PlasticState, None where unused), are printed and, with
// OUTPUT.pt, saved as a list that Python's torch.load reads.
//
// The package calls the op torchplastic::plastic_scan by name; linking libtorchplastic
// registers it, which is why this program links TorchPlastic::torchplastic.
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/serialize.h>
#include <torch/torch.h>
#include <torchplastic/torchplastic.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

namespace {

std::vector<char> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3 || argc > 4 || std::string(argv[1]) == "--help") {
    std::cerr << "usage: deploy MODEL.pt2 INPUT.pt [OUTPUT.pt]\n"
                 "Runs an AOTInductor package of a plastic network (examples/export_model.py)\n"
                 "on the tensor in INPUT.pt (saved by torch.save) and prints its outputs.\n";
    return argc == 2 ? 0 : 2;
  }
  try {
    std::cout << "torchplastic " << torchplastic::build_info().version << ", package "
              << argv[1] << "\n";
    torch::inductor::AOTIModelPackageLoader model(argv[1]);
    const at::Tensor u = torch::pickle_load(read_file(argv[2])).toTensor();

    const auto start = std::chrono::steady_clock::now();
    const std::vector<at::Tensor> outputs = model.run({u});
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    std::cout << "input " << u.sizes() << " -> " << outputs.size() << " outputs in " << ms
              << " ms\n";
    // An output that is None in Python (a state field the model does not use) comes back as
    // an undefined tensor.
    for (size_t k = 0; k < outputs.size(); ++k) {
      std::cout << "  output " << k << ": ";
      if (!outputs[k].defined()) std::cout << "None\n";
      else std::cout << outputs[k].sizes() << ", mean |x| " << outputs[k].abs().mean().item<double>() << "\n";
    }

    if (argc == 4) {
      c10::List<c10::optional<at::Tensor>> list;
      for (const auto& t : outputs) list.push_back(t.defined() ? c10::optional<at::Tensor>(t) : c10::nullopt);
      const std::vector<char> bytes = torch::pickle_save(list);
      std::ofstream(argv[3], std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    }
  } catch (const std::exception& e) {
    std::cerr << "deploy: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
