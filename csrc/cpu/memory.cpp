#include "cpu/memory.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <c10/util/accumulate.h>

#include <cstdint>
#include <cstdlib>
#include <iterator>
#include <memory>
#include <mutex>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace torchplastic {
namespace cpu {
namespace {

constexpr size_t kHugePage = size_t(2) << 20;
// Buffers this large are advised to huge pages: below two, little of one would be covered.
constexpr size_t kHugeMinBytes = 2 * kHugePage;

// Bytes of a tensor of these sizes and dtype.
size_t bytes_of(at::IntArrayRef sizes, const at::TensorOptions& opts) {
  return static_cast<size_t>(c10::multiply_integers(sizes)) *
         c10::elementSize(c10::typeMetaToScalarType(opts.dtype()));
}

// bytes rounded up to whole huge pages.
size_t huge_pages_for(size_t bytes) { return (bytes + kHugePage - 1) / kHugePage * kHugePage; }

// Fresh multi-megabyte CPU buffers (checkpoints, gradient slabs) are first touched inside the
// kernels; with 4 KiB pages that costs one page fault per 4 KiB, a large share of a forward
// that saves checkpoints (docs/performance.md, "Where the fused op's CPU time goes").
// Transparent huge pages, where the kernel allows them on request, cut the faults 512-fold.
// Advice only: nothing changes if refused.
void advise_huge_pages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = kHugePage;
  if (bytes >= kHugeMinBytes) {
    const auto begin = reinterpret_cast<uintptr_t>(data);
    const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
    const uintptr_t last = (begin + bytes) & ~(kHuge - 1);
    if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
  }
#endif
}

// The large buffers of a call (traces, their checkpoints and gradients, gradient slabs), kept
// when freed for the next call. A training loop allocates the same buffers every step; fresh
// from the OS their pages are zeroed on first touch, a visible share of a call
// (docs/performance.md), and glibc maps anything over 32 MiB anew every time. Buffers of a few
// hundred KiB fare no better under glibc: a cell stepped under no_grad frees each step's trace
// as it allocates the next, and glibc's trimming hands the top of its heap back to the OS, so
// the next step faults the pages in again (docs/performance.md, "Rollouts"). Freed buffers
// come back here instead, and a request of the same size takes one. At most kMaxBlocks and
// kMaxBytes are held; the oldest go to make room.
class BufferCache {
 public:
  static constexpr size_t kMaxBlocks = 16;
  static constexpr size_t kMaxBytes = size_t(1) << 30;
  static constexpr size_t kMinBytes = size_t(256) << 10;  // smaller ones: glibc's small bins

  static BufferCache& get() {
    static auto* cache = new BufferCache();  // never destroyed: deleters may run at exit
    return *cache;
  }

  at::Tensor empty(at::IntArrayRef sizes, const at::TensorOptions& opts) {
    const size_t bytes = bytes_of(sizes, opts);
    if (!opts.device().is_cpu() || bytes < kMinBytes) return at::empty(sizes, opts);
    void* data = take(bytes);
    if (!data) {
      // Aligned and sized to huge pages, so that all of it can be huge pages; below a few of
      // them the rounding would waste more than the faults it saves, so cache lines.
      const bool huge = bytes >= kHugeMinBytes;
      data = huge ? std::aligned_alloc(kHugePage, huge_pages_for(bytes))
                  : std::aligned_alloc(64, (bytes + 63) / 64 * 64);
      TORCH_CHECK(data, "plastic_scan: out of memory allocating ", bytes, " bytes");
      if (huge) advise_huge_pages(data, bytes);
    }
    return at::from_blob(data, sizes, [this, bytes](void* p) { give(p, bytes); }, opts);
  }

 private:
  struct Block {
    void* data;
    size_t bytes;
  };

  // The most recently freed block of this size: of a few hundred KiB, it may still be in the
  // caches.
  void* take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = blocks_.rbegin(); it != blocks_.rend(); ++it)
      if (it->bytes == bytes) {
        void* data = it->data;
        held_ -= bytes;
        blocks_.erase(std::next(it).base());
        return data;
      }
    return nullptr;
  }

  void give(void* data, size_t bytes) {
    std::vector<void*> evicted;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (bytes > kMaxBytes) {
        evicted.push_back(data);
      } else {
        while (!blocks_.empty() &&
               (blocks_.size() == kMaxBlocks || held_ + bytes > kMaxBytes)) {
          evicted.push_back(blocks_.front().data);
          held_ -= blocks_.front().bytes;
          blocks_.erase(blocks_.begin());
        }
        blocks_.push_back({data, bytes});
        held_ += bytes;
      }
    }
    for (void* p : evicted) std::free(p);
  }

  std::mutex mutex_;
  std::vector<Block> blocks_;  // oldest first
  size_t held_ = 0;            // their bytes
};

// Zeros that the kernels only read: the initial trace of a call given none (every first call of
// a sequence), the gradient of an output that did not flow (the trace's, when the loss reads
// only y). A fresh at::zeros of a trace costs each call its page faults, the kernel's clearing
// of every page and then torch's fill. Instead these are views of one anonymous mapping that
// is never written: all its pages map the kernel's shared zero page, so after the first read
// there is no fault, no fill and no memory behind it. The mapping is read-only, so a write
// through a view would fault at once rather than corrupt the zeros of every later call. The
// largest mapping so far serves every request that fits; a larger request maps a larger one,
// and the smaller lives on only as long as views of it do.
class ZeroMapping {
 public:
  static constexpr size_t kMinBytes = size_t(1) << 20;  // smaller ones: at::zeros

  static ZeroMapping& get() {
    static auto* mapping = new ZeroMapping();  // never destroyed: deleters may run at exit
    return *mapping;
  }

  at::Tensor zeros(at::IntArrayRef sizes, const at::TensorOptions& opts) {
#if defined(__linux__)
    const size_t bytes = bytes_of(sizes, opts);
    if (opts.device().is_cpu() && bytes >= kMinBytes) {
      std::shared_ptr<Region> region = at_least(bytes);
      if (region)
        return at::from_blob(region->data, sizes, [region](void*) mutable { region.reset(); },
                             opts);
    }
#endif
    return at::zeros(sizes, opts);
  }

 private:
  struct Region {
    void* data = nullptr;
    size_t bytes = 0;
    ~Region() {
#if defined(__linux__)
      if (data) munmap(data, bytes);
#endif
    }
  };

  // The current mapping, or a new one when it is smaller than `bytes`; null if mmap fails.
  std::shared_ptr<Region> at_least(size_t bytes) {
#if defined(__linux__)
    std::lock_guard<std::mutex> lock(mutex_);
    if (current_ && current_->bytes >= bytes) return current_;
    const size_t size = huge_pages_for(bytes);
    void* data = mmap(nullptr, size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                      -1, 0);
    if (data == MAP_FAILED) return nullptr;
    auto region = std::make_shared<Region>();
    region->data = data;
    region->bytes = size;
    current_ = region;
#endif
    return current_;
  }

  std::mutex mutex_;
  std::shared_ptr<Region> current_;
};

}  // namespace

at::Tensor read_only_zeros(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return ZeroMapping::get().zeros(sizes, options);
}

at::Tensor empty_buffer(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return BufferCache::get().empty(sizes, options);
}

}  // namespace cpu
}  // namespace torchplastic
