// Launchers of the CUDA plastic_scan kernels (cuda/*.cu). Torch-free, so the .cu files
// compile without torch headers; cuda/plastic_scan_cuda.cpp calls these with memory from the
// caching allocator and the current stream.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/plastic_step.h"

namespace torchplastic {
namespace cuda {

// How one launch is laid out: a cluster of `cluster` thread blocks per sequence, each owning
// `rows` postsynaptic rows, and which [rows, I] matrices live in shared memory ("on chip")
// rather than global memory. Chosen by plan_forward / plan_backward from the sizes and the
// device; every layout computes the same result.
struct Plan {
  int cluster = 1;
  int rows = 0;
  bool trace = false, elig = false, alpha = false, weight = false;     // H, E, α, W
  bool grad_trace = false, grad_elig = false, grad_alpha = false;      // backward accumulators
  bool partials = false;   // per-warp partial sums of dL/dp (backward)
  // The kernels' loops as they were before the forward's shared-memory copies, row pairs,
  // chunked loads (row_chunks, common.cuh) and staging of the next step's z ahead, and before
  // the backward's prefetches (prefetch_row): a baseline for the benchmark
  // (TORCHPLASTIC_CUDA_PLAIN_LOOPS=1), the same results.
  bool plain_loops = false;
  // The backward asks for each warp's next row in global memory into L1 while it works on the
  // current one (prefetch_row in common.cuh): where a row is at most 1 KB (at N=1024 off chip,
  // rows of 4 KB, 16 warps' rows ahead would evict one another), and not with plain_loops.
  bool prefetch_rows = false;
  // Test hooks for the benchmark's comparison (cuda/plan.cu): the prefetches go to L2 instead
  // of L1 (TORCHPLASTIC_CUDA_PREFETCH_L2=1), and `prefetch_ahead` rows ahead of each warp's
  // current one (TORCHPLASTIC_CUDA_PREFETCH_AHEAD=1..4). Where shared memory takes most of an
  // SM's 256 KiB, L1 is left with less than 16 warps' rows of the arrays prefetched: at the
  // benchmark's size (B=32, N=256, clusters of 3) 196 KiB of shared memory leave about 28 KiB,
  // against 48 KB of rows ahead (H_{t-1}, α and W) and as many being worked on.
  bool prefetch_to_l2 = false;
  int prefetch_ahead = 1;
  // The forward keeps each warp's rows of H (and E) in registers for all T steps, α and W in
  // shared memory (cuda/forward_registers.cu): float, rows of at most kRegisterColumns · 32
  // elements, at most register_rows_per_warp rows per warp, outside the LSTM and recording.
  // `trace` and `elig` are then false: neither takes shared memory.
  bool registers = false;
  size_t smem_bytes = 0;
};

// The register forward's shape: blocks of kRegisterThreads threads (half the other kernels'
// 512, so that a thread may take up to 255 registers instead of 128); each lane holds
// kRegisterColumns elements of each of its warp's rows (elements lane, lane + 32, ...), so rows
// of up to 256 elements; a warp holds up to 12 rows of H (6 of H and 6 of E for rules with an
// eligibility trace), 96 registers per lane: up to 96 (48) rows per block.
constexpr int kRegisterThreads = 256;
constexpr int kRegisterColumns = 8;
constexpr int register_rows_per_warp(bool eligibility) { return eligibility ? 6 : 12; }
constexpr int register_rows_per_block(bool eligibility) {
  return kRegisterThreads / 32 * register_rows_per_warp(eligibility);
}

template <typename T>
Plan plan_forward(const kernels::ScanParams<T>& P, int device);
template <typename T>
Plan plan_backward(const kernels::ScanParams<T>& P, int device);

// Elements of type T of global scratch the backward needs: the recomputed segment traces
// [B, K, O, I] (twice for rule retroactive) plus any matrix the plan keeps off chip.
template <typename T>
int64_t backward_scratch_elems(const kernels::ScanParams<T>& P, const Plan& plan);

// Forward: writes P.y, P.trace, P.elig, P.theta and, when P.trace_ckpt is set, the checkpoints.
template <typename T>
void launch_forward(const kernels::ScanParams<T>& P, const Plan& plan, cudaStream_t stream);

// Backward: G.grad_alpha and G.grad_eta must be zeroed; scratch holds backward_scratch_elems.
template <typename T>
void launch_backward(const kernels::ScanParams<T>& P, const kernels::ScanGradParams<T>& G,
                     const Plan& plan, T* scratch, cudaStream_t stream);

}  // namespace cuda
}  // namespace torchplastic
