// plastic_scan and plastic_lstm_scan as a loop of ATen operations, one time step at a time
// (SPEC §2, §2b), for the
// derivatives the fused kernels do not compute: autograd differentiates it to any order and
// carries forward-mode tangents through it. Each rule's trace update is the rule's own code
// (csrc/kernels/rules/), instantiated on whole tensors, so a rule is still written once.
//
// It keeps every step's intermediates, as csrc/autograd/plastic_scan.cpp explains where it is
// used: O(T·B·O·I) memory, where the fused op keeps O((T/K + K)·B·O·I).
#pragma once

#include "ops/scan.h"

namespace torchplastic {
namespace detail {

// The op's outputs, as the fused kernels give them (y, hidden and cell in z's dtype, the trace
// states in the compute dtype, an empty [0] tensor for a state the configuration does not use;
// no checkpoints).
ForwardResult aten_scan(const ScanArgs& args);

}  // namespace detail
}  // namespace torchplastic
