// CPU-only memory management of plastic_scan: the buffers the kernels first touch.
#pragma once

#include <ATen/core/Tensor.h>

namespace torchplastic {
namespace cpu {

// An uninitialised tensor for one of a call's large buffers (traces, their checkpoints and
// gradients, gradient slabs): from a cache of freed ones of the same size where there is one,
// backed by transparent huge pages where the kernel allows them (see memory.cpp).
at::Tensor empty_buffer(at::IntArrayRef sizes, const at::TensorOptions& options);

// Zeros that must only ever be read (see memory.cpp): on Linux, for tensors of 1 MiB and more,
// views of one read-only anonymous mapping that serves every call; otherwise at::zeros.
at::Tensor read_only_zeros(at::IntArrayRef sizes, const at::TensorOptions& options);

}  // namespace cpu
}  // namespace torchplastic
