"""Training-time augmentation: random crops (zero padding, per-image offsets) and
mirror flips, drawn from an explicit generator so that a resumed run repeats them."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def augment_params(
    n: int, gen: torch.Generator, pad: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random (dy, dx, flip) of a batch of ``n`` images: crop offsets 0..2*pad (int64)
    and a bool flip draw for every image (drawn even when flips are off, so that the
    generator's stream does not depend on the flag)."""
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flips = torch.rand(n, generator=gen) < 0.5
    return dy, dx, flips


def apply_augment(
    x: torch.Tensor,
    dy: torch.Tensor,
    dx: torch.Tensor,
    flips: torch.Tensor,
    pad: int,
    flip: bool = True,
) -> torch.Tensor:
    """Crop (zero pad ``pad``, offsets dy/dx) and, if ``flip``, mirror the images whose
    ``flips`` is set; x is a normalised batch (N, C, H, W)."""
    n, _, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).view(n, 1, h, 1)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).view(n, 1, 1, w)
    idx_n = torch.arange(n).view(n, 1, 1, 1)
    out = xp[idx_n, torch.arange(x.shape[1]).view(1, -1, 1, 1), rows, cols]
    if flip:
        out[flips] = out[flips].flip(-1)
    return out


def augment_pad(input_shape: tuple[int, int, int]) -> int:
    """Crop padding for an input size: 2 pixels at 28x28 (1 at 8x8)."""
    return max(1, input_shape[-1] // 14)
