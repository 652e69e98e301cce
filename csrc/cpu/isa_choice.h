// Which build of the CPU kernels a process runs (plastic_scan.cpp, detect_isa): the policy
// alone, without torch, so that tests/cpp/test_cpu_isa.cpp can check it for builds and CPUs
// other than the machine's own.
#pragma once

#include <cstring>

namespace torchplastic {
namespace cpu {

enum class Isa { Generic, Avx2, Avx512 };

// The instruction sets beyond the x86-64 baseline that a build holds, or that a CPU runs (the
// AVX-512 kernels are compiled with AVX2 and FMA as well, so a CPU "runs AVX-512" only with all
// four).
struct IsaSet {
  bool avx2 = false;
  bool avx512 = false;
};

// The widest instruction set that the build holds and the CPU runs, each looked at on its own:
// a build may hold AVX-512's kernels without AVX2's (TORCHPLASTIC_CPU_ISAS="generic;avx512").
// cap (TORCHPLASTIC_CPU_ISA, null when unset) lowers it: "generic", or "avx2", which takes the
// AVX2 kernels where AVX-512 was chosen and the build has them, else the generic ones.
inline Isa choose_isa(IsaSet built, IsaSet runs, const char* cap) {
  const bool avx512 = built.avx512 && runs.avx512;
  const bool avx2 = built.avx2 && runs.avx2;
  Isa best = avx512 ? Isa::Avx512 : avx2 ? Isa::Avx2 : Isa::Generic;
  if (cap && std::strcmp(cap, "generic") == 0) best = Isa::Generic;
  if (cap && std::strcmp(cap, "avx2") == 0 && best == Isa::Avx512)
    best = avx2 ? Isa::Avx2 : Isa::Generic;
  return best;
}

}  // namespace cpu
}  // namespace torchplastic
