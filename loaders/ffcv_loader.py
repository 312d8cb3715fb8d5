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
which keeps every preset's meaning. Order and sharding come from :func:`loaders.sampler.epoch_indices`
through a custom ``TraversalOrder``, as for the other backends. FFCV reuses its output buffers;
every yielded tensor here is a fresh one (the float conversion copies, labels are cloned).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from harness.errors import HarnessError
from loaders.augment import finish_batch, sample_params
from loaders.base import LoaderBase
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


def _shard_order(owner: LoaderBase) -> object:
    """An ffcv ``TraversalOrder`` yielding ``owner``'s :func:`epoch_indices` for each epoch.

    ffcv's Loader instantiates a custom order by calling the object it is given with itself, so
    the instance returned here is callable and finishes its own initialisation then.
    """
    from ffcv.traversal_order.base import TraversalOrder

    class ShardOrder(TraversalOrder):
        def __init__(self) -> None:  # completed in __call__, when ffcv hands over the Loader
            pass

        def __call__(self, loader: object) -> ShardOrder:
            TraversalOrder.__init__(self, loader)
            return self

        def sample_order(self, epoch: int) -> np.ndarray:
            return epoch_indices(owner.n, epoch=epoch, seed=owner.seed, shuffle=owner.train, rank=owner.rank,
                                 world_size=owner.world_size, even=owner.even).astype(np.uint64)

    return ShardOrder()


class FFCVLoader(LoaderBase):
    """``ffcv.loader.Loader`` over the split's beton; see the module docstring."""

    backend = "ffcv"

    def __init__(self, split: SplitData, meta: DatasetMeta, *, train: bool, batch_size: int,
                 augment: str = "none", device: str | torch.device = "cpu", rank: int = 0, world_size: int = 1,
                 seed: int = 0, drop_last: bool | None = None, channels_last: bool = False,
                 num_workers: int | None = None, beton_dir: str | Path | None = None) -> None:
        super().__init__(split, meta, train=train, batch_size=batch_size, augment=augment, device=device,
                         rank=rank, world_size=world_size, seed=seed, drop_last=drop_last,
                         channels_last=channels_last)
        why = ffcv_import_error()
        if why:
            raise HarnessError(f"loader backend ffcv: ffcv does not import ({why}); {INSTALL_HINT}")
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
            image.append(ToDevice(self.device, non_blocking=True))
            label.append(ToDevice(self.device, non_blocking=True))
        # channels_last=True: a permuted view, no copy; the float conversion below makes the layout.
        image.append(ToTorchImage(channels_last=True, convert_back_int16=False))
        self.num_workers = num_workers or max(1, (os.cpu_count() or 1) // world_size)
        self.loader = Loader(str(self.path), batch_size=batch_size, num_workers=self.num_workers,
                             order=_shard_order(self), drop_last=self.drop_last, seed=self.seed % (1 << 31), os_cache=True,
                             pipelines={"image": image, "label": label}, batches_ahead=2)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.loader is None:
            return
        self.loader.next_epoch = self.epoch
        gen = self.aug_generator()
        for x, y in self.loader:
            b, _, h, w = x.shape
            # The uint8 -> float copy (torchvision's ToDtype arithmetic) also frees FFCV's reused buffer.
            fmt = torch.channels_last if self.channels_last else torch.contiguous_format
            xf = x.to(torch.float32, memory_format=fmt).mul_(1.0 / 255)
            if self.spec.float_stage or self.spec.erase_p:
                xf = finish_batch(xf, self.spec, sample_params(self.spec, b, h, w, gen), self.mean, self.std)
            else:
                xf = xf.sub_(self.mean).div_(self.std)
            yield self._finish(xf), y.reshape(-1).to(torch.int64, copy=True)


BACKENDS.register("ffcv", FFCVLoader)
