// Runs an emulated kernel launch on the CPU: each cluster of the grid in turn (sequences are
// independent), each of its CUDA threads as a fiber (ucontext) on the calling thread. A fiber
// runs until it reaches a barrier (block, cluster, warp; a warp shuffle is two warp barriers)
// and then waits there until every thread of the barrier's scope that has not exited arrives,
// as on the GPU. So a result that depends on an order the code does not enforce with a
// barrier can come out differently here, as it could there; a barrier some threads never reach
// is reported as a deadlock. Each block's shared memory starts filled with NaN bytes, so that a
// read of shared memory nothing wrote shows in the results.
//
// The order in which threads run between two barriers is theirs (thread 0 first) unless
// TORCHPLASTIC_EMULATION_SCHEDULE=<seed> (not 0) shuffles it, at the start and at every
// barrier, by that seed: code whose results change with the seed has a race, an order between
// threads that no barrier enforces.
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda_runtime.h"

// Under AddressSanitizer (a build of this library with -fsanitize=address, run with its runtime
// preloaded: a memory checker for the kernels on the CPU) every switch between stacks is
// announced to it, and a reused stack's shadow is cleared of the last fiber's frames.
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define TP_ASAN 1
#else
#define TP_ASAN 0
#endif

dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace tp_emulation {
namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr size_t kGuardBytes = 4096;

struct Barrier {
  int arrived = 0;
  std::vector<int> waiting;  // fibers
};

struct ThreadIndex {
  dim3 thread_idx, block_idx, block_dim, grid_dim;
};

struct Fiber {
  ucontext_t context;
  char* stack = nullptr;  // kGuardBytes of guard, then the stack
  ThreadIndex index;
  int block = 0, warp = 0;  // the cluster's block and warp
  bool done = false;
};

// The launch in progress.
struct Launch {
  const std::function<void()>* body = nullptr;
  unsigned cluster = 1, threads = 0, warps_per_block = 0;
  size_t smem_bytes = 0;
  std::vector<Fiber> fibers;
  std::vector<std::vector<unsigned char>> smem;  // per block of the cluster
  std::vector<Barrier> block_barriers, warp_barriers;
  Barrier cluster_barrier;
  std::vector<int> live_in_block, live_in_warp;
  int live_in_cluster = 0;
  std::vector<uint64_t> warp_slots;  // 32 per warp
  std::deque<int> runnable;
  std::mt19937 shuffle;  // with a schedule's seed
  bool shuffled = false;
  int current = -1;
  ucontext_t scheduler;
  std::string error;  // the first thread's failure
};

Launch* active = nullptr;
std::string last_error;

// The scheduler's stack, as AddressSanitizer needs it to switch back (set by a fiber's first
// entry).
const void* scheduler_stack = nullptr;
size_t scheduler_stack_size = 0;

// Announces a switch from the running stack to the one at [bottom, bottom + size); `save`
// receives the running one's fake stack, nullptr when it is not coming back.
inline void start_switch(void** save, const void* bottom, size_t size) {
#if TP_ASAN
  __sanitizer_start_switch_fiber(save, bottom, size);
#else
  (void)save, (void)bottom, (void)size;
#endif
}
// Announces that the switch is done: `saved`, the fake stack start_switch saved (nullptr on a
// fiber's first entry); the stack switched from goes to *from_bottom and *from_size if asked.
inline void finish_switch(void* saved, const void** from_bottom = nullptr,
                          size_t* from_size = nullptr) {
#if TP_ASAN
  __sanitizer_finish_switch_fiber(saved, from_bottom, from_size);
#else
  (void)saved, (void)from_bottom, (void)from_size;
#endif
}

// Fiber stacks, kept from one launch to the next.
std::vector<char*> stack_pool;

char* take_stack() {
  if (!stack_pool.empty()) {
    char* s = stack_pool.back();
    stack_pool.pop_back();
    return s;
  }
  void* p = mmap(nullptr, kStackBytes + kGuardBytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw std::runtime_error("CUDA emulation: no memory for a fiber's stack");
  mprotect(p, kGuardBytes, PROT_NONE);  // an overflow faults instead of writing past the stack
  return static_cast<char*>(p);
}

Fiber& me() { return active->fibers[active->current]; }

// Back to the scheduler until a barrier puts this fiber on the run queue again.
void block_here() {
  Fiber& f = me();
  void* fake_stack = nullptr;
  start_switch(&fake_stack, scheduler_stack, scheduler_stack_size);
  swapcontext(&f.context, &active->scheduler);
  finish_switch(fake_stack);
}

// Queues `fibers` to run, in their order or shuffled (TORCHPLASTIC_EMULATION_SCHEDULE).
void queue(std::vector<int>& fibers) {
  if (active->shuffled) std::shuffle(fibers.begin(), fibers.end(), active->shuffle);
  for (int f : fibers) active->runnable.push_back(f);
}

void release(Barrier& b) {
  b.arrived = 0;
  queue(b.waiting);
  b.waiting.clear();
}

void arrive(Barrier& b, int live) {
  if (b.arrived + 1 >= live) {
    release(b);
    return;
  }
  ++b.arrived;
  b.waiting.push_back(active->current);
  block_here();
}

// A thread that has exited no longer holds its barriers up (as on the GPU since Volta).
void leave(Fiber& f) {
  Launch& L = *active;
  f.done = true;
  auto settle = [](Barrier& b, int live) {
    if (b.arrived > 0 && b.arrived >= live) release(b);
  };
  settle(L.warp_barriers[f.warp], --L.live_in_warp[f.warp]);
  settle(L.block_barriers[f.block], --L.live_in_block[f.block]);
  settle(L.cluster_barrier, --L.live_in_cluster);
}

void fiber_main() {
  finish_switch(nullptr, &scheduler_stack, &scheduler_stack_size);
  Launch& L = *active;
  try {
    (*L.body)();
  } catch (const std::exception& e) {
    if (L.error.empty()) L.error = e.what();
  } catch (...) {
    if (L.error.empty()) L.error = "a thread threw";
  }
  leave(me());
  // Returning resumes uc_link, the scheduler; this stack is done with.
  start_switch(nullptr, scheduler_stack, scheduler_stack_size);
}

// Runs the threads of one cluster to the end; false (L.error says why) on a failure.
bool run_cluster(Launch& L, unsigned first_block, const cudaLaunchConfig_t& cfg) {
  const unsigned C = L.cluster, n = C * L.threads;
  L.fibers.resize(n);
  L.smem.assign(C, std::vector<unsigned char>(L.smem_bytes, 0xFF));
  L.block_barriers.assign(C, Barrier{});
  L.warp_barriers.assign(C * L.warps_per_block, Barrier{});
  L.cluster_barrier = Barrier{};
  L.live_in_block.assign(C, static_cast<int>(L.threads));
  L.live_in_warp.assign(C * L.warps_per_block, 0);
  L.live_in_cluster = static_cast<int>(n);
  L.warp_slots.assign(static_cast<size_t>(C) * L.warps_per_block * 32, 0);
  L.runnable.clear();
  std::vector<int> all;
  for (unsigned k = 0; k < n; ++k) {
    Fiber& f = L.fibers[k];
    f.block = static_cast<int>(k / L.threads);
    const unsigned t = k % L.threads;
    f.warp = f.block * static_cast<int>(L.warps_per_block) + static_cast<int>(t / 32);
    ++L.live_in_warp[f.warp];
    f.index.thread_idx = dim3(t);
    f.index.block_idx = dim3(first_block + static_cast<unsigned>(f.block));
    f.index.block_dim = cfg.blockDim;
    f.index.grid_dim = cfg.gridDim;
    f.done = false;
    if (!f.stack) f.stack = take_stack();
#if TP_ASAN
    ASAN_UNPOISON_MEMORY_REGION(f.stack + kGuardBytes, kStackBytes);
#endif
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = f.stack + kGuardBytes;
    f.context.uc_stack.ss_size = kStackBytes;
    f.context.uc_link = &L.scheduler;
    makecontext(&f.context, fiber_main, 0);
    all.push_back(static_cast<int>(k));
  }
  queue(all);
  while (!L.runnable.empty()) {
    L.current = L.runnable.front();
    L.runnable.pop_front();
    const ThreadIndex& index = L.fibers[L.current].index;
    threadIdx = index.thread_idx;
    blockIdx = index.block_idx;
    blockDim = index.block_dim;
    gridDim = index.grid_dim;
    void* fake_stack = nullptr;
    start_switch(&fake_stack, L.fibers[L.current].stack + kGuardBytes, kStackBytes);
    swapcontext(&L.scheduler, &L.fibers[L.current].context);
    finish_switch(fake_stack);
    if (!L.error.empty()) return false;
  }
  for (const Fiber& f : L.fibers)
    if (!f.done) {
      L.error = "the threads deadlocked: thread " + std::to_string(f.index.thread_idx.x) +
                " of block " + std::to_string(f.index.block_idx.x) +
                " waits at a barrier that the others never reach";
      return false;
    }
  return true;
}

}  // namespace

unsigned cluster_size(const cudaLaunchConfig_t& cfg) {
  for (unsigned k = 0; k < cfg.numAttrs; ++k)
    if (cfg.attrs[k].id == cudaLaunchAttributeClusterDimension)
      return cfg.attrs[k].val.clusterDim.x;
  return 1;
}

cudaError_t launch(const cudaLaunchConfig_t& cfg, const std::function<void()>& body) {
  if (active) {
    last_error = "CUDA emulation: a launch from inside a launch";
    return cudaErrorLaunchFailure;
  }
  Launch L;
  L.body = &body;
  if (const char* seed = std::getenv("TORCHPLASTIC_EMULATION_SCHEDULE")) {
    L.shuffled = std::atoi(seed) != 0;
    L.shuffle.seed(static_cast<unsigned>(std::atoi(seed)));
  }
  L.cluster = cluster_size(cfg);
  L.threads = cfg.blockDim.x;
  L.warps_per_block = (L.threads + 31) / 32;
  L.smem_bytes = cfg.dynamicSmemBytes;
  if (L.cluster == 0 || cfg.gridDim.x % L.cluster != 0 || L.threads % 32 != 0) {
    last_error = "CUDA emulation: the grid is not whole clusters of whole warps";
    return cudaErrorInvalidValue;
  }
  active = &L;
  bool ok = true;
  for (unsigned first = 0; first < cfg.gridDim.x && ok; first += L.cluster)
    ok = run_cluster(L, first, cfg);
  active = nullptr;
  for (Fiber& f : L.fibers) stack_pool.push_back(f.stack);
  if (ok) return cudaSuccess;
  last_error = "CUDA emulation: " + L.error;
  return cudaErrorLaunchFailure;
}

const char* last_error_message() { return last_error.c_str(); }

unsigned char* dynamic_shared_memory() { return active->smem[me().block].data(); }

bool in_shared_memory(const void* p) {
  const auto* c = static_cast<const unsigned char*>(p);
  for (const auto& s : active->smem)
    if (!s.empty() && c >= s.data() && c < s.data() + s.size()) return true;
  return false;
}

void check_assumption(bool holds, const char* condition, const char* file, int line) {
  if (!holds)
    throw std::runtime_error(std::string("assumption broken at ") + file + ":" +
                             std::to_string(line) + ": " + condition);
}

void sync_block() {
  Fiber& f = me();
  arrive(active->block_barriers[f.block], active->live_in_block[f.block]);
}

void sync_warp() {
  Fiber& f = me();
  arrive(active->warp_barriers[f.warp], active->live_in_warp[f.warp]);
}

void sync_cluster() { arrive(active->cluster_barrier, active->live_in_cluster); }

unsigned cluster_block_rank() { return static_cast<unsigned>(me().block); }

void* map_shared_rank(void* p, unsigned rank) {
  const int block = me().block;
  auto* c = static_cast<unsigned char*>(p);
  unsigned char* base = active->smem[block].data();
  if (c < base || c >= base + active->smem[block].size())
    throw std::runtime_error("map_shared_rank: a pointer outside the block's shared memory");
  if (rank >= active->cluster) throw std::runtime_error("map_shared_rank: rank past the cluster");
  return active->smem[rank].data() + (c - base);
}

void warp_exchange(const void* value, void* out, unsigned bytes, unsigned source) {
  const Fiber& f = me();
  uint64_t* slots = active->warp_slots.data() + static_cast<size_t>(f.warp) * 32;
  std::memcpy(&slots[f.index.thread_idx.x & 31u], value, bytes);
  sync_warp();
  std::memcpy(out, &slots[source & 31u], bytes);
  sync_warp();  // every lane has read before any writes the next exchange
}

}  // namespace tp_emulation
