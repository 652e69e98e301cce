// torchplastic._C: the only C++ that sees Python. Loading it loads libtorchplastic, whose
// static registrations put the ops into the dispatcher. It also exposes the C++ modules as
// torchplastic.cpp.PlasticLinear / PlasticRNN / PlasticRNNCell / PlasticLSTM / PlasticLSTMCell
// (torch::python::bind_module),
// taking the same keywords as the Python modules and returning torchplastic.PlasticState.
#include <torch/extension.h>
#include <torch/python.h>

#include <limits>
#include <sstream>

#include "ops/checks.h"
#include "torchplastic/torchplastic.h"

namespace py = pybind11;
using torchplastic::PlasticState;

namespace {

py::object to_python(const PlasticState& s) {
  static py::object cls = py::module_::import("torchplastic.state").attr("PlasticState");
  auto opt = [](const at::Tensor& t) -> py::object { return t.defined() ? py::cast(t) : py::none(); };
  return cls(opt(s.hidden), opt(s.trace), opt(s.eligibility), opt(s.threshold), opt(s.cell));
}

PlasticState from_python(const py::object& o) {
  PlasticState s;
  if (o.is_none()) return s;
  auto get = [&](const char* name) {
    py::object v = o.attr(name);
    return v.is_none() ? at::Tensor() : v.cast<at::Tensor>();
  };
  s.hidden = get("hidden");
  s.trace = get("trace");
  s.eligibility = get("eligibility");
  s.threshold = get("threshold");
  s.cell = get("cell");
  return s;
}

c10::optional<double> optional_double(py::handle v) {
  return v.is_none() ? c10::nullopt : c10::optional<double>(v.cast<double>());
}

// The Python keywords of SPEC §4 onto the C++ options.
template <typename Options>
void apply_keywords(Options& o, const py::kwargs& kw, const char* owner) {
  using namespace torchplastic;
  for (auto item : kw) {
    const std::string key = py::str(item.first);
    py::handle v = item.second;
    if (key == "rule") o.rule(rule_from_string(v.cast<std::string>()));
    else if (key == "alpha") o.alpha(granularity_from_string(v.cast<std::string>(), "alpha"));
    else if (key == "eta") o.eta(granularity_from_string(v.cast<std::string>(), "eta"));
    else if (key == "activation") o.activation(activation_from_string(v.cast<std::string>()));
    else if (key == "modulation") o.modulation(modulation_from_string(v.cast<std::string>()));
    else if (key == "clip") {
      if (v.is_none()) o.clip(std::numeric_limits<double>::infinity());
      else if (py::isinstance<py::str>(v)) {
        TORCH_CHECK_VALUE(v.cast<std::string>() == "auto", owner,
                          ": clip: expected 'auto', None or a number, got '", v.cast<std::string>(), "'");
        o.clip(c10::nullopt);
      } else o.clip(v.cast<double>());
    } else if (key == "synaptic_scaling") o.synaptic_scaling(optional_double(v));
    else if (key == "adaptive_threshold") o.adaptive_threshold(optional_double(v));
    else if (key == "target_activity") o.target_activity(v.cast<double>());
    else if (key == "alpha_init") o.alpha_init(v.cast<double>());
    else if (key == "eta_init") o.eta_init(v.cast<double>());
    else if (key == "abcd") o.abcd(granularity_from_string(v.cast<std::string>(), "abcd"));
    else if (key == "abcd_init") {
      const auto values = v.cast<std::vector<double>>();
      TORCH_CHECK_VALUE(values.size() == 4, owner, ": abcd_init: expected four numbers (A, B, C, D), got ",
                        values.size());
      o.abcd_init({values[0], values[1], values[2], values[3]});
    }
    else if (key == "checkpoint_every")
      o.checkpoint_every(v.is_none() ? c10::nullopt : c10::optional<int64_t>(v.cast<int64_t>()));
    else if (key == "batch_first") o.batch_first(v.cast<bool>());
    else throw py::type_error(std::string(owner) + ": unexpected keyword argument '" + key + "'");
  }
}

// forward(input, state=None, modulation=None, lengths=None) -> (output, torchplastic.PlasticState)
template <typename Impl>
py::tuple call(Impl& self, const at::Tensor& input, const py::object& state,
               const c10::optional<at::Tensor>& modulation, const c10::optional<at::Tensor>& lengths) {
  auto [y, s] = self.forward(input, from_python(state), modulation.value_or(at::Tensor()),
                             lengths.value_or(at::Tensor()));
  return py::make_tuple(y, to_python(s));
}

// The members that hold a module's parameters, by parameter name.
using Members = std::vector<std::pair<const char*, at::Tensor*>>;
Members core_members(torchplastic::detail::PlasticCore& c) {
  return {{"alpha", &c.alpha},
          {"eta", &c.eta},
          {"abcd", &c.abcd},
          {"mod_weight", &c.mod_weight},
          {"mod_bias", &c.mod_bias},
          {"mod_fanout_weight", &c.mod_fanout_weight},
          {"mod_fanout_bias", &c.mod_fanout_bias}};
}
Members parameter_members(torchplastic::PlasticLinearImpl& m) {
  auto members = core_members(m.core);
  members.insert(members.end(), {{"weight", &m.weight}, {"bias", &m.bias}});
  return members;
}
template <typename Impl>  // the recurrent modules: RNN, RNN cell, LSTM, LSTM cell
Members parameter_members(Impl& m) {
  auto members = core_members(m.core);
  members.insert(members.end(),
                 {{"weight_ih", &m.weight_ih}, {"weight_hh", &m.weight_hh}, {"bias", &m.bias}});
  return members;
}

// forward with the parameters a Python module owns (torchplastic/cpp.py): the module's
// parameter members point at them for the length of the call.
template <typename Impl>
py::tuple call_with(Impl& self, const py::dict& parameters, const at::Tensor& input,
                    const py::object& state, const c10::optional<at::Tensor>& modulation,
                    const c10::optional<at::Tensor>& lengths) {
  Members members = parameter_members(self);
  std::vector<at::Tensor> own;
  for (auto& [name, member] : members) own.push_back(*member);
  struct Restore {
    Members& members;
    std::vector<at::Tensor>& own;
    ~Restore() {
      for (size_t k = 0; k < members.size(); ++k) *members[k].second = own[k];
    }
  } restore{members, own};
  for (auto& [name, member] : members) {
    if (!member->defined()) continue;
    TORCH_CHECK_VALUE(parameters.contains(name), self.core.owner, ": parameters: expected a tensor '",
                      name, "', got none");
    *member = parameters[name].template cast<at::Tensor>();
  }
  return call(self, input, state, modulation, lengths);
}

template <typename Impl, typename Options>
void bind_plastic_module(py::module_& m, const char* name, const char* first, const char* second) {
  torch::python::bind_module<Impl, /*force_enable=*/true>(m, name)
      .def(py::init([name](int64_t a, int64_t b, bool bias, const py::kwargs& kw) {
             Options o(a, b);
             o.bias(bias);
             apply_keywords(o, kw, name);
             return std::make_shared<Impl>(o);
           }),
           py::arg(first), py::arg(second), py::arg("bias") = true)
      .def("forward", &call<Impl>, py::arg("input"), py::arg("state") = py::none(),
           py::arg("modulation") = py::none(), py::arg("lengths") = py::none())
      .def("__call__", &call<Impl>, py::arg("input"), py::arg("state") = py::none(),
           py::arg("modulation") = py::none(), py::arg("lengths") = py::none())
      .def("forward_with", &call_with<Impl>, py::arg("parameters"), py::arg("input"),
           py::arg("state") = py::none(), py::arg("modulation") = py::none(),
           py::arg("lengths") = py::none())
      .def("reset_parameters", &Impl::reset_parameters)
      .def("describe", [](const Impl& self) {
        std::ostringstream text;
        self.pretty_print(text);  // torchplastic::PlasticRNN(5, 4, rule=hebb, ...)
        return text.str();
      });
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "torchplastic native extension: build information and the C++ modules "
            "(the ops live in torch.ops.torchplastic)";
  m.def(
      "build_info",
      [] {
        const auto info = torchplastic::build_info();
        py::dict d;
        d["version"] = info.version;
        d["with_cuda"] = info.with_cuda;
        d["torch_version"] = info.torch_version;
        d["cuda_version"] = info.cuda_version;
        d["cuda_archs"] = info.cuda_archs;
        d["cpu_kernels"] = info.cpu_kernels;
        d["cpu_kernels_built"] = info.cpu_kernels_built;
        return d;
      },
      "What this build holds: version, with_cuda, torch_version, cuda_version, cuda_archs, "
      "cpu_kernels, the instruction set of the CPU kernels this process runs, and "
      "cpu_kernels_built, those the build holds (comma-separated).");

  m.def(
      "rules",
      [] {
        py::dict rules;
#define TORCHPLASTIC_RULE_INFO_(value, name)                                                  \
  {                                                                                           \
    const auto info = torchplastic::rule_info(torchplastic::Rule::value);                     \
    rules[name] = py::dict(py::arg("uses_eta") = info.uses_eta,                               \
                           py::arg("modulated") = info.modulated,                             \
                           py::arg("eligibility") = info.eligibility,                         \
                           py::arg("coefficients") = info.coefficients,                       \
                           py::arg("default_clip") =                                          \
                               info.default_clip > 0 ? py::cast(info.default_clip) : py::none()); \
  }
        TORCHPLASTIC_RULES(TORCHPLASTIC_RULE_INFO_)
#undef TORCHPLASTIC_RULE_INFO_
        return rules;
      },
      "The rules the C++ library knows (TORCHPLASTIC_RULES), with their traits.");
  m.def(
      "checkpoint_interval",
      [](int64_t T, c10::optional<int64_t> requested) {
        return torchplastic::detail::checkpoint_interval(T, requested);
      },
      py::arg("T"), py::arg("requested") = py::none(),
      "K of SPEC §3: `requested` capped at T, or about sqrt(T) when None (what the op uses).");
  m.def(
      "check_scan_options",
      [](const std::string& owner, const std::string& activation, c10::optional<double> clip,
         c10::optional<double> synaptic_scaling, c10::optional<double> adaptive_threshold,
         c10::optional<int64_t> checkpoint_every) {
        torchplastic::detail::check_scan_options(owner.c_str(), activation, clip, synaptic_scaling,
                                                 adaptive_threshold, checkpoint_every);
      },
      py::arg("owner"), py::arg("activation"), py::arg("clip"), py::arg("synaptic_scaling"),
      py::arg("adaptive_threshold"), py::arg("checkpoint_every"),
      "The op's checks of its options, for modules to run where they are built.");

  py::module_ cpp = m.def_submodule("cpp", "The C++ modules of torchplastic (torchplastic/nn.h)");
  bind_plastic_module<torchplastic::PlasticLinearImpl, torchplastic::PlasticLinearOptions>(
      cpp, "PlasticLinear", "in_features", "out_features");
  bind_plastic_module<torchplastic::PlasticRNNImpl, torchplastic::PlasticRNNOptions>(
      cpp, "PlasticRNN", "input_size", "hidden_size");
  bind_plastic_module<torchplastic::PlasticRNNCellImpl, torchplastic::PlasticRNNCellOptions>(
      cpp, "PlasticRNNCell", "input_size", "hidden_size");
  bind_plastic_module<torchplastic::PlasticLSTMImpl, torchplastic::PlasticLSTMOptions>(
      cpp, "PlasticLSTM", "input_size", "hidden_size");
  bind_plastic_module<torchplastic::PlasticLSTMCellImpl, torchplastic::PlasticLSTMCellOptions>(
      cpp, "PlasticLSTMCell", "input_size", "hidden_size");
}
