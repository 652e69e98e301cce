#include "ops/scan_common.h"

#include "torchplastic/options.h"

#include <ATen/ATen.h>
#include <c10/util/accumulate.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdlib>
#include <mutex>
#include <sstream>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace torchplastic {
namespace detail {

using kernels::Activation;
using kernels::ModSource;
using kernels::Rule;

ScanArgs make_scan_args(TORCHPLASTIC_SCAN_PARAMS) {
  ScanArgs a;
  a.z = z;
  a.alpha = alpha;
  a.eta = eta;
  a.trace = trace;
  a.x = x;
  a.weight = weight;
  a.hidden = hidden;
  a.eligibility = eligibility;
  a.threshold = threshold;
  a.modulation = modulation;
  a.mod_weight = mod_weight;
  a.mod_bias = mod_bias;
  a.mod_fanout_weight = mod_fanout_weight;
  a.mod_fanout_bias = mod_fanout_bias;
  a.rule = std::string(rule);
  a.activation = std::string(activation);
  a.clip = clip;
  a.synaptic_scaling = synaptic_scaling;
  a.adaptive_threshold = adaptive_threshold;
  a.target_activity = target_activity;
  a.checkpoint_every = checkpoint_every;
  // An undefined tensor passed as "given" is treated as not given.
  for (auto* t : {&a.eta, &a.trace, &a.x, &a.weight, &a.hidden, &a.eligibility, &a.threshold,
                  &a.modulation, &a.mod_weight, &a.mod_bias, &a.mod_fanout_weight,
                  &a.mod_fanout_bias})
    if (t->has_value() && !(*t)->defined()) t->reset();
  return a;
}

int64_t default_checkpoint_every(int64_t T) {
  return std::max<int64_t>(1, static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(T)))));
}

namespace {

// The public enums (options.h) list their values in the kernels' order.
static_assert(static_cast<int>(torchplastic::Rule::Retroactive) == static_cast<int>(Rule::Retroactive) &&
              static_cast<int>(torchplastic::Activation::Identity) == static_cast<int>(Activation::Identity),
              "options.h and kernels/plastic_step.h must list rules and activations in one order");

Rule parse_rule(const std::string& s) {
  return static_cast<Rule>(torchplastic::rule_from_string(s, "plastic_scan: rule"));
}

Activation parse_activation(const std::string& s) {
  return static_cast<Activation>(torchplastic::activation_from_string(s, "plastic_scan: activation"));
}

void check_shape(const at::Tensor& t, const char* name, at::IntArrayRef expected,
                 const char* meaning) {
  TORCH_CHECK_VALUE(t.sizes() == expected, "plastic_scan: ", name, ": expected shape ", expected,
                    " ", meaning, ", got ", t.sizes());
}

void check_positive(const c10::optional<double>& v, const char* name) {
  if (!v) return;
  TORCH_CHECK_VALUE(std::isfinite(*v) && *v > 0, "plastic_scan: ", name,
                    ": expected a finite value > 0, got ", *v);
}

// α and η: per connection [O, I], per postsynaptic neuron [O, 1], or one scalar [1, 1].
void check_granularity(const at::Tensor& t, const char* name, int64_t O, int64_t I) {
  const bool ok = t.dim() == 2 && ((t.size(0) == O && t.size(1) == I) ||
                                   (t.size(0) == O && t.size(1) == 1) ||
                                   (t.size(0) == 1 && t.size(1) == 1));
  TORCH_CHECK_VALUE(ok, "plastic_scan: ", name, ": expected shape [", O, ", ", I,
                    "] (per connection), [", O, ", 1] (per neuron) or [1, 1] (scalar), got ",
                    t.sizes());
}

}  // namespace

ScanConfig check_scan_args(const ScanArgs& a) {
  ScanConfig c{};
  c.rule = parse_rule(a.rule);
  c.activation = parse_activation(a.activation);

  TORCH_CHECK_VALUE(a.z.defined(), "plastic_scan: z: expected a tensor [T, B, O], got None");
  TORCH_CHECK_VALUE(a.z.dim() == 3, "plastic_scan: z: expected a 3-D tensor [T, B, O], got shape ",
                    a.z.sizes());
  c.T = a.z.size(0);
  c.B = a.z.size(1);
  c.O = a.z.size(2);
  c.recurrent = !a.x.has_value();

  // Dtypes and devices: every tensor on z's device; inputs in z's dtype; the state traces in
  // the compute dtype (float32 for float16/bfloat16 inputs, whose traces accumulate in float32).
  const auto dtype = a.z.scalar_type();
  const bool cuda = a.z.is_cuda();
  const bool supported =
      dtype == at::kFloat || dtype == at::kDouble ||
      (cuda && (dtype == at::kHalf || dtype == at::kBFloat16));
  TORCH_CHECK_VALUE(supported, "plastic_scan: z: expected dtype ",
                    cuda ? "float32, float64, float16 or bfloat16 (CUDA)"
                         : "float32 or float64 (CPU)",
                    ", got ", dtype);
  c.compute_dtype = dtype == at::kDouble ? at::kDouble : at::kFloat;
  auto check_tensor = [&](const c10::optional<at::Tensor>& t, const char* name, bool state) {
    if (!t) return;
    TORCH_CHECK_VALUE(t->device() == a.z.device(), "plastic_scan: ", name,
                      ": expected a tensor on ", a.z.device(), " (the device of z), got ",
                      t->device());
    const auto want = state ? c.compute_dtype : dtype;
    const bool ok = t->scalar_type() == want || t->scalar_type() == dtype;
    TORCH_CHECK_VALUE(ok, "plastic_scan: ", name, ": expected dtype ", want,
                      " (matching z), got ", t->scalar_type());
  };
  check_tensor(a.alpha, "alpha", false);
  check_tensor(a.eta, "eta", false);
  check_tensor(a.trace, "trace", true);
  check_tensor(a.x, "x", false);
  check_tensor(a.weight, "weight", false);
  check_tensor(a.hidden, "hidden", false);
  check_tensor(a.eligibility, "eligibility", true);
  check_tensor(a.threshold, "threshold", true);
  check_tensor(a.modulation, "modulation", false);
  check_tensor(a.mod_weight, "mod_weight", false);
  check_tensor(a.mod_bias, "mod_bias", false);
  check_tensor(a.mod_fanout_weight, "mod_fanout_weight", false);
  check_tensor(a.mod_fanout_bias, "mod_fanout_bias", false);

  // Mode: feedforward when x is given, recurrent otherwise.
  if (c.recurrent) {
    c.I = c.O;
    TORCH_CHECK_VALUE(a.weight.has_value(), "plastic_scan: weight: expected a tensor [", c.O,
                      ", ", c.O, "] in recurrent mode (x is None), got None");
    check_shape(*a.weight, "weight", {c.O, c.O}, "[O, O]");
    if (a.hidden) check_shape(*a.hidden, "hidden", {c.B, c.O}, "[B, O]");
  } else {
    TORCH_CHECK_VALUE(a.x->dim() == 3 && a.x->size(0) == c.T && a.x->size(1) == c.B,
                      "plastic_scan: x: expected a 3-D tensor [T, B, I] with T = ", c.T,
                      " and B = ", c.B, " (from z), got shape ", a.x->sizes());
    c.I = a.x->size(2);
    TORCH_CHECK_VALUE(!a.weight, "plastic_scan: weight: expected None in feedforward mode "
                      "(x is given), got a tensor of shape ", a.weight->sizes());
    TORCH_CHECK_VALUE(!a.hidden, "plastic_scan: hidden: expected None in feedforward mode "
                      "(x is given), got a tensor of shape ", a.hidden->sizes());
  }
  const int64_t B = c.B, O = c.O, I = c.I, T = c.T;

  TORCH_CHECK_VALUE(a.alpha.defined(), "plastic_scan: alpha: expected a tensor, got None");
  check_granularity(a.alpha, "alpha", O, I);
  if (c.rule == Rule::Modulated) {
    if (a.eta) check_granularity(*a.eta, "eta", O, I);
  } else {
    TORCH_CHECK_VALUE(a.eta.has_value(), "plastic_scan: eta: expected a tensor for rule '",
                      a.rule, "', got None");
    check_granularity(*a.eta, "eta", O, I);
  }
  if (a.trace) check_shape(*a.trace, "trace", {B, O, I}, "[B, O, I]");
  if (c.rule == Rule::Retroactive) {
    if (a.eligibility) check_shape(*a.eligibility, "eligibility", {B, O, I}, "[B, O, I]");
  } else {
    TORCH_CHECK_VALUE(!a.eligibility, "plastic_scan: eligibility: expected None for rule '",
                      a.rule, "' (only 'retroactive' has an eligibility trace), got a tensor");
  }

  // Neuromodulation: exactly one source for the modulated rules, none for the others.
  const bool needs_mod = c.rule == Rule::Modulated || c.rule == Rule::Retroactive;
  const bool external = a.modulation.has_value();
  const bool internal = a.mod_weight.has_value() || a.mod_bias.has_value();
  const bool fanout = a.mod_fanout_weight.has_value() || a.mod_fanout_bias.has_value();
  if (!needs_mod) {
    TORCH_CHECK_VALUE(!external && !internal && !fanout, "plastic_scan: modulation: expected none "
                      "for rule '", a.rule, "', which takes no neuromodulation, got ",
                      external ? "modulation" : (internal ? "mod_weight/mod_bias"
                                                          : "mod_fanout_weight/mod_fanout_bias"));
    c.mod_source = ModSource::None;
  } else if (external) {
    TORCH_CHECK_VALUE(!internal && !fanout, "plastic_scan: modulation: expected either an "
                      "external modulation tensor or mod_weight/mod_bias, got both");
    const auto& m = *a.modulation;
    const bool ok = (m.dim() == 2 && m.size(0) == T && m.size(1) == B) ||
                    (m.dim() == 3 && m.size(0) == T && m.size(1) == B && m.size(2) == O);
    TORCH_CHECK_VALUE(ok, "plastic_scan: modulation: expected shape [", T, ", ", B, "] or [", T,
                      ", ", B, ", ", O, "] ([T, B] or [T, B, O]), got ", m.sizes());
    c.mod_source = ModSource::External;
  } else {
    TORCH_CHECK_VALUE(a.mod_weight && a.mod_bias, "plastic_scan: modulation: rule '", a.rule,
                      "' needs neuromodulation: expected a modulation tensor [T, B] or [T, B, O], "
                      "or mod_weight [O] and mod_bias [1], got ",
                      internal ? (a.mod_weight ? "mod_weight without mod_bias"
                                               : "mod_bias without mod_weight")
                               : "none");
    check_shape(*a.mod_weight, "mod_weight", {O}, "[O]");
    check_shape(*a.mod_bias, "mod_bias", {1}, "[1]");
    if (fanout) {
      TORCH_CHECK_VALUE(a.mod_fanout_weight && a.mod_fanout_bias,
                        "plastic_scan: mod_fanout_weight/mod_fanout_bias: expected both or "
                        "neither, got only ",
                        a.mod_fanout_weight ? "mod_fanout_weight" : "mod_fanout_bias");
      check_shape(*a.mod_fanout_weight, "mod_fanout_weight", {O}, "[O]");
      check_shape(*a.mod_fanout_bias, "mod_fanout_bias", {O}, "[O]");
      c.mod_source = ModSource::Fanout;
    } else {
      c.mod_source = ModSource::Internal;
    }
  }

  check_positive(a.clip, "clip");
  check_positive(a.synaptic_scaling, "synaptic_scaling");
  check_positive(a.adaptive_threshold, "adaptive_threshold");
  TORCH_CHECK_VALUE(std::isfinite(a.target_activity),
                    "plastic_scan: target_activity: expected a finite value, got ",
                    a.target_activity);
  if (a.adaptive_threshold) {
    if (a.threshold) check_shape(*a.threshold, "threshold", {B, O}, "[B, O]");
  } else {
    TORCH_CHECK_VALUE(!a.threshold, "plastic_scan: threshold: expected None without "
                      "adaptive_threshold, got a tensor");
  }
  if (a.checkpoint_every) {
    TORCH_CHECK_VALUE(*a.checkpoint_every >= 1,
                      "plastic_scan: checkpoint_every: expected an integer >= 1, got ",
                      *a.checkpoint_every);
  }
  c.K = a.checkpoint_every ? std::min<int64_t>(*a.checkpoint_every, std::max<int64_t>(T, 1))
                           : default_checkpoint_every(T);
  return c;
}

namespace {

// Every input in the compute dtype, contiguous, broadcast where the kernels expect it.
struct Prepared {
  at::Tensor z, x, alpha, eta, weight, hidden0, trace0, elig0, theta0, modulation, mod_weight,
      mod_bias, fanout_weight, fanout_bias;
};

at::Tensor to_compute(const at::Tensor& t, at::ScalarType dtype) {
  return t.to(dtype).contiguous();
}

Prepared prepare(const ScanArgs& a, const ScanConfig& c) {
  const auto dt = c.compute_dtype;
  const auto opts = a.z.options().dtype(dt);
  const int64_t T = c.T, B = c.B, O = c.O, I = c.I;
  Prepared p;
  p.z = to_compute(a.z, dt);
  if (!c.recurrent) p.x = to_compute(*a.x, dt);
  p.alpha = a.alpha.to(dt).expand({O, I}).contiguous();
  // η keeps its granularity (the kernels read it through a row stride); rule modulated has
  // none, and the kernels read zeros rather than a null pointer.
  p.eta = (a.eta && c.rule != Rule::Modulated) ? to_compute(*a.eta, dt) : at::zeros({1, 1}, opts);
  if (c.recurrent) {
    p.weight = to_compute(*a.weight, dt);
    p.hidden0 = a.hidden ? to_compute(*a.hidden, dt) : at::zeros({B, O}, opts);
  }
  p.trace0 = a.trace ? to_compute(*a.trace, dt) : at::zeros({B, O, I}, opts);
  if (c.rule == Rule::Retroactive)
    p.elig0 = a.eligibility ? to_compute(*a.eligibility, dt) : at::zeros({B, O, I}, opts);
  if (a.adaptive_threshold)
    p.theta0 = a.threshold ? to_compute(*a.threshold, dt) : at::zeros({B, O}, opts);
  if (c.mod_source == ModSource::External) {
    auto m = a.modulation->to(dt);
    if (m.dim() == 2) m = m.unsqueeze(-1).expand({T, B, O});
    p.modulation = m.contiguous();
  } else if (c.mod_source != ModSource::None) {
    p.mod_weight = to_compute(*a.mod_weight, dt);
    p.mod_bias = to_compute(*a.mod_bias, dt);
    if (c.mod_source == ModSource::Fanout) {
      p.fanout_weight = to_compute(*a.mod_fanout_weight, dt);
      p.fanout_bias = to_compute(*a.mod_fanout_bias, dt);
    }
  }
  return p;
}

template <typename T>
const T* ptr(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}
template <typename T>
T* mut_ptr(const at::Tensor& t) {
  return t.defined() ? t.mutable_data_ptr<T>() : nullptr;
}

bool eta_per_connection(const at::Tensor& eta, const ScanConfig& c) {
  return eta.size(1) == c.I && c.I > 1;
}

template <typename T>
kernels::ScanParams<T> make_params(const ScanArgs& a, const ScanConfig& c, const Prepared& p) {
  kernels::ScanParams<T> P;
  P.T = c.T;
  P.B = c.B;
  P.O = c.O;
  P.I = c.I;
  P.checkpoint_every = c.K;
  P.device = a.z.is_cuda() ? a.z.device().index() : -1;
  P.rule = c.rule;
  P.activation = c.activation;
  P.mod_source = c.mod_source;
  P.recurrent = c.recurrent;
  P.has_clip = a.clip.has_value();
  P.has_scaling = a.synaptic_scaling.has_value();
  P.has_threshold = a.adaptive_threshold.has_value();
  P.clip = static_cast<T>(a.clip.value_or(0));
  P.scaling = static_cast<T>(a.synaptic_scaling.value_or(0));
  P.threshold_rate = static_cast<T>(a.adaptive_threshold.value_or(0));
  P.target_activity = static_cast<T>(a.target_activity);
  P.z = ptr<T>(p.z);
  P.x = ptr<T>(p.x);
  P.alpha = ptr<T>(p.alpha);
  P.eta = ptr<T>(p.eta);
  P.eta_row_stride = p.eta.size(0) == 1 ? 0 : p.eta.size(1);
  P.eta_per_connection = eta_per_connection(p.eta, c);
  P.weight = ptr<T>(p.weight);
  P.hidden0 = ptr<T>(p.hidden0);
  P.trace0 = ptr<T>(p.trace0);
  P.elig0 = ptr<T>(p.elig0);
  P.theta0 = ptr<T>(p.theta0);
  P.modulation = ptr<T>(p.modulation);
  P.mod_weight = ptr<T>(p.mod_weight);
  P.mod_bias = ptr<T>(p.mod_bias);
  P.fanout_weight = ptr<T>(p.fanout_weight);
  P.fanout_bias = ptr<T>(p.fanout_bias);
  return P;
}

void run(const ScanBackend& be, const kernels::ScanParams<float>& P) { be.forward_f32(P); }
void run(const ScanBackend& be, const kernels::ScanParams<double>& P) { be.forward_f64(P); }
void run(const ScanBackend& be, const kernels::ScanParams<float>& P,
         const kernels::ScanGradParams<float>& G) {
  be.backward_f32(P, G);
}
void run(const ScanBackend& be, const kernels::ScanParams<double>& P,
         const kernels::ScanGradParams<double>& G) {
  be.backward_f64(P, G);
}

// Fresh multi-megabyte CPU buffers (checkpoints, gradient slabs) are first touched inside the
// kernel; with 4 KiB pages that costs one page fault per 4 KiB, which on the benchmark machine
// made the forward with checkpoints twice as slow. Transparent huge pages (where the kernel
// allows them on request) cut the faults 512-fold. Advice only: nothing changes if refused.
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

// Checkpoint buffers on the CPU, kept for the next call. A training loop allocates the same
// checkpoints every step; fresh from the kernel (glibc maps anything over 32 MiB anew), their
// pages are zeroed on first touch, which at B=32, N=256, T=64 (64 MiB a call) was about 15%
// of the forward+backward. Freed buffers go back here instead, and a request of the same size
// takes one. At most kMaxBlocks are held; the oldest is released to make room.
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

at::Tensor none_like(const at::Tensor& z) { return at::empty({0}, z.options()); }

at::Tensor or_none(const at::Tensor& t, const at::Tensor& z) {
  return t.defined() ? t : none_like(z);
}

}  // namespace

ForwardOutputs scan_forward(const ScanArgs& a, const ScanBackend& backend,
                            bool save_checkpoints) {
  const ScanConfig c = check_scan_args(a);
  const Prepared p = prepare(a, c);
  const auto opts = a.z.options().dtype(c.compute_dtype);
  const int64_t T = c.T, B = c.B, O = c.O, I = c.I;
  const bool retro = c.rule == Rule::Retroactive;

  at::Tensor y = at::empty({T, B, O}, opts);
  at::Tensor trace = at::empty({B, O, I}, opts);
  at::Tensor elig = retro ? at::empty({B, O, I}, opts) : at::Tensor();
  at::Tensor theta = a.adaptive_threshold ? at::empty({B, O}, opts) : at::Tensor();
  const int64_t S = save_checkpoints ? (T + c.K - 1) / c.K : 0;
  auto& cache = CheckpointCache::get();
  at::Tensor trace_ckpt = cache.empty({S, B, O, I}, opts);
  at::Tensor elig_ckpt = retro ? cache.empty({S, B, O, I}, opts) : at::Tensor();

  AT_DISPATCH_FLOATING_TYPES(c.compute_dtype, "plastic_scan_forward", [&] {
    auto P = make_params<scalar_t>(a, c, p);
    P.y = mut_ptr<scalar_t>(y);
    P.trace = mut_ptr<scalar_t>(trace);
    P.elig = mut_ptr<scalar_t>(elig);
    P.theta = mut_ptr<scalar_t>(theta);
    if (save_checkpoints) {
      P.trace_ckpt = mut_ptr<scalar_t>(trace_ckpt);
      P.elig_ckpt = mut_ptr<scalar_t>(elig_ckpt);
    }
    run(backend, P);
  });

  at::Tensor y_out = y.to(a.z.scalar_type());
  at::Tensor hidden_out;
  if (c.recurrent)
    hidden_out = T > 0 ? y_out[T - 1].clone() : p.hidden0.to(a.z.scalar_type()).clone();
  return {y_out, or_none(hidden_out, y_out), trace, or_none(elig, trace), or_none(theta, trace),
          trace_ckpt, or_none(elig_ckpt, trace)};
}

std::vector<at::Tensor> scan_backward(const at::Tensor& grad_y, const at::Tensor& grad_hidden,
                                      const at::Tensor& grad_trace,
                                      const at::Tensor& grad_eligibility,
                                      const at::Tensor& grad_threshold, const at::Tensor& y,
                                      const at::Tensor& trace_checkpoints,
                                      const at::Tensor& eligibility_checkpoints,
                                      const ScanArgs& a, const ScanBackend& backend) {
  const ScanConfig c = check_scan_args(a);
  const Prepared p = prepare(a, c);
  const auto dt = c.compute_dtype;
  const auto opts = a.z.options().dtype(dt);
  const int64_t T = c.T, B = c.B, O = c.O, I = c.I;
  const bool retro = c.rule == Rule::Retroactive;
  const bool modulated = c.rule == Rule::Modulated || retro;
  const bool internal = c.mod_source == ModSource::Internal || c.mod_source == ModSource::Fanout;
  const int64_t S = (T + c.K - 1) / c.K;

  // Gradients that did not flow arrive as undefined or empty tensors: zeros of the right shape.
  auto grad_or_zeros = [&](const at::Tensor& g, at::IntArrayRef shape, const char* name) {
    if (!g.defined() || (g.numel() == 0 && g.sizes() != shape)) return at::zeros(shape, opts);
    TORCH_CHECK_VALUE(g.sizes() == shape, "plastic_scan_backward: ", name, ": expected shape ",
                      shape, ", got ", g.sizes());
    return to_compute(g, dt);
  };
  const at::Tensor gy = grad_or_zeros(grad_y, {T, B, O}, "grad_y");
  const at::Tensor gh = c.recurrent ? grad_or_zeros(grad_hidden, {B, O}, "grad_hidden") : at::Tensor();
  const at::Tensor gH = grad_or_zeros(grad_trace, {B, O, I}, "grad_trace");
  const at::Tensor gE = retro ? grad_or_zeros(grad_eligibility, {B, O, I}, "grad_eligibility")
                              : at::Tensor();
  const at::Tensor gth = a.adaptive_threshold
                             ? grad_or_zeros(grad_threshold, {B, O}, "grad_threshold")
                             : at::Tensor();
  TORCH_CHECK_VALUE(y.sizes() == at::IntArrayRef({T, B, O}), "plastic_scan_backward: y: expected "
                    "shape ", at::IntArrayRef({T, B, O}), ", got ", y.sizes());
  TORCH_CHECK_VALUE(trace_checkpoints.sizes() == at::IntArrayRef({S, B, O, I}),
                    "plastic_scan_backward: trace_checkpoints: expected shape ",
                    at::IntArrayRef({S, B, O, I}), " (checkpoint_every = ", c.K, "), got ",
                    trace_checkpoints.sizes());
  if (retro)
    TORCH_CHECK_VALUE(eligibility_checkpoints.sizes() == at::IntArrayRef({S, B, O, I}),
                      "plastic_scan_backward: eligibility_checkpoints: expected shape ",
                      at::IntArrayRef({S, B, O, I}), ", got ", eligibility_checkpoints.sizes());
  const at::Tensor y_c = to_compute(y, dt);
  const at::Tensor H_ckpt = to_compute(trace_checkpoints, dt);
  const at::Tensor E_ckpt = retro ? to_compute(eligibility_checkpoints, dt) : at::Tensor();

  at::Tensor grad_z = at::empty({T, B, O}, opts);
  at::Tensor grad_x = c.recurrent ? at::Tensor() : at::empty({T, B, I}, opts);
  at::Tensor grad_mod = modulated ? at::empty({T, B, O}, opts) : at::Tensor();
  at::Tensor grad_mod_pre = internal ? at::empty({T, B}, opts) : at::Tensor();
  at::Tensor mod_signal = internal ? at::empty({T, B}, opts) : at::Tensor();
  at::Tensor grad_hidden0 = c.recurrent ? at::empty({B, O}, opts) : at::Tensor();
  at::Tensor grad_trace0 = at::empty({B, O, I}, opts);
  at::Tensor grad_elig0 = retro ? at::empty({B, O, I}, opts) : at::Tensor();
  at::Tensor grad_theta0 = a.adaptive_threshold ? at::empty({B, O}, opts) : at::Tensor();
  // One slab per sequence: summed in a fixed order after the loop, so the result does not
  // depend on the number of threads.
  auto slabs = [&](at::IntArrayRef shape) {
    at::Tensor t = with_huge_pages(at::empty(shape, opts));
    return backend.zeroes_grad_slabs ? t : t.zero_();
  };
  at::Tensor grad_alpha_slabs = slabs({B, O, I});
  at::Tensor grad_eta_slabs = c.rule == Rule::Modulated
                                  ? at::Tensor()
                                  : slabs({B, O, eta_per_connection(p.eta, c) ? I : 1});

  AT_DISPATCH_FLOATING_TYPES(dt, "plastic_scan_backward", [&] {
    auto P = make_params<scalar_t>(a, c, p);
    P.y = const_cast<scalar_t*>(ptr<scalar_t>(y_c));  // read only in the backward
    P.trace_ckpt = const_cast<scalar_t*>(ptr<scalar_t>(H_ckpt));
    P.elig_ckpt = const_cast<scalar_t*>(ptr<scalar_t>(E_ckpt));
    kernels::ScanGradParams<scalar_t> G;
    G.grad_y = ptr<scalar_t>(gy);
    G.grad_hidden = ptr<scalar_t>(gh);
    G.grad_trace = ptr<scalar_t>(gH);
    G.grad_elig = ptr<scalar_t>(gE);
    G.grad_theta = ptr<scalar_t>(gth);
    G.grad_z = mut_ptr<scalar_t>(grad_z);
    G.grad_x = mut_ptr<scalar_t>(grad_x);
    G.grad_mod = mut_ptr<scalar_t>(grad_mod);
    G.grad_mod_pre = mut_ptr<scalar_t>(grad_mod_pre);
    G.mod_signal = mut_ptr<scalar_t>(mod_signal);
    G.grad_hidden0 = mut_ptr<scalar_t>(grad_hidden0);
    G.grad_trace0 = mut_ptr<scalar_t>(grad_trace0);
    G.grad_elig0 = mut_ptr<scalar_t>(grad_elig0);
    G.grad_theta0 = mut_ptr<scalar_t>(grad_theta0);
    G.grad_alpha = mut_ptr<scalar_t>(grad_alpha_slabs);
    G.grad_eta = mut_ptr<scalar_t>(grad_eta_slabs);
    run(backend, P, G);
  });

  const at::Tensor none = none_like(a.z);
  auto like = [&](const c10::optional<at::Tensor>& input, const at::Tensor& g) {
    return input ? g.to(input->scalar_type()) : none;
  };
  std::vector<at::Tensor> grads(14, none);
  grads[0] = grad_z.to(a.z.scalar_type());
  grads[1] = grad_alpha_slabs.sum(0).sum_to_size(a.alpha.sizes()).to(a.alpha.scalar_type());
  if (a.eta)
    grads[2] = c.rule == Rule::Modulated
                   ? at::zeros(a.eta->sizes(), a.eta->options())
                   : grad_eta_slabs.sum(0).sum_to_size(a.eta->sizes()).to(a.eta->scalar_type());
  grads[3] = like(a.trace, grad_trace0);
  if (!c.recurrent) grads[4] = like(a.x, grad_x);
  if (c.recurrent) {
    // dL/dW = Σ_t dL/da_tᵀ h_{t-1}: one GEMM over the stored per-step vectors.
    const at::Tensor h_prev = at::cat({p.hidden0.unsqueeze(0), y_c}).slice(0, 0, T);
    grads[5] = like(a.weight, grad_z.reshape({T * B, O}).t().mm(h_prev.reshape({T * B, O})));
    grads[6] = like(a.hidden, grad_hidden0);
  }
  if (retro) grads[7] = like(a.eligibility, grad_elig0);
  if (a.adaptive_threshold) grads[8] = like(a.threshold, grad_theta0);
  if (c.mod_source == ModSource::External)
    grads[9] = like(a.modulation, a.modulation->dim() == 2 ? grad_mod.sum(-1) : grad_mod);
  if (internal) {
    // s_t = tanh(y_t·v + c): dL/dv = Σ_{t,b} dL/du y_t, dL/dc = Σ dL/du.
    grads[10] = like(a.mod_weight, grad_mod_pre.reshape({1, T * B}).mm(y_c.reshape({T * B, O})).reshape({O}));
    grads[11] = like(a.mod_bias, grad_mod_pre.sum().reshape({1}));
  }
  if (c.mod_source == ModSource::Fanout) {
    // m = s·f + g: dL/df = Σ dL/dm · s, dL/dg = Σ dL/dm.
    grads[12] = like(a.mod_fanout_weight, (grad_mod * mod_signal.unsqueeze(-1)).sum(at::IntArrayRef{0, 1}));
    grads[13] = like(a.mod_fanout_bias, grad_mod.sum(at::IntArrayRef{0, 1}));
  }
  return grads;
}

}  // namespace detail
}  // namespace torchplastic
