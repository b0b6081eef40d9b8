"""nablaQDARTS commands: `quant search`, `quant retrain`, `quant export`, `quant show`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .core import DataDirOpt, JsonOpt, app, emit_json, fmt_count

quant_app = typer.Typer(
    help="nablaQDARTS: search cell architecture and per-layer bit widths together, retrain "
    "the derived quantized network, export it to ONNX with QDQ nodes.",
    no_args_is_help=True,
)
app.add_typer(quant_app, name="quant")

PresetOpt = Annotated[
    str, typer.Option("--preset", "-p", metavar="NAME|FILE",
                      help="Quant preset (tiny, small, full) or a YAML file.")
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Run folder.")]
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")
]
SetQuantOpt = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="KEY=VALUE",
                 help="Override any quant option (YAML value), e.g. epochs=3, bits=[2,4]; "
                 "repeatable."),
]


def _bits(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(b) for b in text.replace(" ", "").split(",") if b]
    except ValueError:
        raise ValueError(f"--bits expects comma-separated integers, got {text!r}") from None


def _config(preset: str, overrides: list[str] | None, **kwargs: Any):
    from ..quant.config import QuantConfig

    return QuantConfig.load(preset, overrides, **kwargs)


@quant_app.command("search")
def quant_search(
    out: OutOpt = Path("runs/quant/search"),
    preset: PresetOpt = "small",
    dataset: Annotated[str | None, typer.Option("--dataset", help="Dataset name.")] = None,
    lam: Annotated[
        float | None, typer.Option("--lambda", min=0.0,
                                   help="Weight of the complexity loss (sum of MACs x bits x "
                                   "bits over the candidate convs / first conv's MACs).")
    ] = None,
    bits: Annotated[
        str | None, typer.Option("--bits", metavar="B,B,...",
                                 help="Bit widths to search per conv op (default 2,4; 8 and "
                                 "32=float optional).")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Search epochs.")] = None,
    data_dir: DataDirOpt = None,
    resume: ResumeOpt = False,
    overrides: SetQuantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search a PC-DARTS cell and a bit width per conv op (weights and activations) at once:
    the weights and bit mixtures minimise cross-entropy + lambda x complexity, the
    architecture cross-entropy alone; writes genotype.json into --out.

    Checkpoints every epoch (`--resume` continues a killed search). The genotype is the
    argmax of the architecture and bit mixtures; retrain it with `quant retrain`.

    Example:

        weightshare quant search --dataset fashion-mnist --lambda 1e-4 --preset tiny --out runs/q
    """
    from ..quant.search import search

    cfg = _config(preset, overrides, dataset=dataset, bitops_lambda=lam, bits=_bits(bits),
                  epochs=epochs, data_dir=str(data_dir) if data_dir else None)
    if as_json:
        cfg = cfg.replace(progress=False)
    result = search(cfg, out, resume=resume)
    s = result.summary
    if as_json:
        emit_json({**{k: v for k, v in s.items() if k not in ("history", "config")},
                   "genotype": result.genotype.to_dict(),
                   "genotype_path": str(out / "genotype.json")})
        return
    state = "finished" if s["finished"] else f"stopped at step {s['steps']}/{s['total_steps']}"
    typer.echo(f"search {state} in {s['search_s']:.0f} s; the derived cells would cost about "
               f"{fmt_count(s['expected_bitops'])} BitOps per image")
    typer.echo(result.genotype.summary())
    if s["finished"]:
        typer.echo(f"genotype: {out / 'genotype.json'}")


@quant_app.command("retrain")
def quant_retrain(
    genotype: Annotated[
        Path, typer.Option("--genotype", "-g", metavar="G.json", help="Genotype from a search.")
    ],
    out: OutOpt = Path("runs/quant/retrain"),
    preset: PresetOpt = "small",
    uniform_bits: Annotated[
        int | None, typer.Option("--uniform-bits", metavar="B",
                                 help="Ignore the searched bits: every cell layer at B/B "
                                 "(stem and classifier at the preset's fixed_bits, float by "
                                 "default; 32 = float).")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Retraining epochs.")
                      ] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Dataset name.")] = None,
    data_dir: DataDirOpt = None,
    resume: ResumeOpt = False,
    overrides: SetQuantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Retrain the network a genotype describes from scratch with quantization-aware training
    at its bit widths; report test accuracy and exact BitOps.

    Writes retrain.pt (checkpoint every epoch; `--resume` continues) and retrain.json.

    Example:

        weightshare quant retrain --genotype runs/q/genotype.json --preset tiny --out runs/q/retrain
    """
    from ..quant.genotype import load_genotype
    from ..quant.retrain import retrain

    cfg = _config(preset, overrides, retrain_epochs=epochs, dataset=dataset,
                  data_dir=str(data_dir) if data_dir else None)
    if as_json:
        cfg = cfg.replace(progress=False)
    g = load_genotype(genotype)
    if uniform_bits is not None:
        g = g.uniform(uniform_bits, cfg.fixed_bits)
    result = retrain(cfg, g, out, resume=resume)
    s = result.summary
    if as_json:
        emit_json({k: v for k, v in s.items() if k not in ("history", "genotype")})
        return
    if not s["finished"]:
        typer.echo(f"retraining stopped at step {s['steps']}/{s['total_steps']}")
        return
    typer.echo(f"retrained in {s['retrain_s']:.0f} s: test top-1 {s['test_acc']:.2f} %, "
               f"{fmt_count(s['bitops'])} BitOps in the cells ({fmt_count(s['total_bitops'])} "
               f"with stem and classifier), {fmt_count(s['macs'])} MACs per image")
    typer.echo(f"checkpoint: {out / 'retrain.pt'}")


@quant_app.command("export")
def quant_export(
    checkpoint: Annotated[
        Path, typer.Option("--checkpoint", "-c", metavar="retrain.pt",
                           help="Checkpoint written by `quant retrain`.")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="FILE.onnx", help="ONNX file to write.")
    ],
    atol: Annotated[float, typer.Option("--atol", min=0.0,
                                        help="Max |logit difference| onnxruntime vs PyTorch.")
                    ] = 1e-3,
    as_json: JsonOpt = False,
) -> None:
    """Export a retrained quantized network to ONNX (opset 21) with QuantizeLinear /
    DequantizeLinear nodes, verified with onnxruntime against the PyTorch fake-quant model.

    Example:

        weightshare quant export -c runs/q/retrain/retrain.pt -o model.onnx
    """
    from ..quant.export import export_quant_onnx
    from ..quant.retrain import load_retrained

    model, _ = load_retrained(checkpoint)
    report = export_quant_onnx(model, output, atol=atol)
    if as_json:
        emit_json(report.to_dict())
        return
    typer.echo(f"exported {report.path} ({report.bytes:,} bytes, opset {report.opset}, QDQ)")
    typer.echo(f"verified with onnxruntime: max |diff| vs PyTorch {report.max_abs_diff:.3g}")


@quant_app.command("show")
def quant_show(
    genotype: Annotated[
        Path, typer.Option("--genotype", "-g", metavar="G.json", help="Genotype file.")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Describe a genotype: its cells, the bit widths per layer, MACs and BitOps per image.

    Example:

        weightshare quant show --genotype runs/q/genotype.json
    """
    from ..quant.cost import bitops_split, layer_bitops
    from ..quant.derived import DerivedNetwork
    from ..quant.genotype import load_genotype

    g = load_genotype(genotype)
    net = DerivedNetwork(g)
    s = g.spec
    split = bitops_split(layer_bitops(net, (s.in_channels, s.image_size, s.image_size)))
    ops, macs = split["cells_bitops"], split["cells_macs"]
    if as_json:
        emit_json({"genotype": g.to_dict(), "bitops": ops, "macs": macs, **split})
        return
    typer.echo(g.summary())
    typer.echo(f"cells: {fmt_count(macs)} MACs, {fmt_count(ops)} BitOps per image "
               f"(C={s.C}; {ops / max(macs, 1):.1f} bits^2 per MAC); with stem and classifier "
               f"{fmt_count(split['total_bitops'])} BitOps")
