// How many blocks the CUDA kernels give each sequence (plan.cu, make_plan): the policy alone,
// without CUDA or torch, so that tests/cpp/test_cuda_plan.cpp can check it against a device's
// occupancy figures on a machine without a GPU.
#pragma once

#include <cstdint>
#include <functional>

namespace torchplastic {
namespace cuda {

// The cluster size C (1 ≤ C ≤ min(max_cluster, O)) for B sequences of O rows, given
//   resident(C): how many clusters of C blocks the device holds at once (for C = 1, blocks;
//                0 where a cluster of C cannot run at all), and
//   on_chip(C):  whether clusters of C keep all of a sequence's matrices in shared memory.
// In this order:
//   1. As few waves, ⌈B / resident(C)⌉, as any C allows. A sequence that does not fit the first
//      wave starts when a cluster of it ends, so a second wave doubles the time, more than a
//      smaller cluster costs by reading some matrices from global memory (L2) instead. Counting
//      SMs is not enough: a cluster's blocks must share a GPC, so fewer clusters fit than SMs /
//      C (docs/performance.md, "One wave of clusters").
//   2. Among those, the smallest C that keeps everything on chip, or, where none does, the
//      largest (the most on chip).
//   3. Then C doubled while the SMs would otherwise idle (B·2C ≤ sms), 2C ≤ O and the waves
//      stay as few: more blocks per sequence, fewer rows each.
// Where no C runs at all (resident 0 for every C), 1: the launch then reports the driver's
// error.
inline int choose_cluster(int64_t B, int64_t O, int max_cluster, int sms,
                          const std::function<int64_t(int)>& resident,
                          const std::function<bool(int)>& on_chip) {
  constexpr int kMost = 16;  // the largest cluster any device allows (non-portable sizes)
  const int64_t cap = max_cluster < kMost ? max_cluster : kMost;
  const int largest = static_cast<int>(O < cap ? (O < 1 ? 1 : O) : cap);
  int64_t waves[kMost + 1];
  bool fits[kMost + 1];
  int64_t fewest = INT64_MAX;
  for (int C = 1; C <= largest; ++C) {  // each asked once
    const int64_t n = resident(C);
    waves[C] = n > 0 ? (B + n - 1) / n : INT64_MAX;
    fits[C] = on_chip(C);
    fewest = waves[C] < fewest ? waves[C] : fewest;
  }
  if (fewest == INT64_MAX) return 1;
  int chosen = 0;
  for (int C = 1; C <= largest && !chosen; ++C)
    if (waves[C] == fewest && fits[C]) chosen = C;
  for (int C = largest; C >= 1 && !chosen; --C)
    if (waves[C] == fewest) chosen = C;
  while (2 * chosen <= largest && B * 2 * chosen <= sms && waves[2 * chosen] == fewest)
    chosen *= 2;
  return chosen;
}

}  // namespace cuda
}  // namespace torchplastic
