// Autocast of plastic_scan and plastic_lstm_scan: under torch.autocast the drive z comes out of a linear layer in
// float16/bfloat16 while α, η and the states stay float32, a mix the op refuses. These kernels
// cast the tensors to what the device's kernels run, then call the op again below autocast
// (so autograd records the casts):
//   CPU:  everything to float32 (the CPU kernels run float32 and float64);
//   CUDA: the inputs to the autocast dtype (float16 or bfloat16, run natively) and the trace
//         states (role state in the argument table: H_0, E_0, θ_0) to float32.
// float64 tensors are left alone, as autocast does.
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "ops/scan.h"

namespace torchplastic {
namespace {

using detail::ScanArgs;
using detail::scan_arg::Role;

// plastic_scan (Lstm false) or plastic_lstm_scan (true).
template <bool Lstm, c10::DeviceType Device, c10::DispatchKey Key>
std::conditional_t<Lstm, detail::LstmStateOutputs, detail::StateOutputs> scan_autocast(
    TORCHPLASTIC_SCAN_PARAMS) {
  using Outputs = std::conditional_t<Lstm, detail::LstmStateOutputs, detail::StateOutputs>;
  c10::impl::ExcludeDispatchKeyGuard no_autocast(Key);
  ScanArgs args = ScanArgs::from(Lstm, TORCHPLASTIC_SCAN_ARGS);
  const at::ScalarType inputs =
      Device == c10::DeviceType::CPU ? at::kFloat : at::autocast::get_autocast_dtype(Device);
  args.for_each_tensor([&](auto& member, Role role) {
    const at::Tensor t = detail::scan_arg::as_tensor(member);
    if (!t.defined() || role == Role::index) return;  // lengths stay integers
    detail::scan_arg::from_tensor(
        member, at::autocast::cached_cast(role == Role::state ? at::kFloat : inputs, t, Device));
  });
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow(args.lstm ? "torchplastic::plastic_lstm_scan"
                                                    : "torchplastic::plastic_scan",
                                          "")
                       .typed<Outputs(TORCHPLASTIC_SCAN_PARAMS)>();
  return args.apply([&](auto&&... a) { return op.call(a...); });
}

}  // namespace
}  // namespace torchplastic

TORCH_LIBRARY_IMPL(torchplastic, AutocastCPU, m) {
  using c10::DeviceType;
  using c10::DispatchKey;
  m.impl("plastic_scan",
         &torchplastic::scan_autocast<false, DeviceType::CPU, DispatchKey::AutocastCPU>);
  m.impl("plastic_lstm_scan",
         &torchplastic::scan_autocast<true, DeviceType::CPU, DispatchKey::AutocastCPU>);
}

TORCH_LIBRARY_IMPL(torchplastic, AutocastCUDA, m) {
  using c10::DeviceType;
  using c10::DispatchKey;
  m.impl("plastic_scan",
         &torchplastic::scan_autocast<false, DeviceType::CUDA, DispatchKey::AutocastCUDA>);
  m.impl("plastic_lstm_scan",
         &torchplastic::scan_autocast<true, DeviceType::CUDA, DispatchKey::AutocastCUDA>);
}
