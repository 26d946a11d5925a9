"""Drop-in power-of-two layers and the float-to-power-of-two converter.

:class:`PowConv2d` and :class:`PowLinear` hold float latent weights W and use,
depending on ``self.method`` (set per layer, usually by the trainer):

* ``"float"``  - W itself (a float model in the same code);
* ``"rg"``     - the reconstructed gradient blend (1-a)·staircase(W) + a·W in
  training mode, staircase(W) alone in evaluation mode;
* ``"ste"``    - staircase(W) with a straight-through gradient;
* ``"inq"``    - INQ-style: a frozen mask of weights fixed at their staircase
  values (no gradient), the rest float, until everything is frozen;
* ``"rtn"``    - staircase(W), no gradient (post-training round to nearest).

Each method is a strategy object in :mod:`host_train.methods`.

No conv bias: a batch norm follows every layer in the project's models.

``per_channel=True`` gives every output channel its own power-of-two scale
(:func:`quant.level_indices_per_channel`); ``staircase()`` and ``codes()`` then return
the exponents as an int64 tensor (C,) instead of an int.  ``scale_steps`` S > 1 (with
``per_channel``) makes each channel's scale continuous, 2**(k/S): the exponents are then
float64 multiples of 1/S.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import methods, quant

METHODS = tuple(methods.METHODS)


def per_channel_problem(method: str, rule: str) -> str | None:
    """Why per-channel scales cannot go with ``method``/``rule``, or None if they can."""
    if method == "inq" or rule == "authors":
        return (
            "per-channel scales (--per-channel) work with the rules nearest, log and moments "
            "and every method but inq (the authors' rule and INQ's frozen scale are per layer)"
        )
    return None


class PowerOfTwoMixin:
    """Shared weight logic of :class:`PowConv2d` and :class:`PowLinear`."""

    weight: nn.Parameter
    training: bool

    def _init_quant(
        self, n_bits: int, rule: str, method: str, per_channel: bool = False, scale_steps: int = 1
    ) -> None:
        quant.num_magnitudes(n_bits)
        methods.get(method)  # validates the name
        problem = per_channel_problem(method, rule) if per_channel else None
        problem = problem or quant.scale_steps_problem(scale_steps, per_channel, rule)
        if problem:
            raise ValueError(problem)
        self.n_bits = n_bits
        self.rule = rule
        self.method = method
        self.per_channel = per_channel
        self.scale_steps = scale_steps
        self.alpha = 0.5
        # INQ: 1 where a weight is frozen at its staircase value; scale fixed at freeze
        self.register_buffer("inq_mask", torch.zeros_like(self.weight), persistent=True)
        self.register_buffer("inq_exp", torch.tensor(0, dtype=torch.int64), persistent=True)

    def staircase(self) -> tuple[torch.Tensor, int | torch.Tensor]:
        """staircase(W) and the layer exponent e (see :func:`quant.quantize`), or the
        per-channel exponents (int64 (C,)) when ``per_channel``."""
        if self.method == "inq" and bool(self.inq_mask.any()):
            e = int(self.inq_exp)
            return quant_fixed_scale(self.weight, self.n_bits, self.rule, e), e
        if self.per_channel:
            return quant.quantize_per_channel(self.weight, self.n_bits, self.rule, self.scale_steps)
        return quant.quantize(self.weight, self.n_bits, self.rule)

    def codes(self) -> tuple[torch.Tensor, int | torch.Tensor]:
        """The datapath's integers for the weights :meth:`staircase` gives: (int8 codes,
        scale exponent e or per-channel exponents), straight from the quantizer
        (:func:`quant.quantize_to_codes`)."""
        if self.method == "inq" and bool(self.inq_mask.any()):
            return quant.quantize_to_codes(self.weight, self.n_bits, self.rule, int(self.inq_exp))
        if self.per_channel:
            return quant.quantize_to_codes_per_channel(
                self.weight, self.n_bits, self.rule, self.scale_steps
            )
        return quant.quantize_to_codes(self.weight, self.n_bits, self.rule)

    def effective_weight(self) -> torch.Tensor:
        w, strategy = self.weight, methods.get(self.method)
        if isinstance(strategy, methods.Float):
            return w
        q, _ = self.staircase()
        if self.training:
            return strategy.train_weight(self, w, q)
        return strategy.eval_weight(self, w, q)

    @torch.no_grad()
    def inq_freeze(self, fraction: float) -> None:
        """Freeze the largest-|W| ``fraction`` of weights at their staircase values."""
        if not bool(self.inq_mask.any()):
            _, e = quant.quantize(self.weight, self.n_bits, self.rule)
            self.inq_exp.fill_(e)
        k = int(round(fraction * self.weight.numel()))
        if k <= 0:
            return
        order = self.weight.abs().flatten().argsort(descending=True)
        mask = torch.zeros(self.weight.numel(), device=self.weight.device)
        mask[order[:k]] = 1.0
        mask = torch.maximum(mask.view_as(self.weight), self.inq_mask)
        q = quant_fixed_scale(self.weight, self.n_bits, self.rule, int(self.inq_exp))
        self.weight.copy_(torch.where(mask > 0, q, self.weight))
        self.inq_mask.copy_(mask)

    def quant_extra_repr(self) -> str:
        pc = ", per_channel=True" if self.per_channel else ""
        pc += f", scale_steps={self.scale_steps}" if self.scale_steps > 1 else ""
        return f"n_bits={self.n_bits}, rule={self.rule}, method={self.method}{pc}"


def quant_fixed_scale(w: torch.Tensor, n_bits: int, rule: str, e: int) -> torch.Tensor:
    """staircase(W) with the scale held at 2**e (used by INQ once weights are frozen)."""
    mode = "log" if rule == "log" else "nearest"
    with torch.no_grad():
        return quant._apply(w.detach(), 2.0**e, n_bits, mode)


class PowConv2d(PowerOfTwoMixin, nn.Conv2d):
    """Conv2d (no bias) whose weights are n-bit powers of two times 2**e."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        n_bits: int = 3,
        rule: str = "nearest",
        method: str = "rg",
        per_channel: bool = False,
        scale_steps: int = 1,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False
        )
        self._init_quant(n_bits, rule, method, per_channel, scale_steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.effective_weight(), None, self.stride, self.padding, 1, self.groups)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", " + self.quant_extra_repr()


class PowLinear(PowerOfTwoMixin, nn.Linear):
    """Linear (no bias) whose weights are n-bit powers of two times 2**e."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        n_bits: int = 3,
        rule: str = "nearest",
        method: str = "rg",
        per_channel: bool = False,
        scale_steps: int = 1,
    ) -> None:
        super().__init__(in_features, out_features, bias=False)
        self._init_quant(n_bits, rule, method, per_channel, scale_steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight())

    def extra_repr(self) -> str:
        return super().extra_repr() + ", " + self.quant_extra_repr()


def pow2_layers(model: nn.Module) -> list[tuple[str, PowerOfTwoMixin]]:
    """(name, layer) of every power-of-two layer in ``model``, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, PowerOfTwoMixin)]


def set_method(model: nn.Module, method: str, alpha: float | None = None) -> None:
    """Set the method (and a) of every power-of-two layer."""
    methods.get(method)  # validates the name
    for _, m in pow2_layers(model):
        m.method = method
        if alpha is not None:
            m.alpha = alpha


def set_alpha(model: nn.Module, alpha: float) -> None:
    for _, m in pow2_layers(model):
        m.alpha = float(alpha)


def convert(
    model: nn.Module,
    n_bits: int | dict[str, int] = 3,
    rule: str = "nearest",
    method: str = "rg",
    per_channel: bool = False,
    scale_steps: int = 1,
) -> nn.Module:
    """Replace every float Conv2d/Linear of ``model`` (in place) by its power-of-two twin.

    Weights are copied; biases are refused (the datapath has none: a batch norm
    must follow). ``n_bits`` may map layer names (as in ``named_modules``) to bit
    widths for mixed precision; names not in the map get ``n_bits["default"]``
    (3 if absent). ``per_channel`` gives every output channel its own power-of-two
    scale (continuous, to 1/``scale_steps`` of an octave, when ``scale_steps`` > 1).
    Returns the model.
    """
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            full = f"{parent_name}.{child_name}" if parent_name else child_name
            if isinstance(child, PowerOfTwoMixin):
                continue
            bits = n_bits if isinstance(n_bits, int) else n_bits.get(full, n_bits.get("default", 3))
            if isinstance(child, nn.Conv2d):
                if child.bias is not None:
                    raise ValueError(f"{full}: conv bias is not supported (use batch norm)")
                if child.dilation != (1, 1) or child.kernel_size[0] != child.kernel_size[1]:
                    raise ValueError(f"{full}: only square, undilated kernels are supported")
                new = PowConv2d(
                    child.in_channels,
                    child.out_channels,
                    child.kernel_size[0],
                    child.stride[0],
                    child.padding[0],
                    child.groups,
                    n_bits=bits,
                    rule=rule,
                    method=method,
                    per_channel=per_channel,
                    scale_steps=scale_steps,
                )
            elif isinstance(child, nn.Linear):
                if child.bias is not None:
                    raise ValueError(f"{full}: linear bias is not supported (use batch norm)")
                new = PowLinear(
                    child.in_features,
                    child.out_features,
                    n_bits=bits,
                    rule=rule,
                    method=method,
                    per_channel=per_channel,
                    scale_steps=scale_steps,
                )
            else:
                continue
            with torch.no_grad():
                new.weight.copy_(child.weight)
            setattr(parent, child_name, new)
    return model


class ActQuant(nn.Module):
    """Optional activation quantisation after a ReLU (Theorem 3, clipped pass-through)."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quant.ClippedActivationQuant.apply(x, self.bits)


def insert_act_quant(model: nn.Module, bits: int) -> None:
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, name, nn.Sequential(child, ActQuant(bits)))
