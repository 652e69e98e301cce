// What ScanArgs and ScanGrads derive from the argument table (csrc/ops/scan_args.h).
#include "ops/scan_args.h"

#include <c10/util/Exception.h>

namespace torchplastic {
namespace detail {

std::string scan_schema_arguments() {
  std::string out;
#define TORCHPLASTIC_SCAN_SCHEMA_(kind, name, role, dflt) \
  out += std::string(out.empty() ? "" : ", ") + scan_arg::kind::schema + " " #name dflt;
  TORCHPLASTIC_SCAN_ARGUMENTS(TORCHPLASTIC_SCAN_SCHEMA_, TORCHPLASTIC_NOTHING)
#undef TORCHPLASTIC_SCAN_SCHEMA_
  return out;
}

void ScanArgs::set_tensors(const std::vector<at::Tensor>& list) {
  TORCH_CHECK(list.size() >= static_cast<size_t>(kNumScanTensorArgs), "ScanArgs::set_tensors: ",
              kNumScanTensorArgs, " tensors expected, got ", list.size());
  size_t k = 0;
#define TORCHPLASTIC_SCAN_FROM_LIST_(kind, name, role, dflt) \
  TORCHPLASTIC_IF_TENSOR(kind, scan_arg::from_tensor(name, list[k++]);)
  TORCHPLASTIC_SCAN_ARGUMENTS(TORCHPLASTIC_SCAN_FROM_LIST_, TORCHPLASTIC_NOTHING)
#undef TORCHPLASTIC_SCAN_FROM_LIST_
}

std::vector<std::pair<std::string, c10::IValue>> ScanArgs::options() const {
  std::vector<std::pair<std::string, c10::IValue>> out;
#define TORCHPLASTIC_SCAN_OPTION_(kind, name, role, dflt) \
  TORCHPLASTIC_IF_OPTION(kind, out.emplace_back(#name, scan_arg::to_ivalue(name));)
  TORCHPLASTIC_SCAN_ARGUMENTS(TORCHPLASTIC_SCAN_OPTION_, TORCHPLASTIC_NOTHING)
#undef TORCHPLASTIC_SCAN_OPTION_
  return out;
}

void ScanArgs::set_option(const std::string& key, const c10::IValue& value) {
#define TORCHPLASTIC_SCAN_SET_OPTION_(kind, name, role, dflt) \
  TORCHPLASTIC_IF_OPTION(kind, if (key == #name) return scan_arg::from_ivalue(name, value);)
  TORCHPLASTIC_SCAN_ARGUMENTS(TORCHPLASTIC_SCAN_SET_OPTION_, TORCHPLASTIC_NOTHING)
#undef TORCHPLASTIC_SCAN_SET_OPTION_
  TORCH_CHECK(false, "ScanArgs::set_option: no option named '", key, "'");
}

std::vector<at::Tensor> ScanGrads::to_list() const {
  std::vector<at::Tensor> out;
  out.reserve(kNumScanTensorArgs);
#define TORCHPLASTIC_SCAN_GRAD_TO_LIST_(kind, name, role, dflt) \
  TORCHPLASTIC_IF_TENSOR(kind, out.push_back(name);)
  TORCHPLASTIC_SCAN_ARGUMENTS(TORCHPLASTIC_SCAN_GRAD_TO_LIST_, TORCHPLASTIC_NOTHING)
#undef TORCHPLASTIC_SCAN_GRAD_TO_LIST_
  return out;
}

ScanGrads ScanGrads::from_list(const std::vector<at::Tensor>& list) {
  TORCH_CHECK(list.size() == static_cast<size_t>(kNumScanTensorArgs), "ScanGrads::from_list: ",
              kNumScanTensorArgs, " gradients expected, got ", list.size());
  ScanGrads g;
  size_t k = 0;
#define TORCHPLASTIC_SCAN_GRAD_FROM_LIST_(kind, name, role, dflt) \
  TORCHPLASTIC_IF_TENSOR(kind, g.name = list[k++];)
  TORCHPLASTIC_SCAN_ARGUMENTS(TORCHPLASTIC_SCAN_GRAD_FROM_LIST_, TORCHPLASTIC_NOTHING)
#undef TORCHPLASTIC_SCAN_GRAD_FROM_LIST_
  return g;
}

std::vector<at::Tensor> ScanGrads::per_argument() const {
  std::vector<at::Tensor> out;
  out.reserve(kNumScanArgs);
#define TORCHPLASTIC_SCAN_GRAD_PER_ARG_(kind, name, role, dflt) \
  TORCHPLASTIC_IF_TENSOR(kind, out.push_back(name);) TORCHPLASTIC_IF_OPTION(kind, out.emplace_back();)
  TORCHPLASTIC_SCAN_ARGUMENTS(TORCHPLASTIC_SCAN_GRAD_PER_ARG_, TORCHPLASTIC_NOTHING)
#undef TORCHPLASTIC_SCAN_GRAD_PER_ARG_
  return out;
}

}  // namespace detail
}  // namespace torchplastic
