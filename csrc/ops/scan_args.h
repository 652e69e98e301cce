// The arguments of the plastic_scan ops, declared once.
//
// TORCHPLASTIC_SCAN_ARGUMENTS(X, SEP) calls X(kind, name, role, default) for every argument,
// in schema order, with SEP() between two of them. Everything that lists the arguments is
// expanded from it: the schema (csrc/ops/schema.cpp), the kernels' flat signatures, the
// struct ScanArgs below, the autograd node's saved tensors and its gradient list
// (csrc/autograd/plastic_scan.cpp), and the calls into the dispatcher. Python reads the same
// list back from the registered schema (python/torchplastic/functional.py).
//
//   kind     Tensor | OptTensor | Str | Float | OptFloat | OptInt (the structs in scan_arg::)
//   role     input:  a tensor the output depends on, in z's dtype, differentiated (h_0, a
//                    previous output, is one);
//            state:  an initial trace state (H_0, E_0, θ_0), which may come in the compute
//                    dtype (float32 for float16/bfloat16 inputs), differentiated;
//            index:  an integer tensor (lengths), never differentiated nor cast
//            option: a hyper-parameter, never differentiated
//   default  the schema's default ("" for none): arguments added after the first release
//            take one, so that programs saved with the older schema still load.
//
// Shapes (recurrent mode has I = O):
//   z [T, B, O]             drive computed outside the recurrence (x Wᵀ + b, or u W_ihᵀ + b)
//   alpha [O, I|1] | [1, 1] plasticity coefficients; eta: the same granularities
//   trace [B, O, I]         H_0 (None: zeros)
//   x [T, B, I]             presynaptic input: feedforward mode when given, recurrent when None
//   weight [O, O]           fixed recurrent weight (recurrent mode)
//   hidden [B, O]           h_0 (recurrent mode; None: zeros)
//   eligibility [B, O, I]   E_0 (rules with an eligibility trace; None: zeros)
//   threshold [B, O]        θ_0 (adaptive threshold; None: zeros)
//   modulation [T, B] | [T, B, O]        external neuromodulation
//   mod_weight [O], mod_bias [1]         internal neuromodulation head
//   mod_fanout_weight [O], mod_fanout_bias [O]   its fan-out
//   abcd [4, O|1, I|1]      coefficients A, B, C, D of rule abcd, stacked
//   lengths [B] int64       steps of each sequence (None: T each); on the CPU or z's device
//   cell [B, H]             c_0 (plastic_lstm_scan only; None: zeros)
//
// The plastic LSTM's ops (plastic_lstm_scan*) take the same arguments, with O = I = H:
//   z [T, B, 4H]            u W_ihᵀ + b, gate rows in torch.nn.LSTM's order (i, f, g, o)
//   weight [4H, H]          W_hh, the same order; x None; activation "tanh" (of g)
//   alpha, eta, trace, ...  on the h → g connections, [H, H] as above with O = I = H
//
// Adding an argument: one line here, then the code that uses it (its check in checks.cpp,
// its pointer in kernels::ScanParams, the kernels, the Python signature).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>
#include <c10/util/Optional.h>
#include <c10/util/string_view.h>

#include <string>
#include <utility>
#include <vector>

#define TORCHPLASTIC_SCAN_ARGUMENTS(X, SEP)                 \
  X(Tensor, z, input, "") SEP()                             \
  X(Tensor, alpha, input, "") SEP()                         \
  X(OptTensor, eta, input, "") SEP()                        \
  X(OptTensor, trace, state, "") SEP()                      \
  X(OptTensor, x, input, "") SEP()                          \
  X(OptTensor, weight, input, "") SEP()                     \
  X(OptTensor, hidden, input, "") SEP()                     \
  X(OptTensor, eligibility, state, "") SEP()                \
  X(OptTensor, threshold, state, "") SEP()                  \
  X(OptTensor, modulation, input, "") SEP()                 \
  X(OptTensor, mod_weight, input, "") SEP()                 \
  X(OptTensor, mod_bias, input, "") SEP()                   \
  X(OptTensor, mod_fanout_weight, input, "") SEP()          \
  X(OptTensor, mod_fanout_bias, input, "") SEP()            \
  X(Str, rule, option, "") SEP()                            \
  X(Str, activation, option, "") SEP()                      \
  X(OptFloat, clip, option, "") SEP()                       \
  X(OptFloat, synaptic_scaling, option, "") SEP()           \
  X(OptFloat, adaptive_threshold, option, "") SEP()         \
  X(Float, target_activity, option, "") SEP()               \
  X(OptInt, checkpoint_every, option, "") SEP()             \
  X(OptTensor, abcd, input, "=None") SEP()                 \
  X(OptTensor, lengths, index, "=None") SEP()               \
  X(OptTensor, cell, input, "=None")

// Separators for expanding the list; TORCHPLASTIC_IF_TENSOR(kind, ...) keeps its tail for the
// tensor kinds only, TORCHPLASTIC_IF_OPTION(kind, ...) for the others.
#define TORCHPLASTIC_COMMA() ,
#define TORCHPLASTIC_NOTHING()
#define TORCHPLASTIC_IF_TENSOR(kind, ...) TORCHPLASTIC_IF_TENSOR_##kind(__VA_ARGS__)
#define TORCHPLASTIC_IF_TENSOR_Tensor(...) __VA_ARGS__
#define TORCHPLASTIC_IF_TENSOR_OptTensor(...) __VA_ARGS__
#define TORCHPLASTIC_IF_TENSOR_Str(...)
#define TORCHPLASTIC_IF_TENSOR_Float(...)
#define TORCHPLASTIC_IF_TENSOR_OptFloat(...)
#define TORCHPLASTIC_IF_TENSOR_OptInt(...)
#define TORCHPLASTIC_IF_OPTION(kind, ...) TORCHPLASTIC_IF_OPTION_##kind(__VA_ARGS__)
#define TORCHPLASTIC_IF_OPTION_Tensor(...)
#define TORCHPLASTIC_IF_OPTION_OptTensor(...)
#define TORCHPLASTIC_IF_OPTION_Str(...) __VA_ARGS__
#define TORCHPLASTIC_IF_OPTION_Float(...) __VA_ARGS__
#define TORCHPLASTIC_IF_OPTION_OptFloat(...) __VA_ARGS__
#define TORCHPLASTIC_IF_OPTION_OptInt(...) __VA_ARGS__

// The flat parameter list of every kernel (`const at::Tensor& z, ...`), and its names.
#define TORCHPLASTIC_SCAN_PARAM_(kind, name, role, dflt) \
  ::torchplastic::detail::scan_arg::kind::param name
#define TORCHPLASTIC_SCAN_NAME_(kind, name, role, dflt) name
#define TORCHPLASTIC_SCAN_PARAMS TORCHPLASTIC_SCAN_ARGUMENTS(TORCHPLASTIC_SCAN_PARAM_, TORCHPLASTIC_COMMA)
#define TORCHPLASTIC_SCAN_ARGS TORCHPLASTIC_SCAN_ARGUMENTS(TORCHPLASTIC_SCAN_NAME_, TORCHPLASTIC_COMMA)

namespace torchplastic {
namespace detail {

// The kinds of argument: the type a kernel receives (param), the type ScanArgs stores (value)
// and the schema's spelling.
namespace scan_arg {
struct Tensor {
  using param = const at::Tensor&;
  using value = at::Tensor;
  static constexpr const char* schema = "Tensor";
};
struct OptTensor {
  using param = const c10::optional<at::Tensor>&;
  using value = c10::optional<at::Tensor>;
  static constexpr const char* schema = "Tensor?";
};
struct Str {
  using param = c10::string_view;
  using value = std::string;
  static constexpr const char* schema = "str";
};
struct Float {
  using param = double;
  using value = double;
  static constexpr const char* schema = "float";
};
struct OptFloat {
  using param = c10::optional<double>;
  using value = c10::optional<double>;
  static constexpr const char* schema = "float?";
};
struct OptInt {
  using param = c10::optional<int64_t>;
  using value = c10::optional<int64_t>;
  static constexpr const char* schema = "int?";
};

enum class Role { input, state, index, option };

// A tensor argument as a plain tensor (undefined when not given), and back.
inline at::Tensor as_tensor(const at::Tensor& t) { return t; }
inline at::Tensor as_tensor(const c10::optional<at::Tensor>& t) { return t ? *t : at::Tensor(); }
inline void from_tensor(at::Tensor& dst, const at::Tensor& t) { dst = t; }
inline void from_tensor(c10::optional<at::Tensor>& dst, const at::Tensor& t) {
  dst = t.defined() ? c10::optional<at::Tensor>(t) : c10::nullopt;
}
// An undefined tensor passed as "given" is treated as not given.
inline at::Tensor normalized(const at::Tensor& t) { return t; }
inline c10::optional<at::Tensor> normalized(const c10::optional<at::Tensor>& t) {
  return t && t->defined() ? t : c10::nullopt;
}
inline std::string normalized(c10::string_view s) { return std::string(s); }
template <typename T>
T normalized(const T& v) {
  return v;
}

// Options to and from an IValue (the autograd node's saved_data).
inline c10::IValue to_ivalue(const std::string& v) { return v; }
inline c10::IValue to_ivalue(double v) { return v; }
inline c10::IValue to_ivalue(const c10::optional<double>& v) { return v ? c10::IValue(*v) : c10::IValue(); }
inline c10::IValue to_ivalue(const c10::optional<int64_t>& v) { return v ? c10::IValue(*v) : c10::IValue(); }
inline void from_ivalue(std::string& dst, const c10::IValue& v) { dst = v.toStringRef(); }
inline void from_ivalue(double& dst, const c10::IValue& v) { dst = v.toDouble(); }
inline void from_ivalue(c10::optional<double>& dst, const c10::IValue& v) {
  dst = v.isNone() ? c10::nullopt : c10::optional<double>(v.toDouble());
}
inline void from_ivalue(c10::optional<int64_t>& dst, const c10::IValue& v) {
  dst = v.isNone() ? c10::nullopt : c10::optional<int64_t>(v.toInt());
}
}  // namespace scan_arg

#define TORCHPLASTIC_SCAN_COUNT_(kind, name, role, dflt) +1
#define TORCHPLASTIC_SCAN_COUNT_TENSOR_(kind, name, role, dflt) TORCHPLASTIC_IF_TENSOR(kind, +1)
// Every argument of the schema, and those that are tensors.
constexpr int kNumScanArgs = 0 TORCHPLASTIC_SCAN_ARGUMENTS(TORCHPLASTIC_SCAN_COUNT_, TORCHPLASTIC_NOTHING);
constexpr int kNumScanTensorArgs =
    0 TORCHPLASTIC_SCAN_ARGUMENTS(TORCHPLASTIC_SCAN_COUNT_TENSOR_, TORCHPLASTIC_NOTHING);

// The argument list of the schema: "Tensor z, Tensor alpha, Tensor? eta, ...".
std::string scan_schema_arguments();

// One call's arguments, by name.
struct ScanArgs {
#define TORCHPLASTIC_SCAN_MEMBER_(kind, name, role, dflt) scan_arg::kind::value name{};
  TORCHPLASTIC_SCAN_ARGUMENTS(TORCHPLASTIC_SCAN_MEMBER_, TORCHPLASTIC_NOTHING)
#undef TORCHPLASTIC_SCAN_MEMBER_
  // Which op family the call belongs to (not an argument: the op's name says it): the
  // plastic layer (plastic_scan*) or the plastic LSTM (plastic_lstm_scan*).
  bool lstm = false;
  // The public op's name, which every message starts with.
  const char* op_name() const { return lstm ? "plastic_lstm_scan" : "plastic_scan"; }

  // From a kernel's flat parameters; undefined tensors passed as given count as not given.
  static ScanArgs from(bool lstm, TORCHPLASTIC_SCAN_PARAMS) {
    ScanArgs a;
    a.lstm = lstm;
#define TORCHPLASTIC_SCAN_SET_(kind, name, role, dflt) a.name = scan_arg::normalized(name);
    TORCHPLASTIC_SCAN_ARGUMENTS(TORCHPLASTIC_SCAN_SET_, TORCHPLASTIC_NOTHING)
#undef TORCHPLASTIC_SCAN_SET_
    return a;
  }

  // f(z, alpha, eta, ...): the arguments in schema order, as a dispatcher call takes them.
  template <typename F>
  decltype(auto) apply(F&& f) const {
    return std::forward<F>(f)(TORCHPLASTIC_SCAN_ARGS);
  }

  // The tensor arguments in schema order (undefined where not given), with their names and
  // roles; and the inverse, for the autograd node's saved tensors.
  struct NamedTensor {
    const char* name;
    scan_arg::Role role;
    at::Tensor tensor;
  };
  std::vector<NamedTensor> tensors() const {
    std::vector<NamedTensor> out;
    out.reserve(kNumScanTensorArgs);
#define TORCHPLASTIC_SCAN_TENSOR_(kind, name, role, dflt) \
  TORCHPLASTIC_IF_TENSOR(kind, out.push_back({#name, scan_arg::Role::role, scan_arg::as_tensor(name)});)
    TORCHPLASTIC_SCAN_ARGUMENTS(TORCHPLASTIC_SCAN_TENSOR_, TORCHPLASTIC_NOTHING)
#undef TORCHPLASTIC_SCAN_TENSOR_
    return out;
  }
  // f(member, role) for every tensor argument: member is an at::Tensor& or a
  // c10::optional<at::Tensor>& (see scan_arg::as_tensor and from_tensor), to read or replace.
  template <typename F>
  void for_each_tensor(F&& f) {
#define TORCHPLASTIC_SCAN_EACH_TENSOR_(kind, name, role, dflt) \
  TORCHPLASTIC_IF_TENSOR(kind, f(name, scan_arg::Role::role);)
    TORCHPLASTIC_SCAN_ARGUMENTS(TORCHPLASTIC_SCAN_EACH_TENSOR_, TORCHPLASTIC_NOTHING)
#undef TORCHPLASTIC_SCAN_EACH_TENSOR_
  }
  // Takes the first kNumScanTensorArgs of `tensors`, in the order tensors() gives them.
  void set_tensors(const std::vector<at::Tensor>& tensors);

  // The options (every argument that is not a tensor) as name → value, and back.
  std::vector<std::pair<std::string, c10::IValue>> options() const;
  void set_option(const std::string& name, const c10::IValue& value);
};

// Gradients of the tensor arguments, by name (undefined: no gradient).
struct ScanGrads {
#define TORCHPLASTIC_SCAN_GRAD_MEMBER_(kind, name, role, dflt) TORCHPLASTIC_IF_TENSOR(kind, at::Tensor name;)
  TORCHPLASTIC_SCAN_ARGUMENTS(TORCHPLASTIC_SCAN_GRAD_MEMBER_, TORCHPLASTIC_NOTHING)
#undef TORCHPLASTIC_SCAN_GRAD_MEMBER_

  // As the backward op returns them: one per tensor argument, in schema order.
  std::vector<at::Tensor> to_list() const;
  static ScanGrads from_list(const std::vector<at::Tensor>& list);
  // As an autograd function returns them: one per argument of the schema (undefined for the
  // options).
  std::vector<at::Tensor> per_argument() const;
};

}  // namespace detail
}  // namespace torchplastic
