"""Tests for the streaming image-folder source: order, resume, shards, bad files, transforms,
and a DepS training run that reads its data through worker processes."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from weightshare.data import (
    DatasetError,
    DataWarning,
    FileSet,
    ImageSet,
    Loader,
    load_dataset,
    make_loader,
    normalize,
)
from weightshare.data.stream import StreamingLoader, load_eval_image
from weightshare.data.transforms import center_crop_box, crop_resize, random_resized_crop_box
from weightshare.train import TrainConfig, train

SIZE = 16

# Tests pin themselves to one core; torch then warns that 2 workers exceed it, which is the point.
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")


def _write_folder(root: Path, classes: int = 4, per_class: int = 12, val: int = 3) -> Path:
    """ImageNet layout: train/<class>/*, val/<class>/*; noisy images, a class hue, mixed sizes
    and formats, so crops, resampling and both decoders are exercised."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", val)):
        for c in range(classes):
            d = root / split / f"n{c:04d}"
            d.mkdir(parents=True)
            for i in range(n):
                h, w = 20 + (i * 7) % 17, 24 + (i * 5) % 19
                a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                a[..., c % 3] = 40 + 50 * (c // 3) + i
                Image.fromarray(a).save(d / f"img{i}.{'png' if i % 2 else 'JPEG'}", quality=95)
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_folder(tmp_path_factory.mktemp("stream") / "imagenet")


@pytest.fixture(scope="module")
def ds(folder: Path):
    return load_dataset("imagefolder", folder, image_size=SIZE, stream=True, workers=0,
                        calib_size=8, seed=0)


def _epoch(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(xa, xb) and torch.equal(ya, yb)
                                    for (xa, ya), (xb, yb) in zip(a, b, strict=True))


def test_streamed_dataset_splits_and_stats(ds, folder: Path) -> None:
    assert ds.streamed and isinstance(ds.train, FileSet) and isinstance(ds.test, FileSet)
    assert (len(ds.train), len(ds.calib), len(ds.test)) == (40, 8, 12)  # val/ is the test split
    assert ds.classes == ("n0000", "n0001", "n0002", "n0003")
    assert (ds.image_size, ds.in_channels, ds.num_classes) == (SIZE, 3, 4)
    # train and calib are disjoint files of train/, test is exactly val/
    assert not set(ds.train.paths) & set(ds.calib.paths)
    assert all("/val/" in p for p in ds.test.paths)
    # statistics estimated from evaluation crops: noise around 0.5, one boosted channel lower
    assert all(0.2 < m < 0.7 for m in ds.mean) and all(0.1 < s < 0.4 for s in ds.std)


def test_small_folder_stays_in_memory_unless_it_would_not_fit(folder: Path) -> None:
    small = load_dataset("imagefolder", folder, image_size=SIZE)
    assert isinstance(small.train, ImageSet) and not small.streamed
    # 48 images x 3 x 16 x 16 bytes is ~37 KB: a 10 KB budget makes it stream by itself
    big = load_dataset("imagefolder", folder, image_size=SIZE, memory_limit_gb=1e-5, workers=0)
    assert isinstance(big.train, FileSet)
    # the in-memory Loader refuses files and says what to use instead
    with pytest.raises(TypeError, match="make_loader"):
        Loader(big.train, big, 4, train=True)


def test_order_is_a_function_of_seed_epoch_and_not_of_workers(ds) -> None:
    a = make_loader(ds.train, ds, 8, train=True, seed=3)
    assert isinstance(a, StreamingLoader) and len(a) == 40 // 8
    a.set_epoch(1)
    first = _epoch(a)
    assert len(first) == 5 and first[0][0].shape == (8, 3, SIZE, SIZE)
    assert first[0][0].dtype == torch.float32 and first[0][1].dtype == torch.int64
    assert _same(first, _epoch(a))  # twice the same
    two = make_loader(ds.train, ds, 8, train=True, seed=3, workers=2)
    two.set_epoch(1)
    assert _same(first, _epoch(two))  # worker processes change nothing
    order1 = a.epoch_indices()
    a.set_epoch(2)
    assert not torch.equal(order1, a.epoch_indices())
    assert sorted(order1.tolist()) == list(range(40))
    other = make_loader(ds.train, ds, 8, train=True, seed=4)
    other.set_epoch(1)
    assert not torch.equal(order1, other.epoch_indices())
    # labels follow the shuffled order exactly (no replacement happened)
    ys = torch.cat([y for _, y in first])
    assert torch.equal(ys, ds.train.labels[order1])


def test_mid_epoch_resume_gives_exactly_the_remaining_batches(ds) -> None:
    loader = make_loader(ds.train, ds, 8, train=True, seed=1, workers=2)
    loader.set_epoch(4)
    full = _epoch(loader)
    loader.set_epoch(4, start_batch=3)
    tail = _epoch(loader)
    assert len(loader) == 5 and len(tail) == 2  # len() is still the whole epoch
    assert _same(full[3:], tail)
    # augmentation really happened: not the evaluation view of the same files
    idx = loader.epoch_indices()[:8].tolist()
    plain = torch.stack([load_eval_image(ds.train.paths[i], SIZE, 3) for i in idx])
    assert not torch.equal(full[0][0], normalize(plain, ds.mean, ds.std))


@pytest.mark.parametrize("train", [True, False])
def test_ddp_ranks_read_disjoint_shards(ds, train: bool) -> None:
    world = 3
    loaders = [make_loader(ds.train, ds, 4, train=train, seed=2, rank=r, world_size=world)
               for r in range(world)]
    for ld in loaders:
        ld.set_epoch(1)
    shards = [ld.epoch_indices().tolist() for ld in loaders]
    flat = [i for s in shards for i in s]
    assert len(flat) == len(set(flat))
    assert len(flat) == (39 if train else 40)  # training cuts 40 to a multiple of 3
    if train:
        assert len({len(ld) for ld in loaders}) == 1  # every rank runs the same steps
    for ld, shard in zip(loaders, shards, strict=True):
        ys = torch.cat([y for _, y in ld])
        assert torch.equal(ys, ds.train.labels[shard][: len(ys)])


def test_eval_loader_is_resize_and_centre_crop_in_natural_order(ds) -> None:
    loader = make_loader(ds.test, ds, 5, train=False, resolution=12)
    batches = _epoch(loader)
    assert [len(y) for _, y in batches] == [5, 5, 2]
    assert torch.equal(torch.cat([y for _, y in batches]), ds.test.labels)
    expect = torch.stack([load_eval_image(p, SIZE, 3) for p in ds.test.paths[:5]])
    expect = torch.nn.functional.interpolate(normalize(expect, ds.mean, ds.std), size=(12, 12),
                                             mode="bilinear", antialias=True)
    assert batches[0][0].shape == (5, 3, 12, 12)
    assert torch.allclose(batches[0][0], expect, atol=1e-5)


def _corrupt_copy(folder: Path, dst: Path) -> tuple[Path, Path]:
    import shutil

    shutil.copytree(folder, dst)
    garbage = dst / "train" / "n0001" / "img2.JPEG"
    garbage.write_bytes(b"this is not a jpeg")
    truncated = dst / "train" / "n0002" / "img3.png"
    truncated.write_bytes(truncated.read_bytes()[:60])
    return garbage, truncated


def test_unreadable_images_are_reported_and_replaced_deterministically(
    folder: Path, tmp_path: Path
) -> None:
    garbage, truncated = _corrupt_copy(folder, tmp_path / "bad")
    with pytest.warns(DataWarning, match="skipped"):  # the statistics sample skips them too
        bad = load_dataset("imagefolder", tmp_path / "bad", image_size=SIZE, stream=True,
                           workers=0, calib_size=0)
    loader = make_loader(bad.train, bad, 8, train=True, seed=0, workers=2)
    with pytest.warns(DataWarning) as record:
        first = _epoch(loader)
    messages = " ".join(str(w.message) for w in record)
    assert str(garbage) in messages and str(truncated) in messages
    assert len(first) == len(loader) == 6  # no batch lost, none shorter
    assert all(len(y) == 8 for _, y in first)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # reported once per file, not per epoch
        again = _epoch(loader)
    assert _same(first, again)
    # the replacement is the next file in the epoch order, label included
    order = loader.epoch_indices().tolist()
    paths = [bad.train.paths[i] for i in order]
    pos = paths.index(str(garbage))
    ys = torch.cat([y for _, y in first])
    assert ys[pos] == bad.train.labels[order[pos + 1]]


def test_too_many_unreadable_images_fail_naming_them(folder: Path, tmp_path: Path) -> None:
    root = _write_folder(tmp_path / "broken", classes=2, per_class=3, val=1)
    files = sorted((root / "train").rglob("*.*"))
    for p in files[1:]:  # one readable file of six
        p.write_bytes(b"")
    with pytest.warns(DataWarning, match="skipped"):
        broken = load_dataset("imagefolder", root, image_size=SIZE, stream=True, workers=0,
                              calib_size=0, max_bad=2)
    with pytest.raises(DatasetError, match="2 unreadable images in a row") as info, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        list(make_loader(broken.train, broken, 2, train=True))
    assert str(root / "train") in str(info.value)
    for p in files[:1]:
        p.write_bytes(b"")
    with pytest.raises(DatasetError, match="none of 6 sampled training images is readable"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        load_dataset("imagefolder", root, image_size=SIZE, stream=True, workers=0)


def test_missing_folder_error_and_a_bad_sampled_file_warns(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="train") as info:
        load_dataset("imagefolder", tmp_path / "nowhere", stream=True)
    assert str(tmp_path / "nowhere" / "train") in str(info.value)
    root = _write_folder(tmp_path / "one-bad", classes=2, per_class=2, val=1)
    bad = root / "train" / "n0000" / "img0.JPEG"
    bad.write_bytes(b"\xff\xd8 not really")
    with pytest.warns(DataWarning, match="not a readable image") as record:
        ds = load_dataset("imagefolder", root, image_size=SIZE, stream=True, workers=0,
                          calib_size=0)
    assert str(bad) in str(record[0].message) and len(ds.train) == 4


def test_flat_val_folder_needs_labels(tmp_path: Path) -> None:
    root = _write_folder(tmp_path / "flat", classes=2, per_class=4, val=0)
    (root / "val").rmdir() if (root / "val").exists() and not any((root / "val").iterdir()) \
        else None
    val = root / "val"
    for d in list(val.iterdir()):
        d.rmdir()
    Image.new("RGB", (30, 20), (1, 2, 3)).save(val / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(DatasetError, match="LOC_val_solution.csv"):
        load_dataset("imagefolder", root, image_size=SIZE, stream=True, workers=0)
    (root / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\nILSVRC2012_val_00000001,n0001 1 2 3 4 n0001 5 6 7 8\n")
    got = load_dataset("imagefolder", root, image_size=SIZE, stream=True, workers=0,
                       calib_size=0, mean=[0.5] * 3, std=[0.25] * 3)
    assert len(got.test) == 1 and got.test.labels.tolist() == [1]


# ---------------------------------------------------------------------------------------------
# Per-image transforms
# ---------------------------------------------------------------------------------------------


def test_centre_crop_of_a_known_image() -> None:
    h, w = 40, 60
    box = center_crop_box(h, w, 0.875)
    assert box == (2, 12, 35, 35)  # the 35-px centre square: shorter side 40 x 0.875
    img = torch.zeros(h, w, 3, dtype=torch.uint8)
    img[..., 0] = 255  # red everywhere ...
    img[2:37, 12:47] = torch.tensor([0, 0, 255], dtype=torch.uint8)  # ... but the crop is blue
    out = crop_resize(img, box, 16)
    assert out.shape == (3, 16, 16) and out.dtype == torch.uint8
    assert (out[2] == 255).all() and (out[:2] == 0).all()
    # a left-right ramp stays a left-right ramp, resampled but in order
    ramp = torch.arange(60, dtype=torch.uint8).mul(4).view(1, 60, 1).expand(40, 60, 3)
    r = crop_resize(ramp.contiguous(), center_crop_box(40, 60, 1.0), 10)
    assert (r[:, :, 1:] > r[:, :, :-1]).all() and (r == r[:, :1]).all()
    assert 40 <= int(r[0, 0, 0]) < 80 and 160 < int(r[0, 0, -1]) <= 236  # columns 10..49


def test_centre_crop_through_the_file_decoder(tmp_path: Path) -> None:
    a = np.zeros((40, 60, 3), dtype=np.uint8)
    a[..., 1] = 250
    a[2:37, 12:47] = (10, 20, 30)
    Image.fromarray(a).save(tmp_path / "x.png")
    out = load_eval_image(str(tmp_path / "x.png"), 8, 3)
    assert torch.equal(out, torch.tensor([10, 20, 30], dtype=torch.uint8).view(3, 1, 1)
                       .expand(3, 8, 8))
    gray = load_eval_image(str(tmp_path / "x.png"), 8, 1)
    assert gray.shape == (1, 8, 8)


def test_large_jpeg_decodes_at_reduced_scale_to_the_same_picture(tmp_path: Path) -> None:
    from weightshare.data.stream import _draft, read_image

    yy, xx = np.mgrid[0:1200, 0:1600]
    a = np.stack([xx * 255 // 1600, yy * 255 // 1200, (xx + yy) * 255 // 2800], -1)
    Image.fromarray(a.astype(np.uint8)).save(tmp_path / "big.jpg", quality=95)
    box = center_crop_box(1200, 1600)
    with Image.open(tmp_path / "big.jpg") as img:
        small_box = _draft(img, box, 64, 3)
        assert img.size == (200, 150)  # libjpeg's 1/8 scale: the 1050-px box is still 131 px
    assert small_box == (9, 34, 131, 131)
    fast = load_eval_image(str(tmp_path / "big.jpg"), 64, 3)
    full = crop_resize(read_image(str(tmp_path / "big.jpg"), 3), box, 64)
    assert fast.shape == full.shape == (3, 64, 64)
    assert (fast.int() - full.int()).abs().float().mean() < 2.0  # the same picture
    # PNGs (and boxes that stay under 2x the output) decode at full size
    with Image.open(tmp_path / "big.jpg") as img:
        assert _draft(img, (0, 0, 100, 100), 64, 3) == (0, 0, 100, 100)
        assert img.size == (1600, 1200)


def test_random_resized_crop_box_respects_scale_ratio_and_bounds() -> None:
    g = torch.Generator().manual_seed(0)
    boxes = [random_resized_crop_box(120, 160, g, (0.08, 1.0)) for _ in range(400)]
    areas, ratios = [], []
    for top, left, h, w in boxes:
        assert top >= 0 and top + h <= 120 and left >= 0 and left + w <= 160
        areas.append(h * w / (120 * 160))
        ratios.append(w / h)
    assert min(areas) >= 0.07 and max(areas) <= 1.0
    assert min(ratios) >= 0.74 and max(ratios) <= 1.35
    assert np.std(areas) > 0.1 and len({b[:2] for b in boxes}) > 300  # drawn, not fixed
    same = [random_resized_crop_box(120, 160, torch.Generator().manual_seed(5)) for _ in range(2)]
    assert same[0] == same[1]
    # a strip too thin for any allowed aspect ratio falls back to a centred, clamped box
    top, left, h, w = random_resized_crop_box(4, 400, torch.Generator().manual_seed(1),
                                              (0.9, 1.0))
    assert (h, w) == (4, round(4 * 4 / 3)) and left == (400 - w) // 2


def test_crop_resize_rejects_bad_input() -> None:
    img = torch.zeros(10, 10, 3, dtype=torch.uint8)
    assert torch.equal(crop_resize(img, (0, 0, 10, 10), 10), img.permute(2, 0, 1))
    with pytest.raises(ValueError, match="outside"):
        crop_resize(img, (5, 5, 6, 6), 4)
    with pytest.raises(TypeError):
        crop_resize(img.float(), (0, 0, 4, 4), 4)


# ---------------------------------------------------------------------------------------------
# Training from the stream
# ---------------------------------------------------------------------------------------------


def _ten_class_folder(root: Path) -> Path:
    rng = np.random.default_rng(1)
    for c in range(10):
        d = root / "train" / f"class{c}"
        d.mkdir(parents=True)
        colour = rng.integers(0, 256, 3)
        for i in range(10):
            a = np.clip(colour + rng.normal(0, 30, (36, 36, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(d / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def ten(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _ten_class_folder(tmp_path_factory.mktemp("ten") / "folder")


def _tiny_stream_config(root: Path, out: Path, *extra: str) -> TrainConfig:
    """The `tiny` preset, pointed at a streamed image folder (a narrower net keeps it fast)."""
    return TrainConfig.load("tiny", [
        "dataset=imagefolder", f"data_dir={root}",
        "dataset_args={image_size: 32, stream: true, workers: 1, min_scale: 0.5}",
        "train_subset=null", "test_subset=null", "calib_size=16", "batch_size=16",
        "eval_spread=0", "progress=false", "tensorboard=false", f"out={out}",
        "supernet_args={width_mult: 0.25, kernel_choices: [3], feature_dim: 32, "
        "unit_widths: [16, 16, 24, 24, 32]}", *extra,
    ])


def test_tiny_deps_run_trains_from_a_streamed_folder_and_resumes_exactly(
    ten: Path, tmp_path: Path
) -> None:
    whole = train(_tiny_stream_config(ten, tmp_path / "whole", "epochs=2"))
    s = whole.summary
    # 100 files: 20 held out as test, 16 as calib, 64 train -> 4 steps of 16 per epoch
    assert s["steps"] == s["total_steps"] == 2 * 4
    losses = [json.loads(line)["loss"] for line in (tmp_path / "whole" / "log.jsonl")
              .read_text().splitlines() if '"kind": "train"' in line]
    assert len(losses) == 8 and all(math.isfinite(v) for v in losses)
    assert len(s["eval"]) == 4 and all(0.0 <= r["acc"] <= 100.0 for r in s["eval"])
    assert len(whole.supernet.subnet_norms) == 4  # BN recalibrated on the streamed calib split
    # Stop at step 3 of 4 in epoch 0: the checkpoint lands mid-epoch, and the resumed run
    # (a new loader, new worker processes) must start at batch 3 of the same shuffled,
    # augmented epoch to reach bit-identical weights.
    train(_tiny_stream_config(ten, tmp_path / "cut", "epochs=2", "max_steps=3"))
    resumed = train(_tiny_stream_config(ten, tmp_path / "cut", "epochs=2"), resume=True)
    assert resumed.summary["steps"] == 8
    ref, got = whole.supernet.state_dict(), resumed.supernet.state_dict()
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=0, msg=k)
    assert whole.summary["acc"] == resumed.summary["acc"]


@pytest.mark.slow
def test_full_preset_streams_an_imagenet_layout_folder_and_resumes_exactly(
    tmp_path: Path
) -> None:
    """Issue 17's goal on CPU: the `full` preset (224 px OFA-MobileNetV3) on a generated
    ImageNet-layout JPEG folder trains, checkpoints mid-run and resumes to the same weights."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from data_loading import make_tree

    root = tmp_path / "imagenet"
    make_tree(root, 64, 4)

    def cfg(out: str, *extra: str) -> TrainConfig:
        return TrainConfig.load("full", [
            f"data_dir={root}", "dataset_args={image_size: 224, stream: true, workers: 1}",
            "batch_size=8", "calib_size=8", "progress=false", "tensorboard=false",
            f"out={tmp_path / out}", *extra])

    whole = train(cfg("whole", "max_steps=4"))
    train(cfg("cut", "max_steps=2"))
    resumed = train(cfg("cut", "max_steps=4"), resume=True)
    assert whole.summary["steps"] == resumed.summary["steps"] == 4
    ref, got = whole.supernet.state_dict(), resumed.supernet.state_dict()
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=0, msg=k)


def _train_cli(root: Path, out: Path, *extra: str, resume: bool = False) -> subprocess.Popen:
    """`weightshare train` on the streamed folder in a new session (its workers included), so
    the test can SIGKILL the whole process group the way an OOM killer or a pre-empted node
    would: no handler runs, no checkpoint is finished on the way out."""
    sets = ["dataset=imagefolder", f"data_dir={root}",
            "dataset_args={image_size: 32, stream: true, workers: 1, min_scale: 0.5}",
            "train_subset=null", "test_subset=null", "calib_size=16", "batch_size=16",
            "eval_spread=0", "progress=false", "tensorboard=false", "epochs=2",
            "save_every_steps=1",
            "supernet_args={width_mult: 0.25, kernel_choices: [3], feature_dim: 32, "
            "unit_widths: [16, 16, 24, 24, 32]}", *extra]
    exe = Path(sys.executable).with_name("weightshare")
    cmd = [str(exe), "train", "--preset", "tiny", "--out", str(out), "--json"]
    cmd += [a for s in sets for a in ("--set", s)] + (["--resume"] if resume else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _steps_logged(out: Path) -> int:
    log = out / "log.jsonl"
    if not log.exists():
        return 0
    return sum('"kind": "train"' in line for line in log.read_text().splitlines())


def test_sigkill_mid_epoch_then_resume_reaches_the_uninterrupted_weights(
    ten: Path, tmp_path: Path
) -> None:
    """Issue 17: a streamed run killed with SIGKILL in the middle of its second epoch (trainer
    and DataLoader workers at once, possibly mid-checkpoint-write) resumes from its last
    complete checkpoint to the same weights as a run that was never interrupted."""
    from weightshare.checkpoint import load_checkpoint

    whole = _train_cli(ten, tmp_path / "whole")
    cut = _train_cli(ten, tmp_path / "cut")
    deadline = time.monotonic() + 240
    # 4 steps per epoch: kill once step 6 of 8 is logged (batch 2 of epoch 1)
    while _steps_logged(tmp_path / "cut") < 6:
        assert cut.poll() is None, cut.stderr.read()
        assert time.monotonic() < deadline, "the run never reached step 6"
        time.sleep(0.05)
    os.killpg(cut.pid, signal.SIGKILL)
    assert cut.wait(30) == -signal.SIGKILL
    killed_at = load_checkpoint(tmp_path / "cut" / "checkpoint.pt").train_state["step"]
    assert 5 <= killed_at < 8  # a mid-epoch checkpoint survived the kill

    resumed = _train_cli(ten, tmp_path / "cut", resume=True)
    for p in (whole, resumed):
        assert p.wait(240) == 0, p.stderr.read()
    ref = load_checkpoint(tmp_path / "whole" / "checkpoint.pt").supernet.state_dict()
    got = load_checkpoint(tmp_path / "cut" / "checkpoint.pt").supernet.state_dict()
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=0, msg=k)
    # the resumed log holds each step once (the replayed steps were truncated)
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut" / "log.jsonl")
             .read_text().splitlines() if '"kind": "train"' in line]
    assert steps == sorted(set(steps)) and len(steps) == 8


def test_simplejpeg_and_pillow_decode_the_same_picture_and_broken_files_go_to_pillow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast decoder changes speed, not data: same box draws, same pixels at full scale,
    the same picture at DCT scale and from CMYK; a file it cannot read goes to Pillow, whose
    error the loader reports as before."""
    from weightshare.data import stream
    from weightshare.data.containers import StreamSettings

    rng = np.random.default_rng(3)
    a = np.clip(rng.normal(128, 40, (300, 400, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "a.jpg", quality=92)
    Image.fromarray(a).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=92)
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    settings = StreamSettings(min_scale=0.5)

    def views(name: str, size: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(7)
        return [stream.load_image(str(tmp_path / name), size, 3, settings, train=True,
                                  flip=True, generator=g) for _ in range(4)]

    assert stream._simplejpeg is not None  # a pinned dependency
    assert stream._decode_jpeg((tmp_path / "cut.jpg").read_bytes(),
                               lambda h, w: (0, 0, h, w), 32, 3) is None
    with pytest.raises(DatasetError, match="cut.jpg"):
        load_eval_image(str(tmp_path / "cut.jpg"), 32, 3)
    fast = {(n, px): views(n, px) for n in ("a.jpg", "cmyk.jpg") for px in (96, 32)}
    monkeypatch.setattr(stream, "_simplejpeg", None)
    for (name, px), got in fast.items():
        for f, s in zip(got, views(name, px), strict=True):
            if name == "a.jpg" and px == 96:  # boxes >= 96 px: full-scale decode, same pixels
                assert torch.equal(f, s)
            else:  # reduced scale or CMYK conversion: the same picture
                assert (f.int() - s.int()).abs().float().mean() < 3.0
