"""Which JPEG decoder should the streaming loader use? Pillow against the alternatives.

Issue 17 asks for "Pillow, or a faster decoder from the registry if it installs
cleanly and beats it, measured". This times, side by side on one core and in
interleaved rounds, decoding the same in-memory JPEG bytes to an RGB uint8 array:

* ``pillow``: ``Image.open(...).convert("RGB")``, full size (what a naive loader does);
* ``pillow-draft``: the same with ``Image.draft`` to the smallest DCT scale that still
  covers a 224 px crop (what `weightshare.data.stream` does);
* ``simplejpeg`` (libjpeg-turbo), full size and with ``min_height/min_width`` (its
  DCT-scaled decode);
* ``opencv`` (``cv2.imdecode``), full size and ``IMREAD_REDUCED_COLOR_2``.

Decoders that are not importable are reported as missing, not installed: they are not
weightshare dependencies. To include them without touching the project's venv:

    pip install --no-deps --target /tmp/decoders simplejpeg==1.9.0 opencv-python-headless==5.0.0.93
    PYTHONPATH=/tmp/decoders taskset -c 1 python benchmarks/jpeg_decoders.py

Two image sets: the ImageNet-like tree of `data_loading.py` (~0.17 MP) and
phone-sized photos (12 MP), where DCT-scaled decoding matters most.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from common import RESULTS_DIR, interleaved_latency, markdown_table, save_plot, write_results
from data_loading import make_tree
from PIL import Image

OUT_PX = 224


def _pillow(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def _pillow_draft(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        w, h = img.size
        f = OUT_PX / min(w, h)
        if f <= 0.5:
            img.draft("RGB", (math.ceil(w * f), math.ceil(h * f)))
        return np.asarray(img.convert("RGB"))


def _decoders() -> tuple[dict[str, Callable[[bytes], np.ndarray]], dict[str, str]]:
    """Available decoders by name, and the versions of the libraries behind them."""
    import PIL

    fns: dict[str, Callable[[bytes], np.ndarray]] = {"pillow": _pillow,
                                                     "pillow-draft": _pillow_draft}
    versions = {"pillow": PIL.__version__}
    try:
        import simplejpeg

        fns["simplejpeg"] = lambda d: simplejpeg.decode_jpeg(d, colorspace="RGB")
        fns["simplejpeg-scaled"] = lambda d: simplejpeg.decode_jpeg(
            d, colorspace="RGB", min_height=OUT_PX, min_width=OUT_PX)
        versions["simplejpeg"] = simplejpeg.__version__
    except ImportError:
        versions["simplejpeg"] = "missing"
    try:
        import cv2

        cv2.setNumThreads(1)

        def _cv(flag: int) -> Callable[[bytes], np.ndarray]:
            return lambda d: cv2.cvtColor(
                cv2.imdecode(np.frombuffer(d, np.uint8), flag), cv2.COLOR_BGR2RGB)

        fns["opencv"] = _cv(cv2.IMREAD_COLOR)
        fns["opencv-reduced2"] = _cv(cv2.IMREAD_REDUCED_COLOR_2)
        versions["opencv"] = cv2.__version__
    except ImportError:
        versions["opencv"] = "missing"
    return fns, versions


def _phone_photos(root: Path, n: int) -> list[Path]:
    """`n` 4000 x 3000 JPEGs: a smooth colour field plus grain (compresses like a photo)."""
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = root / f"photo{i}.jpg"
        if not path.exists():
            grid = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
            field = np.asarray(Image.fromarray(grid).resize((4000, 3000),
                                                            Image.Resampling.BICUBIC))
            grain = rng.normal(0.0, 6.0, (3000, 4000, 1))
            pix = np.clip(field + grain, 0, 255).astype(np.uint8)
            Image.fromarray(pix).save(path, quality=90)
        paths.append(path)
    return paths


def _time_set(files: list[bytes], fns: dict[str, Callable[[bytes], np.ndarray]],
              rounds: int) -> dict[str, dict[str, Any]]:
    """ms per image for each decoder, all decoding the same list in alternating rounds."""
    def over_all(fn: Callable[[bytes], np.ndarray]) -> Callable[[], None]:
        return lambda: [fn(d) for d in files]

    res = interleaved_latency({k: over_all(f) for k, f in fns.items()},
                              rounds=rounds, runs=3, warmup=1)
    # check they decode the same picture (reduced ones at their own scale)
    ref = fns["pillow"](files[0])
    for name, fn in fns.items():
        out = fn(files[0])
        res[name]["decoded_px"] = list(out.shape[:2])
        if out.shape == ref.shape:
            res[name]["max_abs_diff_vs_pillow"] = int(np.abs(out.astype(int) - ref).max())
        res[name]["ms_per_image"] = res[name]["median_ms"] / len(files)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=300, help="ImageNet-like JPEGs")
    p.add_argument("--photos", type=int, default=8, help="12 MP photos")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--tree", type=Path, default=None, help="where to write the images")
    p.add_argument("--beside", default="", help="what else ran on the machine, for the report")
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = p.parse_args()

    fns, versions = _decoders()
    root = args.tree or Path(tempfile.gettempdir()) / "weightshare-jpeg-decoders"
    make_tree(root / "imagenet", args.images, 10)
    sets = {
        "imagenet-like": sorted((root / "imagenet").glob("train/*/*.JPEG"))[: args.images],
        "12MP-photo": _phone_photos(root / "photos", args.photos),
    }
    results: dict[str, Any] = {}
    for name, paths in sets.items():
        files = [q.read_bytes() for q in paths]
        print(f"{name}: {len(files)} images, {sum(map(len, files)) / len(files) / 1024:.0f} kB "
              f"on average", flush=True)
        results[name] = _time_set(files, fns, args.rounds)

    rows = []
    for set_name, res in results.items():
        base = res["pillow"]["ms_per_image"]
        for dec, r in res.items():
            rows.append([set_name, dec, r["ms_per_image"], f"{base / r['ms_per_image']:.2f}x",
                         "x".join(map(str, r["decoded_px"])),
                         r.get("max_abs_diff_vs_pillow", "other scale")])
    table = markdown_table(["images", "decoder", "ms/image", "vs pillow", "decoded px",
                            "max |diff| vs pillow"], rows)
    best = {s: min(res, key=lambda d: res[d]["ms_per_image"]) for s, res in results.items()}
    notes = [f"Versions: {', '.join(f'{k} {v}' for k, v in versions.items())}. One core "
             f"(pid pinned to CPUs {sorted(os.sched_getaffinity(0))}), decoding in-memory "
             "bytes (no file I/O), interleaved rounds, median of round medians.",
             "", "Fastest per set: " + ", ".join(f"{s}: {d}" for s, d in best.items()) + "."]
    if args.beside:
        notes += ["", f"Ran beside: {args.beside}"]
    write_results("jpeg_decoders", {"sets": results, "versions": versions, "fastest": best,
                                    "out_px": OUT_PX, "beside": args.beside},
                  table, args.out, title="JPEG decoders for the streaming loader",
                  notes="\n".join(notes))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.2))
    for ax, (set_name, res) in zip(np.atleast_1d(axes), results.items(), strict=True):
        ax.barh(list(res), [r["ms_per_image"] for r in res.values()])
        ax.set_title(set_name)
        ax.set_xlabel("ms per image (1 core)")
    save_plot(fig, args.out / "jpeg_decoders.png")
    print(table)


if __name__ == "__main__":
    main()
