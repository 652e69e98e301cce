#include "ops/scan.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "ops/checks.h"
#include "ops/marshal.h"

namespace torchplastic {
namespace detail {

using kernels::ModSource;
using kernels::Rule;

namespace {

void run(const ScanBackend& be, const kernels::ScanParams<float>& P) { be.forward_f32(P); }
void run(const ScanBackend& be, const kernels::ScanParams<double>& P) { be.forward_f64(P); }
void run(const ScanBackend& be, const kernels::ScanParams<float>& P,
         const kernels::ScanGradParams<float>& G) {
  be.backward_f32(P, G);
}
void run(const ScanBackend& be, const kernels::ScanParams<double>& P,
         const kernels::ScanGradParams<double>& G) {
  be.backward_f64(P, G);
}

at::Tensor none_like(const at::Tensor& z) { return at::empty({0}, z.options()); }

at::Tensor or_none(const at::Tensor& t, const at::Tensor& z) {
  return t.defined() ? t : none_like(z);
}

}  // namespace

// The state after each sequence's last step, from the per-step values `seq` [T, B, O]: step
// T − 1's, or with lengths step L_b − 1's (`initial` [B, O] where L_b = 0).
at::Tensor last_state(const at::Tensor& seq, const at::Tensor& initial, const at::Tensor& lengths) {
  const int64_t T = seq.size(0), B = seq.size(1), O = seq.size(2);
  if (T == 0) return initial.clone();
  if (!lengths.defined()) return seq[T - 1].clone();
  const at::Tensor last = (lengths - 1).clamp_min(0).view({1, B, 1}).expand({1, B, O});
  return at::where(lengths.view({B, 1}) > 0, seq.gather(0, last).squeeze(0), initial);
}

ForwardResult scan_forward(const ScanArgs& a, const ScanBackend& backend,
                           bool save_checkpoints, Records* records) {
  const ScanConfig c = check_scan_args(a);
  const Prepared p = prepare(a, c, backend.read_only_zeros);
  const auto opts = a.z.options().dtype(c.compute_dtype);
  const int64_t T = c.T, B = c.B, O = c.O, I = c.I;
  const bool retro = c.traits.eligibility;

  // The LSTM's y (its g_t) lives inside its activations; its output is h.
  at::Tensor activations = a.lstm ? at::empty({5, T, B, O}, opts) : at::Tensor();
  at::Tensor y = a.lstm ? activations[2] : at::empty({T, B, O}, opts);
  at::Tensor hseq = a.lstm ? at::empty({T, B, O}, opts) : at::Tensor();
  at::Tensor trace = backend.empty_buffer({B, O, I}, opts);
  at::Tensor elig = retro ? backend.empty_buffer({B, O, I}, opts) : at::Tensor();
  at::Tensor theta = a.adaptive_threshold ? at::empty({B, O}, opts) : at::Tensor();
  const int64_t S = save_checkpoints ? checkpoint_count(T, c.K) : 0;
  at::Tensor trace_ckpt = backend.empty_buffer({S, B, O, I}, opts);
  at::Tensor elig_ckpt = retro ? backend.empty_buffer({S, B, O, I}, opts) : at::Tensor();
  if (records) {
    records->trace = at::empty({T / records->every, B, O, I}, opts);
    records->trace_norm = at::zeros({T, B}, opts);  // Σ H² until the square root below
    records->modulation = c.traits.modulated ? at::zeros({T, B, O}, opts) : at::empty({0}, opts);
  }

  AT_DISPATCH_FLOATING_TYPES(c.compute_dtype, "plastic_scan_forward", [&] {
    auto P = make_params<scalar_t>(a, c, p);
    P.y = mut_ptr<scalar_t>(y);
    P.trace = mut_ptr<scalar_t>(trace);
    P.elig = mut_ptr<scalar_t>(elig);
    P.theta = mut_ptr<scalar_t>(theta);
    P.hseq = mut_ptr<scalar_t>(hseq);
    P.activations = mut_ptr<scalar_t>(activations);
    if (save_checkpoints) {
      P.trace_ckpt = mut_ptr<scalar_t>(trace_ckpt);
      P.elig_ckpt = mut_ptr<scalar_t>(elig_ckpt);
    }
    if (records) {
      P.record_every = records->every;
      P.record_trace = mut_ptr<scalar_t>(records->trace);
      P.record_norm = mut_ptr<scalar_t>(records->trace_norm);
      P.record_modulation = c.traits.modulated ? mut_ptr<scalar_t>(records->modulation) : nullptr;
    }
    run(backend, P);
  });
  if (records) records->trace_norm.sqrt_();

  ForwardResult r;
  r.y = (a.lstm ? hseq : y).to(a.z.scalar_type());
  r.hidden = c.recurrent ? last_state(r.y, p.hidden0.to(a.z.scalar_type()), p.lengths)
                         : none_like(r.y);
  r.trace = trace;
  r.eligibility = or_none(elig, trace);
  r.threshold = or_none(theta, trace);
  r.trace_checkpoints = trace_ckpt;
  r.eligibility_checkpoints = or_none(elig_ckpt, trace);
  if (a.lstm) {
    r.cell = last_state(activations[4], p.cell0, p.lengths).to(a.z.scalar_type());
    r.activations = save_checkpoints ? activations : none_like(trace);
  } else {
    r.cell = none_like(trace);
    r.activations = none_like(trace);
  }
  return r;
}

ScanGrads scan_backward(const BackwardInputs& in, const ScanArgs& a, const ScanBackend& backend) {
  const ScanConfig c = check_scan_args(a);
  const Prepared p = prepare(a, c, backend.read_only_zeros);
  const auto dt = c.compute_dtype;
  const auto opts = a.z.options().dtype(dt);
  const int64_t T = c.T, B = c.B, O = c.O, I = c.I;
  const bool retro = c.traits.eligibility;
  const bool modulated = c.traits.modulated;
  const bool internal = c.mod_source == ModSource::Internal || c.mod_source == ModSource::Fanout;
  const int64_t S = checkpoint_count(T, c.K);

  // The backward op's own tensors (the output gradients, and what the forward kept) come from
  // autograd on z's device in a floating dtype, which the kernels convert to theirs; a direct
  // call may pass anything, and a tensor on another device would hand the kernels a pointer
  // they cannot read.
  auto check_backward_input = [&](const at::Tensor& t, const char* name) {
    TORCH_CHECK_VALUE(t.device() == a.z.device(), a.op_name(), "_backward: ", name,
                      ": expected a tensor on ", a.z.device(), " (the device of z), got ",
                      t.device());
    TORCH_CHECK_VALUE(at::isFloatingType(t.scalar_type()), a.op_name(), "_backward: ", name,
                      ": expected a floating-point tensor, got ", t.scalar_type());
  };
  // Gradients that did not flow arrive as undefined or empty tensors: zeros of the right shape,
  // which the kernels only read. A gradient that did flow must have the output's shape.
  auto flowed = [&](const at::Tensor& g, at::IntArrayRef shape, const char* name) {
    if (!g.defined() || (g.numel() == 0 && g.sizes() != shape)) return false;
    TORCH_CHECK_VALUE(g.sizes() == shape, a.op_name(), "_backward: ", name, ": expected shape ",
                      shape, ", got ", g.sizes());
    check_backward_input(g, name);
    return true;
  };
  auto grad_or_zeros = [&](const at::Tensor& g, at::IntArrayRef shape, const char* name) {
    return flowed(g, shape, name) ? to_compute(g, dt) : backend.read_only_zeros(shape, opts);
  };
  // The LSTM's backward op calls its outputs `output` (as torch.nn.LSTM does) and their gradient
  // `grad_output`.
  const at::Tensor gy = grad_or_zeros(in.grad_y, {T, B, O}, a.lstm ? "grad_output" : "grad_y");
  const at::Tensor gh = c.recurrent ? grad_or_zeros(in.grad_hidden, {B, O}, "grad_hidden") : at::Tensor();
  // dL/dH_T and dL/dE_T: the kernels read sequence b's [O, I] at b · stride. A gradient that
  // is the same for every sequence (a broadcast one: a loss that sums the trace, or none that
  // flowed) stays one [O, I] with stride 0, where a [B, O, I] copy would be a pass over memory.
  struct StateGrad {
    at::Tensor values;
    int64_t stride;
  };
  auto state_grad = [&](const at::Tensor& g, const char* name) -> StateGrad {
    if (!flowed(g, {B, O, I}, name)) return {backend.read_only_zeros({O, I}, opts), 0};
    if (B > 0 && g.stride(0) == 0) return {to_compute(g.select(0, 0), dt), 0};
    return {to_compute(g, dt), O * I};
  };
  const StateGrad gH = state_grad(in.grad_trace, "grad_trace");
  const StateGrad gE = retro ? state_grad(in.grad_eligibility, "grad_eligibility") : StateGrad{};
  const at::Tensor gth = a.adaptive_threshold
                             ? grad_or_zeros(in.grad_threshold, {B, O}, "grad_threshold")
                             : at::Tensor();
  const at::Tensor gc = a.lstm ? grad_or_zeros(in.grad_cell, {B, O}, "grad_cell") : at::Tensor();
  TORCH_CHECK_VALUE(in.y.sizes() == at::IntArrayRef({T, B, O}), a.op_name(), "_backward: ",
                    a.lstm ? "output" : "y", ": expected shape ", at::IntArrayRef({T, B, O}),
                    ", got ", in.y.sizes());
  if (a.lstm)
    TORCH_CHECK_VALUE(in.activations.sizes() == at::IntArrayRef({5, T, B, O}), a.op_name(),
                      "_backward: activations: expected shape ", at::IntArrayRef({5, T, B, O}),
                      ", got ", in.activations.sizes());
  TORCH_CHECK_VALUE(in.trace_checkpoints.sizes() == at::IntArrayRef({S, B, O, I}),
                    a.op_name(), "_backward: trace_checkpoints: expected shape ",
                    at::IntArrayRef({S, B, O, I}), " (checkpoint_every = ", c.K, "), got ",
                    in.trace_checkpoints.sizes());
  if (retro)
    TORCH_CHECK_VALUE(in.eligibility_checkpoints.sizes() == at::IntArrayRef({S, B, O, I}),
                      a.op_name(), "_backward: eligibility_checkpoints: expected shape ",
                      at::IntArrayRef({S, B, O, I}), ", got ", in.eligibility_checkpoints.sizes());
  check_backward_input(in.y, a.lstm ? "output" : "y");
  if (a.lstm) check_backward_input(in.activations, "activations");
  check_backward_input(in.trace_checkpoints, "trace_checkpoints");
  if (retro) check_backward_input(in.eligibility_checkpoints, "eligibility_checkpoints");
  const at::Tensor y_c = to_compute(in.y, dt);
  const at::Tensor H_ckpt = to_compute(in.trace_checkpoints, dt);
  const at::Tensor E_ckpt = retro ? to_compute(in.eligibility_checkpoints, dt) : at::Tensor();
  // The LSTM's stored values: y (g_t) is inside its activations, and y_c its output h.
  const at::Tensor activations = a.lstm ? to_compute(in.activations, dt) : at::Tensor();
  const at::Tensor post = a.lstm ? activations[2] : y_c;

  at::Tensor grad_z = at::empty({T, B, a.lstm ? 4 * O : O}, opts);
  at::Tensor grad_cell0 = a.lstm ? at::empty({B, O}, opts) : at::Tensor();
  at::Tensor grad_x = c.recurrent ? at::Tensor() : at::empty({T, B, I}, opts);
  at::Tensor grad_mod = modulated ? at::empty({T, B, O}, opts) : at::Tensor();
  at::Tensor grad_mod_pre = internal ? at::empty({T, B}, opts) : at::Tensor();
  at::Tensor mod_signal = internal ? at::empty({T, B}, opts) : at::Tensor();
  at::Tensor grad_hidden0 = c.recurrent ? at::empty({B, O}, opts) : at::Tensor();
  at::Tensor grad_trace0 = backend.empty_buffer({B, O, I}, opts);
  at::Tensor grad_elig0 = retro ? backend.empty_buffer({B, O, I}, opts) : at::Tensor();
  at::Tensor grad_theta0 = a.adaptive_threshold ? at::empty({B, O}, opts) : at::Tensor();
  // One slab per sequence: summed in a fixed order after the loop, so the result does not
  // depend on the number of threads. Or one for the batch, which the kernels sum into in a
  // fixed order, where the backend does so for a batch of single steps.
  const bool slabs_summed = backend.sums_single_step_slabs && T == 1 && !p.lengths.defined() &&
                            !internal && !a.lstm && !a.synaptic_scaling.has_value();
  const int64_t slab_count = slabs_summed ? 1 : B;
  auto slabs = [&](at::IntArrayRef shape) {
    at::Tensor t = backend.empty_buffer(shape, opts);
    return backend.zeroes_grad_slabs ? t : t.zero_();
  };
  at::Tensor grad_alpha_slabs = slabs({slab_count, O, I});
  at::Tensor grad_eta_slabs = !c.traits.uses_eta
                                  ? at::Tensor()
                                  : slabs({slab_count, O, eta_per_connection(p.eta, c) ? I : 1});
  at::Tensor grad_coefficient_slabs =
      c.traits.coefficients ? slabs({slab_count, 4, O, I}) : at::Tensor();

  AT_DISPATCH_FLOATING_TYPES(dt, "plastic_scan_backward", [&] {
    auto P = make_params<scalar_t>(a, c, p);
    // Read only in the backward.
    P.y = const_cast<scalar_t*>(ptr<scalar_t>(post));
    if (a.lstm) {
      P.hseq = const_cast<scalar_t*>(ptr<scalar_t>(y_c));
      P.activations = const_cast<scalar_t*>(ptr<scalar_t>(activations));
    }
    P.trace_ckpt = const_cast<scalar_t*>(ptr<scalar_t>(H_ckpt));
    P.elig_ckpt = const_cast<scalar_t*>(ptr<scalar_t>(E_ckpt));
    kernels::ScanGradParams<scalar_t> G;
    G.grad_y = ptr<scalar_t>(gy);
    G.grad_hidden = ptr<scalar_t>(gh);
    G.grad_trace = ptr<scalar_t>(gH.values);
    G.grad_trace_stride = gH.stride;
    G.grad_elig = ptr<scalar_t>(gE.values);
    G.grad_elig_stride = gE.stride;
    G.grad_theta = ptr<scalar_t>(gth);
    G.grad_cell = ptr<scalar_t>(gc);
    G.grad_cell0 = mut_ptr<scalar_t>(grad_cell0);
    G.grad_z = mut_ptr<scalar_t>(grad_z);
    G.grad_x = mut_ptr<scalar_t>(grad_x);
    G.grad_mod = mut_ptr<scalar_t>(grad_mod);
    G.grad_mod_pre = mut_ptr<scalar_t>(grad_mod_pre);
    G.mod_signal = mut_ptr<scalar_t>(mod_signal);
    G.grad_hidden0 = mut_ptr<scalar_t>(grad_hidden0);
    G.grad_trace0 = mut_ptr<scalar_t>(grad_trace0);
    G.grad_elig0 = mut_ptr<scalar_t>(grad_elig0);
    G.grad_theta0 = mut_ptr<scalar_t>(grad_theta0);
    G.grad_alpha = mut_ptr<scalar_t>(grad_alpha_slabs);
    G.grad_eta = mut_ptr<scalar_t>(grad_eta_slabs);
    G.grad_coefficients = mut_ptr<scalar_t>(grad_coefficient_slabs);
    G.slabs_summed = slabs_summed;
    run(backend, P, G);
  });

  // Gradients of the inputs that were given, in their dtypes; none for the others.
  auto like = [&](const c10::optional<at::Tensor>& input, const at::Tensor& g) {
    return input ? g.to(input->scalar_type()) : at::Tensor();
  };
  // The slabs' sum over the sequences; one slab (a batch of single steps) is the sum itself.
  auto summed = [&](const at::Tensor& slabs) {
    return slab_count == 1 ? slabs.select(0, 0) : slabs.sum(0);
  };
  ScanGrads grads;
  grads.z = grad_z.to(a.z.scalar_type());
  grads.alpha = summed(grad_alpha_slabs).sum_to_size(a.alpha.sizes()).to(a.alpha.scalar_type());
  if (a.eta)
    grads.eta = !c.traits.uses_eta
                    ? at::zeros(a.eta->sizes(), a.eta->options())
                    : summed(grad_eta_slabs).sum_to_size(a.eta->sizes()).to(a.eta->scalar_type());
  if (c.traits.coefficients)
    grads.abcd = summed(grad_coefficient_slabs).sum_to_size(a.abcd->sizes()).to(a.abcd->scalar_type());
  grads.trace = like(a.trace, grad_trace0);
  if (!c.recurrent) grads.x = like(a.x, grad_x);
  if (c.recurrent) {
    // dL/dW = Σ_t dL/da_tᵀ h_{t-1} (the LSTM's over its four gates: dL/dW_hh): step 0's
    // product with h_0, then one GEMM over steps 1 .. T − 1 of the stored per-step vectors,
    // views of them, where concatenating h_0 with them first copied them all.
    const int64_t Z = grad_z.size(2);
    at::Tensor grad_weight =
        T > 0 ? grad_z[0].t().mm(p.hidden0) : at::zeros({Z, O}, grad_z.options());
    if (T > 1)
      grad_weight.addmm_(grad_z.slice(0, 1, T).reshape({(T - 1) * B, Z}).t(),
                         y_c.slice(0, 0, T - 1).reshape({(T - 1) * B, O}));
    grads.weight = like(a.weight, grad_weight);
    grads.hidden = like(a.hidden, grad_hidden0);
  }
  if (a.lstm) grads.cell = like(a.cell, grad_cell0);
  if (retro) grads.eligibility = like(a.eligibility, grad_elig0);
  if (a.adaptive_threshold) grads.threshold = like(a.threshold, grad_theta0);
  if (c.mod_source == ModSource::External)
    grads.modulation = like(a.modulation, a.modulation->dim() == 2 ? grad_mod.sum(-1) : grad_mod);
  if (internal) {
    // s_t = tanh(y_t·v + c) (h_t·v + c in the LSTM, whose y_c is h): dL/dv = Σ_{t,b} dL/du
    // y_t, dL/dc = Σ dL/du.
    grads.mod_weight = like(
        a.mod_weight, grad_mod_pre.reshape({1, T * B}).mm(y_c.reshape({T * B, O})).reshape({O}));
    grads.mod_bias = like(a.mod_bias, grad_mod_pre.sum().reshape({1}));
  }
  if (c.mod_source == ModSource::Fanout) {
    // m = s·f + g: dL/df = Σ dL/dm · s, dL/dg = Σ dL/dm.
    grads.mod_fanout_weight = like(a.mod_fanout_weight,
                                   (grad_mod * mod_signal.unsqueeze(-1)).sum(at::IntArrayRef{0, 1}));
    grads.mod_fanout_bias = like(a.mod_fanout_bias, grad_mod.sum(at::IntArrayRef{0, 1}));
  }
  return grads;
}

std::vector<at::Tensor> backward_op_outputs(const ScanGrads& grads, const at::Tensor& z) {
  auto list = grads.to_list();
  for (auto& g : list)
    if (!g.defined()) g = none_like(z);
  return list;
}

}  // namespace detail
}  // namespace torchplastic
