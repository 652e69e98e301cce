// What this build of the library holds.
#pragma once

#include <string>

namespace torchplastic {

struct BuildInfo {
  bool with_cuda;             // CUDA kernels compiled in
  std::string version;        // torchplastic version
  std::string torch_version;  // the torch this library was built against
  std::string cuda_version;   // CUDA toolkit of the build ("" without CUDA)
  std::string cuda_archs;     // CUDA architectures compiled ("" without CUDA)
  std::string cpu_kernels;    // CPU kernels this process runs: "avx512", "avx2" or "generic"
                              // (the widest the CPU has; TORCHPLASTIC_CPU_ISA caps it)
  std::string cpu_kernels_built;  // those the build holds, comma-separated ("generic,avx2,avx512"
                                  // unless CMake's TORCHPLASTIC_CPU_ISAS left some out)
};

BuildInfo build_info();

}  // namespace torchplastic
