// CPU registration of plastic_scan: sequences in parallel, the time loop of each inside
// (csrc/cpu/forward_isa.cpp and backward_isa.cpp, built per instruction set and chosen here at
// run time), everything else shared with CUDA (csrc/ops/scan.h).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

#include <unistd.h>

#include "cpu/isa_choice.h"
#include "cpu/memory.h"
#include "cpu/plastic_scan_isa.h"
#include "ops/scan.h"

namespace torchplastic {
namespace cpu {
namespace {

using kernels::ScanGradParams;
using kernels::ScanParams;

// Which instruction sets' kernels this build has (CMake's TORCHPLASTIC_CPU_ISAS; generic
// always). A build from elsewhere than CMake has all three.
#ifndef TORCHPLASTIC_CPU_BUILT_AVX2
#define TORCHPLASTIC_CPU_BUILT_AVX2 1
#endif
#ifndef TORCHPLASTIC_CPU_BUILT_AVX512
#define TORCHPLASTIC_CPU_BUILT_AVX512 1
#endif

IsaSet built_isas() {
  IsaSet built;
  built.avx2 = TORCHPLASTIC_CPU_BUILT_AVX2;
  built.avx512 = TORCHPLASTIC_CPU_BUILT_AVX512;
  return built;
}

// The widest instruction set this CPU runs and this build has (isa_choice.h);
// TORCHPLASTIC_CPU_ISA=generic|avx2 caps it.
Isa detect_isa() {
  __builtin_cpu_init();
  IsaSet runs;
  runs.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  runs.avx512 =
      runs.avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
  return choose_isa(built_isas(), runs, std::getenv("TORCHPLASTIC_CPU_ISA"));
}

Isa cpu_isa() {
  static const Isa isa = detect_isa();
  return isa;
}

// The time loops of one instruction set (plastic_scan_isa.h).
template <typename T>
struct IsaKernels {
  void (*forward_range)(const ScanParams<T>&, int64_t, int64_t, T*);
  void (*backward_range)(const ScanParams<T>&, const ScanGradParams<T>&, int64_t, int64_t,
                         const BackwardWorkspace<T>*);
  void (*batch_single_step_range)(const ScanParams<T>&, const ScanGradParams<T>&, int64_t,
                                  int64_t, const BackwardWorkspace<T>&, T*);
};

// Those of cpu_isa(), the one place that names each instruction set's kernels.
template <typename T>
const IsaKernels<T>& kernels_of_isa() {
  static const IsaKernels<T> chosen = [] {
    switch (cpu_isa()) {
#if TORCHPLASTIC_CPU_BUILT_AVX512
      case Isa::Avx512:
        return IsaKernels<T>{&avx512::forward_range<T>, &avx512::backward_range<T>,
                             &avx512::batch_single_step_range<T>};
#endif
#if TORCHPLASTIC_CPU_BUILT_AVX2
      case Isa::Avx2:
        return IsaKernels<T>{&avx2::forward_range<T>, &avx2::backward_range<T>,
                             &avx2::batch_single_step_range<T>};
#endif
      default:
        return IsaKernels<T>{&generic::forward_range<T>, &generic::backward_range<T>,
                             &generic::batch_single_step_range<T>};
    }
  }();
  return chosen;
}

// Runs worker(next) on each of torch's intra-op threads (as many as there are units, at
// most); next() hands out units 0 .. n − 1 one at a time and then −1. On a shared machine one
// thread can fall behind the other, and with a static split the rest wait for it at the end;
// taken one by one, the units even out. A unit's results never depend on the thread that runs
// it, so neither do the op's.
template <typename Worker>
void run_units(int64_t n, const Worker& worker) {
  std::atomic<int64_t> next_unit{0};
  auto next = [&] {
    const int64_t u = next_unit.fetch_add(1, std::memory_order_relaxed);
    return u < n ? u : int64_t(-1);
  };
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n));
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) { worker(next); });
}

// The size of one core's L2 cache in bytes, or 0 where the C library does not tell.
int64_t l2_bytes() {
  static const int64_t bytes = [] {
#ifdef _SC_LEVEL2_CACHE_SIZE
    const long n = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return n > 0 ? static_cast<int64_t>(n) : int64_t(0);
#else
    return int64_t(0);
#endif
  }();
  return bytes;
}

// How many sequences the forward runs in lockstep (forward_group, csrc/cpu/forward.h), at most
// kForwardGroup. In lockstep each row block of α and W (and of η, A–D per connection) read from
// L2 serves the whole group, but the group's traces take turns in the caches step by step.
// Across the steps of a sequence each trace is read again, so a group pays only while its traces
// fit in L2 beside those shared rows: the largest group that does, else one sequence at a time,
// whose smaller working set measured faster where not even one sequence fits
// (docs/performance.md, "A third machine"). A single step reads each trace once whatever the
// grouping, and the plastic LSTM's group also shares its gate products' reads of W_ifo: both keep
// kForwardGroup, as does a machine whose C library does not tell its L2.
template <typename T>
int64_t forward_group(const ScanParams<T>& P) {
  const int64_t l2 = l2_bytes();
  if (P.T <= 1 || P.lstm || l2 == 0) return kForwardGroup;
  const auto traits = kernels::traits(P.rule);
  const int64_t matrix = static_cast<int64_t>(sizeof(T)) * P.O * P.I;
  const int64_t per_sequence = (traits.eligibility ? 2 : 1) * matrix;
  const int64_t shared = (1 + (P.recurrent ? 1 : 0) + (P.eta_per_connection ? 1 : 0) +
                          (traits.coefficients ? 4 : 0)) *
                         matrix;
  for (int64_t group = kForwardGroup; group > 1; group /= 2)
    if (group * per_sequence + shared <= l2) return group;
  return 1;
}

template <typename T>
void forward(const ScanParams<T>& P) {
  // Units of up to forward_group(P) sequences, which the kernel runs in lockstep; smaller ones
  // when there are few sequences per thread, so that every thread gets some.
  const int64_t threads = at::get_num_threads();
  const int64_t group = std::max<int64_t>(
      1, std::min<int64_t>(forward_group(P), (P.B + 2 * threads - 1) / (2 * threads)));
  run_units((P.B + group - 1) / group, [&](const auto& next) {
    std::vector<T> m(P.O);
    for (int64_t u = next(); u >= 0; u = next()) {
      const int64_t begin = u * group, end = std::min(P.B, begin + group);
      kernels_of_isa<T>().forward_range(P, begin, end, m.data());
    }
  });
}

// One backward worker's scratch for these parameters: its size in elements, and its arrays
// laid out in `memory`, which holds that many.
template <typename T>
int64_t workspace_size(const ScanParams<T>& P) {
  return BackwardWorkspace<T>::size(P.checkpoint_every, P.O, P.I,
                                    kernels::traits(P.rule).eligibility, P.has_scaling);
}
template <typename T>
BackwardWorkspace<T> workspace_in(const ScanParams<T>& P, T* memory) {
  return BackwardWorkspace<T>::carve(memory, P.checkpoint_every, P.O, P.I,
                                     kernels::traits(P.rule).eligibility, P.has_scaling);
}

// How many sequences the plastic LSTM's backward runs in lockstep (backward_lstm_group). In
// lockstep one read of W_ifo (3H × H) per step serves the whole group, but the group's working
// sets take turns in L2 step by step. Where one sequence's working set fits in L2 and
// kLstmBackwardGroup of them do not, one sequence at a time keeps it there, and that pays more
// than the shared reads of W_ifo (docs/performance.md, the plastic LSTM); otherwise, whether
// all of a group fits or not even one does, the group goes in lockstep. `workspace`: elements
// of one sequence's BackwardWorkspace.
template <typename T>
int64_t lstm_backward_group(const ScanParams<T>& P, int64_t workspace) {
  const auto traits = kernels::traits(P.rule);
  // Besides its workspace, a sequence's backward sweeps per step α, W_hh's g rows, its dL/dα
  // slab and its checkpoint of H, each [O, I]; then E's checkpoint, η and its slab when per
  // connection, A–D and their slabs.
  const int64_t per_connection = 4 + (traits.eligibility ? 1 : 0) +
                                 (P.eta_per_connection ? 2 : 0) +
                                 (traits.coefficients ? 8 : 0);
  const int64_t bytes =
      static_cast<int64_t>(sizeof(T)) * (workspace + per_connection * P.O * P.I);
  const int64_t l2 = l2_bytes();
  const bool one_fits = l2 > 0 && bytes <= l2, group_fits = kLstmBackwardGroup * bytes <= l2;
  return one_fits && !group_fits ? 1 : kLstmBackwardGroup;
}

// The single steps of a batch whose dL/dα (dL/dη, dL/dA–D) the kernels sum into one slab
// (G.slabs_summed): units of row blocks, fixed by O alone, each running every sequence over its
// rows (batch_single_step_rows); then each sequence's dL/dp_0, summed over the blocks in
// order.
template <typename T>
void batch_single_step(const ScanParams<T>& P, const ScanGradParams<T>& G) {
  TORCH_INTERNAL_ASSERT(P.T == 1 && !P.lengths && !P.internal_modulation() && !P.lstm &&
                            !P.has_scaling,
                        "plastic_scan_backward: summed slabs outside a batch of single steps");
  // Blocks of at least kSingleStepRows rows, a power of two of them, so that they split evenly
  // over two or four threads, and at most kSingleStepBlocks.
  int64_t blocks = 1;
  while (2 * blocks <= kSingleStepBlocks && 2 * blocks * kSingleStepRows <= P.O) blocks *= 2;
  const int64_t rows = (P.O + blocks - 1) / blocks;
  const int64_t Ip = P.recurrent ? P.O : P.I;  // dL/dp_0 per sequence
  // Every element is written by its block (uninitialised: a zeroing pass would cost a trip
  // through memory at large O).
  std::unique_ptr<T[]> partial(new T[blocks * P.B * Ip]);
  run_units(blocks, [&](const auto& next) {
    std::vector<T> memory(workspace_size(P));
    const BackwardWorkspace<T> W = workspace_in(P, memory.data());
    for (int64_t u = next(); u >= 0; u = next()) {
      const int64_t o0 = u * rows, o1 = std::min(P.O, o0 + rows);
      kernels_of_isa<T>().batch_single_step_range(P, G, o0, o1, W,
                                                  partial.get() + u * P.B * Ip);
    }
  });
  T* grad_p = P.recurrent ? G.grad_hidden0 : G.grad_x;
  at::parallel_for(0, P.B * Ip, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      T sum = partial[j];
      for (int64_t u = 1; u < blocks; ++u) sum += partial[u * P.B * Ip + j];
      grad_p[j] = sum;
    }
  });
}

template <typename T>
void backward(const ScanParams<T>& P, const ScanGradParams<T>& G) {
  if (G.slabs_summed) return batch_single_step(P, G);
  const int64_t size = workspace_size(P);
  // Units of one sequence; for the plastic LSTM, of up to lstm_backward_group, which the kernel
  // runs in lockstep (smaller ones when there are few sequences per thread, as the forward's).
  const int64_t threads = at::get_num_threads();
  const int64_t group = !P.lstm ? 1
                                : std::max<int64_t>(1, std::min<int64_t>(
                                                           lstm_backward_group(P, size),
                                                           (P.B + 2 * threads - 1) / (2 * threads)));
  run_units((P.B + group - 1) / group, [&](const auto& next) {
    std::vector<T> memory(group * size);
    std::vector<BackwardWorkspace<T>> W;
    for (int64_t s = 0; s < group; ++s) W.push_back(workspace_in(P, memory.data() + s * size));
    for (int64_t u = next(); u >= 0; u = next()) {
      const int64_t begin = u * group, end = std::min(P.B, begin + group);
      kernels_of_isa<T>().backward_range(P, G, begin, end, W.data());
    }
  });
}

}  // namespace

const char* isa_name() {
  switch (cpu_isa()) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    default: return "generic";
  }
}

const char* isas_built() {
  const IsaSet built = built_isas();
  if (built.avx2 && built.avx512) return "generic,avx2,avx512";
  if (built.avx2) return "generic,avx2";
  if (built.avx512) return "generic,avx512";
  return "generic";
}

const detail::ScanBackend backend{&forward<float>,  &forward<double>, &backward<float>,
                                  &backward<double>, &empty_buffer,    &read_only_zeros,
                                  /*zeroes_grad_slabs=*/true, /*sums_single_step_slabs=*/true};

}  // namespace cpu
}  // namespace torchplastic

TORCH_LIBRARY_IMPL(torchplastic, CPU, m) {
  torchplastic::detail::ScanKernels<torchplastic::cpu::backend>::register_ops(m);
}
