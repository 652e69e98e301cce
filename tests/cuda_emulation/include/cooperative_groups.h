// The thread block clusters of CUDA's cooperative groups, as cuda/common.cuh uses them,
// emulated on the CPU (tests/cuda_emulation/runtime.cpp).
#pragma once

#include "cuda_runtime.h"

namespace cooperative_groups {
struct cluster_group {
  void sync() const { tp_emulation::sync_cluster(); }
  unsigned block_rank() const { return tp_emulation::cluster_block_rank(); }
  // The same shared-memory address in block `rank` of the cluster.
  template <typename T>
  T* map_shared_rank(T* p, unsigned rank) const {
    return static_cast<T*>(
        tp_emulation::map_shared_rank(const_cast<void*>(static_cast<const void*>(p)), rank));
  }
};
inline cluster_group this_cluster() { return {}; }
}  // namespace cooperative_groups
