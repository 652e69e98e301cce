// The CUDA kernels run on the CPU: torchplastic's ops as a library of their own,
// torchplastic_cuda_emulated, whose device backend is cuda/*.cu compiled for the host and
// launched by the emulated runtime (include/, runtime.cpp) on CPU tensors, against a device with
// an H100's figures (include/cuda_runtime_api.h). Everything around the kernels (checks,
// outputs, the work after the loop) is torchplastic's own (csrc/ops/scan.h), with the CUDA
// backend's settings. tests/python/test_cuda_emulated.py compares these ops with the CPU
// kernels', so the CUDA kernels' logic is tested on machines without a GPU; their speed, races
// and memory errors need the GPU (make gpu-check).
#include <ATen/ATen.h>
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
  launch_forward(P, plan_forward(P, 0), nullptr);
}

template <typename T>
void backward(const ScanParams<T>& P, const ScanGradParams<T>& G) {
  const Plan plan = plan_backward(P, 0);
  const auto dtype = std::is_same_v<T, float> ? at::kFloat : at::kDouble;
  at::Tensor scratch = at::empty({backward_scratch_elems(P, plan)}, at::TensorOptions().dtype(dtype));
  launch_backward(P, G, plan, scratch.mutable_data_ptr<T>(), nullptr);
}

at::Tensor empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return at::empty(sizes, options);
}

at::Tensor zeros(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return at::zeros(sizes, options);
}

// As cuda/plastic_scan_cuda.cpp's backend.
const detail::ScanBackend emulated_backend{&forward<float>,  &forward<double>, &backward<float>,
                                           &backward<double>, &empty,           &zeros,
                                           /*zeroes_grad_slabs=*/false};

}  // namespace
}  // namespace cuda
}  // namespace torchplastic

TORCH_LIBRARY(torchplastic_cuda_emulated, m) { torchplastic::detail::define_scan_ops(m); }

TORCH_LIBRARY_IMPL(torchplastic_cuda_emulated, CPU, m) {
  torchplastic::detail::ScanKernels<torchplastic::cuda::emulated_backend>::register_ops(m);
}
