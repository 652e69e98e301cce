// CUDA registration of plastic_scan: plans the launch, takes scratch from the caching allocator
// and launches on the current stream (kernels: cuda/forward.cu and cuda/backward.cu; planning:
// cuda/plan.cu); everything else is shared with the CPU (csrc/ops/scan.h). No host
// synchronisation.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda/plastic_scan_cuda.h"
#include "ops/scan.h"

namespace torchplastic {
namespace cuda {
namespace {

using kernels::ScanGradParams;
using kernels::ScanParams;

template <typename T>
void forward(const ScanParams<T>& P) {
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(P.device));
  const Plan plan = plan_forward(P, P.device);
  launch_forward(P, plan, at::cuda::getCurrentCUDAStream());
}

template <typename T>
void backward(const ScanParams<T>& P, const ScanGradParams<T>& G) {
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(P.device));
  const Plan plan = plan_backward(P, P.device);
  const auto dtype = std::is_same_v<T, float> ? at::kFloat : at::kDouble;
  at::Tensor scratch = at::empty({backward_scratch_elems(P, plan)},
                                 at::TensorOptions().dtype(dtype).device(at::kCUDA, P.device));
  launch_backward(P, G, plan, scratch.mutable_data_ptr<T>(), at::cuda::getCurrentCUDAStream());
}

at::Tensor empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return at::empty(sizes, options);
}

at::Tensor zeros(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return at::zeros(sizes, options);
}

}  // namespace

const detail::ScanBackend backend{&forward<float>,  &forward<double>, &backward<float>,
                                  &backward<double>, &empty,           &zeros,
                                  /*zeroes_grad_slabs=*/false};

}  // namespace cuda
}  // namespace torchplastic

TORCH_LIBRARY_IMPL(torchplastic, CUDA, m) {
  torchplastic::detail::ScanKernels<torchplastic::cuda::backend>::register_ops(m);
}
