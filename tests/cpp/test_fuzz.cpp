// Mutation fuzzing of the raw ops through the dispatcher, as tests/python/test_errors.py does,
// here so that the sanitizer build (make test-asan) runs the kernels on every input the checks
// accept: transposed, strided, expanded (stride 0) and truncated views, NaN and infinity, empty
// batches and sequences, lengths at their bounds, every rule and option. A valid call has one
// or two of its arguments replaced; the backward ops also get a forward's outputs with one of
// them replaced. Each call must return or throw a c10::Error whose message starts with the op's
// name and arguments of its schema; AddressSanitizer fails the run on any access outside a
// tensor.
#include <ATen/core/dispatch/Dispatcher.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <iostream>
#include <limits>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

c10::OperatorHandle op(const std::string& name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(("torchplastic::" + name).c_str(), "");
}

std::vector<std::string> argument_names(const std::string& name) {
  std::vector<std::string> names;
  for (const auto& a : op(name).schema().arguments()) names.push_back(a.name());
  return names;
}

struct Rng {
  std::mt19937_64 engine;
  explicit Rng(uint64_t seed) : engine(seed) {}
  int64_t uniform(int64_t lo, int64_t hi) {  // [lo, hi]
    return std::uniform_int_distribution<int64_t>(lo, hi)(engine);
  }
  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(engine) < p; }
  template <typename T>
  T pick(const std::vector<T>& values) {
    return values[static_cast<size_t>(uniform(0, static_cast<int64_t>(values.size()) - 1))];
  }
};

// The scan ops' arguments in their schema's order, by name.
struct Call {
  std::vector<std::string> names = argument_names("plastic_scan");
  std::vector<c10::IValue> values = std::vector<c10::IValue>(names.size());
  bool lstm = false;

  c10::IValue& operator[](const std::string& name) {
    for (size_t k = 0; k < names.size(); ++k)
      if (names[k] == name) return values[k];
    throw std::out_of_range(name);
  }
};

Call valid_call(Rng& r) {
  Call c;
  c.lstm = r.chance(0.3);
  const std::string rule = r.pick<std::string>({"hebb", "oja", "modulated", "retroactive", "abcd"});
  // Sizes from 0: an empty sequence or batch is valid, an empty trace (O or I = 0) refused.
  const int64_t T = r.uniform(0, 4), B = r.uniform(0, 3);
  const int64_t O = r.chance(0.05) ? 0 : r.uniform(1, 5);
  const bool recurrent = c.lstm || r.chance(0.5);
  const int64_t I = recurrent ? O : r.chance(0.05) ? 0 : r.uniform(1, 5);
  const auto options = torch::TensorOptions().dtype(r.chance(0.5) ? torch::kFloat : torch::kDouble);
  auto t = [&](std::vector<int64_t> shape, double scale = 1.0) {
    return scale * torch::randn(shape, options);
  };
  const int64_t gates = c.lstm ? 4 * O : O;
  c["z"] = t({T, B, gates});
  c["alpha"] = t({O, I}, 0.1);
  c["eta"] = t({O, I}, 0.1).abs();
  c["trace"] = t({B, O, I});
  c["rule"] = rule;
  c["activation"] = std::string("tanh");
  if (r.chance(0.5)) c["clip"] = 1.0;
  if (r.chance(0.3)) c["synaptic_scaling"] = 2.0;
  if (r.chance(0.3)) {
    c["adaptive_threshold"] = 0.1;
    c["threshold"] = t({B, O});
  }
  c["target_activity"] = 0.0;
  if (r.chance(0.5)) c["checkpoint_every"] = r.uniform(1, 3);
  if (recurrent) {
    c["weight"] = t({gates, O});
    c["hidden"] = t({B, O});
  } else {
    c["x"] = t({T, B, I});
  }
  if (c.lstm) c["cell"] = t({B, O});
  if (rule == "retroactive") c["eligibility"] = t({B, O, I});
  if (rule == "abcd") c["abcd"] = t({4, O, I});
  if (rule == "modulated" || rule == "retroactive") {
    const std::string source = r.pick<std::string>({"internal", "fanout", "external"});
    if (source == "external") {
      c["modulation"] = r.chance(0.5) ? t({T, B}) : t({T, B, O});
    } else {
      c["mod_weight"] = t({O});
      c["mod_bias"] = t({1});
      if (source == "fanout") {
        c["mod_fanout_weight"] = t({O});
        c["mod_fanout_bias"] = t({O});
      }
    }
  }
  if (rule == "modulated" && r.chance(0.5)) c["eta"] = c10::IValue();
  if (r.chance(0.3)) {
    std::vector<int64_t> lengths;
    for (int64_t b = 0; b < B; ++b) lengths.push_back(r.uniform(0, T));
    c["lengths"] = torch::tensor(lengths, torch::kLong);
  }
  return c;
}

// Another tensor in place of v: another shape, dtype, layout or value; None where `optional`.
c10::IValue mutated_tensor(Rng& r, const at::Tensor& v, bool optional) {
  const auto float_options = torch::TensorOptions().dtype(
      v.defined() && v.is_floating_point() ? v.scalar_type() : torch::kFloat);
  std::vector<std::string> kinds = {"random shape", "empty", "integers"};
  if (optional) kinds.push_back("none");
  if (v.defined()) {
    kinds.insert(kinds.end(), {"dtype", "other float", "unsqueezed", "nan", "inf", "strided",
                               "stride 0"});
    if (v.dim() >= 2) kinds.push_back("transposed");
    if (v.dim() >= 1 && v.size(-1) > 0) kinds.insert(kinds.end(), {"truncated", "expanded"});
  }
  const std::string kind = r.pick(kinds);
  if (kind == "none") return c10::IValue();
  if (kind == "random shape") {
    std::vector<int64_t> shape;
    for (int64_t d = r.uniform(0, 4); d > 0; --d) shape.push_back(r.uniform(0, 6));
    return torch::randn(shape, float_options);
  }
  if (kind == "empty") return torch::empty({0}, float_options);
  if (kind == "integers")
    return torch::randint(-3, 3, v.defined() ? v.sizes().vec() : std::vector<int64_t>{3});
  if (kind == "dtype") return v.to(r.chance(0.5) ? torch::kInt : torch::kBool);
  if (kind == "other float") return v.to(v.scalar_type() == torch::kFloat ? torch::kDouble : torch::kFloat);
  if (kind == "unsqueezed") return v.unsqueeze(0);
  if (kind == "nan" || kind == "inf") {
    if (!v.is_floating_point()) return v;
    return v.clone().fill_(kind == "nan" ? std::numeric_limits<double>::quiet_NaN()
                                         : std::numeric_limits<double>::infinity());
  }
  if (kind == "strided") return v.flatten().slice(0, 0, c10::nullopt, std::max<int64_t>(1, v.numel() / 2));
  if (kind == "stride 0") return v.as_strided(v.sizes(), std::vector<int64_t>(v.dim(), 0));
  if (kind == "transposed") return v.transpose(0, 1);
  if (kind == "truncated") return v.narrow(-1, 0, v.size(-1) - 1);
  return v.narrow(-1, 0, 1).expand(v.sizes());  // expanded
}

void mutate_argument(Rng& r, Call& c, std::vector<std::string>& changed) {
  const auto& schema = op("plastic_scan").schema().arguments();
  const size_t k = static_cast<size_t>(r.uniform(0, static_cast<int64_t>(schema.size()) - 1));
  const std::string& name = c.names[k];
  changed.push_back(name);
  c10::IValue& value = c.values[k];
  const std::string type = schema[k].type()->annotation_str();  // "Optional[float]", ...
  if (name == "rule" || name == "activation") {
    value = r.pick<std::string>({"", "hebb ", "HEBB", "relu", "sigmoid", "identity",
                                 std::string(300, 'x'), "tanh", "abcd"});
  } else if (type == "Optional[float]" || type == "float") {
    const double inf = std::numeric_limits<double>::infinity();
    const std::vector<double> values = {0.0, -1.0, std::nan(""), inf, -inf, 1e300, -0.0};
    value = type == "float" || r.chance(0.8) ? c10::IValue(r.pick(values)) : c10::IValue();
  } else if (type == "Optional[int]") {
    value = r.chance(0.8) ? c10::IValue(r.pick<int64_t>({0, -1, std::numeric_limits<int64_t>::min(),
                                                         std::numeric_limits<int64_t>::max(), 1,
                                                         1000000}))
                          : c10::IValue();
  } else {  // a tensor
    value = mutated_tensor(r, value.isTensor() ? value.toTensor() : at::Tensor(),
                           type == "Optional[Tensor]");
  }
}

// The call through one of its family's ops: the public op, the forward, or the forward and then
// the backward.
void run(Rng& r, const Call& c) {
  const std::string family = c.lstm ? "plastic_lstm_scan" : "plastic_scan";
  const int which = static_cast<int>(r.uniform(0, 2));
  torch::jit::Stack stack(c.values.begin(), c.values.end());
  if (which == 0) {
    op(family).callBoxed(stack);
    return;
  }
  op(family + "_forward").callBoxed(stack);
  if (which == 1) return;
  // The backward: the output gradients, then what the forward kept (y or h, the checkpoints,
  // the LSTM's activations), one of them replaced.
  const size_t n_grads = c.lstm ? 6 : 5;
  std::vector<c10::IValue> inputs;
  for (size_t j = 0; j < n_grads; ++j) {
    const at::Tensor& out = stack[j].toTensor();
    inputs.push_back(out.numel() ? torch::randn_like(out) : out);
  }
  inputs.push_back(stack[0]);
  inputs.push_back(stack[n_grads]);
  inputs.push_back(stack[n_grads + 1]);
  if (c.lstm) inputs.push_back(stack[n_grads + 2]);
  auto& replaced = inputs[static_cast<size_t>(r.uniform(0, static_cast<int64_t>(inputs.size()) - 1))];
  replaced = mutated_tensor(r, replaced.toTensor(), /*optional=*/false);
  torch::jit::Stack backward(inputs.begin(), inputs.end());
  backward.insert(backward.end(), c.values.begin(), c.values.end());
  op(family + "_backward").callBoxed(backward);
}

}  // namespace

TEST(Fuzz, MutatedOpCallsReturnOrNameAnArgument) {
  const std::regex head("^(plastic_(?:lstm_)?scan(?:_backward)?): ([A-Za-z_/]+):");
  int errors = 0, returned = 0;
  for (int64_t k = 0; k < 4000; ++k) {
    Rng r(0x5eed0000 + static_cast<uint64_t>(k));
    torch::manual_seed(static_cast<uint64_t>(k));
    Call c = valid_call(r);
    std::vector<std::string> changed;
    for (int64_t n = r.uniform(0, 2); n > 0; --n) mutate_argument(r, c, changed);
    std::ostringstream where;
    where << "case " << k << " (lstm " << c.lstm << ", changed";
    for (const auto& name : changed) where << " " << name;
    where << ")";
    try {
      run(r, c);
      ++returned;
    } catch (const c10::Error& e) {
      ++errors;
      const std::string message = e.what_without_backtrace();
      std::smatch m;
      ASSERT_TRUE(std::regex_search(message, m, head)) << where.str() << ": " << message;
      std::set<std::string> arguments;
      for (const auto& name : argument_names(m[1].str())) arguments.insert(name);
      for (const auto& name : argument_names(c.lstm ? "plastic_lstm_scan" : "plastic_scan"))
        arguments.insert(name);
      std::stringstream named(m[2].str());
      for (std::string name; std::getline(named, name, '/');)
        EXPECT_TRUE(arguments.count(name)) << where.str() << ": '" << name
                                           << "' is not an argument of " << m[1] << ": " << message;
    }
  }
  std::cout << returned << " calls returned, " << errors << " were refused\n";
  // Both outcomes are common, so the fuzz reaches the kernels as well as the checks.
  EXPECT_GT(returned, 1000);
  EXPECT_GT(errors, 1000);
}
