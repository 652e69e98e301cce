#include "cpu/memory.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <c10/util/accumulate.h>

#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace torchplastic {
namespace cpu {
namespace {

// Fresh multi-megabyte CPU buffers (checkpoints, gradient slabs) are first touched inside the
// kernels; with 4 KiB pages that costs one page fault per 4 KiB, a large share of a forward
// that saves checkpoints (README, "Where the time goes"). Transparent huge pages, where the
// kernel allows them on request, cut the faults 512-fold. Advice only: nothing changes if
// refused.
void advise_huge_pages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  if (bytes >= 2 * kHuge) {
    const auto begin = reinterpret_cast<uintptr_t>(data);
    const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
    const uintptr_t last = (begin + bytes) & ~(kHuge - 1);
    if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
  }
#endif
}

at::Tensor with_huge_pages(at::Tensor t) {
  if (t.is_cpu()) advise_huge_pages(t.data_ptr(), t.nbytes());
  return t;
}

// Checkpoint buffers, kept for the next call. A training loop allocates the same checkpoints
// every step; fresh from the OS (glibc maps anything over 32 MiB anew), their pages are zeroed
// on first touch, a visible share of a forward+backward (README). Freed buffers go back here
// instead, and a request of the same size takes one. At most kMaxBlocks are held; the oldest
// is released to make room.
class CheckpointCache {
 public:
  static constexpr size_t kMaxBlocks = 2;
  static constexpr size_t kMinBytes = size_t(4) << 20;  // smaller ones glibc recycles itself

  static CheckpointCache& get() {
    static auto* cache = new CheckpointCache();  // never destroyed: deleters may run at exit
    return *cache;
  }

  at::Tensor empty(at::IntArrayRef sizes, const at::TensorOptions& opts) {
    const size_t bytes = static_cast<size_t>(c10::multiply_integers(sizes)) *
                         c10::elementSize(c10::typeMetaToScalarType(opts.dtype()));
    if (!opts.device().is_cpu() || bytes < kMinBytes) return with_huge_pages(at::empty(sizes, opts));
    void* data = take(bytes);
    if (!data) {
      // 2 MiB aligned and sized, so that all of it can be huge pages.
      constexpr size_t kHuge = size_t(2) << 20;
      data = std::aligned_alloc(kHuge, (bytes + kHuge - 1) / kHuge * kHuge);
      TORCH_CHECK(data, "plastic_scan: out of memory allocating ", bytes, " bytes of checkpoints");
      advise_huge_pages(data, bytes);
    }
    return at::from_blob(data, sizes, [this, bytes](void* p) { give(p, bytes); }, opts);
  }

 private:
  struct Block {
    void* data;
    size_t bytes;
  };

  void* take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = blocks_.begin(); it != blocks_.end(); ++it)
      if (it->bytes == bytes) {
        void* data = it->data;
        blocks_.erase(it);
        return data;
      }
    return nullptr;
  }

  void give(void* data, size_t bytes) {
    void* evicted = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (blocks_.size() == kMaxBlocks) {
        evicted = blocks_.front().data;
        blocks_.erase(blocks_.begin());
      }
      blocks_.push_back({data, bytes});
    }
    std::free(evicted);
  }

  std::mutex mutex_;
  std::vector<Block> blocks_;  // oldest first
};

}  // namespace

at::Tensor empty_checkpoints(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return CheckpointCache::get().empty(sizes, options);
}

at::Tensor empty_with_huge_pages(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return with_huge_pages(at::empty(sizes, options));
}

}  // namespace cpu
}  // namespace torchplastic
