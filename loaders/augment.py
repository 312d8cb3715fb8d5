"""Augmentation presets and their two implementations: batched tensor ops and torchvision v2.

A preset is an ``AugmentSpec``: plain numbers that every backend reads, so ``base`` means the same
thing everywhere. The stages, in torchvision's order:

1. geometric uint8 stage: random crop of the original size after zero-padding ``crop_pad``
   pixels (``RandomCrop(size, padding=pad)``; ``pad_mode="reflect"`` mirrors the border instead:
   a translation by up to ``crop_pad`` pixels), then horizontal flip with p = 0.5
   (``flip_mode="alternating"``: random in the first epoch, then each image flipped the other way
   from the epoch before, as airbench does; the loader decides it from the image's index);
2. float stage on [0, 1] pixels: random resized crop (``RandomResizedCrop(size, scale)``, bilinear),
   rotation and random affine (nearest, zero fill), then colour jitter (brightness, contrast,
   saturation, then hue);
3. normalisation ``(x - mean) / std``;
4. cutout (``RandomErasing``, value 0 = the mean colour) on the normalised batch.

Batched versions draw every random parameter on the host from a seeded numpy generator (so a
batch is the same on CPU and GPU), then apply them with a few tensor ops on the batch's device, or
one numba kernel on a CPU: no per-sample Python. Loaders draw a whole epoch's parameters at once
(:func:`sample_params` with ``b`` = the epoch's samples: one numpy call per array) and slice them per
batch. On a GPU each array is uploaded once per epoch by :func:`upload` (pinned memory,
``non_blocking``), then sliced on the device: per-batch uploads from pageable memory were 3 to 11
blocking host-to-device copies per batch, each a stall of the host thread that feeds the GPU.
Differences from torchvision that only show in statistics, not in meaning: colour jitter runs in
float instead of uint8 (no rounding between its ops) and in the fixed order brightness, contrast,
saturation; rotation and affine are one combined warp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from harness.errors import HarnessError
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
        resized_crop: random resized crop's area range as a fraction of the image (aspect ratio drawn
            log-uniformly from [3/4, 4/3], as torchvision's default), resized back bilinearly; None = off.
        hue: hue shift drawn from [-hue, hue] (a fraction of the colour wheel, at most 0.5).
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
    pad_mode: str = "zeros"  # or "reflect"
    flip_mode: str = "random"  # or "alternating"
    resized_crop: tuple[float, float] | None = None
    hue: float = 0.0

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
        return self.warp or any(self.jitter) or self.resized_crop is not None or bool(self.hue)

    @property
    def fused(self) -> bool:
        """Whether the CPU's fused numba kernel does every stage (it has no resized crop, hue or reflect padding)."""
        return self.resized_crop is None and not self.hue and self.pad_mode != "reflect"


NONE = AugmentSpec("none")
BASE = AugmentSpec("base", crop_pad=4, flip=True)
# crop + flip + rotation by up to 10 degrees: the kfold report's K3 and the attention report's recipe.
ROTATE = AugmentSpec("rotate", crop_pad=4, flip=True, rotate=10.0)
STRONG = AugmentSpec("strong", crop_pad=4, flip=True, rotate=10.0, jitter=(0.2, 0.2, 0.2))
STRONGER = AugmentSpec("stronger", crop_pad=4, flip=True, rotate=10.0, jitter=(0.2, 0.2, 0.2),
                       translate=0.1, scale=(0.9, 1.1), shear=10.0, erase_p=0.5, erase_scale=(0.02, 0.25))
# The allcnn report's A3 (rotation, resized crop of 80-100 % of the area, flip) and the optuna report's
# O4 (flip, padded crop, colour jitter with hue, rotation).
RESIZED = AugmentSpec("resized", flip=True, rotate=10.0, resized_crop=(0.8, 1.0))
COLOR = AugmentSpec("color", crop_pad=4, flip=True, rotate=10.0, jitter=(0.2, 0.2, 0.2), hue=0.1)
# airbench94's (arXiv 2404.00498, section 3.2/3.6): translate by up to 2 px with reflect padding, alternating flip.
AIRBENCH = AugmentSpec("airbench", crop_pad=2, flip=True, pad_mode="reflect", flip_mode="alternating")
# Page's ResNet-9 ("How to train your ResNet 3", 2018): crop after 4 px reflect padding, flip, and an 8x8
# cutout on every image (a fixed 1/16 of a 32 px image, square, fully inside it).
PAGE = AugmentSpec("page", crop_pad=4, flip=True, pad_mode="reflect", erase_p=1.0, erase_scale=(0.0625, 0.0625),
                   erase_ratio=(1.0, 1.0))
for _spec in (NONE, BASE, ROTATE, RESIZED, COLOR, STRONG, STRONGER, AIRBENCH, PAGE):
    AUGMENTATIONS.register(_spec.name, _spec)


# --------------------------------------------------------------------------- torchvision


def with_options(spec: AugmentSpec, flip: str = "preset", translate: int | None = None) -> AugmentSpec:
    """``spec`` with the config's flip mode (``data.flip``) and reflect-padded translation (``data.translate``).

    Args:
        spec: the preset.
        flip: ``preset`` (unchanged), ``random``, ``alternating`` or ``none``.
        translate: pixels of reflect-padded translation replacing the preset's crop; None keeps it.
    """
    out = spec
    if flip != "preset":
        out = replace(out, flip=flip != "none", flip_mode="alternating" if flip == "alternating" else "random")
    if translate is not None:
        out = replace(out, crop_pad=int(translate), pad_mode="reflect")
    if out != spec:
        out = replace(out, name=f"{spec.name}+flip={flip}" + (f"+translate={translate}" if translate is not None else ""))
    return out


def alternating_flips(n: int, idx: np.ndarray, epoch: int, seed: int) -> np.ndarray:
    """Alternating flip of images ``idx`` (dataset indices, any order) in ``epoch``: a seeded random
    choice per image in epoch 0, then the opposite of the epoch before, i.e. ``first XOR (epoch odd)``.

    Every image is flipped in exactly one of any two consecutive epochs, so two epochs see both views
    of each (airbench's argument for it over random flips).
    """
    first = np.random.default_rng([int(seed), 0xF11B]).random(n) < 0.5
    return first[idx] ^ bool(epoch % 2)


def refuse_unsupported(spec: AugmentSpec, backend: str, *, reflect: bool = False, alternating: bool = False) -> None:
    """One-line error where ``backend`` cannot do what ``spec`` asks (a silent substitute would change results).

    Raises:
        HarnessError: reflect padding or alternating flip on a backend without it.
    """
    if spec.pad_mode == "reflect" and spec.crop_pad and not reflect:
        raise HarnessError(f"augmentation {spec.name}: the {backend} backend has no reflect-padded translation; "
                           "use --loader tensor")
    if spec.flip and spec.flip_mode == "alternating" and not alternating:
        raise HarnessError(f"augmentation {spec.name}: the {backend} backend has no alternating flip; "
                           "use --loader tensor")


def torchvision_uint8_transform(spec: AugmentSpec, size: tuple[int, int]) -> torch.nn.Module:
    """Stages 1 and 2 of ``spec`` as ``torchvision.transforms.v2`` ops on one uint8 CHW image of ``size``.

    What the torchvision backend runs in its DataLoader workers: its output stays uint8, so the
    batch the workers collate, and the host-to-device copy, are a quarter of fp32's bytes.
    (torchvision's v2 ops run on uint8 images; ``ColorJitter`` rounds to uint8 between its ops.)
    """
    # torchvision is heavy: loaded when this runs, so importing this module stays light
    from torchvision.transforms import v2

    ops: list[torch.nn.Module] = []
    if spec.resized_crop is not None:
        ops.append(v2.RandomResizedCrop(size, scale=spec.resized_crop, antialias=True))
    if spec.crop_pad:
        ops.append(v2.RandomCrop(size, padding=spec.crop_pad, fill=0,
                                 padding_mode="reflect" if spec.pad_mode == "reflect" else "constant"))
    if spec.flip:
        ops.append(v2.RandomHorizontalFlip())
    if spec.rotate:
        ops.append(v2.RandomRotation(spec.rotate))
    if spec.affine:
        ops.append(v2.RandomAffine(0, translate=(spec.translate, spec.translate), scale=spec.scale,
                                   shear=spec.shear or None))
    if any(spec.jitter) or spec.hue:
        b, c, s = spec.jitter
        ops.append(v2.ColorJitter(brightness=b or None, contrast=c or None, saturation=s or None,
                                  hue=spec.hue or None))
    return v2.Compose(ops) if ops else v2.Identity()


def erase_only(spec: AugmentSpec) -> AugmentSpec:
    """``spec`` with every stage but cutout off: what is left to draw once stages 1-2 ran elsewhere
    (the torchvision backend's workers)."""
    return AugmentSpec(f"{spec.name}-erase", erase_p=spec.erase_p, erase_scale=spec.erase_scale,
                       erase_ratio=spec.erase_ratio)


def after_stage1(spec: AugmentSpec) -> AugmentSpec:
    """``spec`` without crop and flip: what is left to draw once stage 1 ran elsewhere (FFCV's pipeline)."""
    return replace(spec, name=f"{spec.name}-stage2", crop_pad=0, flip=False)


# --------------------------------------------------------------------------- batched tensor ops


#: a parameter array: numpy as drawn on the host, or a tensor once uploaded
Array = np.ndarray | torch.Tensor


@dataclass
class BatchParams:
    """Random parameters of a batch (or of a whole epoch); ``None`` where the spec turns a stage off.

    The arrays are numpy as drawn; :meth:`to` gives the same parameters as tensors on a device,
    and :meth:`slice` the parameters of samples ``sl`` (a view, in either form). The augmentation
    functions below accept both forms: numpy arrays are copied to the batch's device per call
    (the old per-batch path, kept as the reference the tests compare with), tensors are used as
    they are.
    """

    dy: Array  # int64 (B,): crop offset in the padded image, 0..2*pad (pad = no shift)
    dx: Array
    flip: Array  # bool (B,)
    theta: Array | None  # float32 (B, 2, 3): output -> input map for affine_grid
    jitter: Array | None  # float32 (3, B): brightness, contrast, saturation factors
    erase: Array | None  # int64 (4, B): top, left, height, width; height 0 = no erasing
    crop: Array | None = None  # float32 (B, 2, 3): random resized crop, output -> input for affine_grid
    hue: Array | None = None  # float32 (B,): hue shift, a fraction of the colour wheel

    def slice(self, sl: slice) -> BatchParams:
        """The parameters of samples ``sl`` (views: no copy, on the host or on the device)."""
        def cut(a: Array | None, axis: int) -> Array | None:
            if a is None:
                return None
            return a[sl] if axis == 0 else a[:, sl]

        return BatchParams(cut(self.dy, 0), cut(self.dx, 0), cut(self.flip, 0), cut(self.theta, 0),
                           cut(self.jitter, 1), cut(self.erase, 1), cut(self.crop, 0), cut(self.hue, 0))

    def to(self, device: torch.device, spec: AugmentSpec) -> BatchParams:
        """These parameters on ``device``: one :func:`upload` per array that ``spec`` uses.

        Arrays that no stage reads (the crop offsets and flips of a preset without crop or flip)
        are left on the host instead of being copied.
        """
        geo = bool(spec.crop_pad or spec.flip)

        def up(a: Array | None, used: bool) -> Array | None:
            return upload(a, device) if used and isinstance(a, np.ndarray) else a

        return BatchParams(up(self.dy, geo), up(self.dx, geo), up(self.flip, geo), up(self.theta, True),
                           up(self.jitter, True), up(self.erase, True), up(self.crop, True), up(self.hue, True))


def upload(a: np.ndarray, device: torch.device) -> torch.Tensor:
    """``a`` as a tensor on ``device``: the one host-to-device copy of an epoch's parameter array.

    On a CPU it shares numpy's memory (no copy at all). On CUDA it goes through pinned memory with
    ``non_blocking=True``: a copy from pageable memory blocks the host until the GPU has it, while
    a pinned one is queued on the stream and overlaps with the work already there (torch's pinned
    host allocator keeps the staging buffer alive until the copy has run).
    """
    t = torch.from_numpy(np.ascontiguousarray(a))
    if device.type == "cpu":
        return t
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def sample_params(spec: AugmentSpec, b: int, h: int, w: int, gen: np.random.Generator) -> BatchParams:
    """Draw every random parameter of ``spec`` for ``b`` images of ``h`` x ``w`` (a batch or an epoch).

    numpy, not torch: these are a few numbers per image, and torch's intra-op threads turn each
    such tiny op into a millisecond-long barrier wait when other processes share the cores; and a
    host generator gives the CPU and the GPU paths the same draws. Every draw is elementwise per
    image, so loaders call this once per epoch (``b`` = the epoch's samples, one numpy call per
    array) and slice the result per batch.
    """
    pad = spec.crop_pad
    if pad:
        dy = gen.integers(0, 2 * pad + 1, b, dtype=np.int64)
        dx = gen.integers(0, 2 * pad + 1, b, dtype=np.int64)
    else:
        dy = dx = np.zeros(b, dtype=np.int64)
    flip = gen.random(b) < 0.5 if spec.flip else np.zeros(b, dtype=bool)
    theta = _sample_theta(spec, b, h, w, gen) if spec.warp else None
    jitter = None
    if any(spec.jitter):
        m = np.asarray(spec.jitter, dtype=np.float64).reshape(3, 1)
        lo = np.maximum(1 - m, 0)
        jitter = (lo + gen.random((3, b)) * (1 + m - lo)).astype(np.float32)
    erase = _sample_erase(spec, b, h, w, gen) if spec.erase_p else None
    # Drawn after the older stages' arrays, so adding these left every existing preset's draws unchanged.
    crop = _sample_resized_crop(spec.resized_crop, b, h, w, gen) if spec.resized_crop is not None else None
    hue = ((gen.random(b) * 2 - 1) * spec.hue).astype(np.float32) if spec.hue else None
    return BatchParams(dy, dx, flip, theta, jitter, erase, crop, hue)


def _sample_resized_crop(scale: tuple[float, float], b: int, h: int, w: int, gen: np.random.Generator) -> np.ndarray:
    """Crop boxes as torchvision's RandomResizedCrop draws them, as ``affine_grid`` maps (B, 2, 3).

    Up to 10 tries of (area fraction in ``scale``, log-uniform ratio in [3/4, 4/3]) for a box that
    fits; none fits -> the whole image (torchvision's fallback at these ratios).
    """
    tries = 10
    area = h * w * (scale[0] + gen.random((b, tries)) * (scale[1] - scale[0]))
    lr = np.log(np.array([3 / 4, 4 / 3]))
    ratio = np.exp(lr[0] + gen.random((b, tries)) * (lr[1] - lr[0]))
    cw = np.round(np.sqrt(area * ratio)).astype(np.int64)
    ch = np.round(np.sqrt(area / ratio)).astype(np.int64)
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = np.argmax(fits, axis=1)
    rows = np.arange(b)
    ok = fits.any(1)
    cw = np.where(ok, cw[rows, first], w)
    ch = np.where(ok, ch[rows, first], h)
    top = (gen.random(b) * (h - ch + 1)).astype(np.int64)
    left = (gen.random(b) * (w - cw + 1)).astype(np.int64)
    theta = np.zeros((b, 2, 3), dtype=np.float32)
    # Normalised output x in [-1, 1] samples input pixel columns left .. left + cw (align_corners=False).
    theta[:, 0, 0] = cw / w
    theta[:, 0, 2] = (2 * left + cw) / w - 1
    theta[:, 1, 1] = ch / h
    theta[:, 1, 2] = (2 * top + ch) / h - 1
    return theta


def _sample_theta(spec: AugmentSpec, b: int, h: int, w: int, gen: np.random.Generator) -> np.ndarray:
    """Rotation and random affine as one ``affine_grid`` matrix per image (output -> input, normalised)."""
    angle = (gen.random(b) * 2 - 1) * math.radians(spec.rotate)
    shear = (gen.random(b) * 2 - 1) * math.radians(spec.shear)
    lo, hi = spec.scale
    s = lo + gen.random(b) * (hi - lo)
    # torchvision rounds the translation to whole pixels.
    tx = np.round((gen.random(b) * 2 - 1) * spec.translate * w)
    ty = np.round((gen.random(b) * 2 - 1) * spec.translate * h)
    cos, sin, tan = np.cos(angle), np.sin(angle), np.tan(shear)
    # Forward map in pixel coordinates centred on the image (y down): A = R(angle) @ Shear_x * s,
    # with R = [[cos, sin], [-sin, cos]] and Shear_x = [[1, tan], [0, 1]].
    a, bb = cos * s, (cos * tan + sin) * s
    c, dd = -sin * s, (cos - sin * tan) * s
    det = a * dd - bb * c
    ia, ib, ic, id_ = dd / det, -bb / det, -c / det, a / det  # A^-1, closed form
    # Normalised coordinates (align_corners=False) are pixel offsets from the centre over half
    # sizes: theta = S^-1 A^-1 S, and the translation -S^-1 A^-1 t.
    hx, hy = w / 2, h / 2
    theta = np.empty((b, 2, 3), dtype=np.float64)
    theta[:, 0, 0], theta[:, 0, 1] = ia, ib * hy / hx
    theta[:, 1, 0], theta[:, 1, 1] = ic * hx / hy, id_
    theta[:, 0, 2] = -(ia * tx + ib * ty) / hx
    theta[:, 1, 2] = -(ic * tx + id_ * ty) / hy
    return theta.astype(np.float32)


def _sample_erase(spec: AugmentSpec, b: int, h: int, w: int, gen: np.random.Generator) -> np.ndarray:
    """Cutout rectangles as torchvision's RandomErasing draws them: up to 10 tries for one that fits."""
    tries = 10
    lo, hi = spec.erase_scale
    area = h * w * (lo + gen.random((b, tries)) * (hi - lo))
    lr = np.log(np.asarray(spec.erase_ratio, dtype=np.float64))
    ratio = np.exp(lr[0] + gen.random((b, tries)) * (lr[1] - lr[0]))
    eh = np.round(np.sqrt(area * ratio)).astype(np.int64)
    ew = np.round(np.sqrt(area / ratio)).astype(np.int64)
    fits = (eh < h) & (ew < w) & (eh > 0) & (ew > 0)
    first = np.argmax(fits, axis=1)  # first try that fits (0 if none; masked below)
    ok = fits.any(1) & (gen.random(b) < spec.erase_p)
    rows = np.arange(b)
    eh = np.where(ok, eh[rows, first], 0)
    ew = np.where(ok, ew[rows, first], 0)
    top = (gen.random(b) * (h - eh + 1)).astype(np.int64)
    left = (gen.random(b) * (w - ew + 1)).astype(np.int64)
    return np.stack([top, left, eh, ew])


def _dev(a: Array, device: torch.device) -> torch.Tensor:
    """A parameter array on ``device``: tensors (uploaded once per epoch) as they are; numpy arrays
    are copied here, once per call (the per-batch reference path)."""
    if isinstance(a, torch.Tensor):
        return a
    return torch.from_numpy(a).to(device)


def _reflect(i: torch.Tensor, n: int) -> torch.Tensor:
    """Indices reflected into ``[0, n)`` without repeating the edge (``F.pad(mode="reflect")``), for |shift| < n."""
    i = torch.where(i < 0, -i, i)
    return torch.where(i >= n, 2 * (n - 1) - i, i)


def crop_flip(x: torch.Tensor, p: BatchParams, pad: int, pad_mode: str = "zeros") -> torch.Tensor:
    """Stage 1 on a uint8 batch (B, C, H, W): padded random crop (zero or reflect), then flip, as one gather."""
    b, c, h, w = x.shape
    dev = x.device
    dy, dx, flip = _dev(p.dy, dev), _dev(p.dx, dev), _dev(p.flip, dev)
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    ys = ar_h.view(1, h) + (dy - pad).view(b, 1)
    xs = torch.where(flip.view(b, 1), (w - 1 - ar_w).view(1, w), ar_w.view(1, w)) + (dx - pad).view(b, 1)
    if pad_mode == "reflect":  # the mirrored border is real pixels: no mask
        lin = _reflect(ys, h).view(b, h, 1) * w + _reflect(xs, w).view(b, 1, w)
        return x.reshape(b, c, h * w).gather(2, lin.view(b, 1, h * w).expand(b, c, h * w)).view(b, c, h, w)
    valid = ((ys >= 0) & (ys < h)).view(b, h, 1) & ((xs >= 0) & (xs < w)).view(b, 1, w)
    lin = ys.clamp(0, h - 1).view(b, h, 1) * w + xs.clamp(0, w - 1).view(b, 1, w)
    out = x.reshape(b, c, h * w).gather(2, lin.view(b, 1, h * w).expand(b, c, h * w)).view(b, c, h, w)
    return out * valid.view(b, 1, h, w)


def to_unit(x: torch.Tensor, memory_format: torch.memory_format = torch.preserve_format) -> torch.Tensor:
    """uint8 -> float32 in [0, 1], with the very ops of torchvision's ``ToDtype(scale=True)``.

    ``memory_format`` lays out the float copy (e.g. channels_last) in the same pass.
    """
    return x.to(torch.float32, memory_format=memory_format).mul_(1.0 / 255)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)


def float_stage(x: torch.Tensor, spec: AugmentSpec, p: BatchParams) -> torch.Tensor:
    """Stage 2 on a float batch in [0, 1]: warp (nearest, zero fill), then colour jitter."""
    b = x.shape[0]
    dev = x.device
    if p.crop is not None:
        grid = F.affine_grid(_dev(p.crop, dev), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if p.theta is not None:
        grid = F.affine_grid(_dev(p.theta, dev), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    if p.jitter is not None:
        fb, fc, fs = (_dev(f, dev).view(b, 1, 1, 1) for f in p.jitter)
        if spec.jitter[0]:
            x = (x * fb).clamp_(0, 1)
        if spec.jitter[1]:
            m = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
            x = (fc * x + (1 - fc) * m).clamp_(0, 1)
        if spec.jitter[2] and x.shape[1] == 3:
            x = (fs * x + (1 - fs) * _gray(x)).clamp_(0, 1)
    if p.hue is not None and x.shape[1] == 3:
        x = adjust_hue(x, _dev(p.hue, dev))
    return x


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of each RGB image in [0, 1] by ``shift[i]`` of the colour wheel (via HSV, as
    torchvision's ``adjust_hue``), batched: torchvision's takes one factor per call."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    dc = delta.clamp_min(1e-12)
    rc, gc, bc = (maxc - r) / dc, (maxc - g) / dc, (maxc - b) / dc
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    h = (h + shift.view(-1, 1, 1)) % 1.0
    v = maxc
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p_, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = torch.stack([torch.stack(c, 1) for c in ((v, q, p_, p_, t, v), (t, v, v, q, p_, p_),
                                                     (p_, p_, t, v, v, q))], 1)  # (B, 3, 6, H, W)
    idx = i.unsqueeze(1).unsqueeze(2).expand(-1, 3, 1, -1, -1)
    return table.gather(2, idx).squeeze(2)


def normalize_(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """In place ``(x - mean) / std`` with (1, C, 1, 1) float32 tensors: the ops of torchvision's Normalize."""
    return x.sub_(mean).div_(std)


def erase_(x: torch.Tensor, p: BatchParams) -> torch.Tensor:
    """Stage 4: zero one rectangle per image where ``p.erase`` has a non-zero height."""
    if p.erase is None:
        return x
    b, _, h, w = x.shape
    top, left, eh, ew = (_dev(t, x.device).view(b, 1) for t in p.erase)
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
        x = crop_flip(x, p, spec.crop_pad, spec.pad_mode)
    return finish_batch(to_unit(x), spec, p, mean, std)


def finish_batch(x: torch.Tensor, spec: AugmentSpec, p: BatchParams, mean: torch.Tensor,
                 std: torch.Tensor) -> torch.Tensor:
    """Stages 2 to 4 on a float batch in [0, 1] (stage 1 already done); returns normalised float32."""
    if spec.float_stage:
        x = float_stage(x, spec, p)
    return erase_(normalize_(x, mean, std), p)
