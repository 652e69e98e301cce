// The emulated CUDA runtime (runtime.cpp) on small kernels: what a barrier orders and what its
// absence lets through, warp shuffles, clusters' shared memory, threads that exit early, and the
// failures it reports instead of hanging or passing silently: a barrier some threads never reach
// and a broken assumption about shared memory.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include <cooperative_groups.h>
#include <cuda_runtime.h>

namespace cg = cooperative_groups;

namespace {

struct Launch {
  cudaLaunchAttribute attr[1];
  cudaLaunchConfig_t cfg;
  Launch(unsigned blocks, unsigned threads, unsigned cluster = 1, size_t smem = 0) {
    cfg.gridDim = dim3(blocks);
    cfg.blockDim = dim3(threads);
    cfg.dynamicSmemBytes = smem;
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = cluster;
    attr[0].val.clusterDim.y = attr[0].val.clusterDim.z = 1;
    cfg.attrs = attr;
    cfg.numAttrs = cluster > 1 ? 1 : 0;
  }
};

// Thread 0 sums what every thread of its block stored in shared memory.
template <bool Barrier>
__global__ void block_sum(const float* in, float* out) {
  TORCHPLASTIC_DYNAMIC_SMEM(smem);
  float* s = reinterpret_cast<float*>(smem);
  s[threadIdx.x] = in[blockIdx.x * blockDim.x + threadIdx.x];
  if (Barrier) __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0;
    for (unsigned k = 0; k < blockDim.x; ++k) total += s[k];
    out[blockIdx.x] = total;
  }
}

TEST(CudaEmulation, BarrierOrdersSharedMemoryAcrossTheBlock) {
  const unsigned blocks = 3, threads = 64;
  std::vector<float> in(blocks * threads), out(blocks, -1.0f);
  for (size_t k = 0; k < in.size(); ++k) in[k] = static_cast<float>(k);
  Launch l(blocks, threads, 1, threads * sizeof(float));
  ASSERT_EQ(cudaLaunchKernelEx(&l.cfg, block_sum<true>, in.data(), out.data()), cudaSuccess);
  for (unsigned b = 0; b < blocks; ++b) {
    const float first = static_cast<float>(b * threads), last = first + threads - 1;
    EXPECT_EQ(out[b], (first + last) * threads / 2) << "block " << b;
  }
}

TEST(CudaEmulation, WithoutTheBarrierUnwrittenSharedMemoryShows) {
  // Thread 0 runs to its end before the others store (threads switch only at barriers), and
  // shared memory starts as NaN bytes: the sum of a block that forgot its barrier is NaN.
  std::vector<float> in(64, 1.0f), out(1, 0.0f);
  Launch l(1, 64, 1, 64 * sizeof(float));
  ASSERT_EQ(cudaLaunchKernelEx(&l.cfg, block_sum<false>, in.data(), out.data()), cudaSuccess);
  EXPECT_TRUE(std::isnan(out[0]));
}

__global__ void warp_sums(int* out) {
  int v = static_cast<int>(threadIdx.x);
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  out[threadIdx.x] = v;
}

TEST(CudaEmulation, ShufflesSumEachWarp) {
  std::vector<int> out(64, -1);
  Launch l(1, 64);
  ASSERT_EQ(cudaLaunchKernelEx(&l.cfg, warp_sums, out.data()), cudaSuccess);
  for (int t = 0; t < 64; ++t) EXPECT_EQ(out[t], t < 32 ? 496 : 32 * 32 + 496) << "thread " << t;
}

// Each lane takes the value of the lane `source` names (a broadcast from lane 5 of each warp,
// and each lane's next, around the warp).
__global__ void warp_broadcasts(int* out) {
  const int v = 100 + static_cast<int>(threadIdx.x);
  const unsigned lane = threadIdx.x & 31u;
  out[2 * threadIdx.x] = __shfl_sync(0xffffffffu, v, 5);
  out[2 * threadIdx.x + 1] = __shfl_sync(0xffffffffu, v, static_cast<int>((lane + 1) % 32));
}

TEST(CudaEmulation, ShufflesTakeTheNamedLane) {
  std::vector<int> out(128, -1);
  Launch l(1, 64);
  ASSERT_EQ(cudaLaunchKernelEx(&l.cfg, warp_broadcasts, out.data()), cudaSuccess);
  for (int t = 0; t < 64; ++t) {
    const int warp_base = 100 + t / 32 * 32;
    EXPECT_EQ(out[2 * t], warp_base + 5) << "thread " << t;
    EXPECT_EQ(out[2 * t + 1], warp_base + (t % 32 + 1) % 32) << "thread " << t;
  }
}

// Each block of a cluster writes its rank into the next block's shared memory; after the
// cluster's barrier every block reads what its predecessor wrote.
__global__ void ring(int* out, unsigned C) {
  TORCHPLASTIC_DYNAMIC_SMEM(smem);
  int* s = reinterpret_cast<int*>(smem);
  const auto cluster = cg::this_cluster();
  const unsigned rank = cluster.block_rank();
  if (threadIdx.x == 0) *cluster.map_shared_rank(s, (rank + 1) % C) = static_cast<int>(rank);
  cluster.sync();
  if (threadIdx.x == 0) out[blockIdx.x] = *s;
}

TEST(CudaEmulation, ClustersShareTheirBlocksSharedMemory) {
  std::vector<int> out(8, -1);
  Launch l(8, 32, 4, sizeof(int));
  ASSERT_EQ(cudaLaunchKernelEx(&l.cfg, ring, out.data(), 4u), cudaSuccess);
  for (int b = 0; b < 8; ++b) EXPECT_EQ(out[b], (b % 4 + 3) % 4) << "block " << b;
}

// Threads past the first two warps return at once: the barrier waits for the others only.
__global__ void early_exit(int* out) {
  if (threadIdx.x >= 64) return;
  TORCHPLASTIC_DYNAMIC_SMEM(smem);
  int* s = reinterpret_cast<int*>(smem);
  s[threadIdx.x] = 1;
  __syncthreads();
  if (threadIdx.x == 0) {
    int total = 0;
    for (int k = 0; k < 64; ++k) total += s[k];
    *out = total;
  }
}

TEST(CudaEmulation, ThreadsThatExitHoldNoBarrier) {
  int out = 0;
  Launch l(1, 256, 1, 64 * sizeof(int));
  ASSERT_EQ(cudaLaunchKernelEx(&l.cfg, early_exit, &out), cudaSuccess);
  EXPECT_EQ(out, 64);
}

// Lane 0 waits for its warp, whose other lanes wait for the block, lane 0 included.
__global__ void deadlock() {
  if (threadIdx.x == 0) __syncwarp();
  else __syncthreads();
}

TEST(CudaEmulation, ABarrierNeverReachedIsReportedNotHung) {
  Launch l(1, 64);
  const cudaError_t err = cudaLaunchKernelEx(&l.cfg, deadlock);
  EXPECT_NE(err, cudaSuccess);
  EXPECT_NE(std::string(cudaGetErrorString(err)).find("deadlocked"), std::string::npos)
      << cudaGetErrorString(err);
}

// A pointer the kernel promises is into shared memory: its own block's, or a global one.
__global__ void assumes_shared(const float* global) {
  TORCHPLASTIC_DYNAMIC_SMEM(smem);
  __builtin_assume(__isShared(global ? global : reinterpret_cast<const float*>(smem)));
}

TEST(CudaEmulation, ABrokenAssumptionFailsTheLaunch) {
  Launch l(1, 32, 1, sizeof(float));
  EXPECT_EQ(cudaLaunchKernelEx(&l.cfg, assumes_shared, static_cast<const float*>(nullptr)),
            cudaSuccess);
  const float global = 0;
  const cudaError_t err = cudaLaunchKernelEx(&l.cfg, assumes_shared, &global);
  EXPECT_NE(err, cudaSuccess);
  EXPECT_NE(std::string(cudaGetErrorString(err)).find("assumption broken"), std::string::npos)
      << cudaGetErrorString(err);
}

// Thread 0 reads what thread 31 stores, with (Barrier) or without a barrier between.
template <bool Barrier>
__global__ void read_across(int* out) {
  TORCHPLASTIC_DYNAMIC_SMEM(smem);
  int* s = reinterpret_cast<int*>(smem);
  s[threadIdx.x] = static_cast<int>(threadIdx.x);
  if (Barrier) __syncthreads();
  if (threadIdx.x == 0) *out = s[31];
}

// The result of a launch of `kernel` with the threads' order shuffled by `seed` (0: in order).
template <typename Kernel>
int with_schedule(Kernel kernel, int seed) {
  setenv("TORCHPLASTIC_EMULATION_SCHEDULE", std::to_string(seed).c_str(), 1);
  int out = 0;
  Launch l(1, 64, 1, 64 * sizeof(int));
  const cudaError_t err = cudaLaunchKernelEx(&l.cfg, kernel, &out);
  unsetenv("TORCHPLASTIC_EMULATION_SCHEDULE");
  EXPECT_EQ(err, cudaSuccess);
  return out;
}

TEST(CudaEmulation, ShuffledSchedulesExposeARace) {
  // In order, thread 0 reads before thread 31 has stored (the NaN bytes: -1); shuffled, some
  // schedule runs thread 31 first.
  EXPECT_EQ(with_schedule(read_across<false>, 0), -1);
  bool differs = false;
  for (int seed = 1; seed <= 20 && !differs; ++seed)
    differs = with_schedule(read_across<false>, seed) != -1;
  EXPECT_TRUE(differs);
  for (int seed = 0; seed <= 20; ++seed)
    EXPECT_EQ(with_schedule(read_across<true>, seed), 31) << "seed " << seed;
}

}  // namespace
