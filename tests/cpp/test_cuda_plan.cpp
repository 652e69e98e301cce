// The CUDA planner's choice of cluster size (cuda/plan_policy.h, choose_cluster), against
// occupancy figures of a device made up as a GPU's are: clusters must fit within one GPC, so
// a device of 132 SMs in GPCs of 14–18 holds 30 clusters of 4, as the H200's driver reported
// (cudaOccupancyMaxActiveClusters), not 132 / 4 = 33. Needs no GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "cuda/plan_policy.h"

namespace {

using torchplastic::cuda::choose_cluster;

// One block per SM (a block of 512 threads at 128 registers fills one): clusters of C per GPC
// are its SMs / C.
struct Device {
  std::vector<int> gpcs;
  int max_cluster = 8;

  int sms() const {
    int n = 0;
    for (int g : gpcs) n += g;
    return n;
  }
  int64_t resident(int C) const {
    int64_t n = 0;
    for (int g : gpcs) n += g / C;
    return n;
  }
};

const Device kH200Like{{18, 18, 18, 18, 16, 16, 14, 14}};

// The cluster chosen for B sequences of O rows where clusters of at least `on_chip_from` blocks
// hold every matrix on chip (0: none does).
int chosen(const Device& d, int64_t B, int64_t O, int on_chip_from) {
  return choose_cluster(
      B, O, d.max_cluster, d.sms(), [&](int C) { return d.resident(C); },
      [&](int C) { return on_chip_from > 0 && C >= on_chip_from; });
}

TEST(CudaPlan, TheModelDeviceHoldsThirtyClustersOfFour) {
  EXPECT_EQ(kH200Like.sms(), 132);
  EXPECT_EQ(kH200Like.resident(4), 30);
  EXPECT_EQ(kH200Like.resident(3), 42);
}

// The benchmark's size (B=32, N=256 in float32: H, α and W on chip from 4 blocks): 32 clusters
// of 4 would run in two waves, so three blocks each, with W read from global memory, in one.
TEST(CudaPlan, OneWaveBeforeEverythingOnChip) {
  EXPECT_EQ(chosen(kH200Like, 32, 256, 4), 3);
  // 64 sequences: two blocks each is the largest cluster that runs them in one wave.
  EXPECT_EQ(chosen(kH200Like, 64, 256, 4), 2);
  // Where 4 blocks run them in one wave, 4, as before.
  EXPECT_EQ(chosen(kH200Like, 30, 256, 4), 4);
}

// Doubling to use idle SMs stops where it would add a wave: 16 clusters of 8 fit 128 SMs but
// only 14 are resident at once.
TEST(CudaPlan, GrowsOnlyWhileTheWavesStay) {
  EXPECT_EQ(kH200Like.resident(8), 14);
  EXPECT_EQ(chosen(kH200Like, 16, 256, 4), 4);
  EXPECT_EQ(chosen(kH200Like, 14, 256, 4), 8);
  EXPECT_EQ(chosen(kH200Like, 1, 256, 4), 8);
  // Small matrices fit one block; a few sequences still spread over 8 blocks each.
  EXPECT_EQ(chosen(kH200Like, 3, 37, 1), 8);
  // Not past one block per row.
  EXPECT_EQ(chosen(kH200Like, 3, 2, 1), 2);
}

// More sequences than any layout runs at once: the fewest waves, which here is one block each.
TEST(CudaPlan, ManySequencesTakeOneBlockEach) {
  EXPECT_EQ(chosen(kH200Like, 256, 256, 4), 1);
  EXPECT_EQ(chosen(kH200Like, 256, 64, 1), 1);
}

// Where no cluster keeps everything on chip (N=1024), the largest that keeps the waves fewest.
TEST(CudaPlan, NothingFitsTakesTheLargestCluster) {
  EXPECT_EQ(chosen(kH200Like, 1, 1024, 0), 8);
  EXPECT_EQ(chosen(kH200Like, 32, 1024, 0), 3);
}

// Cluster sizes the device cannot run (resident 0) are never chosen; where none runs, 1.
TEST(CudaPlan, SizesThatCannotRunAreSkipped) {
  auto only_up_to_4 = [](int C) -> int64_t { return C <= 4 ? 132 / C : 0; };
  auto everything_fits = [](int) { return true; };
  EXPECT_EQ(choose_cluster(1, 256, 8, 132, only_up_to_4, everything_fits), 4);
  auto nothing_runs = [](int) -> int64_t { return 0; };
  EXPECT_EQ(choose_cluster(1, 256, 8, 132, nothing_runs, everything_fits), 1);
}

// Before Hopper there are no clusters: one block per sequence.
TEST(CudaPlan, OneBlockWithoutClusters) {
  Device d = kH200Like;
  d.max_cluster = 1;
  EXPECT_EQ(chosen(d, 1, 256, 4), 1);
  EXPECT_EQ(chosen(d, 32, 256, 0), 1);
}

// The rule's promises over many made-up devices and sizes: a size that runs, no size with fewer
// waves, on chip whenever a size with as few waves is, and no cluster larger than O or the
// device allows.
TEST(CudaPlan, RandomDevicesKeepThePromises) {
  std::mt19937 rng(20261206);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  for (int trial = 0; trial < 20000; ++trial) {
    Device d;
    const int gpcs = uniform(1, 10);
    for (int g = 0; g < gpcs; ++g) d.gpcs.push_back(uniform(1, 20));
    d.max_cluster = uniform(1, 8);
    const int64_t B = uniform(1, 300), O = uniform(1, 1100);
    const int on_chip_from = uniform(0, 9);  // 9: never within 8
    const int C = chosen(d, B, O, on_chip_from);
    const int largest = static_cast<int>(std::min<int64_t>(O, d.max_cluster));
    auto waves = [&](int c) {
      const int64_t n = d.resident(c);
      return n > 0 ? (B + n - 1) / n : INT64_MAX;
    };
    auto fits = [&](int c) { return on_chip_from > 0 && c >= on_chip_from; };
    SCOPED_TRACE("trial " + std::to_string(trial) + ": B=" + std::to_string(B) +
                 " O=" + std::to_string(O) + " max_cluster=" + std::to_string(d.max_cluster) +
                 " on chip from " + std::to_string(on_chip_from) + ", chose " + std::to_string(C));
    ASSERT_GE(C, 1);
    ASSERT_LE(C, largest);
    int64_t fewest = INT64_MAX;
    bool fitting_with_fewest = false;
    for (int c = 1; c <= largest; ++c) fewest = std::min(fewest, waves(c));
    for (int c = 1; c <= largest; ++c) fitting_with_fewest |= waves(c) == fewest && fits(c);
    if (fewest == INT64_MAX) {
      ASSERT_EQ(C, 1);
      continue;
    }
    ASSERT_EQ(waves(C), fewest);
    if (fitting_with_fewest) {
      ASSERT_TRUE(fits(C));
    }
  }
}

}  // namespace
