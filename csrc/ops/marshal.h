// Marshalling: a checked call's tensors in the kernels' form (compute dtype, contiguous,
// broadcast where the kernels expect it), and the raw views the kernels take.
#pragma once

#include <ATen/core/Tensor.h>

#include "kernels/plastic_step.h"
#include "ops/checks.h"
#include "ops/scan_args.h"

namespace torchplastic {
namespace detail {

// Every input in the compute dtype, contiguous; α broadcast to [O, I]; η at its own
// granularity (the kernels read it through a row stride); external modulation as [T, B, O];
// initial states zeros where not given (from `zeros`: the kernels only read them); lengths as
// int64 on z's device (undefined: all T).
struct Prepared {
  at::Tensor z, x, alpha, eta, weight, hidden0, trace0, elig0, theta0, modulation, mod_weight,
      mod_bias, fanout_weight, fanout_bias, coefficients, lengths;
  at::Tensor cell0;  // the LSTM's c_0 (its W_hh is `weight`)
};

using ZerosFn = at::Tensor (*)(at::IntArrayRef, const at::TensorOptions&);
Prepared prepare(const ScanArgs& args, const ScanConfig& config, ZerosFn zeros);

// The call as the kernels see it: sizes, options and input pointers (outputs are the caller's).
template <typename T>
kernels::ScanParams<T> make_params(const ScanArgs& args, const ScanConfig& config,
                                   const Prepared& prepared);

// Whether η is per connection (and so its gradient too).
bool eta_per_connection(const at::Tensor& eta, const ScanConfig& config);

at::Tensor to_compute(const at::Tensor& t, at::ScalarType dtype);

template <typename T>
const T* ptr(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}
template <typename T>
T* mut_ptr(const at::Tensor& t) {
  return t.defined() ? t.mutable_data_ptr<T>() : nullptr;
}

}  // namespace detail
}  // namespace torchplastic
