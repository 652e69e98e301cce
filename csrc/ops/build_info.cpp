#include "torchplastic/version.h"

#include <torch/version.h>

#include "cpu/plastic_scan_isa.h"

namespace torchplastic {

BuildInfo build_info() {
  BuildInfo info;
#ifdef TORCHPLASTIC_WITH_CUDA
  info.with_cuda = true;
  info.cuda_version = TORCHPLASTIC_CUDA_VERSION;
  info.cuda_archs = TORCHPLASTIC_CUDA_ARCHS;
#else
  info.with_cuda = false;
#endif
  info.version = TORCHPLASTIC_VERSION;
  info.torch_version = TORCH_VERSION;
  info.cpu_kernels = cpu::isa_name();
  info.cpu_kernels_built = cpu::isas_built();
  return info;
}

}  // namespace torchplastic
