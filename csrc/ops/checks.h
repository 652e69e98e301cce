// Every argument of a plastic_scan call checked once (SPEC §6), and what the checks establish.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <string>

#include "kernels/plastic_step.h"
#include "ops/scan_args.h"

namespace torchplastic {
namespace detail {

// What the checks established about a call.
struct ScanConfig {
  kernels::Rule rule;
  RuleInfo traits;  // of the rule
  kernels::Activation activation;
  kernels::ModSource mod_source;
  bool recurrent;
  int64_t T, B, O, I, K;
  at::ScalarType compute_dtype;  // float or double: the traces and all accumulation
};

// Checks every argument and fails with a c10::Error (ValueError in Python) naming it, the
// expected and the received value. Every kernel calls it, so raw torch.ops calls are checked
// too; so does the C++ entry before dispatch (devices, which select the kernel).
ScanConfig check_scan_args(const ScanArgs& args);

// The options alone, where a module is built: `owner` starts the messages ("PlasticRNN").
void check_scan_options(const char* owner, const std::string& activation,
                        const c10::optional<double>& clip,
                        const c10::optional<double>& synaptic_scaling,
                        const c10::optional<double>& adaptive_threshold,
                        const c10::optional<int64_t>& checkpoint_every);

// Every tensor on z's device: a tensor elsewhere would select another backend's kernel (or
// none) and fail with a message that names no argument.
void check_devices(const ScanArgs& args);

// K of SPEC §3: `requested` (≥ 1) capped at T, or about √T when not given.
int64_t checkpoint_interval(int64_t T, const c10::optional<int64_t>& requested);

// The traces a call with checkpoints saves: one before each segment of K steps but the first,
// whose state is the initial trace (an input, kept anyway).
inline int64_t checkpoint_count(int64_t T, int64_t K) { return T > 0 ? (T + K - 1) / K - 1 : 0; }

}  // namespace detail
}  // namespace torchplastic
