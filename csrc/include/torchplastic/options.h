// Option enums shared by the op and the modules (SPEC §2, §4).
#pragma once

#include <string>

namespace torchplastic {

// Trace update rule (SPEC §2 step 5).
enum class Rule { Hebb, Oja, Modulated, Retroactive };
// Activation φ.
enum class Activation { Tanh, Relu, Sigmoid, Identity };
// Where the neuromodulation m_t of the modulated rules comes from.
enum class Modulation { Internal, Fanout, External };
// Granularity of α and η: per connection [O, I], per postsynaptic neuron [O, 1], scalar [1, 1].
enum class Granularity { Connection, Neuron, Scalar };

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
