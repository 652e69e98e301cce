// CUDA registration of plastic_scan: plans the launch, takes scratch from the caching allocator
// and launches on the current stream (kernels: cuda/plastic_scan.cu); everything else is
// shared with the CPU (csrc/ops/scan_common.h). No host synchronisation.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdlib>
#include <iostream>
#include <mutex>
#include <set>
#include <sstream>

#include "cuda/plastic_scan_cuda.h"
#include "ops/scan_common.h"

namespace torchplastic {
namespace cuda {
namespace {

using kernels::ScanGradParams;
using kernels::ScanParams;

}  // namespace

// Defined here, not in the .cu file: no std::string crosses between nvcc's and g++'s objects.
std::string Plan::describe() const {
  std::ostringstream s;
  s << "cluster=" << cluster << " rows=" << rows << " smem=" << smem_bytes << "B on_chip=[";
  const char* sep = "";
  auto add = [&](bool f, const char* name) {
    if (f) {
      s << sep << name;
      sep = ",";
    }
  };
  add(trace, "H");
  add(elig, "E");
  add(alpha, "alpha");
  add(weight, "W");
  add(grad_trace, "dH");
  add(grad_elig, "dE");
  add(grad_alpha, "dalpha");
  add(partials, "dp_partials");
  s << "]";
  return s.str();
}

namespace {

// TORCHPLASTIC_CUDA_VERBOSE=1 prints each distinct launch plan to stderr, once.
void report(const char* what, const Plan& plan, int64_t B, int64_t O, int64_t I) {
  static const bool verbose = [] {
    const char* v = std::getenv("TORCHPLASTIC_CUDA_VERBOSE");
    return v && std::atoi(v) != 0;
  }();
  if (!verbose) return;
  std::ostringstream line;
  line << "torchplastic " << what << " B=" << B << " O=" << O << " I=" << I << ": "
       << plan.describe();
  static std::mutex mutex;
  static std::set<std::string> seen;
  std::lock_guard<std::mutex> lock(mutex);
  if (seen.insert(line.str()).second) std::cerr << line.str() << std::endl;
}

template <typename T>
void forward(const ScanParams<T>& P) {
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(P.device));
  const Plan plan = plan_forward(P, P.device);
  report("forward", plan, P.B, P.O, P.I);
  launch_forward(P, plan, at::cuda::getCurrentCUDAStream());
}

template <typename T>
void backward(const ScanParams<T>& P, const ScanGradParams<T>& G) {
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(P.device));
  const Plan plan = plan_backward(P, P.device);
  report("backward", plan, P.B, P.O, P.I);
  const auto dtype = std::is_same_v<T, float> ? at::kFloat : at::kDouble;
  at::Tensor scratch = at::empty({backward_scratch_elems(P, plan)},
                                 at::TensorOptions().dtype(dtype).device(at::kCUDA, P.device));
  launch_backward(P, G, plan, scratch.mutable_data_ptr<T>(), at::cuda::getCurrentCUDAStream());
}

}  // namespace

const detail::ScanBackend backend{&forward<float>, &forward<double>, &backward<float>,
                                  &backward<double>};

}  // namespace cuda
}  // namespace torchplastic

TORCH_LIBRARY_IMPL(torchplastic, CUDA, m) {
  using Kernels = torchplastic::detail::ScanKernels<torchplastic::cuda::backend>;
  m.impl("plastic_scan", &Kernels::plastic_scan);
  m.impl("plastic_scan_forward", &Kernels::plastic_scan_forward);
  m.impl("plastic_scan_backward", &Kernels::plastic_scan_backward);
}
