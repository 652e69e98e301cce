// The CUDA runtime API that cuda/*.cu and cuda/*.h call, emulated on the CPU
// (tests/cuda_emulation/runtime.cpp): a kernel launch runs its grid on fibers, one per CUDA
// thread. Host types and calls only, so that a C++ file with torch's headers can include it.
#pragma once

#include <cstddef>
#include <functional>

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3() = default;
  constexpr dim3(unsigned x_, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

using cudaError_t = int;
constexpr cudaError_t cudaSuccess = 0;
constexpr cudaError_t cudaErrorInvalidValue = 1;
constexpr cudaError_t cudaErrorLaunchFailure = 719;
using cudaStream_t = struct CUstream_emulated*;

enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaDeviceAttr {
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};
enum cudaLaunchAttributeID { cudaLaunchAttributeClusterDimension = 4 };
struct cudaLaunchAttributeValue {
  struct {
    unsigned x, y, z;
  } clusterDim;
};
struct cudaLaunchAttribute {
  cudaLaunchAttributeID id;
  cudaLaunchAttributeValue val;
};
struct cudaLaunchConfig_t {
  dim3 gridDim, blockDim;
  size_t dynamicSmemBytes = 0;
  cudaStream_t stream = nullptr;
  cudaLaunchAttribute* attrs = nullptr;
  unsigned numAttrs = 0;
};

namespace tp_emulation {
// The emulated device, an H100's figures: its multiprocessors, compute capability and the
// shared memory a block may opt in to.
constexpr int kSms = 132;
constexpr int kMajor = 9;
constexpr int kSmemOptin = 227 * 1024;

// Runs `body` as every thread of cfg's grid (runtime.cpp); cudaErrorLaunchFailure, with the
// reason in last_error_message(), where a thread threw or the threads deadlocked.
cudaError_t launch(const cudaLaunchConfig_t& cfg, const std::function<void()>& body);
const char* last_error_message();
// The cluster size cfg asks for (1 without the attribute).
unsigned cluster_size(const cudaLaunchConfig_t& cfg);
}  // namespace tp_emulation

inline const char* cudaGetErrorString(cudaError_t err) {
  return err == cudaSuccess ? "no error" : tp_emulation::last_error_message();
}
inline cudaError_t cudaGetLastError() { return cudaSuccess; }

inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int /*device*/) {
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = tp_emulation::kSms; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor: *value = tp_emulation::kMajor; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = tp_emulation::kSmemOptin; return cudaSuccess;
  }
  return cudaErrorInvalidValue;
}

template <typename Kernel>
cudaError_t cudaFuncSetAttribute(Kernel, cudaFuncAttribute, int value) {
  return value <= tp_emulation::kSmemOptin ? cudaSuccess : cudaErrorInvalidValue;
}

// One block of 512 threads fills a multiprocessor's registers at the kernels' 128 each.
template <typename Kernel>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, Kernel, int /*threads*/,
                                                          size_t smem) {
  *n = smem <= static_cast<size_t>(tp_emulation::kSmemOptin) ? 1 : 0;
  return cudaSuccess;
}

// A cluster's blocks share a GPC: eight of sixteen multiprocessors each, as a model.
template <typename Kernel>
cudaError_t cudaOccupancyMaxActiveClusters(int* n, Kernel, const cudaLaunchConfig_t* cfg) {
  const unsigned C = tp_emulation::cluster_size(*cfg);
  *n = cfg->dynamicSmemBytes <= static_cast<size_t>(tp_emulation::kSmemOptin) && C <= 16
           ? static_cast<int>(8 * (16 / C))
           : 0;
  return cudaSuccess;
}

template <typename... Parameters, typename... Args>
cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t* cfg, void (*kernel)(Parameters...),
                               Args... args) {
  return tp_emulation::launch(*cfg, [=] { kernel(args...); });
}
