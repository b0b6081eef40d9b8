"""Tests for weightshare.data: loaders for every registered dataset, transforms, Loader, splits.

The Dirichlet client split moved to weightshare.fed.split: tests/test_fed_split.py."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from weightshare import data
from weightshare.data import (
    DatasetError,
    ImageSet,
    Loader,
    list_datasets,
    load_dataset,
    normalize,
    random_crop,
    random_hflip,
    resize,
)

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FMNIST_FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]
needs_fmnist = pytest.mark.skipif(
    not all((FMNIST_DIR / f).is_file() for f in FMNIST_FILES),
    reason="Debian package dataset-fashion-mnist not installed",
)


@pytest.fixture
def no_default_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Hide $WEIGHTSHARE_DATA and the Debian folder, so a test sees only the data it sets up."""
    monkeypatch.delenv(data.DATA_ENV_VAR, raising=False)
    system = tmp_path / "system-datasets"
    monkeypatch.setattr(data, "_FASHION_MNIST_SYSTEM_DIRS", (system,))
    return system


@pytest.fixture(scope="module")
def fmnist() -> data.Dataset:
    if not all((FMNIST_DIR / f).is_file() for f in FMNIST_FILES):
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    return load_dataset("fashion-mnist", FMNIST_DIR)


def _hashes(images: torch.Tensor) -> list[str]:
    return [hashlib.sha1(img.numpy().tobytes()).hexdigest() for img in images]


def _link_fmnist(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in FMNIST_FILES:
        (folder / name).symlink_to(FMNIST_DIR / name)


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


def test_registry_lists_builtins_and_rejects_unknowns() -> None:
    assert {"fashion-mnist", "cifar10", "imagefolder", "synthetic"} <= set(list_datasets())
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("no-such-dataset")
    with pytest.raises(TypeError, match="bogus"):
        load_dataset("synthetic", bogus=1)


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST
# ---------------------------------------------------------------------------------------------


def test_fashion_mnist_from_debian_path(fmnist: data.Dataset) -> None:
    ds = fmnist
    assert ds.name == "fashion-mnist"
    assert ds.train.images.shape == (58000, 1, 28, 28)
    assert ds.calib.images.shape == (2000, 1, 28, 28)
    assert ds.test.images.shape == (10000, 1, 28, 28)
    assert ds.train.images.dtype == torch.uint8 and ds.train.labels.dtype == torch.int64
    assert (ds.num_classes, ds.in_channels, ds.image_size, ds.hflip) == (10, 1, 28, True)
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    for split in (ds.train, ds.calib, ds.test):
        assert split.labels.min() >= 0 and split.labels.max() <= 9
        assert torch.unique(split.labels).numel() == 10
    # The official test set is balanced: 1000 per class.
    assert torch.bincount(ds.test.labels).tolist() == [1000] * 10
    assert ds.mean[0] == pytest.approx(0.2860, abs=1e-3)
    assert ds.std[0] == pytest.approx(0.3530, abs=1e-3)


@needs_fmnist
def test_fashion_mnist_default_search_finds_debian(
    no_default_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data, "_FASHION_MNIST_SYSTEM_DIRS", (no_default_data, FMNIST_DIR))
    ds = load_dataset(calib_size=100, train_subset=500, test_subset=300, seed=3)
    assert (len(ds.train), len(ds.calib), len(ds.test)) == (500, 100, 300)


@needs_fmnist
def test_fashion_mnist_from_user_folder_gz_and_raw(no_default_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "user"
    folder.mkdir()
    for name in FMNIST_FILES[:2]:
        (folder / name).symlink_to(FMNIST_DIR / name)
    # The test split uncompressed: both forms must be accepted.
    for name in FMNIST_FILES[2:]:
        raw = gzip.decompress((FMNIST_DIR / name).read_bytes())
        (folder / name.removesuffix(".gz")).write_bytes(raw)
    ds = load_dataset("fashion-mnist", folder, calib_size=1000)
    assert (len(ds.train), len(ds.calib), len(ds.test)) == (59000, 1000, 10000)


@needs_fmnist
def test_fashion_mnist_from_env_subfolder(
    no_default_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _link_fmnist(tmp_path / "datasets" / "fashion-mnist")
    monkeypatch.setenv(data.DATA_ENV_VAR, str(tmp_path / "datasets"))
    ds = load_dataset(test_subset=100)
    assert len(ds.train) == 58000 and len(ds.test) == 100


def test_fashion_mnist_missing_lists_every_place(
    no_default_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "nowhere"
    env = tmp_path / "env-dir"
    env.mkdir()
    (env / FMNIST_FILES[0]).write_bytes(b"")  # a partial folder is not a match
    monkeypatch.setenv(data.DATA_ENV_VAR, str(env))
    with pytest.raises(DatasetError) as info:
        load_dataset("fashion-mnist", root)
    msg = str(info.value)
    assert str(root) in msg
    assert str(env) in msg and "missing" in msg
    assert str(no_default_data) in msg
    assert "dataset-fashion-mnist" in msg and "WEIGHTSHARE_DATA" in msg


@needs_fmnist
@pytest.mark.parametrize("compressed", [True, False])
def test_fashion_mnist_truncated_file(
    no_default_data: Path, tmp_path: Path, compressed: bool
) -> None:
    _link_fmnist(tmp_path)
    name = "t10k-labels-idx1-ubyte.gz"
    (tmp_path / name).unlink()
    blob = (FMNIST_DIR / name).read_bytes()
    if compressed:
        bad = tmp_path / name
        bad.write_bytes(blob[: len(blob) // 2])
    else:
        raw = gzip.decompress(blob)
        bad = tmp_path / name.removesuffix(".gz")
        bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError) as info:
        load_dataset("fashion-mnist", tmp_path)
    assert str(bad) in str(info.value)
    assert ("truncated" in str(info.value)) or ("corrupt" in str(info.value))


def test_idx_wrong_magic(no_default_data: Path, tmp_path: Path) -> None:
    for name in FMNIST_FILES:
        header = (2049 if "labels" in name else 2051).to_bytes(4, "big")
        (tmp_path / name.removesuffix(".gz")).write_bytes(header + (0).to_bytes(4, "big") * 3)
    # Swap a labels file in for the images file: magic 2049 where 2051 belongs.
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes((2049).to_bytes(4, "big") + (0).to_bytes(4, "big"))
    with pytest.raises(DatasetError, match="magic number 2049, expected 2051") as info:
        load_dataset("fashion-mnist", tmp_path)
    assert str(bad) in str(info.value)


def test_normalize_real_data_is_standardized(fmnist: data.Dataset) -> None:
    x = normalize(fmnist.train.images[:20000], fmnist.mean, fmnist.std)
    assert x.dtype == torch.float32 and x.shape == (20000, 1, 28, 28)
    assert abs(x.mean().item()) < 0.02
    assert x.std().item() == pytest.approx(1.0, abs=0.02)


# ---------------------------------------------------------------------------------------------
# CIFAR-10
# ---------------------------------------------------------------------------------------------


def _write_cifar(folder: Path, per_batch: int = 4, n_test: int = 6) -> None:
    """Fake batches in the real format: image k has R == k, G == 255 - k, B == 7, label k % 10."""
    folder.mkdir(parents=True)
    start = 0

    def batch(n: int) -> dict[bytes, object]:
        nonlocal start
        ks = np.arange(start, start + n)
        start += n
        planes = [np.repeat(ks[:, None], 1024, 1), np.repeat(255 - ks[:, None], 1024, 1)]
        planes.append(np.full((n, 1024), 7))
        return {
            b"data": np.concatenate(planes, axis=1).astype(np.uint8),
            b"labels": [int(k % 10) for k in ks],
            b"batch_label": b"fake",
        }

    for i in range(1, 6):
        with (folder / f"data_batch_{i}").open("wb") as f:
            pickle.dump(batch(per_batch), f)
    with (folder / "test_batch").open("wb") as f:
        pickle.dump(batch(n_test), f)
    names = [
        n.encode()
        for n in [
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ]
    ]
    with (folder / "batches.meta").open("wb") as f:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f)


@pytest.mark.parametrize("use_parent", [True, False])
def test_cifar10_pickle_folder(tmp_path: Path, use_parent: bool) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder)
    ds = load_dataset("cifar10", tmp_path if use_parent else folder)
    assert (len(ds.train), len(ds.calib), len(ds.test)) == (18, 2, 6)
    assert ds.train.images.shape == (18, 3, 32, 32) and ds.test.images.shape == (6, 3, 32, 32)
    assert (ds.num_classes, ds.in_channels, ds.image_size, ds.hflip) == (10, 3, 32, True)
    assert ds.classes[1] == "automobile"
    assert ds.mean == pytest.approx((0.4914, 0.4822, 0.4465))
    for split in (ds.train, ds.calib, ds.test):
        r = split.images[:, 0].flatten(1)
        g = split.images[:, 1].flatten(1)
        assert (r == r[:, :1]).all(), "each channel plane must come from one 1024-byte run"
        assert (g.int() == 255 - r.int()).all() and (split.images[:, 2] == 7).all()
        assert (split.labels == r[:, 0].long() % 10).all()
    seen = torch.cat([ds.train.images[:, 0, 0, 0], ds.calib.images[:, 0, 0, 0]])
    assert sorted(seen.tolist()) == list(range(20))


def test_cifar10_missing_or_incomplete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(data.DATA_ENV_VAR, raising=False)
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="data_batch_3") as info:
        load_dataset("cifar10", tmp_path)
    assert "cifar-10-python" in str(info.value)
    with pytest.raises(DatasetError, match="not set"):
        load_dataset("cifar10")


def test_cifar10_via_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_cifar(tmp_path / "cifar-10-batches-py")
    monkeypatch.setenv(data.DATA_ENV_VAR, str(tmp_path))
    assert len(load_dataset("cifar10", calib_size=0).train) == 20


# ---------------------------------------------------------------------------------------------
# Image folders
# ---------------------------------------------------------------------------------------------

COLORS = {"apple": (220, 20, 20), "banana": (230, 220, 30), "cherry": (20, 20, 200)}


def _write_tree(root: Path, split: str, per_class: int, gray: bool = False) -> None:
    for c, rgb in COLORS.items():
        d = root / split / c
        d.mkdir(parents=True)
        for i in range(per_class):
            size = (20 + 3 * i, 14 + i)  # differing sizes must be resized to one
            img = Image.new("RGB", size, rgb)
            if gray:
                # A per-file level, so tests can tell which files were held out.
                img = Image.new("L", size, int(img.convert("L").getpixel((0, 0))) + 2 * i)
            ext = ("png", "jpg", "bmp")[i % 3]
            img.save(d / f"{i}.{ext}")
    (root / split / "README.txt").write_text("not an image")


def test_imagefolder_with_test_split(tmp_path: Path) -> None:
    _write_tree(tmp_path, "train", 10)
    _write_tree(tmp_path, "test", 2)
    ds = load_dataset("imagefolder", tmp_path, image_size=16)
    assert ds.classes == ("apple", "banana", "cherry")
    assert (len(ds.train) + len(ds.calib), len(ds.test)) == (30, 6)
    assert ds.train.images.shape[1:] == (3, 16, 16) and ds.in_channels == 3
    for split in (ds.train, ds.calib, ds.test):
        centre = split.images[:, :, 8, 8].int()
        for label, rgb in enumerate(COLORS.values()):
            got = centre[split.labels == label]
            assert (got - torch.tensor(rgb)).abs().max() <= 8  # jpeg tolerance


def test_imagefolder_grayscale_and_holdout(tmp_path: Path) -> None:
    _write_tree(tmp_path, "train", 10, gray=True)
    a = load_dataset("imagefolder", tmp_path, image_size=12, seed=5, calib_size=0)
    b = load_dataset("imagefolder", tmp_path, image_size=12, seed=5, calib_size=0)
    c = load_dataset("imagefolder", tmp_path, image_size=12, seed=6, calib_size=0)
    assert a.in_channels == 1 and a.train.images.shape[1:] == (1, 12, 12)
    # 20% of each class held out as test.
    assert torch.bincount(a.test.labels).tolist() == [2, 2, 2] and len(a.train) == 24
    assert torch.equal(a.test.images, b.test.images)
    # Different seeds hold out different files.
    assert not torch.equal(a.test.images, c.test.images)


def test_imagefolder_missing(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="train"):
        load_dataset("imagefolder", tmp_path / "none")


# ---------------------------------------------------------------------------------------------
# Synthetic and splits
# ---------------------------------------------------------------------------------------------


def test_synthetic_deterministic_and_configurable() -> None:
    a = load_dataset("synthetic", seed=1)
    b = load_dataset("synthetic", seed=1)
    c = load_dataset("synthetic", seed=2)
    for x, y in ((a.train, b.train), (a.calib, b.calib), (a.test, b.test)):
        assert torch.equal(x.images, y.images) and torch.equal(x.labels, y.labels)
    assert not torch.equal(a.test.images, c.test.images)
    assert (len(a.train) + len(a.calib), len(a.test)) == (512, 256)
    assert a.train.images.shape[1:] == (1, 28, 28) and a.num_classes == 10
    d = load_dataset(
        "synthetic",
        n_train=100,
        n_test=40,
        image_size=8,
        in_channels=3,
        num_classes=4,
        calib_size=20,
    )
    assert d.train.images.shape == (80, 3, 8, 8) and d.calib.images.shape == (20, 3, 8, 8)
    assert d.test.images.shape == (40, 3, 8, 8) and d.classes == (
        "class0",
        "class1",
        "class2",
        "class3",
    )
    assert set(d.train.labels.tolist()) == {0, 1, 2, 3}


def test_synthetic_is_learnable() -> None:
    """Nearest class mean, fitted on train, must classify test well above chance."""
    ds = load_dataset("synthetic", seed=0)
    x = ds.train.images.flatten(1).float()
    centroids = torch.stack([x[ds.train.labels == c].mean(0) for c in range(ds.num_classes)])
    pred = torch.cdist(ds.test.images.flatten(1).float(), centroids).argmin(1)
    assert (pred == ds.test.labels).float().mean() > 0.9


def test_calib_split_disjoint_covering_and_seeded() -> None:
    full = load_dataset("synthetic", seed=4, calib_size=0)
    ds = load_dataset("synthetic", seed=4, calib_size=100)
    train_h, calib_h = _hashes(ds.train.images), _hashes(ds.calib.images)
    assert len(set(train_h)) == len(train_h) == 412 and len(calib_h) == 100
    assert not set(train_h) & set(calib_h)
    assert sorted(train_h + calib_h) == sorted(_hashes(full.train.images))
    # A subset comes out of train only: calib does not move.
    small = load_dataset("synthetic", seed=4, calib_size=100, train_subset=50, test_subset=30)
    assert torch.equal(small.calib.images, ds.calib.images)
    assert set(_hashes(small.train.images)) <= set(train_h)
    assert (len(small.train), len(small.test)) == (50, 30)
    # Another seed generates other images; the calib set is another random tenth.
    other = load_dataset("synthetic", seed=5, calib_size=100)
    assert set(_hashes(other.calib.images)) != set(calib_h)
    with pytest.raises(ValueError, match="calib_size"):
        load_dataset("synthetic", calib_size=512)


# ---------------------------------------------------------------------------------------------
# Transforms
# ---------------------------------------------------------------------------------------------


def test_random_crop_shape_identity_and_shifts() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (64, 3, 10, 10), dtype=torch.uint8)
    assert torch.equal(random_crop(x, 0, g), x)
    p = 2
    out = random_crop(x, p, g)
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    offsets = set()
    for i in range(len(x)):
        matches = [
            (dy, dx)
            for dy in range(2 * p + 1)
            for dx in range(2 * p + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + 10, dx : dx + 10])
        ]
        assert len(matches) == 1, "every sample must be one shifted window of its padded image"
        offsets.add(matches[0])
    assert len(offsets) > 5, "offsets must be drawn per sample"


def test_random_hflip_flips_exactly_the_drawn_samples() -> None:
    x = torch.randint(0, 256, (200, 2, 5, 7), dtype=torch.uint8)
    x[:, :, :, 0] = 0
    x[:, :, :, -1] = 255  # asymmetric, so a flipped sample never equals the original
    out = random_hflip(x, torch.Generator().manual_seed(9))
    chosen = torch.rand(200, generator=torch.Generator().manual_seed(9)) < 0.5
    flipped = torch.tensor([torch.equal(out[i], x[i].flip(-1)) for i in range(200)])
    kept = torch.tensor([torch.equal(out[i], x[i]) for i in range(200)])
    assert torch.equal(flipped, chosen) and torch.equal(kept, ~chosen)
    assert 60 < int(chosen.sum()) < 140


def test_resize_and_normalize() -> None:
    x = torch.rand(2, 3, 32, 32)
    assert resize(x, 32) is x
    assert resize(x, 20).shape == (2, 3, 20, 20)
    flat = torch.full((1, 1, 9, 9), 0.25)
    assert torch.allclose(resize(flat, 4), torch.full((1, 1, 4, 4), 0.25))
    u = torch.full((1, 1, 8, 8), 200, dtype=torch.uint8)
    assert resize(u, 5).dtype == torch.uint8 and (resize(u, 5) == 200).all()
    n = normalize(torch.tensor([[[[0, 255]]]], dtype=torch.uint8), (0.5,), (0.25,))
    assert torch.allclose(n, torch.tensor([[[[-2.0, 2.0]]]]))
    with pytest.raises(TypeError):
        normalize(x, (0.5,) * 3, (0.2,) * 3)


# ---------------------------------------------------------------------------------------------
# Loader
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth() -> data.Dataset:
    return load_dataset("synthetic", seed=0, n_train=300, n_test=70, calib_size=0)


def _epoch(loader: Loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def test_loader_order_is_function_of_seed_and_epoch(synth: data.Dataset) -> None:
    synth_flip = dataclasses.replace(synth, hflip=True)
    a = Loader(synth.train, synth_flip, 32, train=True, seed=7)
    b = Loader(synth.train, synth_flip, 32, train=True, seed=7)
    assert len(a) == 300 // 32
    a.set_epoch(2)
    b.set_epoch(2)
    ea, eb = _epoch(a), _epoch(b)
    assert len(ea) == len(a)
    for (xa, ya), (xb, yb) in zip(ea, eb, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert xa.dtype == torch.float32 and ya.dtype == torch.int64 and xa.shape == (32, 1, 28, 28)
    order2 = a.epoch_indices()
    a.set_epoch(3)
    assert not torch.equal(order2, a.epoch_indices())
    assert sorted(order2.tolist()) == list(range(300))
    c = Loader(synth.train, synth_flip, 32, train=True, seed=8)
    c.set_epoch(2)
    assert not torch.equal(order2, c.epoch_indices())


def test_loader_resume_matches_tail_and_skips_work(
    synth: data.Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    synth_flip = dataclasses.replace(synth, hflip=True)
    loader = Loader(synth.train, synth_flip, 40, train=True, seed=1, padding=3)
    loader.set_epoch(5)
    full = _epoch(loader)
    calls = []
    original = data.random_crop
    monkeypatch.setattr(data.loader, "random_crop",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    loader.set_epoch(5, start_batch=3)
    tail = _epoch(loader)
    assert len(tail) == len(full) - 3 == len(calls)
    for (xf, yf), (xt, yt) in zip(full[3:], tail, strict=True):
        assert torch.equal(xf, xt) and torch.equal(yf, yt)
    # Augmentation really happened: not equal to the plain normalized images.
    idx = loader.epoch_indices()[:40]
    plain = normalize(synth.train.images[idx], synth.mean, synth.std)
    assert not torch.equal(full[0][0], plain)


def test_eval_loader_keeps_order_and_partial_batch(synth: data.Dataset) -> None:
    loader = Loader(synth.test, synth, 32, train=False, resolution=14)
    batches = _epoch(loader)
    assert len(loader) == len(batches) == 3 and len(batches[-1][1]) == 70 - 64
    assert torch.equal(torch.cat([y for _, y in batches]), synth.test.labels)
    assert batches[0][0].shape == (32, 1, 14, 14)
    x0 = resize(normalize(synth.test.images[:32], synth.mean, synth.std), 14)
    assert torch.allclose(batches[0][0], x0)


@pytest.mark.parametrize("train", [True, False])
def test_rank_shards_disjoint_and_covering(synth: data.Dataset, train: bool) -> None:
    world = 4
    loaders = [
        Loader(synth.train, synth, 8, train=train, rank=r, world_size=world, seed=3)
        for r in range(world)
    ]
    for ld in loaders:
        ld.set_epoch(1)
    shards = [ld.epoch_indices().tolist() for ld in loaders]
    flat = [i for s in shards for i in s]
    assert len(flat) == len(set(flat)) == 300  # 300 % 4 == 0: nothing dropped
    assert len({len(s) for s in shards}) == 1
    assert len({len(ld) for ld in loaders}) == 1
    for ld, shard in zip(loaders, shards, strict=True):
        ys = torch.cat([y for _, y in ld])
        assert torch.equal(ys, synth.train.labels[shard][: len(ys)])


def test_rank_shards_uneven_size(synth: data.Dataset) -> None:
    train = [Loader(synth.test, synth, 4, train=True, rank=r, world_size=3) for r in range(3)]
    sizes = [len(ld.epoch_indices()) for ld in train]
    assert sizes == [23, 23, 23]  # 70 cut to 69 so every rank takes the same steps
    evals = [Loader(synth.test, synth, 4, train=False, rank=r, world_size=3) for r in range(3)]
    idx = sorted(i for ld in evals for i in ld.epoch_indices().tolist())
    assert idx == list(range(70))  # evaluation sees every sample once


def test_loader_rejects_bad_arguments(synth: data.Dataset) -> None:
    with pytest.raises(ValueError):
        Loader(synth.train, synth, 0, train=True)
    with pytest.raises(ValueError):
        Loader(synth.train, synth, 8, train=True, rank=2, world_size=2)
    with pytest.raises(ValueError, match="yield nothing"):
        Loader(synth.test, synth, 1000, train=True)


def test_imageset_validates() -> None:
    with pytest.raises(ValueError):
        ImageSet(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError):
        ImageSet(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))
