"""Accuracy predictor: measure (SubNet, accuracy) pairs once, fit a model, rank SubNets for free.

Labels are measured on held-out *training* images, never on the test split the
frontier is finally reported on: the dataset's ``calib`` slice is cut in two
(`holdout_split`), the first half recalibrates each SubNet's BN statistics and
the second half scores its top-1 accuracy. With the default 2000-image calib
split that is 1000 + 1000 images.

Measurements are appended one JSON line at a time to ``CKPT.predictor.jsonl``
beside the checkpoint, so a killed ``predictor fit`` resumes where it stopped,
and a later call with more samples reuses the earlier ones (the sampled SubNets
are a fixed seeded sequence, so N then 2N measures the same SubNets as 2N).

The model is OFA's MLP (3 hidden layers x 400, ReLU, Adam 1e-3) on
`SearchSpace.encode`, or a linear model on the same features; ``kind="auto"``
fits both on part of the fitting set, keeps whichever ranks a validation slice
better (Kendall tau) and refits it on the whole fitting set. RMSE and Kendall tau
are reported on SubNets the model never saw. Weights go to
``CKPT.predictor.safetensors``, everything else to ``CKPT.predictor.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import Dataset, ImageSet
from ..io import atomic_path
from ..models import SuperNet
from ..space import SearchSpace, SubnetConfig
from ..train.evaluate import accuracy, recalibrate
from .common import (
    SearchError,
    atomic_write_text,
    check_identity,
    kendall_tau,
    read_json,
    supernet_identity,
)

__all__ = [
    "KINDS",
    "Sample",
    "Predictor",
    "PredictorReport",
    "holdout_split",
    "predictor_paths",
    "measure_samples",
    "read_samples",
    "split_indices",
    "fit_predictor",
    "fit_and_save",
    "load_predictor",
]

FORMAT = "weightshare-accuracy-predictor"
VERSION = 1

# Hidden layer widths of each model kind ("linear": no hidden layer).
KINDS: dict[str, tuple[int, ...]] = {"mlp": (400, 400, 400), "linear": ()}


@dataclass(frozen=True)
class Sample:
    subnet: SubnetConfig
    acc: float  # top-1 percent on the held-out half of calib

    def to_json(self) -> str:
        return json.dumps({"subnet": self.subnet.to_dict(), "acc": self.acc})


def predictor_paths(checkpoint: str | os.PathLike) -> dict[str, Path]:
    """Where the samples, weights and metadata of `checkpoint`'s predictor live (beside it)."""
    ck = Path(checkpoint)
    # CKPT.predictor.{jsonl,safetensors,json}: the word "predictor" stays in the name. (Before
    # 0.2 a with_suffix() slip wrote CKPT.jsonl / CKPT.safetensors / CKPT.json, which read as
    # the SuperNet's own weights; those legacy files are still found and renamed on load.)
    paths = {key: ck.with_name(f"{ck.stem}.predictor.{ext}")
             for key, ext in (("samples", "jsonl"), ("weights", "safetensors"), ("meta", "json"))}
    legacy = {key: ck.with_name(f"{ck.stem}.{ext}")
              for key, ext in (("samples", "jsonl"), ("weights", "safetensors"), ("meta", "json"))}
    if not paths["meta"].exists() and legacy["meta"].is_file() and _is_predictor(legacy["meta"]):
        for key in paths:
            if legacy[key].exists() and not paths[key].exists():
                legacy[key].rename(paths[key])
    return paths


def _is_predictor(meta: Path) -> bool:
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def holdout_split(dataset: Dataset) -> tuple[Dataset, ImageSet]:
    """(dataset whose calib is the first half of calib, the second half): BN vs accuracy images."""
    n = len(dataset.calib)
    if n < 2:
        raise SearchError(f"the calib split has {n} images; predictor labels need at least 2")
    half = n // 2
    bn = dataclasses.replace(dataset, calib=dataset.calib.subset(range(half)))
    return bn, dataset.calib.subset(range(half, n))


# ------------------------------------------------------------------------------- samples
def read_samples(path: str | os.PathLike, space: SearchSpace) -> list[Sample]:
    """Samples from a JSONL file; a torn last line (killed mid-write) is dropped, others must parse."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Sample] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            cfg = space.validate(SubnetConfig.from_dict(row["subnet"]))
            out.append(Sample(cfg, float(row["acc"])))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            if i == len(lines) - 1 and isinstance(err, json.JSONDecodeError):
                break  # the write a kill interrupted; it is measured again
            raise SearchError(f"{path}:{i + 1}: not a predictor sample of this space: {err}"
                              ) from None
    return out


def _sequence(space: SearchSpace, seed: int):
    """The fixed seeded order in which SubNets are measured: corners first, then random, no repeats."""
    seen: set[SubnetConfig] = set()
    rng = random.Random(seed)
    for cfg in space.corners():
        seen.add(cfg)
        yield cfg
    misses = 0
    while misses < 10_000:  # tiny spaces run out of new SubNets
        cfg = space.sample(rng)
        if cfg in seen:
            misses += 1
            continue
        misses = 0
        seen.add(cfg)
        yield cfg


def measure_samples(net: SuperNet, dataset: Dataset, n: int, path: str | os.PathLike, *,
                    seed: int = 0, device: str | torch.device = "cpu",
                    progress: bool = False) -> list[Sample]:
    """Make `path` hold `n` measured samples (reusing those already there) and return them."""
    if n < 1:
        raise SearchError(f"--samples must be >= 1, got {n}")
    path = Path(path)
    samples = read_samples(path, net.space)
    have = {s.subnet for s in samples}
    if len(samples) >= n:
        return samples[:n]
    bn_data, eval_set = holdout_split(dataset)
    # Rewrite without a torn tail before appending, so every line stays whole.
    atomic_write_text(path, "".join(s.to_json() + "\n" for s in samples))
    bar = None
    if progress:
        from ..progress import progress as tqdm

        bar = tqdm(total=n, initial=len(samples), desc="measure", unit="subnet")
    saved = dict(net.subnet_norms)
    try:
        with path.open("a", encoding="utf-8") as f:
            for cfg in _sequence(net.space, seed):
                if len(samples) >= n:
                    break
                if cfg in have:
                    continue
                recalibrate(net, cfg, bn_data, device=device)
                acc = accuracy(net, cfg, dataset, eval_set, device=device)
                net.subnet_norms.pop(cfg, None)  # thousands of SubNets' stats would pile up
                sample = Sample(cfg, acc)
                f.write(sample.to_json() + "\n")
                f.flush()
                samples.append(sample)
                if bar is not None:
                    bar.update(1)
    finally:
        net.subnet_norms.clear()
        net.subnet_norms.update(saved)
        if bar is not None:
            bar.close()
    return samples


# --------------------------------------------------------------------------------- model
class _MLP(nn.Module):
    def __init__(self, n_in: int, hidden: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(n_in, h), nn.ReLU()]
            n_in = h
        layers.append(nn.Linear(n_in, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


@dataclass
class PredictorReport:
    kind: str
    n_fit: int
    n_test: int
    rmse: float
    kendall_tau: float
    validation_tau: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Predictor:
    """Predicted top-1 (percent) of SubNets of one space, from their one-hot encoding."""

    def __init__(self, space: SearchSpace, kind: str, model: _MLP, mean: float, std: float,
                 supernet: dict[str, Any] | None = None,
                 report: PredictorReport | None = None) -> None:
        self.space, self.kind, self.model = space, kind, model.eval()
        self.mean, self.std = mean, std
        self.supernet, self.report = supernet or {}, report

    @torch.no_grad()
    def predict(self, subnets: Sequence[SubnetConfig]) -> np.ndarray:
        if not subnets:
            return np.zeros(0)
        x = torch.tensor([self.space.encode(c) for c in subnets], dtype=torch.float32)
        return (self.model(x) * self.std + self.mean).double().numpy()

    def check(self, net: SuperNet, path: str | os.PathLike = "predictor") -> Predictor:
        check_identity(self.supernet, net, path, "accuracy predictor")
        return self

    def save(self, weights: str | os.PathLike, meta: str | os.PathLike) -> None:
        from safetensors.torch import save_file

        weights, meta = Path(weights), Path(meta)
        state = {k: v.detach().contiguous() for k, v in self.model.state_dict().items()}
        with atomic_path(weights) as tmp:
            save_file(state, str(tmp))
        atomic_write_text(meta, json.dumps({
            "format": FORMAT, "version": VERSION, "kind": self.kind,
            "hidden": list(KINDS[self.kind]), "mean": self.mean, "std": self.std,
            "supernet": self.supernet, "space": self.space.to_dict(),
            "report": self.report.to_dict() if self.report else None,
            "weights": weights.name,
        }, indent=1) + "\n")


def load_predictor(checkpoint: str | os.PathLike, net: SuperNet | None = None) -> Predictor:
    """The predictor saved beside `checkpoint`; with `net`, checked to be made for it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    paths = predictor_paths(checkpoint)
    if not paths["meta"].is_file():
        raise FileNotFoundError(
            2, f"no accuracy predictor beside {checkpoint} (run `weightshare predictor fit -c "
            f"{checkpoint}`, or search with --measured)", str(paths["meta"]))
    meta = read_json(paths["meta"], "accuracy predictor")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise SearchError(f"{paths['meta']} is not a weightshare accuracy predictor")
    try:
        space = SearchSpace.from_dict(meta["space"])
        model = _MLP(space.encoding_size, meta["hidden"])
        model.load_state_dict(load_file(str(paths["weights"])))
        report = PredictorReport(**meta["report"]) if meta.get("report") else None
        pred = Predictor(space, meta["kind"], model, float(meta["mean"]), float(meta["std"]),
                         meta.get("supernet"), report)
    except FileNotFoundError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, SafetensorError) as err:
        raise SearchError(f"{paths['meta']}: unreadable accuracy predictor ({err})") from None
    if net is not None:
        pred.check(net, paths["meta"])
    return pred


def _train(x: torch.Tensor, y: torch.Tensor, hidden: Sequence[int], *, epochs: int, seed: int,
           lr: float = 1e-3, batch_size: int = 256) -> _MLP:
    torch.manual_seed(seed)
    model = _MLP(x.shape[1], hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr,
                           weight_decay=0.0 if hidden else 1e-4)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            loss = nn.functional.mse_loss(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def _score(model: _MLP, x: torch.Tensor, y: np.ndarray, mean: float, std: float
           ) -> tuple[float, float]:
    with torch.no_grad():
        p = (model(x) * std + mean).double().numpy()
    rmse = float(math.sqrt(np.mean((p - y) ** 2)))
    return rmse, kendall_tau(p.tolist(), y.tolist())


def split_indices(n: int, test_fraction: float = 0.2, seed: int = 0
                  ) -> tuple[list[int], list[int]]:
    """(unseen, fitted) sample indices: the seeded split `fit_predictor` reports on."""
    n_test = max(2, int(round(n * test_fraction)))
    if n - n_test < 4:
        raise SearchError(f"{n} samples are too few to fit and test a predictor (need >= 6)")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order[:n_test], order[n_test:]


def fit_predictor(samples: Sequence[Sample], space: SearchSpace, *, kind: str = "auto",
                  test_fraction: float = 0.2, epochs: int = 200, seed: int = 0,
                  supernet: dict[str, Any] | None = None) -> Predictor:
    """Fit on a seeded (1 - test_fraction) of `samples`; report RMSE and tau on the rest."""
    if kind not in (*KINDS, "auto"):
        raise SearchError(f"unknown predictor kind {kind!r}; choose from {[*KINDS, 'auto']}")
    if not 0 < test_fraction < 1:
        raise SearchError(f"test_fraction must be in (0, 1), got {test_fraction}")
    test_i, fit_i = split_indices(len(samples), test_fraction, seed)
    x = torch.tensor([space.encode(s.subnet) for s in samples], dtype=torch.float32)
    y = np.array([s.acc for s in samples], dtype=np.float64)
    mean, std = float(y[fit_i].mean()), float(y[fit_i].std()) or 1.0
    yt = torch.tensor((y - mean) / std, dtype=torch.float32)

    val_tau: dict[str, float] = {}
    if kind == "auto":
        n_val = max(2, len(fit_i) // 5)
        val_i, sub_i = fit_i[:n_val], fit_i[n_val:]
        for name, hidden in KINDS.items():
            m = _train(x[sub_i], yt[sub_i], hidden, epochs=epochs, seed=seed)
            val_tau[name] = _score(m, x[val_i], y[val_i], mean, std)[1]
        # nan (constant labels) ranks last; ties go to the simpler model.
        kind = max(KINDS, key=lambda k: (np.nan_to_num(val_tau[k], nan=-2.0), -len(KINDS[k])))
    model = _train(x[fit_i], yt[fit_i], KINDS[kind], epochs=epochs, seed=seed)
    rmse, tau = _score(model, x[test_i], y[test_i], mean, std)
    report = PredictorReport(kind, len(fit_i), len(test_i), rmse, tau, val_tau)
    return Predictor(space, kind, model, mean, std, supernet, report)


def fit_and_save(net: SuperNet, dataset: Dataset, checkpoint: str | os.PathLike, n: int, *,
                 kind: str = "auto", seed: int = 0, epochs: int = 200,
                 device: str | torch.device = "cpu", progress: bool = False) -> Predictor:
    """Measure up to `n` samples beside `checkpoint`, fit, save; the whole `predictor fit`."""
    paths = predictor_paths(checkpoint)
    samples = measure_samples(net, dataset, n, paths["samples"], seed=seed, device=device,
                              progress=progress)
    pred = fit_predictor(samples, net.space, kind=kind, seed=seed, epochs=epochs,
                         supernet=supernet_identity(net))
    pred.save(paths["weights"], paths["meta"])
    return pred
