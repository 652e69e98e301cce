// Planning of the CUDA plastic_scan kernels: the cluster size, which matrices stay on chip, and
// the backward's global scratch, from the sizes and the device (plastic_scan_cuda.h).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "cuda/common.cuh"
#include "cuda/plan_policy.h"

namespace torchplastic {
namespace cuda {
namespace {

// How many clusters of this plan can be resident on the device at once (0: none, and the
// driver refuses the launch); for one-block clusters, blocks. Rules share block size and
// shared memory, so the hebb kernel stands in.
template <typename T>
int resident_clusters(const Plan& L, bool backward, int sms) {
  const void* kernel = backward ? backward_kernel_for_occupancy<T>()
                                : forward_kernel_for_occupancy<T>(L.registers);
  std::lock_guard<std::mutex> lock(kernel_attribute_mutex());  // see launch (common.cuh)
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(L.smem_bytes)) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  int n = 0;
  if (L.cluster <= 1) {
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, block_threads(L),
                                                      L.smem_bytes) !=
        cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return n * sms;
  }
  cudaLaunchAttribute attr[1];
  cudaLaunchConfig_t cfg = launch_config(L, L.cluster, nullptr, attr);
  if (cudaOccupancyMaxActiveClusters(&n, kernel, &cfg) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

// resident_clusters, asked of the driver once per layout (direction, value type, cluster size,
// shared memory) and device: the planner weighs every cluster size at each call.
template <typename T>
int resident_clusters_cached(const Plan& L, bool backward, int device, int sms) {
  using Key = std::tuple<int, bool, bool, int, size_t>;
  static std::mutex mutex;
  static std::map<Key, int> cache;
  const Key key{device, backward, L.registers, L.cluster, L.smem_bytes};
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  const int n = resident_clusters<T>(L, backward, sms);
  std::lock_guard<std::mutex> lock(mutex);
  cache.emplace(key, n);
  return n;
}

struct Device {
  int sms = 1, major = 0;
  size_t smem_optin = 48 << 10;
};

Device query_device(int device) {
  Device d;
  int v = 0;
  check_cuda(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, device), "device query");
  check_cuda(cudaDeviceGetAttribute(&d.major, cudaDevAttrComputeCapabilityMajor, device), "device query");
  check_cuda(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, device), "device query");
  d.smem_optin = static_cast<size_t>(v);
  return d;
}

// Device attributes, queried once per device.
Device device_info(int device) {
  static std::mutex mutex;
  static std::map<int, Device> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(device);
  if (it == cache.end()) it = cache.emplace(device, query_device(device)).first;
  return it->second;
}

// Whether environment variable `name` is set to a non-zero number.
bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  return v && std::atoi(v) != 0;
}

// Test hooks: TORCHPLASTIC_CUDA_CLUSTER=1..8 forces the cluster size (sizes that are no power
// of two too, which split the rows unevenly),
// TORCHPLASTIC_CUDA_OFF_CHIP=1 keeps every matrix in global memory (the streaming fallback),
// TORCHPLASTIC_CUDA_PLAIN_LOOPS=1 sets Plan::plain_loops (the benchmark's baseline for
// the kernels' loops), and TORCHPLASTIC_CUDA_NO_REGISTERS=1 keeps the forward's trace in shared
// memory where it would be held in registers (Plan::registers; the tests of the shared-memory
// loops, and the benchmark's comparison), TORCHPLASTIC_CUDA_PREFETCH_L2=1 and
// TORCHPLASTIC_CUDA_PREFETCH_AHEAD=1..4 send the backward's prefetches to L2 and that many rows
// ahead (Plan::prefetch_to_l2, prefetch_ahead; the benchmark's comparison).
int forced_cluster() {
  const char* v = std::getenv("TORCHPLASTIC_CUDA_CLUSTER");
  return v ? std::atoi(v) : 0;
}
int forced_prefetch_ahead() {
  const char* v = std::getenv("TORCHPLASTIC_CUDA_PREFETCH_AHEAD");
  const int rows = v ? std::atoi(v) : 1;
  return rows >= 1 && rows <= 4 ? rows : 1;
}

// TORCHPLASTIC_CUDA_PLAN_LOG=1 prints each plan to stderr when it differs from the last one
// of its direction printed: what a benchmark measured, and whether all its clusters were
// resident at once.
template <typename T>
void log_plan(const Plan& L, const ScanParams<T>& P, bool backward, int sms) {
  if (!env_flag("TORCHPLASTIC_CUDA_PLAN_LOG")) return;
  std::ostringstream line;
  line << "plastic_scan (CUDA) " << (backward ? "backward" : "forward") << " plan: B=" << P.B
       << " O=" << P.O << " I=" << P.I << ": cluster " << L.cluster << ", " << L.rows
       << " rows per block, on chip:";
  const std::pair<bool, const char*> parts[] = {
      {L.trace, "H"}, {L.elig, "E"}, {L.alpha, "alpha"}, {L.weight, "W"},
      {L.registers, "H in registers"},
      {L.registers && kernels::traits(P.rule).eligibility, "E in registers"},
      {L.grad_trace, "dL/dH"}, {L.grad_elig, "dL/dE"}, {L.grad_alpha, "dL/dalpha"},
      {L.partials, "dL/dp partials"}};
  for (const auto& [on, name] : parts)
    if (on) line << ' ' << name;
  if (L.plain_loops) line << "; plain loops";
  if (L.prefetch_rows)
    line << "; rows prefetched into " << (L.prefetch_to_l2 ? "L2" : "L1") << ", "
         << L.prefetch_ahead << " ahead";
  line << "; " << L.smem_bytes << " B of shared memory per block; "
       << resident_clusters<T>(L, backward, sms) << " clusters resident at once, " << P.B
       << " launched";
  static std::mutex mutex;
  static std::string last[2];  // forward's, backward's
  std::lock_guard<std::mutex> lock(mutex);
  std::string& previous = last[backward ? 1 : 0];
  if (line.str() == previous) return;
  previous = line.str();
  std::fprintf(stderr, "%s\n", previous.c_str());
}

// Puts the optional buffers on chip in priority order while they fit.
template <typename T>
size_t place(Plan& L, const ScanParams<T>& P, bool backward, size_t budget) {
  auto smem_of = [&](Plan& q) {
    return backward ? BackwardSmem<T>(nullptr, P, q).total * sizeof(T)
                    : ForwardSmem<T>(nullptr, P, q).total * sizeof(T);
  };
  const bool retro = kernels::traits(P.rule).eligibility;
  bool* order_fwd[] = {&L.trace, &L.alpha, &L.elig, &L.weight};
  bool* order_bwd[] = {&L.partials, &L.grad_trace, &L.grad_alpha, &L.alpha, &L.grad_elig, &L.weight};
  auto wanted = [&](bool* flag) {
    if (L.registers && (flag == &L.trace || flag == &L.elig)) return false;  // in registers
    if (flag == &L.elig || flag == &L.grad_elig) return retro;
    if (flag == &L.weight) return P.recurrent;
    return true;
  };
  auto try_flag = [&](bool* flag) {
    if (!wanted(flag)) return;
    *flag = true;
    if (smem_of(L) > budget) *flag = false;
  };
  if (backward)
    for (bool* f : order_bwd) try_flag(f);
  else
    for (bool* f : order_fwd) try_flag(f);
  return smem_of(L);
}

template <typename T>
bool all_on_chip(const Plan& L, const ScanParams<T>& P, bool backward) {
  const bool retro = kernels::traits(P.rule).eligibility;
  if (backward)
    return L.partials && L.grad_trace && L.grad_alpha && L.alpha && (!retro || L.grad_elig) &&
           (!P.recurrent || L.weight);
  return (L.registers || (L.trace && (!retro || L.elig))) && L.alpha &&
         (!P.recurrent || L.weight);
}

template <typename T>
Plan make_plan(const ScanParams<T>& P, int device, bool backward) {
  const Device d = device_info(device);
  const size_t budget = d.smem_optin;
  const int max_cluster = d.major >= 9 ? kMaxCluster : 1;
  const size_t needed = backward ? BackwardSmem<T>(nullptr, P, Plan{}).total * sizeof(T)
                                 : ForwardSmem<T>(nullptr, P, Plan{}).total * sizeof(T);
  if (needed > budget) {
    std::ostringstream msg;
    msg << "plastic_scan (CUDA): sizes O=" << P.O << ", I=" << P.I << " need " << needed
        << " bytes of shared memory per block for their vectors; this device allows " << budget;
    throw std::runtime_error(msg.str());
  }
  const bool off_chip = env_flag("TORCHPLASTIC_CUDA_OFF_CHIP");
  const bool plain_loops = env_flag("TORCHPLASTIC_CUDA_PLAIN_LOOPS");
  const bool prefetch_to_l2 = env_flag("TORCHPLASTIC_CUDA_PREFETCH_L2");
  const int prefetch_ahead = forced_prefetch_ahead();
  // The register forward (Plan::registers) wherever its shape holds the block's rows and α
  // and W fit in shared memory; not in the baselines (plain loops, off chip).
  const bool registers_allowed = !backward && std::is_same_v<T, float> && !P.lstm &&
                                 !P.record_norm && !P.record_trace && !off_chip && !plain_loops &&
                                 !env_flag("TORCHPLASTIC_CUDA_NO_REGISTERS") &&
                                 P.I <= 32 * kRegisterColumns;
  const int register_rows = register_rows_per_block(kernels::traits(P.rule).eligibility);
  auto plan_for = [&](int C) {
    Plan L;
    L.cluster = C;
    L.rows = static_cast<int>((P.O + C - 1) / C);
    if (registers_allowed && L.rows <= register_rows) {
      Plan R = L;
      R.registers = true;
      R.smem_bytes = place(R, P, backward, budget);
      if (R.alpha && (!P.recurrent || R.weight)) return R;
    }
    L.smem_bytes = place(L, P, backward, off_chip ? 0 : budget);  // budget 0: nothing fits
    L.plain_loops = plain_loops;
    L.prefetch_rows = backward && !plain_loops && P.I * static_cast<int64_t>(sizeof(T)) <= 1024;
    L.prefetch_to_l2 = L.prefetch_rows && prefetch_to_l2;
    L.prefetch_ahead = L.prefetch_rows ? prefetch_ahead : 1;
    return L;
  };
  const int forced = forced_cluster();
  if (forced >= 1 && forced <= max_cluster) {
    const Plan L = plan_for(forced);
    log_plan(L, P, backward, d.sms);
    return L;
  }
  // Each cluster size's layout: choose_cluster (cuda/plan_policy.h) weighs them all.
  Plan layouts[kMaxCluster + 1];
  for (int c = 1; c <= max_cluster; ++c) layouts[c] = plan_for(c);
  const int C = choose_cluster(
      P.B, P.O, max_cluster, d.sms,
      [&](int c) -> int64_t {
        return resident_clusters_cached<T>(layouts[c], backward, device, d.sms);
      },
      [&](int c) { return all_on_chip(layouts[c], P, backward); });
  const Plan best = layouts[C];
  log_plan(best, P, backward, d.sms);
  return best;
}

}  // namespace

std::mutex& kernel_attribute_mutex() {
  static std::mutex mutex;
  return mutex;
}

template <typename T>
Plan plan_forward(const ScanParams<T>& P, int device) {
  return make_plan(P, device, false);
}
template <typename T>
Plan plan_backward(const ScanParams<T>& P, int device) {
  return make_plan(P, device, true);
}

template <typename T>
int64_t backward_scratch_elems(const ScanParams<T>& P, const Plan& L) {
  const bool retro = kernels::traits(P.rule).eligibility;
  const int64_t OI = P.O * P.I;
  int64_t n = (retro ? 2 : 1) * P.B * P.checkpoint_every * OI;
  if (!L.partials) n += P.B * L.cluster * static_cast<int64_t>(kWarps) * P.I;
  if (!L.grad_trace) n += P.B * OI;
  if (retro && !L.grad_elig) n += P.B * OI;
  return n;
}

#define TORCHPLASTIC_INSTANTIATE(T)                                                            \
  template Plan plan_forward<T>(const ScanParams<T>&, int);                                    \
  template Plan plan_backward<T>(const ScanParams<T>&, int);                                   \
  template int64_t backward_scratch_elems<T>(const ScanParams<T>&, const Plan&);

TORCHPLASTIC_INSTANTIATE(float)
TORCHPLASTIC_INSTANTIATE(double)

}  // namespace cuda
}  // namespace torchplastic
