// Which build of the CPU kernels a process runs (csrc/cpu/isa_choice.h, choose_isa), for builds
// and CPUs other than this machine's: every combination of the kernels built (generic always)
// and the instruction sets a CPU runs, with and without the TORCHPLASTIC_CPU_ISA cap.
#include <gtest/gtest.h>

#include "cpu/isa_choice.h"

namespace {

using torchplastic::cpu::choose_isa;
using torchplastic::cpu::Isa;
using torchplastic::cpu::IsaSet;

const IsaSet kAll{true, true}, kAvx2Only{true, false}, kAvx512Only{false, true}, kNone{};
const IsaSet kRunsAvx512{true, true}, kRunsAvx2{true, false}, kRunsBaseline{};

TEST(CpuIsa, WidestBuiltThatTheCpuRuns) {
  EXPECT_EQ(choose_isa(kAll, kRunsAvx512, nullptr), Isa::Avx512);
  EXPECT_EQ(choose_isa(kAll, kRunsAvx2, nullptr), Isa::Avx2);
  EXPECT_EQ(choose_isa(kAll, kRunsBaseline, nullptr), Isa::Generic);
  EXPECT_EQ(choose_isa(kAvx2Only, kRunsAvx512, nullptr), Isa::Avx2);
  EXPECT_EQ(choose_isa(kNone, kRunsAvx512, nullptr), Isa::Generic);
  EXPECT_EQ(choose_isa(kAvx512Only, kRunsAvx2, nullptr), Isa::Generic);
}

// make gpu-check builds generic and the machine's widest only; the choice once went through
// AVX2, so such a build ran the generic kernels on an AVX-512 CPU.
TEST(CpuIsa, Avx512WithoutAvx2Kernels) {
  EXPECT_EQ(choose_isa(kAvx512Only, kRunsAvx512, nullptr), Isa::Avx512);
  EXPECT_EQ(choose_isa(kAvx512Only, kRunsAvx512, "avx2"), Isa::Generic);
}

TEST(CpuIsa, CapLowersTheChoice) {
  EXPECT_EQ(choose_isa(kAll, kRunsAvx512, "avx2"), Isa::Avx2);
  EXPECT_EQ(choose_isa(kAll, kRunsAvx512, "generic"), Isa::Generic);
  EXPECT_EQ(choose_isa(kAll, kRunsAvx2, "generic"), Isa::Generic);
  // A cap never raises it, and an unknown one changes nothing.
  EXPECT_EQ(choose_isa(kAll, kRunsAvx2, "avx512"), Isa::Avx2);
  EXPECT_EQ(choose_isa(kAll, kRunsBaseline, "avx2"), Isa::Generic);
  EXPECT_EQ(choose_isa(kAll, kRunsAvx512, "sse2"), Isa::Avx512);
  EXPECT_EQ(choose_isa(kAll, kRunsAvx512, ""), Isa::Avx512);
}

}  // namespace
