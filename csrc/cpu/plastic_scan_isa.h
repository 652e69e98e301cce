// The CPU time loops, compiled once per instruction set and value type (forward_isa.cpp,
// backward_isa.cpp, the latter once per clipping too) and chosen at run time by plastic_scan.cpp.
#pragma once

#include <cstdint>

#include "cpu/workspace.h"
#include "kernels/plastic_step.h"

namespace torchplastic {
namespace cpu {
// The forward runs up to this many sequences in lockstep (forward.h, forward_group).
constexpr int kForwardGroup = 4;
// Rows per block of the forward's passes, and so at most per lstm_rows call.
constexpr int kRowBlock = 8;
// The plastic LSTM's backward runs up to this many sequences in lockstep, step by step
// (backward_sequence.h, backward_lstm_group), each with a workspace of its own.
constexpr int kLstmBackwardGroup = 4;
// The single steps of a batch with summed slabs (backward_sequence.h, batch_single_step_rows)
// go in blocks of at least this many rows, at most kSingleStepBlocks blocks: each block reads
// a run of rows of every sequence's trace and dL/dH, and runs much shorter than this left the
// prefetchers too little to follow; few blocks also leave few partial dL/dp to sum.
constexpr int64_t kSingleStepRows = 32;
constexpr int64_t kSingleStepBlocks = 16;
// Rows of fewer elements than this are short for a single step's passes: a call's setting up
// is a large share of a row's time (its backward takes them in pairs), and a sequence's run of
// a row block's rows is too short for the hardware prefetchers to follow from memory (its
// forward and backward ask for the rows they will write or read next: prefetch_lines). Longer
// rows gained from neither (docs/performance.md, "Single steps and rollouts").
constexpr int64_t kShortRow = 128;
// The instruction set whose kernels this process runs: "avx512", "avx2" or "generic".
const char* isa_name();
// The instruction sets whose kernels this build holds, comma-separated: "generic,avx2,avx512"
// unless CMake's TORCHPLASTIC_CPU_ISAS left some out.
const char* isas_built();
}  // namespace cpu
}  // namespace torchplastic

#define TORCHPLASTIC_DECLARE_CPU_ISA(isa)                                                     \
  namespace torchplastic {                                                                    \
  namespace cpu {                                                                             \
  namespace isa {                                                                             \
  template <typename T>                                                                       \
  void forward_range(const kernels::ScanParams<T>& P, int64_t begin, int64_t end, T* m);      \
  template <typename T, bool Clip>                                                            \
  void backward_range_of_clip(const kernels::ScanParams<T>& P,                                \
                              const kernels::ScanGradParams<T>& G, int64_t begin,             \
                              int64_t end, const BackwardWorkspace<T>* W);                    \
  template <typename T, bool Clip>                                                            \
  void batch_single_step_range_of_clip(const kernels::ScanParams<T>& P,                       \
                                       const kernels::ScanGradParams<T>& G, int64_t o0,       \
                                       int64_t o1, const BackwardWorkspace<T>& W, T* grad_p); \
  /* The backward of a call, from the object of its clipping (backward_isa.cpp). */           \
  template <typename T>                                                                       \
  void backward_range(const kernels::ScanParams<T>& P, const kernels::ScanGradParams<T>& G,   \
                      int64_t begin, int64_t end, const BackwardWorkspace<T>* W) {            \
    if (P.has_clip) backward_range_of_clip<T, true>(P, G, begin, end, W);                     \
    else backward_range_of_clip<T, false>(P, G, begin, end, W);                               \
  }                                                                                           \
  template <typename T>                                                                       \
  void batch_single_step_range(const kernels::ScanParams<T>& P,                               \
                               const kernels::ScanGradParams<T>& G, int64_t o0, int64_t o1,   \
                               const BackwardWorkspace<T>& W, T* grad_p) {                    \
    if (P.has_clip) batch_single_step_range_of_clip<T, true>(P, G, o0, o1, W, grad_p);        \
    else batch_single_step_range_of_clip<T, false>(P, G, o0, o1, W, grad_p);                  \
  }                                                                                           \
  }                                                                                           \
  }                                                                                           \
  }

TORCHPLASTIC_DECLARE_CPU_ISA(generic)
TORCHPLASTIC_DECLARE_CPU_ISA(avx2)
TORCHPLASTIC_DECLARE_CPU_ISA(avx512)
