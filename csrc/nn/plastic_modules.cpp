// C++ modules: parameters, options and input layouts; the math is the op's (ops.h).
// Mirrors python/torchplastic/nn.py: same parameter names, registration order and
// initialisation, so one seed gives the same weights in both languages.
#include "torchplastic/nn.h"

#include <ATen/autocast_mode.h>
#include <torch/nn/functional/linear.h>
#include <torch/nn/init.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "ops/checks.h"

namespace torchplastic {
namespace detail {

namespace {

bool is_modulated(Rule rule) { return rule_info(rule).modulated; }

std::vector<int64_t> shape_of(Granularity g, int64_t O, int64_t I) {
  switch (g) {
    case Granularity::Connection: return {O, I};
    case Granularity::Neuron: return {O, 1};
    default: return {1, 1};
  }
}

// [T, B, F] (or [B, T, F] if batch_first, or unbatched [T, F]) → [T, B, F].
std::pair<at::Tensor, bool> sequence_input(const std::string& owner, const at::Tensor& x,
                                           const char* name, int64_t size, bool batch_first) {
  TORCH_CHECK_VALUE(x.defined(), owner, ": ", name, ": expected a tensor, got undefined");
  TORCH_CHECK_VALUE(x.dim() == 2 || x.dim() == 3, owner, ": ", name, ": expected a 3-D tensor ",
                    batch_first ? "[B, T, F]" : "[T, B, F]", " or an unbatched 2-D [T, F], got shape ",
                    x.sizes());
  TORCH_CHECK_VALUE(x.size(-1) == size, owner, ": ", name, ": expected last dimension ", size,
                    " (in_features), got shape ", x.sizes());
  if (x.dim() == 2) return {x.unsqueeze(1), true};
  return {batch_first ? x.transpose(0, 1) : x, false};
}

// As torch.nn.RNN: an input of another dtype than the module's weights is refused here, naming
// both, rather than deep in a matrix product; under autocast, which casts both, it passes.
void input_dtype(const std::string& owner, const at::Tensor& x, const char* name,
                 const at::Tensor& weight) {
  TORCH_CHECK_VALUE(x.scalar_type() == weight.scalar_type() ||
                        at::autocast::is_autocast_enabled(x.device().type()),
                    owner, ": ", name, ": expected dtype ", weight.scalar_type(),
                    " (the module's parameters), got ", x.scalar_type(),
                    "; convert the input or the module with .to()");
}

// External modulation as the caller passed it, before any change of layout: with modulation
// external, a tensor of shape `leading` (the input's sizes before its features, named `names`,
// e.g. "T, B") or `leading` + [O]; otherwise undefined. `layout` names the input's layout where
// it is not [T, B, F] (", batch_first=true"). As the Python modules' _check_modulation.
void check_modulation(const PlasticCore& core, const at::Tensor& m,
                      std::vector<int64_t> leading, const std::string& names,
                      const char* layout = "") {
  const auto& o = core.options;
  if (!is_modulated(o.rule()) || o.modulation() != Modulation::External) {
    TORCH_CHECK_VALUE(!m.defined(), core.owner, ": modulation: expected undefined (",
                      is_modulated(o.rule())
                          ? "modulation " + to_string(o.modulation()) + ": the module computes its own"
                          : "rule " + to_string(o.rule()) + " takes no neuromodulation",
                      "), got a tensor");
    return;
  }
  const char* size = core.kind == PlasticCore::Kind::Feedforward ? "O" : "H";
  const std::string forms =
      "[" + names + "] or [" + (names.empty() ? "" : names + ", ") + size + "]";
  TORCH_CHECK_VALUE(m.defined(), core.owner, ": modulation: expected a tensor ", forms,
                    " (modulation external", layout, "), got undefined");
  std::vector<int64_t> with_size = leading;
  with_size.push_back(o.out_features());
  TORCH_CHECK_VALUE(m.sizes() == at::IntArrayRef(leading) || m.sizes() == at::IntArrayRef(with_size),
                    core.owner, ": modulation: expected shape ", at::IntArrayRef(leading), " or ",
                    at::IntArrayRef(with_size), " (", forms, layout, "), got ", m.sizes());
  TORCH_CHECK_VALUE(m.scalar_type() == core.alpha.scalar_type() ||
                        at::autocast::is_autocast_enabled(m.device().type()),
                    core.owner, ": modulation: expected dtype ", core.alpha.scalar_type(),
                    " (the module's parameters), got ", m.scalar_type());
}

// External modulation in the input's layout ([B, T(, O)] if batch_first, [T(, O)] unbatched),
// checked against xs [T, B, F] → [T, B(, O)] (unbatched: as given).
at::Tensor sequence_modulation(const PlasticCore& core, const at::Tensor& m, const at::Tensor& xs,
                               bool batch_first, bool unbatched) {
  const int64_t T = xs.size(0), B = xs.size(1);
  if (unbatched) check_modulation(core, m, {T}, "T", ", unbatched");
  else if (batch_first) check_modulation(core, m, {B, T}, "B, T", ", batch_first=true");
  else check_modulation(core, m, {T, B}, "T, B");
  return m.defined() && batch_first && !unbatched ? m.transpose(0, 1) : m;
}

// lengths= as the caller passed it: integers, and, where reading them costs no wait for a
// device (on the CPU), in [0, T]; `steps` says what T is. The op checks the values in any case,
// but under its own name, with T as the length of z. As the Python modules' _lengths.
void check_lengths(const std::string& owner, const at::Tensor& lengths, int64_t T,
                   const char* steps) {
  if (!lengths.defined()) return;
  TORCH_CHECK_VALUE(lengths.scalar_type() == at::kLong || lengths.scalar_type() == at::kInt, owner,
                    ": lengths: expected an integer tensor (int64 or int32), got ",
                    lengths.scalar_type());
  if (!lengths.is_cpu() || lengths.numel() == 0) return;
  const auto [lo, hi] = at::aminmax(lengths);
  const int64_t shortest = lo.item<int64_t>(), longest = hi.item<int64_t>();
  TORCH_CHECK_VALUE(shortest >= 0 && longest <= T, owner, ": lengths: expected values in [0, ", T,
                    "] (", steps, "), got values from ", shortest, " to ", longest);
}

PlasticState map_state(const PlasticState& s, at::Tensor (*f)(const at::Tensor&)) {
  auto g = [&](const at::Tensor& t) { return t.defined() ? f(t) : t; };
  return {g(s.hidden), g(s.trace), g(s.eligibility), g(s.threshold), g(s.cell)};
}
at::Tensor add_batch(const at::Tensor& t) { return t.unsqueeze(0); }
at::Tensor drop_batch(const at::Tensor& t) { return t.squeeze(0); }

}  // namespace

PlasticLinearOptions as_linear_options(const PlasticRNNOptions& o) {
  PlasticLinearOptions l(o.input_size(), o.hidden_size());
  l.bias(o.bias())
      .rule(o.rule())
      .alpha(o.alpha())
      .eta(o.eta())
      .activation(o.activation())
      .clip(o.clip())
      .modulation(o.modulation())
      .synaptic_scaling(o.synaptic_scaling())
      .adaptive_threshold(o.adaptive_threshold())
      .target_activity(o.target_activity())
      .alpha_init(o.alpha_init())
      .eta_init(o.eta_init())
      .abcd(o.abcd())
      .abcd_init(o.abcd_init())
      .checkpoint_every(o.checkpoint_every())
      .batch_first(o.batch_first());
  return l;
}

void PlasticCore::build(torch::nn::Module& module, const char* owner_name, Size in, Size out,
                        int64_t presynaptic, Kind module_kind, const PlasticLinearOptions& o) {
  owner = owner_name;
  options = o;
  kind = module_kind;
  TORCH_CHECK_VALUE(kind != Kind::Lstm || o.activation() == Activation::Tanh, owner,
                    ": activation: expected tanh (the LSTM's cell candidate), got ",
                    to_string(o.activation()));
  for (const Size& size : {in, out})
    TORCH_CHECK_VALUE(size.value > 0, owner, ": ", size.name, ": expected a positive int, got ",
                      size.value);
  const RuleInfo rule = rule_info(o.rule());
  const bool modulated = rule.modulated;
  if (!o.clip())  // "auto"
    clip = rule.default_clip > 0 ? c10::optional<double>(rule.default_clip) : c10::nullopt;
  else if (std::isinf(*o.clip()) && *o.clip() > 0) clip = c10::nullopt;           // none
  else clip = o.clip();
  // The op's own checks, run here so that a bad option fails where the module is built.
  check_scan_options(owner.c_str(), to_string(o.activation()), clip, o.synaptic_scaling(),
                     o.adaptive_threshold(), o.checkpoint_every());

  const int64_t O = out.value, I = presynaptic;
  alpha = module.register_parameter("alpha", torch::empty(shape_of(o.alpha(), O, I)));
  // A rule without η gets no parameter: one without gradient would break DDP.
  eta = rule.uses_eta
            ? module.register_parameter("eta", torch::empty(shape_of(o.eta(), O, I)))
            : at::Tensor();
  // A, B, C, D of rule abcd, stacked.
  if (rule.coefficients) {
    auto shape = shape_of(o.abcd(), O, I);
    shape.insert(shape.begin(), 4);
    abcd = module.register_parameter("abcd", torch::empty(shape));
  }
  const bool head = modulated && o.modulation() != Modulation::External;
  if (head) {
    mod_weight = module.register_parameter("mod_weight", torch::empty({O}));
    mod_bias = module.register_parameter("mod_bias", torch::empty({1}));
  }
  if (modulated && o.modulation() == Modulation::Fanout) {
    mod_fanout_weight = module.register_parameter("mod_fanout_weight", torch::empty({O}));
    mod_fanout_bias = module.register_parameter("mod_fanout_bias", torch::empty({O}));
  }
}

void PlasticCore::reset_parameters() {
  torch::NoGradGuard no_grad;
  alpha.uniform_(0.0, 1.0).mul_(options.alpha_init());
  if (eta.defined()) eta.fill_(options.eta_init());
  if (abcd.defined())
    for (int64_t k = 0; k < 4; ++k) abcd[k].fill_(options.abcd_init()[k]);
  if (mod_weight.defined()) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(mod_weight.size(0)));
    mod_weight.uniform_(-bound, bound);
    mod_bias.uniform_(-bound, bound);
  }
  if (mod_fanout_weight.defined()) {
    mod_fanout_weight.uniform_(-1.0, 1.0);
    mod_fanout_bias.uniform_(-1.0, 1.0);
  }
}

std::tuple<at::Tensor, PlasticState> PlasticCore::scan(const at::Tensor& z, const at::Tensor& x,
                                                       const at::Tensor& weight_hh,
                                                       PlasticState state, at::Tensor modulation,
                                                       bool unbatched, at::Tensor lengths) const {
  if (unbatched) {
    state = map_state(state, add_batch);
    if (modulation.defined()) modulation = modulation.unsqueeze(1);
    if (lengths.defined() && lengths.numel() == 1) lengths = lengths.reshape({1});
  }
  // A field this module has no use for would be dropped here or refused by the op under its
  // own name: refused here, saying why.
  auto refuse_unused = [&](const char* name, const at::Tensor& t, bool used, const char* why) {
    TORCH_CHECK_VALUE(used || !t.defined(), owner, ": state: expected ", name, " None (", why,
                      "), got a tensor");
  };
  refuse_unused("hidden", state.hidden, kind != Kind::Feedforward,
                "a feedforward layer has no hidden state");
  TORCH_CHECK_VALUE(!state.eligibility.defined() || rule_info(options.rule()).eligibility, owner,
                    ": state: expected eligibility None (rule='", to_string(options.rule()),
                    "' has no eligibility trace), got a tensor");
  refuse_unused("threshold", state.threshold, options.adaptive_threshold().has_value(),
                "the module has no adaptive threshold");
  refuse_unused("cell", state.cell, kind == Kind::Lstm, "only the plastic LSTM has a cell state");
  const int64_t B = z.size(1);
  TORCH_CHECK_VALUE(!lengths.defined() || (lengths.dim() == 1 && lengths.size(0) == B), owner,
                    ": lengths: expected shape [", B, "] (the batch size of the input), got ",
                    lengths.sizes());
  const int64_t O = options.out_features();
  const int64_t I = kind == Kind::Feedforward ? options.in_features() : O;
  const std::vector<int64_t> vector{B, O}, matrix{B, O, I};
  // Dtypes as the op takes them: the parameters', or for the traces (`traces`) also float32
  // where the parameters are float16/bfloat16; under autocast, which casts them, not here.
  const auto dtype = z.scalar_type();
  const auto compute = dtype == at::kDouble ? at::kDouble : at::kFloat;
  const bool check_dtypes = !at::autocast::is_autocast_enabled(z.device().type());
  for (const auto& [name, t, shape, traces] :
       {std::tuple<const char*, at::Tensor, at::IntArrayRef, bool>{"hidden", state.hidden, vector, false},
        {"trace", state.trace, matrix, true},
        {"eligibility", state.eligibility, matrix, true},
        {"threshold", state.threshold, vector, true},
        {"cell", state.cell, vector, false}}) {
    if (!t.defined()) continue;
    if (t.sizes() != shape) {
      // Unbatched: as the caller passed it, without the batch dimension added above.
      TORCH_CHECK_VALUE(!unbatched, owner, ": state: expected ", name, " of shape ",
                        shape.slice(1), " (unbatched input), got shape ", t.sizes().slice(1));
      TORCH_CHECK_VALUE(false, owner, ": state: expected ", name, " of shape ", shape,
                        " for batch size ", B, " (from the input), got shape ", t.sizes());
    }
    TORCH_CHECK_VALUE(!check_dtypes || t.scalar_type() == dtype ||
                          (traces && t.scalar_type() == compute),
                      owner, ": state: expected ", name, " of dtype ", dtype,
                      traces && compute != dtype ? std::string(" or ") + c10::toString(compute) : "",
                      " (the module's parameters), got ", t.scalar_type());
  }
  const bool recurrent = kind != Kind::Feedforward;
  ScanOptions so;
  so.x(recurrent ? at::Tensor() : x)
      .hidden(recurrent ? state.hidden : at::Tensor())
      .rule(options.rule())
      .clip(clip)
      .modulation(modulation)
      .mod_weight(mod_weight)
      .mod_bias(mod_bias)
      .mod_fanout_weight(mod_fanout_weight)
      .mod_fanout_bias(mod_fanout_bias)
      .eligibility(state.eligibility)
      .synaptic_scaling(options.synaptic_scaling())
      .adaptive_threshold(options.adaptive_threshold())
      .target_activity(options.target_activity())
      .threshold(state.threshold)
      .checkpoint_every(options.checkpoint_every())
      .abcd(abcd)
      .lengths(lengths);
  at::Tensor y;
  PlasticState out;
  if (kind == Kind::Lstm) {
    so.cell(state.cell);
    std::tie(y, out) = plastic_lstm_scan(z, weight_hh, alpha, eta, state.trace, so);
  } else {
    so.weight(recurrent ? weight_hh : at::Tensor()).activation(options.activation());
    std::tie(y, out) = plastic_scan(z, alpha, eta, state.trace, so);
  }
  if (unbatched) {
    y = y.squeeze(1);
    out = map_state(out, drop_batch);
  }
  return {y, out};
}

void PlasticCore::print(std::ostream& s) const {
  s << ", rule=" << to_string(options.rule());
  if (is_modulated(options.rule())) s << ", modulation=" << to_string(options.modulation());
  s << ", alpha=" << to_string(options.alpha()) << ", eta=" << to_string(options.eta());
  if (abcd.defined()) s << ", abcd=" << to_string(options.abcd());
  if (options.activation() != Activation::Tanh) s << ", activation=" << to_string(options.activation());
  if (clip) s << ", clip=" << *clip;
  if (options.synaptic_scaling()) s << ", synaptic_scaling=" << *options.synaptic_scaling();
  if (options.adaptive_threshold()) s << ", adaptive_threshold=" << *options.adaptive_threshold();
  if (options.checkpoint_every()) s << ", checkpoint_every=" << *options.checkpoint_every();
  if (options.batch_first()) s << ", batch_first=true";
}

}  // namespace detail

// ------------------------------------------------------------------ PlasticLinear

PlasticLinearImpl::PlasticLinearImpl(PlasticLinearOptions options_) : options(std::move(options_)) {
  reset();
}

void PlasticLinearImpl::reset() {
  core.build(*this, "PlasticLinear", {"in_features", options.in_features()},
             {"out_features", options.out_features()}, options.in_features(),
             detail::PlasticCore::Kind::Feedforward, options);
  weight = register_parameter("weight", torch::empty({options.out_features(), options.in_features()}));
  bias = options.bias() ? register_parameter("bias", torch::empty({options.out_features()}))
                        : at::Tensor();
  reset_parameters();
}

void PlasticLinearImpl::reset_parameters() {
  core.reset_parameters();
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias.defined()) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(options.in_features()));
    bias.uniform_(-bound, bound);
  }
}

void PlasticLinearImpl::pretty_print(std::ostream& s) const {
  s << "torchplastic::PlasticLinear(" << options.in_features() << ", " << options.out_features();
  if (!options.bias()) s << ", bias=false";
  core.print(s);
  s << ")";
}

std::tuple<at::Tensor, PlasticState> PlasticLinearImpl::forward(const at::Tensor& x,
                                                                const PlasticState& state,
                                                                const at::Tensor& modulation,
                                                                const at::Tensor& lengths) {
  auto [xs, unbatched] = detail::sequence_input(core.owner, x, "x", options.in_features(),
                                                options.batch_first());
  detail::input_dtype(core.owner, xs, "x", weight);
  const at::Tensor z = torch::nn::functional::linear(xs, weight, bias);
  detail::check_lengths(core.owner, lengths, xs.size(0), "T, the input's steps");
  const at::Tensor m =
      detail::sequence_modulation(core, modulation, xs, options.batch_first(), unbatched);
  auto [y, out] = core.scan(z, xs, {}, state, m, unbatched, lengths);
  if (options.batch_first() && !unbatched) y = y.transpose(0, 1);
  return {y, out};
}

// ------------------------------------------------------------------ PlasticRNN

namespace {

// The core and the weights of a recurrent module (RNN or LSTM, sequence or cell): W_ih, W_hh
// and b with one block of hidden_size rows per gate (the LSTM's four: i, f, g, o).
void build_recurrent(torch::nn::Module& m, detail::PlasticCore& core, const char* name,
                     detail::PlasticCore::Kind kind, const PlasticRNNOptions& o,
                     at::Tensor& weight_ih, at::Tensor& weight_hh, at::Tensor& bias) {
  core.build(m, name, {"input_size", o.input_size()}, {"hidden_size", o.hidden_size()},
             o.hidden_size(), kind, detail::as_linear_options(o));
  const int64_t gates = kind == detail::PlasticCore::Kind::Lstm ? 4 : 1;
  const int64_t rows = gates * o.hidden_size();
  weight_ih = m.register_parameter("weight_ih", torch::empty({rows, o.input_size()}));
  weight_hh = m.register_parameter("weight_hh", torch::empty({rows, o.hidden_size()}));
  bias = o.bias() ? m.register_parameter("bias", torch::empty({rows})) : at::Tensor();
}

void reset_rnn_weights(const PlasticRNNOptions& o, at::Tensor& weight_ih, at::Tensor& weight_hh,
                       at::Tensor& bias) {
  torch::NoGradGuard no_grad;
  const double bound = 1.0 / std::sqrt(static_cast<double>(o.hidden_size()));
  for (at::Tensor* w : {&weight_ih, &weight_hh, &bias})
    if (w->defined()) w->uniform_(-bound, bound);
}

void print_rnn(std::ostream& s, const char* name, const PlasticRNNOptions& o,
               const detail::PlasticCore& core) {
  s << "torchplastic::" << name << "(" << o.input_size() << ", " << o.hidden_size();
  if (!o.bias()) s << ", bias=false";
  core.print(s);
  s << ")";
}

// One step of a recurrent module (RNN or LSTM cell) through core.scan.
std::tuple<at::Tensor, PlasticState> cell_step(const detail::PlasticCore& core,
                                               const PlasticRNNOptions& options,
                                               const at::Tensor& weight_ih,
                                               const at::Tensor& weight_hh, const at::Tensor& bias,
                                               const at::Tensor& u, const PlasticState& state,
                                               const at::Tensor& modulation,
                                               const at::Tensor& lengths) {
  TORCH_CHECK_VALUE(u.defined() && (u.dim() == 1 || u.dim() == 2) &&
                        u.size(-1) == options.input_size(),
                    core.owner, ": input: expected shape [B, ", options.input_size(), "] or [",
                    options.input_size(), "], got ", u.defined() ? u.sizes() : at::IntArrayRef{});
  detail::input_dtype(core.owner, u, "input", weight_ih);
  const bool unbatched = u.dim() == 1;
  const at::Tensor ub = unbatched ? u.unsqueeze(0) : u;
  const at::Tensor z = torch::nn::functional::linear(ub, weight_ih, bias).unsqueeze(0);
  detail::check_lengths(core.owner, lengths, 1, "0 skips the step, 1 takes it");
  if (unbatched) detail::check_modulation(core, modulation, {}, "", ", unbatched");
  else detail::check_modulation(core, modulation, {u.size(0)}, "B");
  const at::Tensor m = modulation.defined() ? modulation.unsqueeze(0) : modulation;
  // core.scan takes z [T = 1, B, H]; for an unbatched input B = 1 and the state and the
  // modulation carry no batch dimension.
  auto [y, out] = core.scan(z, {}, weight_hh, state, m, unbatched, lengths);
  return {y[0], out};
}

// A sequence through a recurrent module (RNN or LSTM) through core.scan.
std::tuple<at::Tensor, PlasticState> sequence(const detail::PlasticCore& core,
                                              const PlasticRNNOptions& options,
                                              const at::Tensor& weight_ih,
                                              const at::Tensor& weight_hh, const at::Tensor& bias,
                                              const at::Tensor& u, const PlasticState& state,
                                              const at::Tensor& modulation,
                                              const at::Tensor& lengths) {
  auto [us, unbatched] = detail::sequence_input(core.owner, u, "input", options.input_size(),
                                                options.batch_first());
  detail::input_dtype(core.owner, us, "input", weight_ih);
  const at::Tensor z = torch::nn::functional::linear(us, weight_ih, bias);
  detail::check_lengths(core.owner, lengths, us.size(0), "T, the input's steps");
  const at::Tensor m =
      detail::sequence_modulation(core, modulation, us, options.batch_first(), unbatched);
  auto [y, out] = core.scan(z, {}, weight_hh, state, m, unbatched, lengths);
  if (options.batch_first() && !unbatched) y = y.transpose(0, 1);
  return {y, out};
}


}  // namespace

PlasticRNNImpl::PlasticRNNImpl(PlasticRNNOptions options_) : options(std::move(options_)) {
  reset();
}

void PlasticRNNImpl::reset() {
  build_recurrent(*this, core, "PlasticRNN", detail::PlasticCore::Kind::Recurrent, options,
                  weight_ih, weight_hh, bias);
  reset_parameters();
}

void PlasticRNNImpl::reset_parameters() {
  core.reset_parameters();
  reset_rnn_weights(options, weight_ih, weight_hh, bias);
}

void PlasticRNNImpl::pretty_print(std::ostream& s) const { print_rnn(s, "PlasticRNN", options, core); }

std::tuple<at::Tensor, PlasticState> PlasticRNNImpl::forward(const at::Tensor& u,
                                                             const PlasticState& state,
                                                             const at::Tensor& modulation,
                                                             const at::Tensor& lengths) {
  return sequence(core, options, weight_ih, weight_hh, bias, u, state, modulation, lengths);
}

// ------------------------------------------------------------------ PlasticRNNCell

PlasticRNNCellImpl::PlasticRNNCellImpl(PlasticRNNCellOptions options_)
    : options(std::move(options_)) {
  reset();
}

void PlasticRNNCellImpl::reset() {
  build_recurrent(*this, core, "PlasticRNNCell", detail::PlasticCore::Kind::Recurrent, options,
                  weight_ih, weight_hh, bias);
  reset_parameters();
}

void PlasticRNNCellImpl::reset_parameters() {
  core.reset_parameters();
  reset_rnn_weights(options, weight_ih, weight_hh, bias);
}

void PlasticRNNCellImpl::pretty_print(std::ostream& s) const {
  print_rnn(s, "PlasticRNNCell", options, core);
}

std::tuple<at::Tensor, PlasticState> PlasticRNNCellImpl::forward(const at::Tensor& u,
                                                                 const PlasticState& state,
                                                                 const at::Tensor& modulation,
                                                                 const at::Tensor& lengths) {
  return cell_step(core, options, weight_ih, weight_hh, bias, u, state, modulation, lengths);
}

// ------------------------------------------------------------------ PlasticLSTM

PlasticLSTMImpl::PlasticLSTMImpl(PlasticLSTMOptions options_) : options(std::move(options_)) {
  reset();
}

void PlasticLSTMImpl::reset() {
  build_recurrent(*this, core, "PlasticLSTM", detail::PlasticCore::Kind::Lstm, options,
                  weight_ih, weight_hh, bias);
  reset_parameters();
}

void PlasticLSTMImpl::reset_parameters() {
  core.reset_parameters();
  reset_rnn_weights(options, weight_ih, weight_hh, bias);
}

void PlasticLSTMImpl::pretty_print(std::ostream& s) const { print_rnn(s, "PlasticLSTM", options, core); }

std::tuple<at::Tensor, PlasticState> PlasticLSTMImpl::forward(const at::Tensor& u,
                                                              const PlasticState& state,
                                                              const at::Tensor& modulation,
                                                              const at::Tensor& lengths) {
  return sequence(core, options, weight_ih, weight_hh, bias, u, state, modulation, lengths);
}

// ------------------------------------------------------------------ PlasticLSTMCell

PlasticLSTMCellImpl::PlasticLSTMCellImpl(PlasticLSTMCellOptions options_)
    : options(std::move(options_)) {
  reset();
}

void PlasticLSTMCellImpl::reset() {
  build_recurrent(*this, core, "PlasticLSTMCell", detail::PlasticCore::Kind::Lstm, options,
                  weight_ih, weight_hh, bias);
  reset_parameters();
}

void PlasticLSTMCellImpl::reset_parameters() {
  core.reset_parameters();
  reset_rnn_weights(options, weight_ih, weight_hh, bias);
}

void PlasticLSTMCellImpl::pretty_print(std::ostream& s) const {
  print_rnn(s, "PlasticLSTMCell", options, core);
}

std::tuple<at::Tensor, PlasticState> PlasticLSTMCellImpl::forward(const at::Tensor& u,
                                                                  const PlasticState& state,
                                                                  const at::Tensor& modulation,
                                                                  const at::Tensor& lengths) {
  return cell_step(core, options, weight_ih, weight_hh, bias, u, state, modulation, lengths);
}

}  // namespace torchplastic
