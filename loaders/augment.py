"""Augmentation presets and their two implementations: batched tensor ops and torchvision v2.

A preset is an ``AugmentSpec``: plain numbers that every backend reads, so ``base`` means the same
thing everywhere. The stages, in torchvision's order:

1. geometric uint8 stage: random crop of the original size after zero-padding ``crop_pad``
   pixels (``RandomCrop(size, padding=pad)``), then horizontal flip with p = 0.5;
2. float stage on [0, 1] pixels: rotation and random affine (nearest, zero fill), then colour
   jitter (brightness, contrast, saturation);
3. normalisation ``(x - mean) / std``;
4. cutout (``RandomErasing``, value 0 = the mean colour) on the normalised batch.

Batched versions draw every random parameter for the whole batch at once from a CPU
``torch.Generator`` (so a batch is the same on CPU and GPU), then apply them with a few tensor
ops on the batch's device: no per-sample Python. Differences from torchvision that only show
in statistics, not in meaning: colour jitter runs in float instead of uint8 (no rounding
between its ops) and in the fixed order brightness, contrast, saturation; rotation and affine are
one combined warp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from loaders.registries import AUGMENTATIONS
from loaders.transforms import LUMA


@dataclass(frozen=True)
class AugmentSpec:
    """One augmentation preset (see the module docstring for the stage order).

    Attributes:
        name: the preset's registry name.
        crop_pad: zero padding before the random crop back to the original size; 0 = no crop.
        flip: random horizontal flip with p = 0.5.
        rotate: rotation angle drawn uniformly from [-rotate, rotate] degrees.
        jitter: (brightness, contrast, saturation) magnitudes m; factors drawn from [1-m, 1+m].
        translate: random affine translation, a fraction of the image size in each direction.
        scale: random affine scale range.
        shear: random affine x-shear drawn from [-shear, shear] degrees.
        erase_p: probability of cutout (one erased rectangle per image).
        erase_scale: cutout area as a fraction of the image.
        erase_ratio: cutout aspect-ratio range (drawn log-uniformly).
    """

    name: str
    crop_pad: int = 0
    flip: bool = False
    rotate: float = 0.0
    jitter: tuple[float, float, float] = (0.0, 0.0, 0.0)
    translate: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    shear: float = 0.0
    erase_p: float = 0.0
    erase_scale: tuple[float, float] = (0.02, 0.2)
    erase_ratio: tuple[float, float] = (0.3, 3.3)

    @property
    def affine(self) -> bool:
        """Whether the random affine stage is on."""
        return bool(self.translate or self.shear or self.scale != (1.0, 1.0))

    @property
    def warp(self) -> bool:
        """Whether any float-stage geometric op (rotation, affine) is on."""
        return bool(self.rotate) or self.affine

    @property
    def float_stage(self) -> bool:
        """Whether stage 2 (warp or jitter) has work to do."""
        return self.warp or any(self.jitter)


NONE = AugmentSpec("none")
BASE = AugmentSpec("base", crop_pad=4, flip=True)
STRONG = AugmentSpec("strong", crop_pad=4, flip=True, rotate=10.0, jitter=(0.2, 0.2, 0.2))
STRONGER = AugmentSpec("stronger", crop_pad=4, flip=True, rotate=10.0, jitter=(0.2, 0.2, 0.2),
                       translate=0.1, scale=(0.9, 1.1), shear=10.0, erase_p=0.5, erase_scale=(0.02, 0.25))
for _spec in (NONE, BASE, STRONG, STRONGER):
    AUGMENTATIONS.register(_spec.name, _spec)


# --------------------------------------------------------------------------- torchvision


def torchvision_transform(spec: AugmentSpec, size: tuple[int, int], mean: tuple[float, ...],
                          std: tuple[float, ...]) -> torch.nn.Module:
    """The ``torchvision.transforms.v2`` pipeline of ``spec`` for one uint8 CHW image of ``size`` (H, W)."""
    from torchvision.transforms import v2

    ops: list[torch.nn.Module] = []
    if spec.crop_pad:
        ops.append(v2.RandomCrop(size, padding=spec.crop_pad, fill=0))
    if spec.flip:
        ops.append(v2.RandomHorizontalFlip())
    if spec.rotate:
        ops.append(v2.RandomRotation(spec.rotate))
    if spec.affine:
        ops.append(v2.RandomAffine(0, translate=(spec.translate, spec.translate), scale=spec.scale,
                                   shear=spec.shear or None))
    if any(spec.jitter):
        b, c, s = spec.jitter
        ops.append(v2.ColorJitter(brightness=b or None, contrast=c or None, saturation=s or None))
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if spec.erase_p:
        ops.append(v2.RandomErasing(spec.erase_p, scale=spec.erase_scale, ratio=spec.erase_ratio, value=0))
    return v2.Compose(ops)


# --------------------------------------------------------------------------- batched tensor ops


@dataclass
class BatchParams:
    """Random parameters of one batch, all on the CPU; ``None`` where the spec turns a stage off."""

    dy: torch.Tensor  # int64 (B,): crop offset in the padded image, 0..2*pad (pad = no shift)
    dx: torch.Tensor
    flip: torch.Tensor  # bool (B,)
    theta: torch.Tensor | None  # float32 (B, 2, 3): output -> input map for affine_grid
    jitter: torch.Tensor | None  # float32 (3, B): brightness, contrast, saturation factors
    erase: torch.Tensor | None  # int64 (4, B): top, left, height, width; height 0 = no erasing


def sample_params(spec: AugmentSpec, b: int, h: int, w: int, gen: torch.Generator) -> BatchParams:
    """Draw every random parameter of ``spec`` for a batch of ``b`` images of ``h`` x ``w``."""
    pad = spec.crop_pad
    if pad:
        dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
        dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    else:
        dy = dx = torch.zeros(b, dtype=torch.int64)
    flip = torch.rand(b, generator=gen) < 0.5 if spec.flip else torch.zeros(b, dtype=torch.bool)
    theta = _sample_theta(spec, b, h, w, gen) if spec.warp else None
    jitter = None
    if any(spec.jitter):
        m = torch.tensor(spec.jitter, dtype=torch.float32).view(3, 1)
        u = torch.rand(3, b, generator=gen)
        jitter = (1 - m).clamp(min=0) + u * (1 + m - (1 - m).clamp(min=0))
    erase = _sample_erase(spec, b, h, w, gen) if spec.erase_p else None
    return BatchParams(dy, dx, flip, theta, jitter, erase)


def _sample_theta(spec: AugmentSpec, b: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """Rotation and random affine as one ``affine_grid`` matrix per image (output -> input, normalised)."""
    d = torch.float64
    angle = (torch.rand(b, generator=gen, dtype=d) * 2 - 1) * math.radians(spec.rotate)
    shear = (torch.rand(b, generator=gen, dtype=d) * 2 - 1) * math.radians(spec.shear)
    lo, hi = spec.scale
    s = lo + torch.rand(b, generator=gen, dtype=d) * (hi - lo)
    # torchvision rounds the translation to whole pixels.
    tx = ((torch.rand(b, generator=gen, dtype=d) * 2 - 1) * spec.translate * w).round()
    ty = ((torch.rand(b, generator=gen, dtype=d) * 2 - 1) * spec.translate * h).round()
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Forward map in pixel coordinates centred on the image (y down): A = R(angle) @ Shear_x @ s.
    rot = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)
    shx = torch.zeros(b, 2, 2, dtype=d)
    shx[:, 0, 0] = 1
    shx[:, 1, 1] = 1
    shx[:, 0, 1] = torch.tan(shear)
    fwd = rot @ shx * s.view(b, 1, 1)
    inv = torch.linalg.inv(fwd)
    # Normalised coordinates (align_corners=False) are pixel offsets from the centre over half sizes.
    half = torch.tensor([w / 2, h / 2], dtype=d)
    lin = inv * half.view(1, 1, 2) / half.view(1, 2, 1)  # S^-1 A^-1 S
    t = -(inv @ torch.stack([tx, ty], -1).unsqueeze(-1)).squeeze(-1) / half
    return torch.cat([lin, t.unsqueeze(-1)], -1).to(torch.float32)


def _sample_erase(spec: AugmentSpec, b: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """Cutout rectangles as torchvision's RandomErasing draws them: up to 10 tries for one that fits."""
    tries = 10
    area = h * w * (spec.erase_scale[0] + torch.rand(b, tries, generator=gen) * (spec.erase_scale[1] - spec.erase_scale[0]))
    lr = torch.log(torch.tensor(spec.erase_ratio))
    ratio = torch.exp(lr[0] + torch.rand(b, tries, generator=gen) * (lr[1] - lr[0]))
    eh = torch.sqrt(area * ratio).round().long()
    ew = torch.sqrt(area / ratio).round().long()
    fits = (eh < h) & (ew < w) & (eh > 0) & (ew > 0)
    first = torch.argmax(fits.int(), dim=1)  # first try that fits (0 if none; masked below)
    ok = fits.any(1) & (torch.rand(b, generator=gen) < spec.erase_p)
    eh = torch.where(ok, eh.gather(1, first[:, None]).squeeze(1), 0)
    ew = torch.where(ok, ew.gather(1, first[:, None]).squeeze(1), 0)
    top = (torch.rand(b, generator=gen) * (h - eh + 1)).long()
    left = (torch.rand(b, generator=gen) * (w - ew + 1)).long()
    return torch.stack([top, left, eh, ew])


def crop_flip(x: torch.Tensor, p: BatchParams, pad: int) -> torch.Tensor:
    """Stage 1 on a uint8 batch (B, C, H, W): zero-padded random crop, then flip, as one gather."""
    b, c, h, w = x.shape
    dev = x.device
    dy, dx, flip = p.dy.to(dev), p.dx.to(dev), p.flip.to(dev)
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    ys = ar_h.view(1, h) + (dy - pad).view(b, 1)
    xs = torch.where(flip.view(b, 1), (w - 1 - ar_w).view(1, w), ar_w.view(1, w)) + (dx - pad).view(b, 1)
    valid = ((ys >= 0) & (ys < h)).view(b, h, 1) & ((xs >= 0) & (xs < w)).view(b, 1, w)
    lin = ys.clamp(0, h - 1).view(b, h, 1) * w + xs.clamp(0, w - 1).view(b, 1, w)
    out = x.reshape(b, c, h * w).gather(2, lin.view(b, 1, h * w).expand(b, c, h * w)).view(b, c, h, w)
    return out * valid.view(b, 1, h, w)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1], with the very ops of torchvision's ``ToDtype(scale=True)``."""
    return x.to(torch.float32).mul_(1.0 / 255)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)


def float_stage(x: torch.Tensor, spec: AugmentSpec, p: BatchParams) -> torch.Tensor:
    """Stage 2 on a float batch in [0, 1]: warp (nearest, zero fill), then colour jitter."""
    b = x.shape[0]
    dev = x.device
    if p.theta is not None:
        grid = F.affine_grid(p.theta.to(dev), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    if p.jitter is not None:
        fb, fc, fs = (f.to(dev).view(b, 1, 1, 1) for f in p.jitter)
        if spec.jitter[0]:
            x = (x * fb).clamp_(0, 1)
        if spec.jitter[1]:
            m = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
            x = (fc * x + (1 - fc) * m).clamp_(0, 1)
        if spec.jitter[2] and x.shape[1] == 3:
            x = (fs * x + (1 - fs) * _gray(x)).clamp_(0, 1)
    return x


def normalize_(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """In place ``(x - mean) / std`` with (1, C, 1, 1) float32 tensors: the ops of torchvision's Normalize."""
    return x.sub_(mean).div_(std)


def erase_(x: torch.Tensor, p: BatchParams) -> torch.Tensor:
    """Stage 4: zero one rectangle per image where ``p.erase`` has a non-zero height."""
    if p.erase is None:
        return x
    b, _, h, w = x.shape
    top, left, eh, ew = (t.to(x.device).view(b, 1) for t in p.erase)
    ys = torch.arange(h, device=x.device).view(1, h)
    xs = torch.arange(w, device=x.device).view(1, w)
    rows = (ys >= top) & (ys < top + eh)
    cols = (xs >= left) & (xs < left + ew)
    mask = rows.view(b, 1, h, 1) & cols.view(b, 1, 1, w)
    return x.masked_fill_(mask, 0.0)


def augment_batch(x: torch.Tensor, spec: AugmentSpec, p: BatchParams, mean: torch.Tensor,
                  std: torch.Tensor) -> torch.Tensor:
    """All four stages on a uint8 batch (B, C, H, W) on any device; returns normalised float32."""
    if spec.crop_pad or spec.flip:
        x = crop_flip(x, p, spec.crop_pad)
    return finish_batch(to_unit(x), spec, p, mean, std)


def finish_batch(x: torch.Tensor, spec: AugmentSpec, p: BatchParams, mean: torch.Tensor,
                 std: torch.Tensor) -> torch.Tensor:
    """Stages 2 to 4 on a float batch in [0, 1] (stage 1 already done); returns normalised float32."""
    if spec.float_stage:
        x = float_stage(x, spec, p)
    return erase_(normalize_(x, mean, std), p)
