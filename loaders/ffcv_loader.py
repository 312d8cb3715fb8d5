"""The ``ffcv`` backend: ``ffcv.loader.Loader`` over a ``.beton`` file of the split (optional extra).

Install: ``bash scripts/install_ffcv.sh .venv`` (apt packages ``pkg-config libopencv-dev
libturbojpeg0-dev``, then ``pip install ffcv``); see docs in that script.

Betons: one per split, ``<beton_dir>/<dataset>-<fingerprint>.beton`` where the fingerprint hashes
the split's images and labels, so a beton can never be used for data it was not written from.
``beton_dir`` defaults to ``<cache>/ffcv`` (``meta.cache_dir``). ``harness data prepare --ffcv``
writes them ahead of time; building an ``ffcv`` loader writes a missing one (with a notice).
Images are stored raw (``NDArrayField`` uint8 HWC: exact pixels, any channel count).

Augmentation: the preset's stage 1 (crop after zero padding, flip) runs in FFCV's JIT pipeline
(``RandomTranslate``, ``RandomHorizontalFlip``); FFCV has no rotation, affine or float colour
jitter, so the later stages run on the device with the batched ops of :mod:`loaders.augment`,
which keeps every preset's meaning. Their random parameters are drawn once per epoch and uploaded
once per array, as in the tensor backend.

Conversion and normalisation run inside the pipeline, after ``ToDevice``: the uint8 batch crosses
to the GPU (a quarter of fp32's bytes), and the float conversion plus ``(x/255 - mean)/std`` runs
on FFCV's own CUDA stream in its loader thread, overlapped with training, not on the default
stream between two training steps. That op is our :class:`_ToFloat` rather than ffcv's
``NormalizeImage``, whose GPU path needs cupy and pytorch-pfn-extras, whose CPU path handles three
channels only, and whose float64 lookup table is not bit-identical to torchvision's float32
arithmetic (ours is, so ``none`` gives the tensor backend's very batches). For presets with float
stages the op only converts to [0, 1] and the rest (warp, jitter, normalise, cutout) follows
outside the pipeline. FFCV reuses its output buffers, so the op writes each batch into a fresh
tensor (``record_stream`` tells the caching allocator that the consumer's stream uses it), and
every yielded tensor stays valid however long it is kept; labels get the same treatment.

Training drops the last partial batch by default (``drop_last=None`` means True for ``train``,
FFCV's own default too): every step then has the same batch size, so a compiled model keeps one
static shape and BatchNorm never normalises a batch of a few images. Evaluation keeps every image.
Order and sharding come from :func:`loaders.sampler.epoch_indices` through a custom
``TraversalOrder``, as for the other backends. ffcv 1.0.2 (the version the extra pins) accepts a
custom order only as an *instance*, which it then calls with the loader (``isinstance`` check);
later ffcv sources check ``issubclass`` instead and so take only a *class*.
:func:`_new_ffcv_loader` passes the instance and, where ffcv refuses that form, the class.
"""

from __future__ import annotations

import fcntl
import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from harness.errors import HarnessError
from loaders.augment import after_stage1, finish_batch, sample_params
from loaders.base import LoaderBase, default_workers, usable_cpus
from loaders.cache import cache_root, notice
from loaders.reader import resolve_data_dir
from loaders.registries import BACKENDS
from loaders.sampler import epoch_indices
from loaders.types import DatasetMeta, SplitData

INSTALL_HINT = ("install it with 'bash scripts/install_ffcv.sh .venv' (apt packages pkg-config libopencv-dev "
                "libturbojpeg0-dev, then pip install ffcv), or use --backend tensor")


def ffcv_import_error() -> str | None:
    """``None`` when ffcv imports, else why not (one line)."""
    try:
        import ffcv.fields  # noqa: F401
        import ffcv.loader  # noqa: F401
        import ffcv.writer  # noqa: F401
    except Exception as e:  # noqa: BLE001 - a broken native extension raises more than ImportError
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return None


def default_beton_dir(meta: DatasetMeta) -> Path:
    """``<cache>/ffcv`` for the dataset's cache directory."""
    return Path(meta.cache_dir or cache_root(resolve_data_dir(None))) / "ffcv"


def beton_path(split: SplitData, meta: DatasetMeta, beton_dir: str | os.PathLike | None = None) -> Path:
    """Where the beton of ``split`` lives (named by the split's content fingerprint)."""
    d = Path(beton_dir) if beton_dir else default_beton_dir(meta)
    return d / f"{meta.name}-{split.fingerprint()}.beton"


class _Rows:
    """The indexable dataset ``DatasetWriter`` reads: (HWC uint8 image, int label)."""

    def __init__(self, split: SplitData) -> None:
        self.x = split.images.permute(0, 2, 3, 1).contiguous().numpy()
        self.y = split.labels.numpy()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.x[i], int(self.y[i])


def write_beton(split: SplitData, path: Path, num_workers: int | None = None) -> Path:
    """Write ``split`` to the beton ``path`` unless it exists (atomic; one writer at a time).

    Raises:
        HarnessError: ffcv is not importable, or the split is empty.
    """
    why = ffcv_import_error()
    if why:
        raise HarnessError(f"cannot write FFCV betons: ffcv does not import ({why}); {INSTALL_HINT}")
    if len(split) == 0:
        raise HarnessError(f"cannot write an empty split to {path}")
    # ffcv is optional (the [ffcv] extra)
    from ffcv.fields import IntField, NDArrayField
    from ffcv.writer import DatasetWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # DDP ranks and parallel trials: one writes, the rest wait
        if path.exists():
            return path
        rows = _Rows(split)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fields = {"image": NDArrayField(np.dtype("uint8"), tuple(int(s) for s in rows.x.shape[1:])),
                  "label": IntField()}
        try:
            DatasetWriter(str(tmp), fields, num_workers=num_workers or min(4, os.cpu_count() or 1)) \
                .from_indexed_dataset(rows, chunksize=1000)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
    return path


def _shard_order_class(owner: LoaderBase) -> type:
    """An ffcv ``TraversalOrder`` class yielding ``owner``'s :func:`epoch_indices` for each epoch.

    It works as ffcv 1.0.2 wants it (an instance made with no loader, which ffcv then calls with
    the loader) and as later ffcv does (the class, instantiated with the loader).
    """
    # ffcv is optional (the [ffcv] extra)
    from ffcv.traversal_order.base import TraversalOrder

    class ShardOrder(TraversalOrder):
        def __init__(self, loader: object = None) -> None:
            if loader is not None:
                TraversalOrder.__init__(self, loader)

        def __call__(self, loader: object) -> ShardOrder:  # ffcv 1.0.2: ``order(self)`` on the instance
            TraversalOrder.__init__(self, loader)
            return self

        def sample_order(self, epoch: int) -> np.ndarray:
            return epoch_indices(owner.n, epoch=epoch, seed=owner.seed, shuffle=owner.train, rank=owner.rank,
                                 world_size=owner.world_size, even=owner.even).astype(np.uint64)

    return ShardOrder


def _new_ffcv_loader(loader_cls: type, order_cls: type, **kwargs: object) -> object:
    """``loader_cls(order=..., **kwargs)`` with the custom order in the form this ffcv accepts.

    ffcv 1.0.2 checks ``isinstance(order, TraversalOrder)`` and raises ValueError for a class;
    later versions check ``issubclass(order, TraversalOrder)``, which raises TypeError for an
    instance. Try the instance (the pinned version's form) first, then the class.
    """
    try:
        return loader_cls(order=order_cls(), **kwargs)
    except (TypeError, ValueError) as e:
        # Only ffcv's refusals of the order's form: "... a subclass of TraversalOrder" (ValueError)
        # or "issubclass() arg 1 must be a class" (TypeError); anything else is a real error.
        if "TraversalOrder" not in str(e) and "issubclass" not in str(e):
            raise
    return loader_cls(order=order_cls, **kwargs)


@functools.cache
def _pipeline_ops() -> tuple[type, type]:
    """The two in-pipeline ffcv ``Operation`` classes (defined lazily: ffcv is an optional extra)."""
    # ffcv is optional (the [ffcv] extra)
    from ffcv.pipeline.operation import Operation

    class _ToFloat(Operation):
        """uint8 (B, C, H, W) view -> a fresh float32 batch ``(x * (1/255) - mean) / std``.

        torchvision's ``ToDtype(scale=True)`` + ``Normalize`` arithmetic in float32 (bit-identical
        to the tensor backend); ``mean=None`` stops at [0, 1]. Runs wherever the batch is: on the
        GPU after ``ToDevice``, on FFCV's stream. Not JIT-compiled: these are three torch ops.
        """

        def __init__(self, mean: torch.Tensor | None, std: torch.Tensor | None,
                     memory_format: torch.memory_format) -> None:
            super().__init__()
            self.mean, self.std, self.memory_format = mean, std, memory_format
            #: the stream that consumes the batches (set by the loader at each epoch); None on a CPU
            self.consumer: torch.cuda.Stream | None = None

        def generate_code(self) -> Callable:
            def to_float(x: torch.Tensor, _dst: object) -> torch.Tensor:
                out = x.to(torch.float32, memory_format=self.memory_format).mul_(1.0 / 255)
                if self.mean is not None:
                    out.sub_(self.mean).div_(self.std)
                if self.consumer is not None:  # allocated on FFCV's stream, used on the consumer's
                    out.record_stream(self.consumer)
                return out

            return to_float

        def declare_state_and_memory(self, previous_state: object) -> tuple[object, None]:
            return replace(previous_state, dtype=torch.float32, jit_mode=False), None

    class _ToLabels(Operation):
        """Label batch -> a fresh flat int64 tensor (FFCV's label buffer is reused)."""

        def __init__(self) -> None:
            super().__init__()
            self.consumer: torch.cuda.Stream | None = None

        def generate_code(self) -> Callable:
            def to_labels(y: torch.Tensor, _dst: object) -> torch.Tensor:
                out = y.reshape(-1).to(torch.int64, copy=True)
                if self.consumer is not None:
                    out.record_stream(self.consumer)
                return out

            return to_labels

        def declare_state_and_memory(self, previous_state: object) -> tuple[object, None]:
            return replace(previous_state, dtype=torch.int64, jit_mode=False), None

    return _ToFloat, _ToLabels


class FFCVLoader(LoaderBase):
    """``ffcv.loader.Loader`` over the split's beton; see the module docstring."""

    backend = "ffcv"
    # no reflect padding (its RandomTranslate zero-fills) and no alternating flip (random per image)

    def __init__(self, split: SplitData, meta: DatasetMeta, *, train: bool, batch_size: int,
                 augment: str = "none", device: str | torch.device = "cpu", rank: int = 0, world_size: int = 1,
                 seed: int = 0, drop_last: bool | None = None, channels_last: bool = False,
                 num_workers: int | None = None, beton_dir: str | Path | None = None) -> None:
        # Training drops the short last batch unless told otherwise (see the module docstring).
        super().__init__(split, meta, train=train, batch_size=batch_size, augment=augment, device=device,
                         rank=rank, world_size=world_size, seed=seed,
                         drop_last=train if drop_last is None else drop_last, channels_last=channels_last)
        why = ffcv_import_error()
        if why:
            raise HarnessError(f"loader backend ffcv: ffcv does not import ({why}); {INSTALL_HINT}")
        # ffcv is optional (the [ffcv] extra)
        from ffcv.fields.decoders import IntDecoder, NDArrayDecoder
        from ffcv.loader import Loader
        from ffcv.transforms import RandomHorizontalFlip, RandomTranslate, ToDevice, ToTensor, ToTorchImage

        self.path = beton_path(split, meta, beton_dir)
        self.loader = None
        if self.n == 0:
            return
        if not self.path.exists():
            notice(f"loader: writing FFCV beton {self.path} ({self.n} images)")
            write_beton(split, self.path)
        c = split.images.shape[1]
        image: list = [NDArrayDecoder()]
        if self.spec.crop_pad:
            image.append(RandomTranslate(padding=self.spec.crop_pad, fill=(0,) * c))
        if self.spec.flip:
            image.append(RandomHorizontalFlip())
        image.append(ToTensor())
        label: list = [IntDecoder(), ToTensor()]
        if self.device.type == "cuda":
            # uint8 crosses to the GPU (FFCV's host buffers are pinned); conversion happens there.
            image.append(ToDevice(self.device, non_blocking=True))
            label.append(ToDevice(self.device, non_blocking=True))
        # channels_last=True: a permuted view, no copy; _ToFloat writes the layout asked for.
        image.append(ToTorchImage(channels_last=True, convert_back_int16=False))
        to_float, to_labels = _pipeline_ops()
        #: whether the float stages (warp, jitter, cutout) finish each batch outside the pipeline
        self.finish_outside = self.spec.float_stage or bool(self.spec.erase_p)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self._ops = [to_float(None, None, fmt) if self.finish_outside else to_float(self.mean, self.std, fmt),
                     to_labels()]
        image.append(self._ops[0])
        label.append(self._ops[1])
        # FFCV's workers are threads of this process: the CPUs it may use, one left for the training loop.
        self.num_workers = num_workers or max(1, default_workers(usable_cpus()))
        self.loader = _new_ffcv_loader(Loader, _shard_order_class(self), fname=str(self.path),
                                       batch_size=batch_size, num_workers=self.num_workers,
                                       drop_last=self.drop_last, seed=self.seed % (1 << 31), os_cache=True,
                                       pipelines={"image": image, "label": label}, batches_ahead=2)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.loader is None:
            return
        self.loader.next_epoch = self.epoch
        consumer = torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None
        for op in self._ops:
            op.consumer = consumer
        p_dev = None
        if self.finish_outside:
            _, _, h, w = self.split.images.shape
            rest = after_stage1(self.spec)  # crop and flip ran in the pipeline
            params = sample_params(rest, self.num_samples, h, w, self.aug_generator())
            p_dev = params.to(self.device, rest)  # one upload per array per epoch
        bs = self.batch_size
        for k, (x, y) in enumerate(self.loader):
            # x: fresh float32 from _ToFloat, already normalised unless a float stage remains.
            if p_dev is not None:
                x = finish_batch(x, self.spec, p_dev.slice(slice(k * bs, k * bs + x.shape[0])), self.mean,
                                 self.std)
            yield self._finish(x), y


BACKENDS.register("ffcv", FFCVLoader)
