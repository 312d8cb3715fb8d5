"""Dataset readers on real-format files: loading, checksums, corrupt and missing files, caches, CLI."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
import torch
from data_fixtures import (
    CIFAR_CLASSES,
    WNIDS,
    cifar_arrays,
    make_cifar_npz,
    make_cifar_pickles,
    make_imagefolder,
    make_mnist,
    write_npz_lzma,
)

from harness.cli import main as cli_main
from harness.errors import DataError, HarnessError
from loaders import DATASETS, DataOptions, MissingDataError, load_splits
from loaders import cifar10 as cifar_mod
from loaders import mnist as mnist_mod
from loaders.cache import cache_root


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)


@pytest.fixture
def cifar_npz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "data"
    monkeypatch.setattr(cifar_mod, "NPZ_SHA256", make_cifar_npz(root))
    return root


@pytest.fixture
def cifar_pickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "data"
    monkeypatch.setattr(cifar_mod, "PICKLE_MD5", make_cifar_pickles(root))
    return root


@pytest.fixture
def mnist_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "data"
    monkeypatch.setattr(mnist_mod, "FILES_MD5", make_mnist(root))
    return root


class DecodeCounter:
    """Counts real decodes of a reader (a cache hit decodes nothing)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, reader_cls: type) -> None:
        self.calls = 0
        orig = reader_cls.decode

        def counted(reader: object, *a: object) -> object:
            self.calls += 1
            return orig(reader, *a)

        monkeypatch.setattr(reader_cls, "decode", counted)


def _info(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    rc = cli_main(["data", "info", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_checksum_tables_match_torchvision() -> None:
    import torchvision.datasets as tvd

    tv = dict(tvd.CIFAR10.train_list + tvd.CIFAR10.test_list)
    tv[tvd.CIFAR10.meta["filename"]] = tvd.CIFAR10.meta["md5"]
    assert tv == cifar_mod.PICKLE_MD5
    assert {Path(url).name: md5 for url, md5 in tvd.MNIST.resources} == mnist_mod.FILES_MD5


def test_registry_lists_every_dataset() -> None:
    assert DATASETS.names() == ["cifar10", "imagenette", "mnist", "synthetic"]
    with pytest.raises(HarnessError, match="did you mean cifar10"):
        load_splits(DataOptions("cifar100"))


def test_cifar_pickles_load_in_order(cifar_pickles: Path) -> None:
    s = load_splits(DataOptions("cifar10", data_dir=str(cifar_pickles), val_fraction=0.0))
    assert s.meta.classes == tuple(CIFAR_CLASSES)
    assert s.train.images.shape == (150, 3, 32, 32) and s.train.images.dtype == torch.uint8
    assert s.train.labels.dtype == torch.int64 and len(s.val) == 0 and len(s.test) == 40
    # Index-coded pixels: batches concatenated in order, rows reshaped CHW.
    assert s.train.images[:, 0, 0, 0].tolist() == [i % 251 for i in range(150)]
    assert s.train.labels.tolist() == [i % 10 for i in range(150)]
    assert s.meta.source.endswith("cifar-10-batches-py")


def test_cifar_pickle_md5_mismatch_names_the_file(cifar_pickles: Path) -> None:
    f = cifar_pickles / "cifar-10-batches-py" / "data_batch_3"
    b = bytearray(f.read_bytes())
    b[-10] ^= 0xFF
    f.write_bytes(bytes(b))
    with pytest.raises(DataError, match=r"data_batch_3: md5 .* does not match"):
        load_splits(DataOptions("cifar10", data_dir=str(cifar_pickles)))


def test_cifar_pickles_missing_file(cifar_pickles: Path) -> None:
    (cifar_pickles / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(MissingDataError, match="lacks test_batch"):
        load_splits(DataOptions("cifar10", data_dir=str(cifar_pickles)))


def test_cifar_npz_loads_then_hits_the_cache(cifar_npz: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decodes = DecodeCounter(monkeypatch, cifar_mod.Cifar10Reader)
    opts = DataOptions("cifar10", data_dir=str(cifar_npz))
    a = load_splits(opts)
    b = load_splits(opts.replace(seed=1))  # split options are not part of the decoded cache
    assert decodes.calls == 1
    assert torch.equal(a.test.images, b.test.images) and not torch.equal(a.val.labels, b.val.labels)
    assert a.train.images.shape[1:] == (3, 32, 32)
    assert len(a.train) + len(a.val) == 200 and len(a.test) == 50
    # NHWC in the file, NCHW out: the index-coded pixel sits in channel 0, row 0, column 0.
    assert a.test.images[:, 0, 0, 0].tolist() == [i % 251 for i in range(50)]


def test_corrupt_cache_is_detected_and_rebuilt(cifar_npz: Path, capsys: pytest.CaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    decodes = DecodeCounter(monkeypatch, cifar_mod.Cifar10Reader)
    opts = DataOptions("cifar10", data_dir=str(cifar_npz))
    ref = load_splits(opts)
    entry = next((Path(os.environ["HARNESS_CACHE_DIR"])).glob("cifar10-*/train_x.npy"))
    raw = bytearray(entry.read_bytes())
    raw[-1] ^= 0xFF  # same size, different content: only the checksum can tell
    entry.write_bytes(bytes(raw))
    capsys.readouterr()
    again = load_splits(opts)
    assert "corrupt" in capsys.readouterr().err and decodes.calls == 2
    assert torch.equal(ref.train.images, again.train.images)


def test_cache_is_keyed_by_content(cifar_npz: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decodes = DecodeCounter(monkeypatch, cifar_mod.Cifar10Reader)
    load_splits(DataOptions("cifar10", data_dir=str(cifar_npz)))
    arrays = cifar_arrays(n_train=100, n_test=20)
    write_npz_lzma(cifar_npz / "cifar10" / "cifar10.npz", arrays)
    import hashlib

    monkeypatch.setattr(cifar_mod, "NPZ_SHA256", {k: hashlib.sha256(a.data).hexdigest() for k, a in arrays.items()})
    s = load_splits(DataOptions("cifar10", data_dir=str(cifar_npz)))
    assert decodes.calls == 2  # a replaced file never reuses the old cache
    assert len(s.train) + len(s.val) == 100


def test_truncated_npz_member_is_one_line_exit_2(cifar_npz: Path, capsys: pytest.CaptureFixture) -> None:
    npz = cifar_npz / "cifar10" / "cifar10.npz"
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size * 2 // 3])
    with pytest.raises(DataError, match="cifar10.npz"):
        load_splits(DataOptions("cifar10", data_dir=str(cifar_npz)))
    rc, out, err = _info(capsys, "--dataset", "cifar10", "--data-dir", str(cifar_npz))
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "cifar10.npz" in err and "Traceback" not in err


def test_corrupt_npz_member_bytes(cifar_npz: Path) -> None:
    # Flip bytes inside the LZMA stream of one member, keeping the archive's length.
    npz = cifar_npz / "cifar10" / "cifar10.npz"
    with zipfile.ZipFile(npz) as zf:
        info = zf.getinfo("x_train.npy")
    raw = bytearray(npz.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + 40
    for i in range(start, start + 64):
        raw[i] ^= 0x5A
    npz.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"cifar10\.npz"):
        load_splits(DataOptions("cifar10", data_dir=str(cifar_npz)))


def test_npz_wrong_shape_and_checksum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = cifar_arrays(60, 20)
    arrays["x_train"] = arrays["x_train"][:, :16]  # 16 rows: not CIFAR-shaped
    write_npz_lzma(tmp_path / "cifar10" / "cifar10.npz", arrays)
    with pytest.raises(DataError, match=r"'x_train' is \(60, 16, 32, 3\) uint8, expected \(N, 32, 32, 3\)"):
        load_splits(DataOptions("cifar10", data_dir=str(tmp_path)))
    write_npz_lzma(tmp_path / "cifar10" / "cifar10.npz", cifar_arrays(60, 20))
    with pytest.raises(DataError, match="not the official"):  # the real table does not match these arrays
        load_splits(DataOptions("cifar10", data_dir=str(tmp_path)))


def test_missing_data_is_one_line_exit_2(capsys: pytest.CaptureFixture) -> None:
    rc, out, err = _info(capsys, "--dataset", "cifar10", "--data-dir", "/nonexistent")
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "/nonexistent does not exist" in err and "--download" in err


def test_data_dir_from_environment(cifar_npz: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("HARNESS_DATA_DIR", str(cifar_npz))
    rc, out, _ = _info(capsys, "--dataset", "cifar10")
    assert rc == 0
    assert "180 train / 20 val / 50 test" in out and "airplane, automobile" in out and "cifar10.npz" in out


def test_mnist_idx_gz(mnist_dir: Path) -> None:
    s = load_splits(DataOptions("mnist", data_dir=str(mnist_dir)))
    assert s.train.images.shape[1:] == (1, 28, 28) and len(s.train) + len(s.val) == 200
    assert len(s.meta.mean) == 1 and s.meta.classes[0] == "0 - zero"
    assert s.test.images[:, 0, 0, 0].tolist() == [i % 251 for i in range(50)]


def test_mnist_truncated_and_md5(mnist_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gzip

    f = mnist_dir / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    f.write_bytes(gzip.compress(gzip.decompress(f.read_bytes())[:-100]))  # valid gzip, short payload
    table = dict(mnist_mod.FILES_MD5)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: md5"):
        load_splits(DataOptions("mnist", data_dir=str(mnist_dir)))
    from data_fixtures import md5

    monkeypatch.setattr(mnist_mod, "FILES_MD5", {**table, f.name: md5(f)})
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: header says \(50, 28, 28\)"):
        load_splits(DataOptions("mnist", data_dir=str(mnist_dir)))
    f.write_bytes(f.read_bytes()[:-20])  # a cut gzip stream
    monkeypatch.setattr(mnist_mod, "FILES_MD5", {**table, f.name: md5(f)})
    with pytest.raises(DataError, match="cannot decode"):
        load_splits(DataOptions("mnist", data_dir=str(mnist_dir)))


def test_imagenette_folder(tmp_path: Path) -> None:
    make_imagefolder(tmp_path)
    s = load_splits(DataOptions("imagenette", data_dir=str(tmp_path), val_fraction=0.0))
    assert s.meta.classes == ("tench", "English springer", "cassette player")
    assert s.train.images.shape == (19, 3, 64, 64) and s.test.images.shape == (9, 3, 64, 64)
    assert s.test.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # the val folder serves as test
    small = load_splits(DataOptions("imagenette", data_dir=str(tmp_path), img_size=32, grayscale=True))
    assert small.train.images.shape[1:] == (1, 32, 32) and len(small.meta.std) == 1


def test_imagenette_corrupt_jpeg_names_it(tmp_path: Path) -> None:
    folder = make_imagefolder(tmp_path)
    bad = folder / "val" / WNIDS[1] / "ILSVRC_val_1_0001.JPEG"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(DataError, match="ILSVRC_val_1_0001.JPEG: cannot decode"):
        load_splits(DataOptions("imagenette", data_dir=str(tmp_path)))


def test_synthetic_is_deterministic() -> None:
    a = load_splits(DataOptions("synthetic", synthetic_size=300, num_classes=5, img_size=16))
    b = load_splits(DataOptions("synthetic", synthetic_size=300, num_classes=5, img_size=16, seed=3))
    assert a.meta.shape == (3, 16, 16) and len(a.meta.classes) == 5 and "synthetic" in a.meta.note
    assert torch.equal(a.test.images, b.test.images)
    assert torch.equal(torch.sort(torch.cat([a.train.labels, a.val.labels])).values,
                       torch.sort(torch.cat([b.train.labels, b.val.labels])).values)


def test_read_only_data_dir_caches_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARNESS_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    ro = tmp_path / "ro"
    ro.mkdir()
    rw = tmp_path / "rw"
    rw.mkdir()
    ro.chmod(0o555)
    try:
        assert cache_root(ro) == tmp_path / "xdg" / "cnn-harness"
        assert cache_root(rw) == rw / ".harness-cache"
    finally:
        ro.chmod(0o755)


def test_prepare_writes_the_cache(cifar_npz: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["data", "prepare", "--dataset", "cifar10", "--data-dir", str(cifar_npz)]) == 0
    assert "180 train / 20 val / 50 test" in capsys.readouterr().out
    assert list(Path(os.environ["HARNESS_CACHE_DIR"]).glob("cifar10-*/meta.json"))
