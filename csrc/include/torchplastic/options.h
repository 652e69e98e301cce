// Option enums shared by the op and the modules (SPEC §2, §4).
#pragma once

#include <string>

namespace torchplastic {

// The plasticity rules (SPEC §2 step 5), X(enum value, name): the one list of them in C++.
// Each rule's math and traits are its header in csrc/kernels/rules/ (docs/adding-a-rule.md).
#define TORCHPLASTIC_RULES(X)   \
  X(Hebb, "hebb")               \
  X(Oja, "oja")                 \
  X(Modulated, "modulated")     \
  X(Retroactive, "retroactive") \
  X(Abcd, "abcd")

// Trace update rule.
enum class Rule {
#define TORCHPLASTIC_RULE_ENUM_(value, name) value,
  TORCHPLASTIC_RULES(TORCHPLASTIC_RULE_ENUM_)
#undef TORCHPLASTIC_RULE_ENUM_
};
#define TORCHPLASTIC_RULE_COUNT_(value, name) +1
constexpr int kNumRules = 0 TORCHPLASTIC_RULES(TORCHPLASTIC_RULE_COUNT_);
#undef TORCHPLASTIC_RULE_COUNT_
// Activation φ.
enum class Activation { Tanh, Relu, Sigmoid, Identity };
// Where the neuromodulation m_t of the modulated rules comes from.
enum class Modulation { Internal, Fanout, External };
// Granularity of α and η: per connection [O, I], per postsynaptic neuron [O, 1], scalar [1, 1].
enum class Granularity { Connection, Neuron, Scalar };

// What a rule uses, for code that builds its arguments (the modules).
struct RuleInfo {
  bool uses_eta;        // the trace rate η
  bool modulated;       // neuromodulation m_t (internal head or external tensor)
  bool eligibility;     // an eligibility trace E in the state
  bool coefficients;    // the coefficient tensor `abcd`
  double default_clip;  // the bound clip "auto" stands for; 0: none
};
RuleInfo rule_info(Rule rule);

// The names the op's schema and the Python API use.
std::string to_string(Rule rule);
std::string to_string(Activation activation);
std::string to_string(Modulation modulation);
std::string to_string(Granularity granularity);

// The inverse: "hebb" → Rule::Hebb, ...; c10::Error naming `argument` for anything else.
Rule rule_from_string(const std::string& name, const char* argument = "rule");
Activation activation_from_string(const std::string& name, const char* argument = "activation");
Modulation modulation_from_string(const std::string& name, const char* argument = "modulation");
Granularity granularity_from_string(const std::string& name, const char* argument);

}  // namespace torchplastic
