// torchplastic._C: the only C++ that sees Python. Loading it loads libtorchplastic, whose
// static registrations put the ops into the dispatcher.
#include <torch/extension.h>

#include "torchplastic/torchplastic.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "torchplastic native extension: build information (the ops live in torch.ops.torchplastic)";
  m.def(
      "build_info",
      [] {
        const auto info = torchplastic::build_info();
        pybind11::dict d;
        d["version"] = info.version;
        d["with_cuda"] = info.with_cuda;
        d["torch_version"] = info.torch_version;
        d["cuda_version"] = info.cuda_version;
        d["cuda_archs"] = info.cuda_archs;
        return d;
      },
      "What this build holds: version, with_cuda, torch_version, cuda_version, cuda_archs.");
}
