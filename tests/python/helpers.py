"""Random configurations of plastic_scan, shared by the test files."""

import itertools
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch

import torchplastic as tp

RULES = tuple(tp.rules.RULES)
MOD_SOURCES = ("external", "external_per_neuron", "internal", "fanout")


@dataclass
class Config:
    rule: str = "hebb"
    recurrent: bool = True
    source: Optional[str] = None  # modulation source for the modulated rules
    activation: str = "tanh"
    alpha: str = "connection"     # granularity of α: connection | neuron | scalar
    eta: str = "scalar"
    abcd: str = "connection"      # granularity of the coefficients of rule abcd
    clip: Optional[float] = None
    scaling: Optional[float] = None
    threshold: Optional[float] = None
    target_activity: float = 0.0
    T: int = 5
    B: int = 3
    O: int = 4
    I: int = 6
    checkpoint_every: Optional[int] = None
    initial_state: bool = True

    def id(self) -> str:
        parts = [self.rule, "rec" if self.recurrent else "ff"]
        if self.source:
            parts.append(self.source)
        for name in ("activation", "alpha", "eta", "abcd", "clip", "scaling", "threshold"):
            value = getattr(self, name)
            if value not in (None, "tanh", "connection", "scalar"):
                parts.append(f"{name}={value}")
        return "-".join(parts)


def _granular(kind: str, O: int, I: int, gen, dtype, device, scale: float, offset: float = 0.0):
    shape = {"connection": (O, I), "neuron": (O, 1), "scalar": (1, 1)}[kind]
    return offset + scale * torch.rand(shape, generator=gen, dtype=dtype).to(device)


def make_inputs(cfg: Config, dtype=torch.float64, device="cpu", seed: int = 0,
                requires_grad: bool = True) -> Dict[str, torch.Tensor]:
    """Keyword arguments of plastic_scan for cfg; every tensor a leaf that requires grad."""
    gen = torch.Generator().manual_seed(seed)
    T, B, O = cfg.T, cfg.B, cfg.O
    I = O if cfg.recurrent else cfg.I

    def randn(*shape, scale=1.0):
        return (scale * torch.randn(shape, generator=gen, dtype=dtype)).to(device)

    kw: Dict[str, object] = dict(rule=cfg.rule, activation=cfg.activation, clip=cfg.clip,
                                 synaptic_scaling=cfg.scaling, adaptive_threshold=cfg.threshold,
                                 target_activity=cfg.target_activity,
                                 checkpoint_every=cfg.checkpoint_every)
    kw["z"] = randn(T, B, O)
    kw["alpha"] = _granular(cfg.alpha, O, I, gen, dtype, device, 1.0, -0.5)
    info = tp.rules.rule_info(cfg.rule)
    kw["eta"] = _granular(cfg.eta, O, I, gen, dtype, device, 0.4, 0.05) if info.uses_eta else None
    if info.coefficients:
        kw["abcd"] = torch.stack([_granular(cfg.abcd, O, I, gen, dtype, device, 1.0, -0.5)
                                  for _ in range(4)])
    kw["trace"] = randn(B, O, I, scale=0.3) if cfg.initial_state else None
    if cfg.recurrent:
        kw["weight"] = randn(O, O, scale=0.5)
        kw["hidden"] = randn(B, O, scale=0.5) if cfg.initial_state else None
    else:
        kw["x"] = randn(T, B, I)
    if info.modulated:
        source = cfg.source or "internal"
        if source == "external":
            kw["modulation"] = randn(T, B)
        elif source == "external_per_neuron":
            kw["modulation"] = randn(T, B, O)
        else:
            kw["mod_weight"] = randn(O)
            kw["mod_bias"] = randn(1)
            if source == "fanout":
                kw["mod_fanout_weight"] = randn(O)
                kw["mod_fanout_bias"] = randn(O)
    if info.eligibility and cfg.initial_state:
        kw["eligibility"] = randn(B, O, I, scale=0.3)
    if cfg.threshold is not None and cfg.initial_state:
        kw["threshold"] = randn(B, O, scale=0.1)
    if requires_grad:
        for k, v in kw.items():
            if isinstance(v, torch.Tensor):
                v.requires_grad_(True)
    return kw


def tensor_inputs(kw) -> Dict[str, torch.Tensor]:
    return {k: v for k, v in kw.items() if isinstance(v, torch.Tensor)}


def call(fn, kw):
    """fn is tp.functional.plastic_scan or tp.reference.plastic_scan."""
    kw = dict(kw)
    z, alpha, eta, trace = kw.pop("z"), kw.pop("alpha"), kw.pop("eta"), kw.pop("trace")
    return fn(z, alpha, eta, trace, **kw)


def gradcheck_call(caller, fn, kw, **tolerances) -> bool:
    """torch.autograd.gradcheck of fn, called through caller (call or call_lstm), in every tensor
    of kw, on its output and every state field the configuration uses."""
    names = list(tensor_inputs(kw))

    def f(*tensors):
        out, state = caller(fn, dict(kw, **dict(zip(names, tensors))))
        return (out, *(t for t in state if t is not None))

    return torch.autograd.gradcheck(f, tuple(kw[n] for n in names), **tolerances)


def loss_weights(outputs, seed: int = 1):
    """loss_of's fixed random weight for each of outputs (None where it has no elements)."""
    gen = torch.Generator().manual_seed(seed)
    weights = []
    for t in outputs:
        if t is not None and t.numel() > 0:
            weights.append(torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.device, t.dtype))
        else:
            weights.append(None)
    return weights


def loss_of(y, state, seed: int = 1):
    """A scalar touching every output with fixed random weights."""
    total = 0.0
    for t, w in zip((y, *state), loss_weights((y, *state), seed)):
        if w is not None:
            total = total + (t * w).sum()
    return total


def all_rule_mode_sources():
    """Every rule × mode × modulation source."""
    out = []
    for rule, recurrent in itertools.product(RULES, (False, True)):
        info = tp.rules.rule_info(rule)
        sources = MOD_SOURCES if info.modulated else (None,)
        for source in sources:
            out.append(Config(rule=rule, recurrent=recurrent, source=source, clip=info.default_clip))
    return out


def make_lstm_inputs(cfg: Config, dtype=torch.float64, device="cpu", seed: int = 0,
                     requires_grad: bool = True) -> Dict[str, torch.Tensor]:
    """Keyword arguments of plastic_lstm_scan for cfg (hidden size cfg.O; recurrent, tanh):
    make_inputs' with z [T, B, 4H], weight_hh [4H, H] and an initial cell."""
    kw = make_inputs(Config(**{**cfg.__dict__, "recurrent": True, "activation": "tanh"}),
                     dtype, device, seed, requires_grad=False)
    gen = torch.Generator().manual_seed(seed + 1)
    T, B, H = cfg.T, cfg.B, cfg.O

    def randn(*shape, scale=1.0):
        return (scale * torch.randn(shape, generator=gen, dtype=dtype)).to(device)

    del kw["activation"]
    kw["z"] = randn(T, B, 4 * H)
    del kw["weight"]
    kw["weight_hh"] = randn(4 * H, H, scale=0.5)
    kw["cell"] = randn(B, H, scale=0.5) if cfg.initial_state else None
    if requires_grad:
        for v in kw.values():
            if isinstance(v, torch.Tensor):
                v.requires_grad_(True)
    return kw


def call_lstm(fn, kw):
    """fn is tp.functional.plastic_lstm_scan or tp.reference.plastic_lstm_scan."""
    kw = dict(kw)
    args = [kw.pop(name) for name in ("z", "weight_hh", "alpha", "eta", "trace")]
    return fn(*args, **kw)
